"""Sizes and durations as people type them (``512M``, ``2GiB``, ``500us``, ``5m``).

Size suffixes follow systemd and Docker rather than SI: ``K``, ``M``, ``G``, ``T``
(and ``Ki``/``KiB``…) are powers of 1024, because ``--limit 64M`` must mean the
same thing as ``MemoryMax=64M`` or ``docker run -m 64m``. The explicit SI forms
``KB``, ``MB``, ``GB``, ``TB`` are powers of 1000, as Kubernetes spells ``64M``.
"""

from __future__ import annotations

import re

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$")
_SIZE_UNITS: dict[str, int] = {"": 1, "b": 1}
for _i, _p in enumerate("kmgt", start=1):
    for _suffix in (_p, _p + "i", _p + "ib"):
        _SIZE_UNITS[_suffix] = 1024**_i
    _SIZE_UNITS[_p + "b"] = 1000**_i

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ns|us|µs|ms|s|m|h|d)?\s*$")
_DURATION_NS: dict[str, int] = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
    "d": 86_400_000_000_000,
}


def parse_size(text: str | int) -> int:
    """Return bytes for ``text`` such as ``512M``, ``2GiB``, ``1.5G``, ``4096``."""
    if isinstance(text, int):
        if text < 0:
            raise ValueError(f"size must not be negative: {text}")
        return text
    m = _SIZE_RE.match(str(text))
    unit = m.group(2).lower() if m else None
    if not m or unit not in _SIZE_UNITS:
        raise ValueError(
            f"not a size: {text!r} (use bytes or a suffix: K, M, G, T or KiB, MiB…; KB, MB, GB are powers of 1000)"
        )
    return int(float(m.group(1)) * _SIZE_UNITS[unit])


def parse_duration_ns(text: str | int | float, default_unit: str = "s") -> int:
    """Return nanoseconds for ``text`` such as ``500us``, ``2ms``, ``30s``, ``5m``, ``1h``.

    A bare number is taken in ``default_unit``.
    """
    if isinstance(text, (int, float)):
        return int(text * _DURATION_NS[default_unit])
    m = _DURATION_RE.match(str(text))
    if not m:
        raise ValueError(f"not a duration: {text!r} (use e.g. 500us, 2ms, 30s, 5m, 1h)")
    return int(float(m.group(1)) * _DURATION_NS[m.group(2) or default_unit])


def parse_duration(text: str | int | float, default_unit: str = "s") -> float:
    """Return seconds (float) for a duration string; see :func:`parse_duration_ns`."""
    return parse_duration_ns(text, default_unit) / 1e9


def format_bytes(n: float | int | None) -> str:
    """``123456789`` -> ``'117.7 MiB'``; ``None`` -> ``'–'``."""
    if n is None:
        return "–"
    sign = "-" if n < 0 else ""
    v = float(abs(n))
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if v < 1024 or unit == "TiB":
            return f"{sign}{v:.0f} {unit}" if unit == "B" else f"{sign}{v:.1f} {unit}"
        v /= 1024
    raise AssertionError("unreachable")


def format_duration_ns(ns: float | int | None) -> str:
    """Human duration: ``1500`` -> ``'1.5 µs'``, ``90e9`` -> ``'1m30s'``."""
    if ns is None:
        return "–"
    ns = float(ns)
    if ns < 1_000:
        return f"{ns:.0f} ns"
    if ns < 1_000_000:
        return f"{ns / 1e3:.1f} µs"
    if ns < 1_000_000_000:
        return f"{ns / 1e6:.1f} ms"
    s = ns / 1e9
    if s < 60:
        return f"{s:.2f} s"
    m, s = divmod(int(round(s)), 60)
    if m < 60:
        return f"{m}m{s:02d}s"
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m"
