"""Min/max bucketing for charts: one bucket per drawn column, never an average.

A 2 ms spike in a 5-minute window falls into one bucket; keeping that bucket's
max (and min) is what makes it reach its full height on screen, where a mean
or a point sample would shave it off.
"""

from __future__ import annotations

import numpy as np
from spikewatch.analysis.downsample import bucket_minmax


def minmax_envelope(
    t: np.ndarray, v: np.ndarray, t_start: int, t_end: int, buckets: int
) -> tuple[np.ndarray, np.ndarray]:
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
    idx: np.ndarray = ((t - t_start) * buckets) // span
    np.minimum(idx, buckets - 1, out=idx)
    which, low, high = bucket_minmax(idx, v)
    mins[which] = low
    maxs[which] = high
    return mins, maxs


class EnvelopeCache:
    """Min/max per bucket for a sliding window, recomputing only buckets that can still change.

    Buckets are aligned to multiples of ``width_ns`` on the sampler clock, so a
    bucket whose end the stream has passed is final; each draw then reads only
    the samples that arrived since the previous one instead of the whole window
    (300,000 samples for 5 minutes at 1 kHz).
    """

    def __init__(self) -> None:
        self._key: object = None
        self._k0 = 0  # absolute bucket index of _mins[0]
        self._final = 0  # buckets below this index are complete
        self._mins = np.zeros(0)
        self._maxs = np.zeros(0)

    def envelope(
        self, fetch, key: object, width_ns: int, k_first: int, k_last: int, newest_t: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Buckets ``k_first..k_last`` (bucket k spans [k·width, (k+1)·width)).

        ``fetch(t_from, t_to)`` returns the sorted (t, v) samples in that closed
        interval; ``key`` names what is charted (series, width): a new key starts
        over. ``newest_t`` is the newest sample time: buckets ending at or before
        it are kept for later draws.
        """
        n = k_last - k_first + 1
        mins = np.full(n, np.nan)
        maxs = np.full(n, np.nan)
        start = k_first
        if key == self._key:
            # Reuse the overlap of complete buckets from the previous draw.
            lo, hi = max(k_first, self._k0), min(self._final, k_last + 1, self._k0 + len(self._mins))
            if hi > lo:
                mins[lo - k_first : hi - k_first] = self._mins[lo - self._k0 : hi - self._k0]
                maxs[lo - k_first : hi - k_first] = self._maxs[lo - self._k0 : hi - self._k0]
                start = hi if lo == k_first else k_first
        if start <= k_last:
            t, v = fetch(start * width_ns, (k_last + 1) * width_ns - 1)
            m, x = minmax_envelope(t, v, start * width_ns, (k_last + 1) * width_ns, k_last - start + 1)
            mins[start - k_first :], maxs[start - k_first :] = m, x
        self._key, self._k0, self._mins, self._maxs = key, k_first, mins, maxs
        self._final = min(k_last + 1, (newest_t + 1) // width_ns)
        return mins, maxs
