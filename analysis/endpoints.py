"""Memory per endpoint: which request name holds the memory.

The driver (and the Locust plugin) put each request name's in-flight count in every
``load`` message (``endpoints``). Over the ramp and burst phases, memory is fitted
against all of them at once (ordinary least squares, one coefficient per endpoint plus
a base level): each coefficient is that endpoint's bytes per request in flight.

That only works when the endpoints' counts moved apart. In one mixed ramp they rise
together, every weighting of them explains memory equally well, and the fit cannot say
which endpoint costs what: the verdict then says so plainly, names the pair, and points
to a staggered scenario (each endpoint ramped on its own).

Intervals are 95 % (Student t), widened for autocorrelated residuals the way the soak
trend's are (a series of 100 ms rows is not 1 000 independent observations).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .context import Ctx
from .phases import Phase

FIT_KINDS = ("ramp", "burst", "spike")
COLLINEAR_CORRELATION = 0.95  # |r| between two endpoints' counts at or above this: not separable
COLLINEAR_CONDITION = 30.0  # condition number of the standardised counts at or above this: not separable
MIN_ROWS_PER_TERM = 5
STAGGERED_HINT = (
    "ramp the endpoints one after another (a phase's `requests` names the ones it uses; "
    "the bundled scenario `staggered` is a template: spikewatch drive staggered)"
)


def _t975(df: int) -> float:
    """Student t 97.5 % quantile (Cornish-Fisher from the normal; close enough from df 3)."""
    z = 1.959964
    if df <= 0:
        return float("inf")
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


def _level(ep: Any) -> float:
    """The interval's mean in-flight count when the sender measured it, else the count at its end."""
    if not isinstance(ep, dict):
        return 0.0
    v = ep.get("in_flight_mean")
    if not isinstance(v, (int, float)):
        v = ep.get("in_flight")
    return float(v) if isinstance(v, (int, float)) else 0.0


def _rows(
    ctx: Ctx, records: list[dict[str, Any]], names: list[str], windows: list[tuple[int, int]]
) -> tuple[np.ndarray, np.ndarray]:
    xs: list[list[float]] = []
    ys: list[float] = []
    for b in records:
        t = b.get("t")
        eps = b.get("endpoints")
        if not isinstance(t, int) or not isinstance(eps, dict):
            continue
        if not any(a <= t <= z for a, z in windows):
            continue
        iv = b.get("interval_ns")
        iv = int(iv) if isinstance(iv, (int, float)) and iv > 0 else 100_000_000
        m = ctx.mean(t - iv, t)
        if m is None:
            continue
        xs.append([_level(eps.get(n)) for n in names])
        ys.append(m)
    return np.array(xs, dtype=np.float64).reshape(-1, len(names)), np.array(ys, dtype=np.float64)


def _totals(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for b in records:
        eps = b.get("endpoints")
        if not isinstance(eps, dict):
            continue
        for name, e in eps.items():
            if not isinstance(e, dict):
                continue
            row = out.setdefault(
                name, {"name": name, "completed": None, "errors": 0, "in_flight_max": 0, "lat_p99_max_ns": None}
            )
            if isinstance(e.get("completed"), int):  # `spikewatch drive` sends only in_flight per name
                row["completed"] = (row["completed"] or 0) + e["completed"]
            row["errors"] += sum(int(v) for v in (e.get("errors") or {}).values())
            row["in_flight_max"] = max(row["in_flight_max"], int(e.get("in_flight") or 0))
            p99 = e.get("lat_p99_ns")
            if isinstance(p99, (int, float)):
                row["lat_p99_max_ns"] = int(max(row["lat_p99_max_ns"] or 0, p99))
    return out


def _vague(row: dict[str, Any]) -> bool:
    """An interval whose half-width exceeds half the estimate (or that straddles zero)."""
    lo, hi = row["ci95"]
    b = row["bytes_per_inflight"]
    return bool(lo <= 0 <= hi or (hi - lo) / 2 > 0.5 * abs(b))


def attribute(ctx: Ctx, phases: list[Phase]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(``endpoints`` rows, ``endpoint_attribution`` verdict) for the report."""
    records = ctx.src.load_records
    totals = _totals(records)
    names = list(totals)
    verdict: dict[str, Any] = {
        "verdict": "no data",
        "reason": "",
        "rows": 0,
        "phases": [],
        "r2": None,
        "base_bytes": None,
        "condition_number": None,
        "max_correlation": None,
        "pair": None,
        "suggestion": None,
    }
    rows_out = [dict(totals[n], bytes_per_inflight=None, ci95=None, std_error=None, estimable=False) for n in names]
    if not names:
        verdict["reason"] = (
            "the load telemetry has no per-endpoint in-flight counts (an older driver, or none attached)"
        )
        return rows_out, verdict
    fit_phases = [p for p in phases if p.kind in FIT_KINDS]
    basis = "ramp and burst phases"
    if not fit_phases:
        fit_phases = [p for p in phases if p.kind not in ("startup", "idle")] or phases
        basis = "all loaded phases (no ramp or burst)"
    windows = [(p.t_start, p.t_end) for p in fit_phases] or [(ctx.src.t0, ctx.src.t_end)]
    verdict["phases"] = [p.name for p in fit_phases]
    X, y = _rows(ctx, records, names, windows)
    verdict["rows"] = int(len(y))
    varying = [j for j in range(len(names)) if len(y) and np.ptp(X[:, j]) > 0]
    for j in range(len(names)):
        if j not in varying:
            rows_out[j]["reason"] = "its in-flight count never changed in the fitted phases"
    if not varying:
        verdict["reason"] = f"no endpoint's in-flight count changed over the {basis}"
        return rows_out, verdict
    k = len(varying)
    if len(y) < MIN_ROWS_PER_TERM * (k + 1):
        verdict.update(
            verdict="insufficient", reason=f"{len(y)} telemetry rows over the {basis}: too few for {k} endpoints"
        )
        return rows_out, verdict
    Xv = X[:, varying]
    # Collinearity on standardised columns, so units and scale do not matter.
    Z = (Xv - Xv.mean(axis=0)) / Xv.std(axis=0)
    cond = float(np.linalg.cond(Z)) if k > 1 else 1.0
    corr = np.corrcoef(Xv, rowvar=False) if k > 1 else np.ones((1, 1))
    pair: list[str] = []
    max_r = 0.0
    for a in range(k):
        for b in range(a + 1, k):
            r = float(corr[a, b])
            if abs(r) > abs(max_r):
                max_r, pair = r, [names[varying[a]], names[varying[b]]]
    A = np.column_stack([np.ones(len(y)), Xv])
    coef, *_ = np.linalg.lstsq(A, y, rcond=None)
    resid = y - A @ coef
    df = len(y) - (k + 1)
    s2 = float(resid @ resid) / df
    cov = s2 * np.linalg.pinv(A.T @ A)
    se = np.sqrt(np.clip(np.diag(cov), 0, None))
    r1 = float(np.corrcoef(resid[:-1], resid[1:])[0, 1]) if len(resid) > 3 and np.std(resid) > 0 else 0.0
    r1 = 0.0 if math.isnan(r1) else min(max(r1, 0.0), 0.95)
    widen = math.sqrt((1 + r1) / (1 - r1))
    half = _t975(df) * se * widen
    ss_tot = float(((y - y.mean()) ** 2).sum())
    r2 = 1 - float(resid @ resid) / ss_tot if ss_tot > 0 else None
    vif = np.diag(np.linalg.pinv(corr)) if k > 1 else np.ones(1)
    for i, j in enumerate(varying):
        est, h = float(coef[i + 1]), float(half[i + 1])
        rows_out[j].update(
            bytes_per_inflight=int(round(est)),
            ci95=[int(round(est - h)), int(round(est + h))],
            std_error=int(round(float(se[i + 1]) * widen)),
            vif=round(float(vif[i]), 2),
            estimable=True,
        )
    collinear = k > 1 and (abs(max_r) >= COLLINEAR_CORRELATION or cond >= COLLINEAR_CONDITION)
    verdict.update(
        rows=int(len(y)),
        r2=round(r2, 4) if r2 is not None else None,
        base_bytes=int(round(float(coef[0]))),
        condition_number=round(cond, 2),
        max_correlation=round(max_r, 4) if k > 1 else None,
        pair=pair or None,
        residual_r1=round(r1, 3),
        basis=basis,
    )
    if collinear:
        for j in varying:
            rows_out[j]["estimable"] = False
        verdict.update(
            verdict="collinear",
            reason=(
                f"{pair[0]} and {pair[1]} moved together (in-flight correlation {max_r:.2f}, condition number "
                f"{cond:.0f}): their memory cannot be told apart, the per-endpoint figures are not meaningful"
            ),
            suggestion=STAGGERED_HINT,
        )
    elif k == 1:
        verdict.update(
            verdict="single endpoint", reason=f"only {names[varying[0]]} varied: its figure is the whole mix's cost"
        )
    else:
        vague = [names[j] for j in varying if _vague(rows_out[j])]
        if vague:
            for j in varying:
                if names[j] in vague:
                    rows_out[j]["estimable"] = False
            verdict.update(
                verdict="uncertain",
                reason=(
                    f"the endpoints' in-flight counts did not move apart enough (largest correlation {max_r:.2f}) "
                    f"to tell their costs apart: the 95 % interval of {', '.join(vague)} is wider than the "
                    "estimate itself"
                ),
                suggestion=STAGGERED_HINT,
            )
        else:
            verdict.update(
                verdict="separable",
                reason=f"the endpoints' in-flight counts moved apart (largest correlation {max_r:.2f})",
            )
    return rows_out, verdict


def describe(verdict: dict[str, Any]) -> str:
    """One line for people."""
    v = verdict.get("verdict")
    text = f"memory per endpoint: {v}"
    if verdict.get("reason"):
        text += f" ({verdict['reason']})"
    if verdict.get("suggestion"):
        text += f"; {verdict['suggestion']}"
    return text
