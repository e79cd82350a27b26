"""Phases from the driver's markers, and what each kind of phase tells.

* startup: startup peak vs the steady level after it, time to ready;
* ramp: memory against requests in flight (bytes per in-flight request, R²),
  whether each step plateaus, extrapolation to a target concurrency;
* burst: peak of each burst vs the baseline before it, recovery time, memory
  retained after recovery;
* soak: after warm-up, a Theil–Sen slope with its interval, MiB/hour,
  stabilised or not, projected time to the limit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from spikewatch.sampler.units import parse_duration_ns
from spikewatch.sampler.wire import protocol

from .context import Ctx
from .phasestats import load_summary, series_percentiles
from .stats import linear_fit, ols_slope_interval, theil_sen

KINDS = ("startup", "ramp", "steady", "burst", "spike", "soak", "idle")
MiB = 1 << 20
HOUR_NS = 3_600 * 1_000_000_000
SAME_PHASE_NS = 5_000_000_000  # a phase_start repeated this soon: several senders, one phase


@dataclass
class Phase:
    name: str
    kind: str
    t_start: int
    t_end: int
    attrs: dict[str, Any] = field(default_factory=dict)
    ended: bool = True  # a phase_end marker closed it


def find_phases(ctx: Ctx) -> list[Phase]:
    """Phases from ``phase_start``/``phase_end`` markers, in order.

    A phase without its end marker lasts until the next phase starts (or the
    recording ends): a driver that crashed still leaves usable phases.
    """
    src = ctx.src
    t_last = src.t_end
    ends = [m for m in src.markers if m.get("kind") == protocol.PHASE_END]
    starts: list[dict[str, Any]] = []
    for m in src.markers:
        if m.get("kind") != protocol.PHASE_START:
            continue
        t = int(m["t"])
        # The same phase from another driver host started a little later: one phase, not one
        # per sender (the first sender's markers bound it).
        if any(k.get("name") == m.get("name") and t - int(k["t"]) <= SAME_PHASE_NS for k in starts[-8:]):
            continue
        starts.append(m)
    phases: list[Phase] = []
    used: set[int] = set()
    for i, m in enumerate(starts):
        name = str(m.get("name", f"phase{i + 1}"))
        attrs = dict(m.get("attrs") or {})
        t0 = int(m["t"])
        nxt = int(starts[i + 1]["t"]) if i + 1 < len(starts) else t_last
        end = None
        for j, e in enumerate(ends):
            if j not in used and e.get("name") == name and t0 <= int(e["t"]) <= max(nxt, t0):
                end = e
                used.add(j)
                break
        if end is not None:
            attrs.update({f"end.{k}": v for k, v in (end.get("attrs") or {}).items()})
        kind = str(attrs.get("kind") or (name if name in KINDS else "unknown"))
        phases.append(Phase(name, kind, t0, int(end["t"]) if end else nxt, attrs, end is not None))
    return phases


def phase_at(phases: list[Phase], t: int) -> str | None:
    for p in phases:
        if p.t_start <= t <= p.t_end:
            return p.name
    return None


def _attr(attrs: dict[str, Any], *names: str) -> Any:
    for n in names:
        for key in (n, f"end.{n}"):
            if key in attrs and attrs[key] is not None:
                return attrs[key]
    return None


def _seconds(attrs: dict[str, Any]) -> float | None:
    """Time to ready from the driver's attributes, whatever unit it used."""
    for name, scale in (
        ("time_to_ready_s", 1.0),
        ("ready_s", 1.0),
        ("time_to_ready_ms", 1e-3),
        ("time_to_ready_ns", 1e-9),
        ("ready_after_s", 1.0),
    ):
        v = _attr(attrs, name)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return float(v) * scale
    v = _attr(attrs, "time_to_ready")
    if isinstance(v, str):
        try:
            return parse_duration_ns(v) / 1e9
        except ValueError:
            return None
    return None


def _load_rows(ctx: Ctx, a: int, b: int) -> dict[str, np.ndarray]:
    load = ctx.src.load
    if not load:
        return {}
    m = (load["t"] >= a) & (load["t"] <= b)
    return {k: v[m] for k, v in load.items()}


# --- per kind ---------------------------------------------------------------


def analyse_startup(ctx: Ctx, ph: Phase, after_end: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    pk = ctx.peak(ph.t_start, ph.t_end)
    steady = ctx.level(ph.t_end, min(after_end, ph.t_end + 30_000_000_000))
    out["startup_peak_bytes"] = pk[0] if pk else None
    out["steady_bytes"] = int(steady) if steady is not None else None
    out["startup_peak_ratio"] = round(pk[0] / steady, 3) if pk and steady else None
    ttr = _seconds(ph.attrs)
    out["time_to_ready_s"] = (
        round(ttr, 6) if ttr is not None else (round((ph.t_end - ph.t_start) / 1e9, 6) if ph.ended else None)
    )
    out["time_to_ready_source"] = "driver" if ttr is not None else ("phase markers" if ph.ended else None)
    starts = [e for e in ctx.src.events_of(protocol.EV_PROC_START) if e.get("start_t")]
    if starts and ph.ended:
        out["exec_to_ready_s"] = round((ph.t_end - int(starts[0]["start_t"])) / 1e9, 6)
    return out


def _step_key(rows: dict[str, np.ndarray]) -> np.ndarray | None:
    # the driver's own schedule (open model); its `workers` field counts processes, not load
    for key in ("target_rate", "target_concurrency"):
        col = rows.get(key)
        if col is not None and not np.isnan(col).all():
            return col
    return None


def analyse_ramp(ctx: Ctx, ph: Phase, target_concurrency: float | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    rows = _load_rows(ctx, ph.t_start, ph.t_end)
    inflight = rows.get("in_flight")
    xs: list[float] = []
    ys: list[float] = []
    spans: list[tuple[int, int]] = []  # the window each point's memory was averaged over
    if inflight is not None and len(inflight):
        interval = rows.get("interval_ns", np.full(len(inflight), 1e8))
        for t, q, iv in zip(rows["t"], inflight, interval):
            if np.isnan(q):
                continue
            t0 = int(t - (iv if not np.isnan(iv) else 1e8))
            m = ctx.mean(t0, int(t))
            if m is not None:
                xs.append(float(q))
                ys.append(m)
                spans.append((t0, int(t)))
    steps: list[dict[str, Any]] = []
    key = _step_key(rows) if rows else None
    bounds: list[tuple[int, int, float | None]] = []
    if key is not None:
        change = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
        for i, s in enumerate(change):
            e = change[i + 1] - 1 if i + 1 < len(change) else len(key) - 1
            iv = rows.get("interval_ns")
            a = int(rows["t"][s] - (iv[s] if iv is not None and not np.isnan(iv[s]) else 1e8))
            bounds.append((a, int(rows["t"][e]), float(key[s])))
    else:
        n = _attr(ph.attrs, "steps")
        conc = _attr(ph.attrs, "concurrency", "rate")
        if isinstance(n, int) and n > 0:
            edges = np.linspace(ph.t_start, ph.t_end, n + 1).astype(np.int64)
            for i in range(n):
                c = None
                if isinstance(conc, list) and len(conc) == 2:
                    c = conc[0] + (conc[1] - conc[0]) * (i / max(1, n - 1))
                bounds.append((int(edges[i]), int(edges[i + 1]), c))
    # Settled points only: right after a step up the requests are in flight but the service
    # is still allocating for them (100-300 ms on a busy host), and those points drag the
    # slope down: -9 % on a real service holding 4 MiB per request for 1 s in 1 s steps.
    # The second half of each step is where its plateau is (as level_bytes takes it); a point
    # whose in-flight count differs from the one before straddles a step change (the count is
    # read at the end of its interval, the memory averaged over it) and is left out too.
    step_of = [
        next((k for k, (a, b, _) in enumerate(bounds) if a + (b - a) // 2 <= t0 and t1 <= b), -1) for t0, t1 in spans
    ]
    settled = [i for i in range(1, len(spans)) if xs[i] == xs[i - 1] and step_of[i] >= 0]
    # the unit of the slope's interval: a step (its points share one offset), else a load level
    steps_of: list[int] | None = None
    if len(settled) >= 4 and len({xs[i] for i in settled}) >= 2:
        xs, ys = [xs[i] for i in settled], [ys[i] for i in settled]
        steps_of = [step_of[i] for i in settled]
    for a, b, c in bounds:
        second = a + (b - a) // 2
        lvl = ctx.level(second, b)
        st: dict[str, Any] = {
            "t_start": ctx.rel(a),
            "t_end": ctx.rel(b),
            "level": c,
            "level_bytes": int(lvl) if lvl is not None else None,
        }
        sl = ctx.window(second, b)
        fit = (
            theil_sen(ctx.t[sl] / 1e9, ctx.v[sl].astype(np.float64), max_points=100)
            if sl.stop - sl.start > 10
            else None
        )
        if fit is not None and lvl:
            drift = abs(fit.slope) * (b - second) / 1e9
            st["drift_bytes"] = int(drift)
            st["plateau"] = bool(drift <= max(0.02 * lvl, 1 * MiB))
        else:
            st["plateau"] = None
        steps.append(st)
        if not xs and c is not None and lvl is not None:
            xs.append(c)
            ys.append(lvl)
    out["steps"] = steps
    out["plateaus"] = sum(1 for s in steps if s["plateau"]) if steps else None
    line = linear_fit(np.array(xs), np.array(ys)) if len(xs) >= 2 else None
    if line is None:
        out.update(bytes_per_request=None, bytes_per_request_ci=None, r2=None, base_bytes=None, extrapolation=None)
        return out
    out["bytes_per_request"] = int(round(line.slope))
    # (with no in-flight points, xs are the steps' own levels: each is its own group)
    ci = ols_slope_interval(np.array(xs), np.array(ys), groups=np.array(steps_of if steps_of is not None else xs))
    # compare's noise verdict reads this; None when too few points to say
    out["bytes_per_request_ci"] = [int(round(ci[0])), int(round(ci[1]))] if ci else None
    out["r2"] = round(line.r2, 4)
    out["base_bytes"] = int(round(line.intercept))
    out["max_in_flight"] = float(max(xs))
    target = target_concurrency or 2 * max(xs)
    out["extrapolation"] = {
        "concurrency": target,
        "bytes": int(round(line.intercept + line.slope * target)),
        "basis": "given target" if target_concurrency else "twice the largest concurrency tested",
    }
    return out


def _burst_windows(ctx: Ctx, ph: Phase) -> tuple[list[tuple[int, int]], str]:
    rows = _load_rows(ctx, ph.t_start, ph.t_end)
    for key in ("target_rate", "rate", "in_flight"):
        col = rows.get(key)
        if col is None or np.isnan(col).all() or len(col) < 3:
            continue
        base = float(np.nanmedian(col))
        hi = np.nan_to_num(col, nan=0.0) > max(1.5 * base, base + 1)
        if not hi.any():
            continue
        iv = rows.get("interval_ns")
        starts = np.flatnonzero(hi & ~np.r_[False, hi[:-1]])
        ends = np.flatnonzero(hi & ~np.r_[hi[1:], False])
        win = []
        for s, e in zip(starts, ends):
            w = iv[s] if iv is not None and not np.isnan(iv[s]) else 1e8
            win.append((int(rows["t"][s] - w), int(rows["t"][e])))
        return win, f"load telemetry ({key})"
    burst = _attr(ph.attrs, "burst")
    if isinstance(burst, dict):
        # the driver's schedule: {length_s, at_s, every_s}; `every`/`length` as typed in a scenario also work
        try:
            length = _dur(burst, "length")
            every = _dur(burst, "every")
            at = _dur(burst, "at") or 0
        except ValueError:
            return [], "none"
        if length:
            planned = range(ph.t_start + at, ph.t_end, every) if every else [ph.t_start + at]
            return [(s, min(s + length, ph.t_end)) for s in planned if s < ph.t_end], "scenario schedule"
    return [], "none"


def _dur(d: dict[str, Any], name: str) -> int | None:
    if isinstance(d.get(f"{name}_s"), (int, float)):
        return int(d[f"{name}_s"] * 1e9)
    if d.get(name) is not None:
        return parse_duration_ns(d[name])
    return None


def analyse_burst(ctx: Ctx, ph: Phase) -> dict[str, Any]:
    windows, basis = _burst_windows(ctx, ph)
    bursts: list[dict[str, Any]] = []
    first_base: float | None = None
    for i, (s, e) in enumerate(windows):
        prev_end = windows[i - 1][1] if i else ph.t_start
        nxt = windows[i + 1][0] if i + 1 < len(windows) else ph.t_end
        look = min(5_000_000_000, max(s - prev_end, 0) // 2) or 1_000_000_000
        base = ctx.level(s - look, s)
        if first_base is None:
            first_base = base
        pk = ctx.peak(s, e + min(2_000_000_000, max(0, nxt - e) // 2))
        b: dict[str, Any] = {
            "t_start": ctx.rel(s),
            "t_end": ctx.rel(e),
            "baseline_bytes": int(base) if base is not None else None,
            "peak_bytes": pk[0] if pk else None,
            "recovery_s": None,
            "retained_bytes": None,
        }
        if base is not None and pk:
            b["rise_bytes"] = int(pk[0] - base)
            # a rise lost in the noise has no meaningful recovery
            b["significant"] = bool(pk[0] - base >= max(2 * MiB, 0.05 * base))
            thr = base + 0.1 * (pk[0] - base)
            sl = ctx.window(max(e, pk[1]), nxt)
            under = np.flatnonzero(ctx.v[sl] <= thr)
            if len(under) and b["significant"]:
                b["recovery_s"] = round((int(ctx.t[sl.start + under[0]]) - e) / 1e9, 6)
            tail = ctx.level(nxt - max((nxt - e) // 4, 1), nxt)
            if tail is not None and nxt > e:
                b["retained_bytes"] = int(tail - base)
                b["above_first_baseline_bytes"] = int(tail - first_base) if first_base is not None else None
        bursts.append(b)
    out: dict[str, Any] = {"bursts": bursts, "burst_count": len(bursts), "burst_basis": basis}
    rises = [b["rise_bytes"] for b in bursts if b.get("rise_bytes") is not None]
    recov = [b["recovery_s"] for b in bursts if b.get("recovery_s") is not None]
    ret = [b["above_first_baseline_bytes"] for b in bursts if b.get("above_first_baseline_bytes") is not None]
    out["max_rise_bytes"] = max(rises) if rises else None
    out["max_recovery_s"] = max(recov) if recov else None
    out["significant_bursts"] = sum(1 for b in bursts if b.get("significant"))
    out["unrecovered"] = sum(1 for b in bursts if b.get("significant") and b["recovery_s"] is None)
    # what the bursts left behind: the level after the last one against the level before the first
    out["retained_bytes"] = ret[-1] if ret else None
    return out


def growth(
    ctx: Ctx, a: int, b: int, limit: int | None, warmup_fraction: float = 0.1, threshold_mib_h: float = 1.0
) -> dict[str, Any] | None:
    """Trend of memory in [a, b] after warm-up: Theil–Sen slope with a 95 % interval."""
    w0 = a + int((b - a) * warmup_fraction)
    sl = ctx.window(w0, b)
    if sl.stop - sl.start < 10:
        return None
    t = ctx.t[sl]
    fit = theil_sen((t - t[0]) / 1e9, ctx.v[sl].astype(np.float64))
    if fit is None:
        return None
    per_h = 3600.0
    level = float(np.median(ctx.v[sl]))
    thr = max(threshold_mib_h * MiB, 0.005 * level) / per_h  # bytes/s
    stab = True if fit.high <= thr else (False if fit.low > thr else None)
    # A steeply falling trend is no leak, but it is not "flat" either: memory
    # was still being given back (e.g. after a burst) when the soak began.
    trend = ("falling" if fit.high < -thr else "flat") if stab else ("growing" if stab is False else "inconclusive")
    out: dict[str, Any] = {
        "t_from": ctx.rel(int(t[0])),
        "t_to": ctx.rel(int(t[-1])),
        "bytes_per_hour": int(round(fit.slope * per_h)),
        "mib_per_hour": round(fit.slope * per_h / MiB, 4),
        "ci_mib_per_hour": [round(fit.low * per_h / MiB, 4), round(fit.high * per_h / MiB, 4)],
        # How much the interval was widened for a wandering curve (stats.theil_sen), so a
        # wide interval explains itself: r1 of the residuals and the factor on its width.
        "residual_r1": round(fit.r1, 3),
        "ci_widened_by": round(math.sqrt(fit.inflation), 2),
        "stable_below_mib_per_hour": round(thr * per_h / MiB, 4),
        "stabilized": stab,
        "trend": trend,
        "time_to_limit_h": None,
    }
    end_level = fit.intercept + fit.slope * ((int(t[-1]) - int(t[0])) / 1e9)
    if limit and fit.slope > 0:
        out["time_to_limit_h"] = round(max(0.0, (limit - end_level) / fit.slope / per_h), 3)
    return out


def describe_growth(g: dict[str, Any]) -> str:
    """One line for people: slope, interval, and why the interval is wide when it is."""
    lo, hi = g["ci_mib_per_hour"]
    text = f"{g['mib_per_hour']:+.2f} MiB/h (95 % CI {lo:+.2f}..{hi:+.2f})"
    if g.get("ci_widened_by", 1.0) >= 1.5:
        text += (
            f", interval x{g['ci_widened_by']:g} wider because memory wanders "
            f"(residual autocorrelation {g['residual_r1']:.2f})"
        )
    return text


def analyse_soak(ctx: Ctx, ph: Phase, limit: int | None) -> dict[str, Any]:
    g = growth(ctx, ph.t_start, ph.t_end, limit)
    return {"growth": g, "stabilized": g["stabilized"] if g else None}


def analyse_phases(
    ctx: Ctx, limit: int | None, target_concurrency: float | None = None
) -> tuple[list[Phase], list[dict[str, Any]]]:
    phases = find_phases(ctx)
    out: list[dict[str, Any]] = []
    for i, ph in enumerate(phases):
        pk = ctx.peak(ph.t_start, ph.t_end)
        mean = ctx.mean(ph.t_start, ph.t_end)
        d: dict[str, Any] = {
            "name": ph.name,
            "kind": ph.kind,
            "t_start": ctx.rel(ph.t_start),
            "t_end": ctx.rel(ph.t_end),
            "duration_s": round((ph.t_end - ph.t_start) / 1e9, 6),
            "peak_bytes": pk[0] if pk else None,
            "peak_t": ctx.rel(pk[1]) if pk else None,
            "mean_bytes": int(round(mean)) if mean is not None else None,
            "ended": ph.ended,
            "attrs": {k: v for k, v in ph.attrs.items() if not k.startswith("end.")},
            "series": series_percentiles(ctx.src, ph.t_start, ph.t_end),
            "load": load_summary(ctx.src, ph.t_start, ph.t_end),
        }
        after = phases[i + 1].t_end if i + 1 < len(phases) else ctx.src.t_end
        if ph.kind == "startup":
            d.update(analyse_startup(ctx, ph, after))
        elif ph.kind == "ramp":
            d.update(analyse_ramp(ctx, ph, target_concurrency))
        elif ph.kind in ("burst", "spike"):  # a spike phase is a single burst
            d.update(analyse_burst(ctx, ph))
        elif ph.kind == "soak":
            d.update(analyse_soak(ctx, ph, limit))
        out.append(d)
    return phases, out
