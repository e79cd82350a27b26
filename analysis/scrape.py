"""What a point-sampling scraper (Prometheus, a kubelet dashboard) would have shown.

A scraper with interval I and offset φ reads the current value at φ, φ+I, φ+2I…
(the value of the last sample at or before each scrape: a gauge). Over a grid
of offsets φ in [0, I) we take, per offset, the largest value it saw; then

* ``max_bytes``: the median over offsets (what a dashboard typically shows),
* ``missed_fraction``: 1 − max_bytes / true peak,
* ``hit_probability``: the share of offsets that saw ≥ 90 % of the true peak.

Offsets are counted from the start of the recording; an offset whose scrapes
all fall outside the sampled span is left out.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

HIT_LEVEL = 0.9
DEFAULT_INTERVALS_S: tuple[float, ...] = (15.0, 30.0, 60.0)


def interval_key(seconds: float) -> str:
    return f"{seconds:g}s"


def scraped_maxima(
    t: np.ndarray, v: np.ndarray, interval_ns: int, t_start: int, offsets: int = 500
) -> tuple[np.ndarray, np.ndarray]:
    """(offsets_ns, largest value each offset's scrapes saw), vectorised.

    Offsets are spaced evenly over one interval (at most one per ns).
    """
    if len(t) == 0:
        return np.zeros(0, np.int64), np.zeros(0, v.dtype)
    n_off = int(max(1, min(offsets, interval_ns)))
    phi = (np.arange(n_off, dtype=np.int64) * interval_ns) // n_off
    t_end = int(t[-1])
    n_scrapes = int((t_end - t_start) // interval_ns) + 1
    k = np.arange(n_scrapes, dtype=np.int64) * interval_ns
    when = t_start + phi[:, None] + k[None, :]  # (offsets, scrapes)
    idx = np.searchsorted(t, when, side="right") - 1
    valid = (idx >= 0) & (when <= t_end)
    seen = np.where(valid, v[np.clip(idx, 0, len(v) - 1)], np.iinfo(np.int64).min)
    best = seen.max(axis=1)
    has = valid.any(axis=1)
    return phi[has], best[has]


def median_offset(phi: np.ndarray, best: np.ndarray) -> int:
    """The offset whose maximum is the median (for drawing what that dashboard saw)."""
    med = np.median(best)
    return int(phi[int(np.argmin(np.abs(best - med)))])


EMPTY_ENTRY: dict[str, Any] = {"max_bytes": None, "missed_fraction": None, "hit_probability": None}


def view_entry(phi: np.ndarray, best: np.ndarray, true_peak: int, span_ns: int, interval_ns: int) -> dict[str, Any]:
    """One interval's entry of ``scrape_view`` from the maximum each scrape offset saw
    (the in-memory and the streamed report both build it here)."""
    if len(best) == 0 or true_peak <= 0:
        return dict(EMPTY_ENTRY)
    max_bytes = int(np.median(best))
    return {
        "max_bytes": max_bytes,
        "missed_fraction": round(max(0.0, 1.0 - max_bytes / true_peak), 6),
        "hit_probability": round(float(np.mean(best >= HIT_LEVEL * true_peak)), 6),
        "worst_bytes": int(best.min()),
        "best_bytes": int(best.max()),
        "offsets": int(len(best)),
        "scrapes_per_offset": span_ns // interval_ns + 1,
        "median_offset_s": round(median_offset(phi, best) / 1e9, 6),
    }


def scrape_view(
    t: np.ndarray,
    v: np.ndarray,
    true_peak: int,
    t_start: int,
    intervals_s: Sequence[float] = DEFAULT_INTERVALS_S,
    offsets: int = 500,
) -> dict[str, Any]:
    """The ``scrape_view`` section of the report for one series."""
    out: dict[str, Any] = {}
    for sec in intervals_s:
        interval_ns = int(round(sec * 1e9))
        phi, best = scraped_maxima(t, v, interval_ns, t_start, offsets)
        out[interval_key(sec)] = view_entry(phi, best, true_peak, int(t[-1]) - t_start, interval_ns)
    return out


def scrape_points(
    t: np.ndarray, v: np.ndarray, interval_s: float, offset_s: float, t_start: int
) -> tuple[np.ndarray, np.ndarray]:
    """The (t, value) points one scraper saw: for drawing on the chart."""
    interval_ns = int(round(interval_s * 1e9))
    when = (
        t_start
        + int(round(offset_s * 1e9))
        + np.arange(int((t[-1] - t_start) // interval_ns) + 1, dtype=np.int64) * interval_ns
    )
    when = when[when <= t[-1]]
    idx = np.searchsorted(t, when, side="right") - 1
    ok = idx >= 0
    return when[ok], v[idx[ok]]
