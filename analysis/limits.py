"""The memory limit: headroom, OOM kills, and a recommended limit with its reasoning."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from spikewatch.sampler.units import format_bytes
from spikewatch.sampler.wire import protocol

from .context import Ctx

MiB = 1 << 20


def oom_kills(ctx: Ctx) -> list[dict[str, Any]]:
    """Each OOM kill with the last headline bytes sampled before it."""
    out = []
    kills = ctx.src.events_of(protocol.EV_OOM_KILL)
    if not kills:  # an exit the sampler attributed to the OOM killer still counts
        kills = [e for e in ctx.src.events_of(protocol.EV_PROC_EXIT) if e.get("oom")]
    for ev in kills:
        t = int(ev.get("t", 0))
        i = int(np.searchsorted(ctx.t, t, side="right")) - 1
        last = ev.get("last_bytes")
        if last is None and i >= 0:
            last = int(ctx.v[i])
        before = ctx.values(t - 1_000_000_000, t)
        out.append(
            {
                "t": ctx.rel(t),
                "pid": ev.get("pid"),
                "last_bytes": last,
                "max_bytes_1s_before": int(before.max()) if len(before) else None,
            }
        )
    return out


def nice_round_up(n: float) -> int:
    """Round a size up to a value people write in a limit (multiples of 16/64/256 MiB)."""
    if n <= 0:
        return 0
    for step in (4 * MiB, 16 * MiB, 64 * MiB, 256 * MiB):
        if n <= step * 16:
            return int(math.ceil(n / step) * step)
    return int(math.ceil(n / (1024 * MiB)) * 1024 * MiB)


def recommend(
    peak: int,
    limit: int | None,
    kills: list[dict[str, Any]],
    growth: dict[str, Any] | None,
    extrapolated: int | None,
    margin: float = 0.25,
) -> tuple[int | None, str]:
    """Recommended limit: the observed need plus ``margin``, rounded up; and why."""
    if peak <= 0:
        return None, "no samples: nothing to recommend"
    parts: list[str] = []
    need = float(peak)
    basis = f"observed peak {format_bytes(peak)}"
    if kills and limit:
        need = max(need, float(limit))
        basis = (
            f"{len(kills)} OOM kill(s) at the current limit {format_bytes(limit)}: the real need is above it, "
            "so start from the limit"
        )
    if extrapolated and extrapolated > need:
        need = float(extrapolated)
        basis += f"; the ramp extrapolates to {format_bytes(extrapolated)} at the target concurrency"
    parts.append(basis)
    if growth and growth.get("stabilized") is False:
        parts.append(
            f"memory still grows {growth['mib_per_hour']:.1f} MiB/h: a limit only delays an OOM kill; fix the growth"
        )
    rec = nice_round_up(need * (1 + margin))
    parts.append(f"+{margin:.0%} margin, rounded up = {format_bytes(rec)}")
    return rec, "; ".join(parts)


def headroom(peak: int, limit: int | None) -> float | None:
    """Share of the limit left above the peak (negative when the peak is above it)."""
    if not limit:
        return None
    return round((limit - peak) / limit, 6)
