"""Peak, p99 and mean per series, with the kernel's high-water marks folded in.

The sampler emits ``hwm_spike`` when the kernel's own peak (VmHWM, cgroup max
usage) shows a value above every sample of an interval: the memory got there
between two samples. Such a peak is the true peak (``peak_source = "hwm"``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from spikewatch.sampler.wire import protocol

from . import trees
from .reader import Source

# Slow (detail) fields worth reporting as series of their own (~10 Hz; the
# tree's PSS/USS every few hundred ms).
DETAIL_SERIES = ("cg_working_set", "rss_anon", "rss_file", "rss_shmem", "vm_swap", trees.PSS, trees.USS)
# A field read at its own time, not the detail's.
_DETAIL_TIME = {trees.PSS: "pss_t", trees.USS: "pss_t"}


def detail_series(src: Source, name: str) -> tuple[np.ndarray, np.ndarray] | None:
    col = src.details.get(name)
    if col is None:
        return None
    ok = ~np.isnan(col)
    if not ok.any():
        return None
    tcol = src.details.get(_DETAIL_TIME.get(name, "t"), src.details["t"])
    t = np.where(np.isnan(tcol), src.details["t"], tcol) if tcol.dtype.kind == "f" else tcol
    t, v = t[ok].astype(np.int64), col[ok].astype(np.int64)
    if len(t) > 1 and np.any(np.diff(t) < 0):
        order = np.argsort(t, kind="stable")
        t, v = t[order], v[order]
    return t, v


def series_arrays(src: Source, name: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(t, v) of a sampled series, or of a detail field used as a series."""
    s = src.series.get(name)
    if s is not None and len(s):
        return s.t, s.v
    return detail_series(src, name)


def headline_series(src: Source) -> str:
    """The series the report leads with (:func:`headline_choice`)."""
    return headline_choice(src)[0]


def headline_choice(src: Source) -> tuple[str, str]:
    """(series, why): cgroup usage under a limit; for a tree of several processes the
    cgroup's usage, else its PSS (summed RSS counts shared pages per process); else RSS."""
    name, why = trees.choose(src, lambda n: series_arrays(src, n) is not None)
    if name:
        return name, why
    for name in src.series:
        if len(src.series[name]):
            return name, name
    return protocol.SERIES_RSS, ""


def hwm_peaks(src: Source) -> dict[str, dict[str, Any]]:
    """Largest ``hwm_spike`` per series: {series: {bytes, t}} (t = middle of its interval)."""
    out: dict[str, dict[str, Any]] = {}
    for ev in src.events_of(protocol.EV_HWM_SPIKE):
        name, b = ev.get("series"), ev.get("bytes")
        if not name or not isinstance(b, (int, float)):
            continue
        if name not in out or b > out[name]["bytes"]:
            t_from, t_to = ev.get("t_from", ev.get("t")), ev.get("t_to", ev.get("t"))
            out[name] = {
                "bytes": int(b),
                "t": (t_from + t_to) // 2 if t_from and t_to else ev.get("t"),
                "t_from": t_from,
                "t_to": t_to,
            }
    return out


def series_stats(src: Source) -> dict[str, dict[str, Any]]:
    """Per series: peak_bytes, peak_t, mean_bytes, p99_bytes, peak_source, count, rate."""
    hwm = hwm_peaks(src)
    out: dict[str, dict[str, Any]] = {}
    names = [n for n in src.series if len(src.series[n])]
    names += [n for n in DETAIL_SERIES if n not in names and detail_series(src, n) is not None]
    st: dict[str, Any]
    fig = src.stream
    for name in names:
        acc = fig.stats.get(name) if fig is not None else None
        if acc is not None and acc.count:
            # streamed: the exact figures of the one pass (the series itself is its envelope)
            st = {
                "peak_bytes": acc.peak,
                "peak_t": round(src.rel(acc.peak_t), 6),
                "mean_bytes": int(round(acc.total / acc.count)),
                "p99_bytes": acc.percentile(99),
                "min_bytes": acc.vmin,
                "last_bytes": acc.last,
                "peak_source": "sampled",
                "sampled_peak_bytes": acc.peak,
                "count": acc.count,
                "rate": "sample" if name in src.series else "detail",
            }
            h = hwm.get(name)
            if h and h["bytes"] > st["peak_bytes"]:
                st.update(peak_bytes=h["bytes"], peak_t=round(src.rel(h["t"]), 6), peak_source="hwm")
            out[name] = st
            continue
        t, v = series_arrays(src, name)  # type: ignore[misc]
        i = int(np.argmax(v))
        st = {
            "peak_bytes": int(v[i]),
            "peak_t": round(src.rel(int(t[i])), 6),
            "mean_bytes": int(round(float(v.mean()))),
            "p99_bytes": int(np.percentile(v, 99)),
            "min_bytes": int(v.min()),
            "last_bytes": int(v[-1]),
            "peak_source": "sampled",
            "sampled_peak_bytes": int(v[i]),
            "count": int(len(v)),
            "rate": "sample" if name in src.series else "detail",
        }
        h = hwm.get(name)
        if h and h["bytes"] > st["peak_bytes"]:
            st.update(peak_bytes=h["bytes"], peak_t=round(src.rel(h["t"]), 6), peak_source="hwm")
        out[name] = st
    return out
