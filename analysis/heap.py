"""The service's own heap figure beside RSS, and what it says after each burst.

With ``--heap-metric`` the sampler puts the service's heap gauge (bytes its
allocator has handed out) into ``detail`` as ``heap``. After a burst:

* heap back at its baseline, RSS not: the allocator kept the freed pages
  (retention; glibc keeps arenas and fragmented heap): try jemalloc or
  mimalloc, ``malloc_trim``, ``MALLOC_ARENA_MAX=2``;
* both still high: the program holds the memory (a leak or an unbounded cache);
* both back: fine.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from spikewatch.sampler.units import format_bytes

from .context import Ctx
from .reader import Source
from .stats import linear_fit

MiB = 1 << 20
RETENTION = "allocator retention"
HELD = "leak or unbounded cache"
FINE = "fine"
NO_RISE = "no rise"
HEAP_ONLY = "heap held, RSS back"
ADVICE = {
    RETENTION: "the heap came back but RSS did not: the allocator kept the pages "
    "(try jemalloc or mimalloc, malloc_trim, MALLOC_ARENA_MAX=2)",
    HELD: "the heap and RSS both stayed up: the program still holds the memory (a leak, an unbounded cache, "
    "or buffers kept for idle connections)",
    FINE: "the heap and RSS both came back",
    NO_RISE: "the burst raised neither the heap nor RSS noticeably",
    HEAP_ONLY: "the heap stayed up while RSS came back (held memory that is not resident)",
}


def heap_ctx(src: Source) -> Ctx | None:
    """The ``heap`` detail column as a series, or None when the recording has none."""
    col = src.details.get("heap")
    if col is None:
        return None
    ok = ~np.isnan(col)
    if not ok.any():
        return None
    return Ctx(src, "heap", src.details["t"][ok], col[ok].astype(np.int64))


def _levels(
    c: Ctx, base: tuple[int, int], peak: tuple[int, int], after: tuple[int, int]
) -> tuple[float | None, int | None, float | None]:
    pk = c.peak(*peak)
    return c.level(*base), (pk[0] if pk else None), c.level(*after)


def verdict(heap: tuple[float, float, float], rss: tuple[float, float, float]) -> str:
    """(baseline, peak, after) of the heap and of RSS -> one of the verdicts above."""
    h_rise, h_kept = heap[1] - heap[0], heap[2] - heap[0]
    r_rise, r_kept = rss[1] - rss[0], rss[2] - rss[0]
    if h_rise < MiB and r_rise < 2 * MiB and h_kept < MiB and r_kept < 2 * MiB:
        return NO_RISE
    heap_back = h_kept <= max(0.25 * h_rise, MiB)
    rss_back = r_kept <= max(0.25 * r_rise, 2 * MiB)
    if heap_back:
        return FINE if rss_back else RETENTION
    return HEAP_ONLY if rss_back else HELD


def _episode(
    ctx: Ctx, hctx: Ctx, base: tuple[int, int], peak: tuple[int, int], after: tuple[int, int]
) -> dict[str, Any] | None:
    """Heap and RSS levels in the three windows (median, max, median) and the verdict."""
    hb, hp, ha = _levels(hctx, base, peak, after)
    rb, rp, ra = _levels(ctx, base, peak, after)
    if hb is None or hp is None or ha is None or rb is None or rp is None or ra is None:
        return None
    v = verdict((hb, hp, ha), (rb, rp, ra))
    return {
        "heap_baseline_bytes": int(hb),
        "heap_peak_bytes": int(hp),
        "heap_after_bytes": int(ha),
        "rss_baseline_bytes": int(rb),
        "rss_peak_bytes": int(rp),
        "rss_after_bytes": int(ra),
        "verdict": v,
        "reason": ADVICE[v],
    }


def analyse(ctx: Ctx, phase_rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The ``heap`` report key: the heap series' figures and a verdict after each burst."""
    src = ctx.src
    hctx = heap_ctx(src)
    if hctx is None:
        return None
    meta = next((h.get("heap_metric") for h in reversed(src.hellos) if h.get("heap_metric")), None) or {}
    i = int(np.argmax(hctx.v))
    out: dict[str, Any] = {
        "metric": meta.get("name"),
        "url": meta.get("url"),
        "samples": len(hctx.t),
        "peak_bytes": int(hctx.v[i]),
        "peak_t": ctx.rel(int(hctx.t[i])),
        "last_bytes": int(hctx.v[-1]),
        "rss_series": ctx.name,
        "bursts": [],
        "after_bursts": None,
    }
    t0 = src.t0

    def ns(x: float) -> int:
        return t0 + round(x * 1e9)

    for n, p in enumerate(phase_rows):
        if p["kind"] not in ("burst", "spike") or not p.get("bursts"):
            continue
        wins = [(ns(b["t_start"]), ns(b["t_end"])) for b in p["bursts"]]
        end = ns(p["t_end"])
        for k, (s, e) in enumerate(wins):
            prev_end = wins[k - 1][1] if k else ns(p["t_start"])
            nxt = wins[k + 1][0] if k + 1 < len(wins) else end
            # the windows of the burst analysis: baseline before, peak during and just after, level at the end
            look = min(5_000_000_000, max(s - prev_end, 0) // 2) or 1_000_000_000
            tail = max((nxt - e) // 4, 1)
            row = _episode(
                ctx, hctx, (s - look, s), (s, e + min(2_000_000_000, max(0, nxt - e) // 2)), (nxt - tail, nxt)
            )
            if row is not None:
                out["bursts"].append({"phase": p["name"], "t_start": ctx.rel(s), "t_end": ctx.rel(e), **row})
        s0 = wins[0][0]
        look0 = min(5_000_000_000, max(s0 - ns(p["t_start"]), 0) // 2) or 1_000_000_000
        after = (end - max((end - wins[-1][1]) // 4, 1), end)
        nxt_phase = phase_rows[n + 1] if n + 1 < len(phase_rows) else None
        if nxt_phase is not None and nxt_phase["kind"] == "idle":
            # an idle phase after the bursts is where memory had its chance to come back:
            # its second half, once requests still queued at the end of the bursts are done
            a, b = ns(nxt_phase["t_start"]), ns(nxt_phase["t_end"])
            after = (a + (b - a) // 2, b)
        whole = _episode(ctx, hctx, (s0 - look0, s0), (s0, after[1]), after)
        if whole is not None:
            out["after_bursts"] = {
                "phase": p["name"],
                "t_start": ctx.rel(s0),
                "t_end": ctx.rel(after[1]),
                "after_window": [ctx.rel(after[0]), ctx.rel(after[1])],
                **whole,
            }
    out["ramps"] = [r for p in phase_rows if p["kind"] == "ramp" and (r := _ramp(hctx, p, ns)) is not None]
    return out


def _ramp(hctx: Ctx, p: dict[str, Any], ns: Any) -> dict[str, Any] | None:
    """Heap bytes per in-flight request: the heap's level in the second half of each ramp
    step against the step's concurrency. Unlike RSS it is not hidden by memory the
    allocator kept from earlier load."""
    xs, ys = [], []
    for st in p.get("steps") or []:
        if st.get("level") is None:
            continue
        a, b = ns(st["t_start"]), ns(st["t_end"])
        lvl = hctx.level(a + (b - a) // 2, b)
        if lvl is not None:
            xs.append(float(st["level"]))
            ys.append(lvl)
    fit = linear_fit(np.array(xs), np.array(ys)) if len(xs) >= 2 else None
    if fit is None:
        return None
    return {
        "phase": p["name"],
        "heap_bytes_per_request": round(fit.slope),
        "r2": round(fit.r2, 4),
        "rss_bytes_per_request": p.get("bytes_per_request"),
    }


def describe(row: dict[str, Any], series: str = "rss") -> str:
    """One line: the numbers, then the verdict. ``series``: the headline series the
    ``rss_*`` figures come from (``cg_usage`` when a cgroup is sampled)."""
    f = format_bytes
    label = "RSS" if series == "rss" else series
    return (
        f"heap {f(row['heap_baseline_bytes'])} → {f(row['heap_peak_bytes'])} → {f(row['heap_after_bytes'])}, "
        f"{label} {f(row['rss_baseline_bytes'])} → {f(row['rss_peak_bytes'])} → {f(row['rss_after_bytes'])}: "
        f"{row['verdict']} ({row['reason']})"
    )
