"""Per-phase figures every kind of phase gets: memory percentiles and what the driver achieved.

``compare`` sets runs side by side phase by phase, so each phase row carries
p50/p99/max of RSS, cgroup usage and working set, and the driver's throughput
and latency over the phase (from its load telemetry, ~10 per second).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .peaks import series_arrays
from .reader import Source

# The series a phase comparison is about: the process tree, the cgroup, what the kubelet evicts on.
PHASE_SERIES = ("rss", "cg_usage", "cg_working_set")


def series_percentiles(src: Source, a: int, b: int) -> dict[str, dict[str, int]]:
    """{series: {p50_bytes, p99_bytes, max_bytes}} over samples with a <= t <= b."""
    out: dict[str, dict[str, int]] = {}
    fig = src.stream
    for name in PHASE_SERIES:
        acc = fig.window(name, a, b) if fig is not None else None
        if acc is not None:  # a streamed run: exact over the phase's stretches
            out[name] = {"p50_bytes": acc.percentile(50), "p99_bytes": acc.percentile(99), "max_bytes": acc.peak}
            continue
        arrs = series_arrays(src, name)
        if arrs is None:
            continue
        t, v = arrs
        w = v[int(np.searchsorted(t, a, side="left")) : int(np.searchsorted(t, b, side="right"))]
        if not len(w):
            continue
        p50, p99 = np.percentile(w, [50, 99])
        out[name] = {"p50_bytes": int(p50), "p99_bytes": int(p99), "max_bytes": int(w.max())}
    return out


def load_summary(src: Source, a: int, b: int) -> dict[str, Any] | None:
    """Throughput, errors and latency from the driver's telemetry in [a, b]; None without any.

    Latency is what the telemetry carries: per-interval percentiles. The phase's
    figures are their means weighted by the requests each interval completed
    (not a true phase-wide percentile, which would need the driver's histogram).
    """
    load = src.load
    if not load or "t" not in load:
        return None
    m = (load["t"] > a) & (load["t"] <= b)
    if not m.any():
        return None
    completed = np.nan_to_num(load.get("completed", np.zeros(len(m)))[m])
    done = float(completed.sum())
    span = (b - a) / 1e9
    errors = 0
    for rec in src.load_records:
        t = int(rec.get("t", 0))
        if a < t <= b and isinstance(rec.get("errors"), dict):
            errors += sum(int(v) for v in rec["errors"].values())
    out: dict[str, Any] = {
        "completed": int(done),
        "errors": errors,
        "throughput_rps": round(done / span, 3) if span > 0 else None,
        "error_rate": round(errors / done, 6) if done else None,
        "latency_p50_ms": None,
        "latency_p99_ms": None,
    }
    for key, col in (("latency_p50_ms", "lat_p50_ns"), ("latency_p99_ms", "lat_p99_ns")):
        lat = load.get(col)
        if lat is None:
            continue
        lat = lat[m]
        ok = ~np.isnan(lat) & (completed > 0)
        if ok.any():
            out[key] = round(float(np.average(lat[ok], weights=completed[ok])) / 1e6, 3)
    return out
