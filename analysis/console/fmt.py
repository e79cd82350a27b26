"""Small formatters for times on screen."""

from __future__ import annotations

import time


def window_label(ns: int) -> str:
    """``30_000_000_000`` -> ``'30s'``, ``300e9`` -> ``'5m'``."""
    s = ns / 1e9
    return f"{s:g}s" if s < 60 else f"{s / 60:g}m"


def wall_clock(ns: int | None) -> str:
    """Local ``HH:MM:SS.mmm`` of a wall-clock ns (``--:--:--`` when unknown)."""
    if ns is None:
        return "--:--:--"
    secs, rem = divmod(ns, 1_000_000_000)
    return time.strftime("%H:%M:%S", time.localtime(secs)) + f".{rem // 1_000_000:03d}"
