"""Spikes: rises above a robust rolling baseline, and what lined up with them.

The baseline is a *centred* rolling median of per-bucket minima (100 ms
buckets, 10 s window by default): a step up (a ramp step, a cache fill) moves
the baseline with it, while an excursion shorter than half the window stays
above it and counts as a spike. A sample is "high" when it exceeds the
baseline by both a relative and an absolute threshold; high runs closer than
``merge_ms`` are one spike. ``hwm_spike`` events (the kernel saw a peak that no
sample did) become spikes of their own when no sampled spike covers them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from spikewatch.sampler.wire import protocol

from .context import Ctx
from .phases import Phase, phase_at

MiB = 1 << 20


@dataclass
class SpikeParams:
    rel: float = 0.10  # above baseline by at least 10 % of it …
    abs_bytes: int = 4 * MiB  # … and at least this much
    bucket_ms: float = 100.0
    window_s: float = 10.0
    merge_ms: float = 50.0
    near_before_s: float = 1.0
    near_after_s: float = 0.5
    thread_jump: int = 4  # thread-count change between two details worth naming
    max_listed: int = 200


def baseline(t: np.ndarray, v: np.ndarray, p: SpikeParams, origin: int | None = None) -> np.ndarray:
    """Per-sample baseline: centred rolling median of bucket minima (buckets counted from
    ``origin``, the series' first sample, so a window of a long run buckets as the whole would)."""
    if len(t) == 0:
        return v.astype(np.float64)
    bucket_ns = int(p.bucket_ms * 1e6)
    idx = ((t - (t[0] if origin is None else origin)) // bucket_ns).astype(np.int64)
    idx -= idx[0]
    starts = np.flatnonzero(np.r_[True, idx[1:] != idx[:-1]])
    mins = np.minimum.reduceat(v, starts).astype(np.float64)
    bidx = idx[starts]
    # Fill empty buckets (sampling gaps) with the previous value so the window keeps its meaning in time.
    n_b = int(bidx[-1]) + 1
    full = np.zeros(n_b, dtype=np.float64)
    full[bidx] = mins
    have = np.zeros(n_b, dtype=bool)
    have[bidx] = True
    last = np.maximum.accumulate(np.where(have, np.arange(n_b), 0))
    full = full[last]
    w = max(1, int(p.window_s * 1000 / p.bucket_ms)) | 1  # odd, so it is centred
    if n_b >= w:
        pad = w // 2
        # mirror the ends: a start from zero or a final exit must not drag the edge baseline
        padded = np.pad(full, pad, mode="reflect")
        base_b = np.median(sliding_window_view(padded, w), axis=1)
    else:
        base_b = np.full(n_b, np.median(full))
    return base_b[idx]


def runs(t: np.ndarray, v: np.ndarray, base: np.ndarray, p: SpikeParams) -> list[dict[str, Any]]:
    """The sampled spikes: runs of samples above the baseline's threshold."""
    if not len(t):
        return []
    thr = base + np.maximum(p.rel * base, p.abs_bytes)
    high = v > thr
    if not high.any():
        return []
    return runs_of(t, v, np.flatnonzero(high), lambda i: float(base[i]), p)


def runs_of(
    t: np.ndarray, v: np.ndarray, hi_idx: np.ndarray, base_of: Callable[[int], float], p: SpikeParams
) -> list[dict[str, Any]]:
    """:func:`runs` from the indices of the high samples (ascending) and the baseline at a sample."""
    found: list[dict[str, Any]] = []
    # a spike ends at a sample back under the threshold, unless the next high sample
    # follows within merge_ms; a sampling stall (no sample at all) never splits one
    brk = np.flatnonzero((np.diff(hi_idx) > 1) & (np.diff(t[hi_idx]) > p.merge_ms * 1e6))
    run_s = np.r_[0, brk + 1]
    run_e = np.r_[brk, len(hi_idx) - 1]
    for rs, re in zip(run_s, run_e):
        i0, i1 = int(hi_idx[rs]), int(hi_idx[re])
        seg = v[i0 : i1 + 1]
        k = int(np.argmax(seg))
        end_t = int(t[i1 + 1]) if i1 + 1 < len(t) else int(t[i1])
        found.append(
            {
                "_t0": int(t[i0]),
                "_t1": end_t,
                "_peak": int(seg[k]),
                "_peak_t": int(t[i0 + k]),
                "_base": base_of(i0),
                "source": "sampled",
                "samples": i1 - i0 + 1,
            }
        )
    return found


def hwm_events(ctx: Ctx) -> list[dict[str, Any]]:
    return [
        ev
        for ev in ctx.src.events_of(protocol.EV_HWM_SPIKE)
        if ev.get("series") == ctx.name and isinstance(ev.get("bytes"), (int, float))
    ]


def base_at(t: np.ndarray, base: np.ndarray, a: int) -> float:
    """The baseline where an interval starting at ``a`` begins (0 without samples)."""
    i = min(max(int(np.searchsorted(t, a)), 0), len(t) - 1) if len(t) else -1
    return float(base[i]) if i >= 0 else 0.0


def detect(ctx: Ctx, phases: list[Phase], p: SpikeParams | None = None) -> tuple[list[dict[str, Any]], int]:
    """(spikes, total found): the largest ``max_listed`` spikes, in time order."""
    p = p or SpikeParams()
    t, v = ctx.t, ctx.v
    base = baseline(t, v, p) if len(t) else np.zeros(0)
    found = runs(t, v, base, p)
    evs = hwm_events(ctx)
    return finish(ctx, phases, found, [base_at(t, base, int(ev.get("t_from", ev["t"]))) for ev in evs], p)


def finish(
    ctx: Ctx, phases: list[Phase], found: list[dict[str, Any]], ev_base: list[float], p: SpikeParams
) -> tuple[list[dict[str, Any]], int]:
    """Fold the kernel's ``hwm_spike`` events (baseline at each in ``ev_base``) into the
    sampled spikes; keep the largest ``max_listed``, in time order, with what lined up."""
    for ev, bl in zip(hwm_events(ctx), ev_base):
        a, b = int(ev.get("t_from", ev["t"])), int(ev.get("t_to", ev["t"]))
        if any(s["_t0"] - 1_000_000 <= b and a <= s["_t1"] + 1_000_000 for s in found):
            for s in found:
                if s["_t0"] - 1_000_000 <= b and a <= s["_t1"] + 1_000_000 and ev["bytes"] > s["_peak"]:
                    s["_peak"], s["source"] = int(ev["bytes"]), "hwm"
            continue
        if ev["bytes"] > bl + max(p.rel * bl, p.abs_bytes):
            found.append(
                {
                    "_t0": a,
                    "_t1": b,
                    "_peak": int(ev["bytes"]),
                    "_peak_t": (a + b) // 2,
                    "_base": bl,
                    "source": "hwm",
                    "samples": 0,
                }
            )
    total = len(found)
    found.sort(key=lambda s: s["_peak"] - s["_base"], reverse=True)
    found = sorted(found[: p.max_listed], key=lambda s: s["_t0"])
    near = _nearby(ctx)
    out = []
    for s in found:
        lo, hi = s["_t0"] - int(p.near_before_s * 1e9), s["_t1"] + int(p.near_after_s * 1e9)
        out.append(
            {
                "t_start": ctx.rel(s["_t0"]),
                "duration_ms": round((s["_t1"] - s["_t0"]) / 1e6, 3),
                "height_bytes": int(s["_peak"] - s["_base"]),
                "peak_bytes": s["_peak"],
                "peak_t": ctx.rel(s["_peak_t"]),
                "baseline_bytes": int(s["_base"]),
                "phase": phase_at(phases, s["_t0"]),
                "source": s["source"],
                "near_events": [
                    {**e, "t": ctx.rel(e["t"]), "dt_s": round((e["t"] - s["_t0"]) / 1e9, 6)}
                    for e in near
                    if lo <= e["t"] <= hi
                ],
            }
        )
    return out, total


def _nearby(ctx: Ctx) -> list[dict[str, Any]]:
    """Everything a spike can be tied to: markers, process events, thread jumps."""
    items: list[dict[str, Any]] = []
    for m in ctx.src.markers:
        items.append({"t": int(m.get("t", 0)), "kind": m.get("kind"), "name": m.get("name")})
    for e in ctx.src.events:
        if e.get("kind") in (protocol.EV_OVERRUN,):
            continue
        d = {"t": int(e.get("t", 0)), "kind": e.get("kind")}
        for k in ("pid", "bytes", "code", "signal", "series"):
            if k in e:
                d[k] = e[k]
        items.append(d)
    th = ctx.src.details.get("threads")
    fig = ctx.src.stream
    if fig is not None:  # streamed: the details are thinned, the jumps were found on every row
        for t, a, b in fig.thread_jumps:
            items.append({"t": t, "kind": "threads", "name": f"threads {a} -> {b}"})
    elif th is not None and len(th) > 1:
        jump = np.diff(th)
        for i in np.flatnonzero(np.abs(np.nan_to_num(jump)) >= SpikeParams.thread_jump):
            items.append(
                {
                    "t": int(ctx.src.details["t"][i + 1]),
                    "kind": "threads",
                    "name": f"threads {int(th[i])} -> {int(th[i + 1])}",
                }
            )
    items.sort(key=lambda d: d["t"])
    return items
