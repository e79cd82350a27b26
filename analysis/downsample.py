"""Min/max envelopes for display: a chart never averages a spike away.

A plot is a few thousand pixels wide; a recording holds millions of samples.
Each pixel column (bucket) keeps its minimum *and* maximum, so a 1 ms spike in
an hour still draws as a full-height vertical stroke.
"""

from __future__ import annotations

import numpy as np


def bucket_minmax(idx: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Min and max of ``v`` per bucket, given each sample's bucket number ``idx``.

    ``idx`` must be non-decreasing (samples in time order) and non-empty.
    Returns ``(which, lo, hi)`` for the non-empty buckets: their numbers and
    the smallest and largest value in each. Every display path (HTML report,
    live console) buckets through here, so none can average a spike away.
    """
    # idx is sorted, so each bucket is one contiguous run: reduceat over run starts.
    starts = np.flatnonzero(np.r_[True, idx[1:] != idx[:-1]])
    return idx[starts], np.minimum.reduceat(v, starts), np.maximum.reduceat(v, starts)


def minmax(
    t: np.ndarray, v: np.ndarray, buckets: int = 2000, t_range: tuple[float, float] | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bucket ``(t, v)`` by time into ``buckets`` equal columns.

    Returns ``(bucket_t, lo, hi)`` for the non-empty buckets only: ``bucket_t``
    is the time of each bucket's start (same unit as ``t``), ``lo``/``hi`` the
    smallest and largest value in it. With fewer samples than buckets the
    samples are returned as they are (``lo == hi``).
    """
    t = np.asarray(t)
    v = np.asarray(v)
    if len(t) == 0:
        return t[:0], v[:0], v[:0]
    if len(t) <= buckets:
        return t.copy(), v.copy(), v.copy()
    t_lo, t_hi = (t[0], t[-1]) if t_range is None else t_range
    span = max(float(t_hi - t_lo), 1.0)
    idx = ((t - t_lo) * (buckets / span)).astype(np.int64)
    np.clip(idx, 0, buckets - 1, out=idx)
    which, lo, hi = bucket_minmax(idx, v)
    bt = t_lo + (which * span / buckets)
    return bt.astype(t.dtype) if np.issubdtype(t.dtype, np.integer) else bt, lo, hi


def envelope_xy(t: np.ndarray, v: np.ndarray, buckets: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    """One polyline through (t, min), (t, max) of every bucket: plot it as a line.

    Drawn this way each pixel column is a vertical stroke spanning everything
    that happened in it, which is what an oscilloscope shows.
    """
    bt, lo, hi = minmax(t, v, buckets)
    x = np.repeat(bt, 2)
    y = np.empty(2 * len(lo), dtype=np.result_type(lo, hi))
    y[0::2] = lo
    y[1::2] = hi
    return x, y
