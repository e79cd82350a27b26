"""Incremental analyses over chunks of one series: what a report needs, in memory bounded
by the chart and the value range, not by the run.

Each accumulator takes the samples of one series in time order, a chunk at a time
(``feed(t, v)``: int64 ns, int64 bytes), and keeps only what its figure needs:

* :class:`SeriesAcc`: count, true peak and its time, min, last, exact sum (mean), a
  count per distinct value (p99, exact: memory series move in whole pages, so the
  distinct values are bounded by the range, not the run), sampling gaps;
* :class:`ScrapeAcc`: per interval and offset, the largest value a scraper saw (exact);
* :class:`Envelope`: min and max (with their times) per time bucket; buckets double in
  width so there are never more than ``cap`` of them: the chart and the in-memory
  analyses (phases, trend) read these points instead of every sample.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .scrape import DEFAULT_INTERVALS_S, EMPTY_ENTRY, interval_key, view_entry

I64_MIN = np.iinfo(np.int64).min
I64_MAX = np.iinfo(np.int64).max
_MAX_DISTINCT = 1 << 21  # beyond this many distinct values p99 is taken on pages (said in the stats)


def _distinct(
    v: np.ndarray, lo: int | None = None, hi: int | None = None, w: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(values, counts) like ``np.unique``; memory figures sit on a few pages, so mostly a bincount.
    ``lo`` and ``hi``: the chunk's min and max when the caller has them; ``w``: how many times
    each of ``v`` counts (runs of equal values)."""
    if lo is None or hi is None:
        lo, hi = int(v.min()), int(v.max())
    off = v - lo
    top = hi - lo
    step = 1
    if top >= 1 << 20 and not int(np.bitwise_or.reduce(off)) & 4095:
        step = 4096  # whole pages
        off >>= 12
        top >>= 12
    if top < 1 << 20:
        c = np.bincount(off, weights=w)
        nz = np.flatnonzero(c)
        return nz.astype(np.int64) * step + lo, c[nz] if w is None else c[nz].astype(np.int64)
    if w is None:
        return np.unique(v, return_counts=True)
    u, inv = np.unique(v, return_inverse=True)
    return u, np.bincount(inv, weights=w).astype(np.int64)


def steps_of(t: np.ndarray) -> tuple[int, np.ndarray]:
    """(largest step, the steps over 2 ms) between consecutive ``t`` (at least two)."""
    d = np.diff(t)
    big = d[d > 2_000_000]
    return (int(big.max()) if len(big) else int(d.max())), big


_MERGE_PARTS = 16  # chunks' value tables held before they are merged (bounds the count of small arrays)


class SeriesAcc:
    """Exact per-series figures, chunk by chunk."""

    def __init__(self, gaps: bool = True) -> None:
        self.count = 0
        self.peak = I64_MIN
        self.peak_t = 0
        self.vmin = I64_MAX
        self.last = 0
        self.first_t: int | None = None
        self.last_t: int | None = None
        self.total = 0  # exact: Python int
        self._vals: list[np.ndarray] = []
        self._cnts: list[np.ndarray] = []
        self._pending = 0
        self.values = np.zeros(0, np.int64)
        self.counts = np.zeros(0, np.int64)
        self.coarse = 1  # >1: values were rounded to this many bytes for the percentiles
        self.diff_max = 0
        self.gaps = gaps  # keep gap lengths (long_gaps): sampled series; a 10 Hz detail is all gaps
        self._diffs: list[np.ndarray] = []  # gap lengths above 2 ms (few), for long_gaps at the end
        self._n_diffs = 0
        self._gap_us = np.zeros(0, np.int64)  # compacted: gap lengths in µs and how many
        self._gap_n = np.zeros(0, np.int64)

    def feed(self, t: np.ndarray, v: np.ndarray, steps: dict[Any, Any] | None = None) -> None:
        """Samples in time order. ``steps``: a cache of :func:`steps_of` that the caller keeps
        while every array it passes is alive (series that share their times share it)."""
        n = len(v)
        if not n:
            return
        self._steps(t, steps)
        self.last = int(v[-1])
        self.count += n
        if self.coarse != 1:
            self._feed_each(t, v)
            return
        ch = np.flatnonzero(v[1:] != v[:-1])
        if len(ch) * 4 > n:  # a value on most ticks: sample by sample
            self._feed_each(t, v)
            return
        # memory moves in whole pages on a minority of ticks: the figures from the runs of equal values
        first = np.empty(len(ch) + 1, dtype=np.int64)
        first[0] = 0
        np.add(ch, 1, out=first[1:])
        rv = v[first]
        i = int(rv.argmax())
        hi = int(rv[i])
        if hi > self.peak:
            self.peak, self.peak_t = hi, int(t[first[i]])
        lo = int(rv.min())
        self.vmin = min(self.vmin, lo)
        u, c = _distinct(rv, lo, hi, np.diff(first, append=n))
        self._table(u, c, True)

    def _feed_each(self, t: np.ndarray, v: np.ndarray) -> None:
        i = int(v.argmax())
        hi = int(v[i])
        if hi > self.peak:
            self.peak, self.peak_t = hi, int(t[i])
        lo = int(v.min())
        self.vmin = min(self.vmin, lo)
        if self.coarse == 1:
            u, c = _distinct(v, lo, hi)
        else:
            self.total += int(v.sum())
            u, c = _distinct(v // self.coarse)
        self._table(u, c, self.coarse == 1)

    def _table(self, u: np.ndarray, c: np.ndarray, exact: bool) -> None:
        if exact:  # the sum from the value table: int64 wraps alike both ways, so it is v.sum() exactly
            self.total += int((u * c).sum())
        self._vals.append(u)
        self._cnts.append(c)
        self._pending += len(u)
        if self._pending > 1 << 13 or len(self._vals) > _MERGE_PARTS:
            self._merge()

    def _steps(self, t: np.ndarray, cache: dict[Any, Any] | None) -> None:
        """The largest step between samples, and the gaps over 2 ms (one from the last chunk included)."""
        edge = None if self.last_t is None else int(t[0]) - self.last_t
        if self.first_t is None:
            self.first_t = int(t[0])
        self.last_t = int(t[-1])
        big = None
        if len(t) > 1:
            if cache is None:
                dmax, big = steps_of(t)
            else:
                key = (t.__array_interface__["data"][0], len(t))
                got = cache.get(key)
                if got is None:
                    got = cache[key] = steps_of(t)
                dmax, big = got
            self.diff_max = max(self.diff_max, dmax)
            if not self.gaps:
                big = None
        if edge is not None:
            self.diff_max = max(self.diff_max, edge)
            if self.gaps and edge > 2_000_000:
                big = np.array([edge], np.int64) if big is None else np.concatenate(([edge], big))
        if big is not None and len(big):
            self._diffs.append(big)
            self._n_diffs += len(big)
            if self._n_diffs > 1 << 14:
                self._compact_gaps()
            elif len(self._diffs) > 64:  # one array, not one a chunk (the same lengths, exact)
                self._diffs = [np.concatenate(self._diffs)]

    def _merge(self) -> None:
        if not self._vals:
            return
        u = np.concatenate([self.values, *self._vals])
        c = np.concatenate([self.counts, *self._cnts])
        self._vals, self._cnts, self._pending = [], [], 0
        # every part is sorted already: a stable sort merges the runs
        order = np.argsort(u, kind="stable")
        u, c = u[order], c[order]
        firsts = np.flatnonzero(np.r_[True, u[1:] != u[:-1]])
        self.values, self.counts = u[firsts], np.add.reduceat(c.astype(np.int64), firsts)
        if len(self.values) > _MAX_DISTINCT:  # a wild series: fall back to pages, then coarser
            f = 4096 if self.coarse == 1 else 2
            self.coarse *= f
            self.values, inv = np.unique(self.values // f, return_inverse=True)
            self.counts = np.bincount(inv, weights=self.counts).astype(np.int64)

    def percentile(self, q: float) -> int:
        """As ``int(np.percentile(v, q))`` (linear) over every sample fed."""
        return int(self.percentile_f(q))

    def percentile_f(self, q: float) -> float:
        """As ``np.percentile(v, q)`` (linear) over every sample fed."""
        self._merge()
        rank = q / 100 * (self.count - 1)
        lo, hi = int(np.floor(rank)), int(np.ceil(rank))
        cum = np.cumsum(self.counts)
        vlo = int(self.values[int(np.searchsorted(cum, lo, side="right"))]) * self.coarse
        vhi = int(self.values[int(np.searchsorted(cum, hi, side="right"))]) * self.coarse
        return vlo + (vhi - vlo) * (rank - lo)

    def _compact_gaps(self) -> None:
        """Gap lengths as (µs, count) pairs: a sampler that keeps missing ticks stays bounded."""
        # rounded up: "longer than T" stays exact for any T in whole µs (5 periods of a ms, say)
        allv = np.concatenate([-(-np.concatenate(self._diffs) // 1000), np.repeat(self._gap_us, self._gap_n)])
        us, cnt = np.unique(allv, return_counts=True)
        self._gap_us, self._gap_n = us, cnt
        self._diffs, self._n_diffs = [], 0

    def long_gaps(self, period_ns: int | None) -> int:
        if not period_ns:
            return 0
        n = sum(int(np.count_nonzero(d > 5 * period_ns)) for d in self._diffs)
        return n + int(self._gap_n[self._gap_us * 1000 > 5 * period_ns].sum())


class ScrapeAcc:
    """:func:`scrape.scrape_view` without the whole series: per offset, the largest value seen."""

    def __init__(self, intervals_s: tuple[float, ...] = DEFAULT_INTERVALS_S, offsets: int = 500) -> None:
        self.intervals = [(s, int(round(s * 1e9))) for s in intervals_s]
        self.offsets = offsets
        self.t_start: int | None = None
        self.prev_t: int | None = None
        self.prev_v = 0
        self.state: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    def feed(self, t: np.ndarray, v: np.ndarray) -> None:
        if not len(t):
            return
        if self.t_start is None:
            self.t_start = int(t[0])
            for _, iv in self.intervals:
                n_off = int(max(1, min(self.offsets, iv)))
                phi = (np.arange(n_off, dtype=np.int64) * iv) // n_off
                self.state.append((phi, np.full(n_off, I64_MIN, np.int64), np.zeros(n_off, bool)))
        lo = self.t_start - 1 if self.prev_t is None else self.prev_t  # scrapes in (lo, hi]
        hi = int(t[-1])
        for (_, iv), (phi, best, has) in zip(self.intervals, self.state):
            k0 = max(0, (lo + 1 - self.t_start - int(phi[-1])) // iv)
            k1 = (hi - self.t_start) // iv
            if k1 < k0:
                continue
            # one row per scrape round, one column per offset: the times ascend in row order,
            # which the lookup in ``t`` is fastest for
            when = (self.t_start + np.arange(k0, k1 + 1, dtype=np.int64) * iv)[:, None] + phi[None, :]
            mask = (when > lo) & (when <= hi)
            if not mask.any():
                continue
            idx = np.searchsorted(t, when[mask], side="right") - 1
            seen = np.full(when.shape, I64_MIN, np.int64)
            seen[mask] = np.where(idx >= 0, v[np.clip(idx, 0, len(v) - 1)], self.prev_v)
            np.maximum(best, seen.max(axis=0), out=best)
            has |= mask.any(axis=0)
        self.prev_t, self.prev_v = hi, int(v[-1])

    def view(self, true_peak: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for (sec, iv), (phi, best_all, has) in zip(self.intervals, self.state):
            phi, best = phi[has], best_all[has]
            if self.t_start is None or self.prev_t is None:
                out[interval_key(sec)] = dict(EMPTY_ENTRY)
                continue
            out[interval_key(sec)] = view_entry(phi, best, true_peak, self.prev_t - self.t_start, iv)
        return out


def _seg_arg(v: np.ndarray, starts: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Per segment (``starts``), the index of the first sample equal to the segment's ``m``."""
    lens = np.diff(np.r_[starts, len(v)])
    pos = np.flatnonzero(v == np.repeat(m, lens))  # each segment has one at least
    return pos[np.searchsorted(pos, starts)]


class Envelope:
    """Min and max (and when) per time bucket, at most ``cap`` buckets: widths double as the run grows."""

    def __init__(self, cap: int = 16384, width_ns: int = 1_000_000) -> None:
        self.cap = cap
        self.w = width_ns
        self.origin: int | None = None
        self.lo = np.full(cap, I64_MAX, np.int64)
        self.hi = np.full(cap, I64_MIN, np.int64)
        self.tlo = np.zeros(cap, np.int64)
        self.thi = np.zeros(cap, np.int64)
        self.first: tuple[int, int] | None = None
        self.end: tuple[int, int] = (0, 0)

    def _halve(self) -> None:
        def pick(a: np.ndarray, ta: np.ndarray, better: Any) -> tuple[np.ndarray, np.ndarray]:
            a0, a1, t0, t1 = a[0::2], a[1::2], ta[0::2], ta[1::2]
            take1 = better(a1, a0)
            return np.where(take1, a1, a0), np.where(take1, t1, t0)

        half = self.cap // 2
        lo, tlo = pick(self.lo, self.tlo, np.less)
        hi, thi = pick(self.hi, self.thi, np.greater)
        self.lo[:half], self.tlo[:half], self.hi[:half], self.thi[:half] = lo, tlo, hi, thi
        self.lo[half:], self.hi[half:] = I64_MAX, I64_MIN
        self.w *= 2

    def feed(self, t: np.ndarray, v: np.ndarray, mono: bool | None = None) -> None:
        """``mono``: whether ``t`` never goes back (None: look)."""
        if not len(t):
            return
        if self.origin is None:
            self.origin = int(t[0])
            self.first = (int(t[0]), int(v[0]))
        self.end = (int(t[-1]), int(v[-1]))
        while (int(t[-1]) - self.origin) // self.w >= self.cap:
            self._halve()
        if mono is None:
            mono = len(t) < 2 or not bool((t[1:] < t[:-1]).any())
        if mono and int(t[0]) >= self.origin:
            # buckets cut where their edges fall in t: no bucket index a sample
            b0 = (int(t[0]) - self.origin) // self.w
            b1 = (int(t[-1]) - self.origin) // self.w
            edges = self.origin + self.w * np.arange(b0 + 1, b1 + 1, dtype=np.int64)
            cuts = np.searchsorted(t, edges, side="left")
            if b1 - b0 < 48:
                self._slices(t, v, b0, cuts.tolist())
                return
            starts = np.concatenate(([0], cuts))
            filled = starts < np.concatenate((cuts, [len(t)]))
            self._bulk(t, v, starts[filled], b0 + np.flatnonzero(filled))
            return
        idx = np.clip((t - self.origin) // self.w, 0, self.cap - 1)
        b0, b1 = int(idx[0]), int(idx[-1])
        if 0 <= b1 - b0 < 48 and np.all(idx[1:] >= idx[:-1]):
            self._slices(t, v, b0, np.searchsorted(idx, np.arange(b0 + 1, b1 + 1)).tolist())
            return
        starts = np.flatnonzero(np.r_[True, idx[1:] != idx[:-1]])
        self._bulk(t, v, starts, idx[starts])

    def _slices(self, t: np.ndarray, v: np.ndarray, b0: int, cuts: list[int]) -> None:
        """A chunk over a few wide buckets (a long run): a slice each is cheaper than the bulk path."""
        for k, (a, z) in enumerate(zip([0, *cuts], [*cuts, len(t)])):
            if z > a:
                seg = v[a:z]
                i, j = int(np.argmin(seg)), int(np.argmax(seg))
                bk = b0 + k
                if seg[i] < self.lo[bk]:
                    self.lo[bk], self.tlo[bk] = seg[i], t[a + i]
                if seg[j] > self.hi[bk]:
                    self.hi[bk], self.thi[bk] = seg[j], t[a + j]

    def _bulk(self, t: np.ndarray, v: np.ndarray, starts: np.ndarray, b: np.ndarray) -> None:
        """Buckets ``b`` beginning at ``starts`` (a bucket may repeat where times went back)."""
        mn, mx = np.minimum.reduceat(v, starts), np.maximum.reduceat(v, starts)
        imn, imx = _seg_arg(v, starts, mn), _seg_arg(v, starts, mx)
        # buckets repeat only where times went backwards or a chunk continues a bucket: fold in order
        upd = mn < self.lo[b]
        if len(np.unique(b)) == len(b):
            self.lo[b[upd]], self.tlo[b[upd]] = mn[upd], t[imn[upd]]
            upd = mx > self.hi[b]
            self.hi[b[upd]], self.thi[b[upd]] = mx[upd], t[imx[upd]]
            return
        for j in range(len(b)):
            k = b[j]
            if mn[j] < self.lo[k]:
                self.lo[k], self.tlo[k] = mn[j], t[imn[j]]
            if mx[j] > self.hi[k]:
                self.hi[k], self.thi[k] = mx[j], t[imx[j]]

    def points(self) -> tuple[np.ndarray, np.ndarray]:
        """Every bucket's min and max sample, the first and the last, in time order."""
        if self.first is None:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        ok = self.hi > I64_MIN
        t = np.concatenate(([self.first[0]], self.tlo[ok], self.thi[ok], [self.end[0]]))
        v = np.concatenate(([self.first[1]], self.lo[ok], self.hi[ok], [self.end[1]]))
        order = np.lexsort((v, t))
        t, v = t[order], v[order]
        keep = np.r_[True, (t[1:] != t[:-1]) | (v[1:] != v[:-1])]
        return t[keep], v[keep]


def merge_accs(accs: list[SeriesAcc]) -> SeriesAcc:
    """One :class:`SeriesAcc` for consecutive stretches of one series (in time order)."""
    out = SeriesAcc()
    accs = [a for a in accs if a.count]
    if not accs:
        return out
    prev_t: int | None = None
    for a in accs:
        a._merge()
        if a.peak > out.peak:
            out.peak, out.peak_t = a.peak, a.peak_t
        out.vmin = min(out.vmin, a.vmin)
        out.total += a.total
        out.count += a.count
        out.diff_max = max(out.diff_max, a.diff_max)
        out._diffs.extend(a._diffs)
        if len(a._gap_us):
            out._diffs.append(np.repeat(a._gap_us * 1000, a._gap_n))
        if prev_t is not None and a.first_t is not None:
            gap = a.first_t - prev_t  # the step between two stretches
            out.diff_max = max(out.diff_max, gap)
            if gap > 2_000_000:
                out._diffs.append(np.array([gap], np.int64))
        prev_t = a.last_t
        out._vals.append(a.values * a.coarse)
        out._cnts.append(a.counts)
    out.first_t, out.last_t, out.last = accs[0].first_t, accs[-1].last_t, accs[-1].last
    out._pending = 1
    out._merge()
    return out


class Segments:
    """A series' :class:`SeriesAcc` per stretch between phase markers, so a phase's own
    figures (peak, mean, median, p99) are exact too: a phase spans whole stretches."""

    MAX = 1024  # stretches; markers beyond this many do not split further

    def __init__(self, gaps: bool = True) -> None:
        self.gaps = gaps
        self.accs: dict[int, SeriesAcc] = {}  # stretch start (a marker's t, or I64_MIN) -> figures

    def feed(self, t: np.ndarray, v: np.ndarray, bounds: np.ndarray) -> None:
        if not len(t):
            return
        lo = int(np.searchsorted(bounds, t[0], side="right")) - 1
        hi = int(np.searchsorted(bounds, t[-1], side="right")) - 1
        if lo == hi:
            self._acc(int(bounds[lo]) if lo >= 0 else int(I64_MIN)).feed(t, v)
            return
        cuts = np.searchsorted(t, bounds[lo + 1 : hi + 1], side="left").tolist()
        edges = [0, *cuts, len(t)]
        for k, (a, b) in enumerate(zip(edges, edges[1:])):
            if b > a:
                i = lo + k
                self._acc(int(bounds[i]) if i >= 0 else int(I64_MIN)).feed(t[a:b], v[a:b])

    def _acc(self, key: int) -> SeriesAcc:
        acc = self.accs.get(key)
        if acc is None:
            if len(self.accs) >= self.MAX:
                key = max(self.accs)  # too many markers: the last stretch goes on
                return self.accs[key]
            acc = self.accs[key] = SeriesAcc(self.gaps)
        return acc

    def whole(self) -> SeriesAcc:
        return merge_accs([self.accs[k] for k in sorted(self.accs)])

    def window(self, a: int, b: int, bounds: np.ndarray, t0: int, t_end: int) -> SeriesAcc | None:
        """The figures over a <= t < b when both are stretch edges (a marker's time, or the
        run's ends); None when the window cuts a stretch."""
        keys = set(bounds.tolist())
        if (a not in keys and a > t0) or (b not in keys and b < t_end) or len(self.accs) >= self.MAX:
            return None
        return merge_accs([acc for k, acc in sorted(self.accs.items()) if (k >= a or a <= t0) and k < b])
