"""Min/max bucketing for charts: one bucket per drawn column, never an average.

A 2 ms spike in a 5-minute window falls into one bucket; keeping that bucket's
max (and min) is what makes it reach its full height on screen, where a mean
or a point sample would shave it off.
"""

from __future__ import annotations

import numpy as np


def minmax_envelope(t: np.ndarray, v: np.ndarray, t_start: int, t_end: int,
                    buckets: int) -> tuple[np.ndarray, np.ndarray]:
    """Min and max of ``v`` in each of ``buckets`` equal slices of ``[t_start, t_end]``.

    ``t`` must be sorted ascending (sampler monotonic ns). Empty buckets are NaN.
    Samples outside the interval are ignored; ``t_end`` itself belongs to the
    last bucket so the newest sample is always drawn.
    """
    mins = np.full(buckets, np.nan)
    maxs = np.full(buckets, np.nan)
    if buckets <= 0 or t_end <= t_start or len(t) == 0:
        return mins, maxs
    lo = int(np.searchsorted(t, t_start, "left"))
    hi = int(np.searchsorted(t, t_end, "right"))
    if hi <= lo:
        return mins, maxs
    t = t[lo:hi]
    v = np.asarray(v[lo:hi], dtype=np.float64)
    span = t_end - t_start
    # Integer arithmetic on ns: no float rounding can move a sample to a neighbour bucket.
    idx = ((t - t_start) * buckets) // span
    np.minimum(idx, buckets - 1, out=idx)
    # idx is sorted, so each bucket is one contiguous run: reduceat over run starts.
    starts = np.flatnonzero(np.r_[True, idx[1:] != idx[:-1]])
    which = idx[starts]
    mins[which] = np.minimum.reduceat(v, starts)
    maxs[which] = np.maximum.reduceat(v, starts)
    return mins, maxs
