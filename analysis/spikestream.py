"""Spike detection chunk by chunk, with the same result as over the whole series.

The baseline at a sample depends only on samples within half its window (5 s by
default) and a spike's end on the sample after it, so the series is cut into cores
of ``core_s`` seconds, each analysed with ``context`` seconds of the neighbours on
both sides; a spike belongs to the core its first sample falls in. Only a core and
its context are ever held (about a minute of samples, not the run).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from spikewatch.sampler.wire import protocol

from .spikes import SpikeParams, base_at, baseline, runs, runs_of

# seconds of samples analysed at a time, with the context on both sides (120 s held ~5 MiB more at the peak)
CORE_S = 60.0


class SpikeAcc:
    def __init__(self, name: str, p: SpikeParams | None = None, core_s: float | None = None) -> None:
        self.name = name
        self.p = p or SpikeParams()
        self.ctx_ns = int((self.p.window_s / 2 + 2 * self.p.bucket_ms / 1000 + self.p.merge_ms / 1000 + 1) * 1e9)
        self.core_ns = int((CORE_S if core_s is None else core_s) * 1e9)
        self.origin: int | None = None
        self.core_start = 0
        self.ts: list[np.ndarray] = []
        self.vs: list[np.ndarray] = []
        self.buf_end = 0
        self.inorder = True
        self.found: list[dict[str, Any]] = []
        self.pending: list[dict[str, Any]] = []  # hwm_spike events whose baseline is not known yet
        self.ev_base: dict[int, float] = {}  # id(event) -> baseline where it starts

    def event(self, ev: dict[str, Any]) -> None:
        if ev.get("kind") == protocol.EV_HWM_SPIKE and ev.get("series") == self.name:
            if isinstance(ev.get("bytes"), (int, float)):
                self.pending.append(ev)

    def feed(self, t: np.ndarray, v: np.ndarray, mono: bool = False) -> None:
        """``mono``: ``t`` never goes back (else it is looked at)."""
        if not len(t):
            return
        # whether what is held, in order of arrival, is in time order too
        last = self.ts[-1] if self.ts else None
        self.inorder = self.inorder and mono and (last is None or not len(last) or int(last[-1]) <= int(t[0]))
        if self.origin is None:
            self.origin = self.core_start = int(t[0])
        self.ts.append(t)
        self.vs.append(v)
        self.buf_end = max(self.buf_end, int(t[-1]))
        while self.buf_end >= self.core_start + self.core_ns + self.ctx_ns:
            self._process(self.core_start + self.core_ns)

    def _process(self, core_end: int | None) -> None:
        t = np.concatenate(self.ts) if len(self.ts) > 1 else self.ts[0]
        v = np.concatenate(self.vs) if len(self.vs) > 1 else self.vs[0]
        if not self.inorder and len(t) > 1 and np.any(np.diff(t) < 0):
            order = np.argsort(t, kind="stable")
            t, v = t[order], v[order]
        self.inorder = True  # sorted now, and what is kept of it stays so
        lo = self.core_start
        hi = core_end if core_end is not None else int(t[-1]) + 1
        if core_end is not None:
            j = int(np.searchsorted(t, core_end + self.ctx_ns, side="right"))
            tw, vw = t[:j], v[:j]
        else:
            tw, vw = t, v
        if len(tw) and self.origin is not None:
            bl = Buckets(tw, vw, self.p, self.origin)
            found, at = bl.runs(), bl.at
        else:  # nothing to bucket: the whole-series functions say what that means
            base = baseline(tw, vw, self.p, self.origin)
            found = runs(tw, vw, base, self.p)

            def at(a: int) -> float:
                return base_at(tw, base, a)

        for s in found:
            if lo <= s["_t0"] < hi:
                self.found.append(s)
        keep = []
        for ev in self.pending:
            a = int(ev.get("t_from", ev["t"]))
            if a < hi or core_end is None:
                self.ev_base[id(ev)] = at(a)
            else:
                keep.append(ev)
        self.pending = keep
        if core_end is None:
            self.ts, self.vs = [], []
            return
        i = int(np.searchsorted(t, core_end - self.ctx_ns, side="left"))
        self.ts, self.vs = [t[i:]], [v[i:]]
        self.core_start = core_end

    def finish(self) -> None:
        if self.ts:
            self._process(None)
        for ev in self.pending:
            self.ev_base[id(ev)] = 0.0
        self.pending = []

    def bases(self, events: list[dict[str, Any]]) -> list[float]:
        """The baseline at each of ``events`` (the report's hwm events of this series, in order)."""
        return [self.ev_base.get(id(ev), 0.0) for ev in events]


class Buckets:
    """:func:`.spikes.baseline` and :func:`.spikes.runs` over time-sorted samples, the same
    figures without a value per sample: buckets are cut where their edges fall in ``t``, and
    a bucket's rolling median is taken only where a sample could be high (its maximum above
    the threshold of the window's lowest bucket minimum, which the median cannot be under)."""

    def __init__(self, t: np.ndarray, v: np.ndarray, p: SpikeParams, origin: int) -> None:
        self.t, self.v, self.p = t, v, p
        n = len(t)
        width = int(p.bucket_ms * 1e6)
        k0 = (int(t[0]) - origin) // width
        k1 = (int(t[-1]) - origin) // width
        nb = k1 - k0 + 1
        edges = origin + width * np.arange(k0 + 1, k1 + 1, dtype=np.int64)
        self.cuts = np.searchsorted(t, edges, side="left")
        starts = np.concatenate(([0], self.cuts))
        ends = np.concatenate((self.cuts, [n]))
        have = ends > starts
        self.filled = np.flatnonzero(have)
        self.starts, self.ends = starts, ends
        first = starts[self.filled]
        mins = np.minimum.reduceat(v, first).astype(np.float64)
        self.vmax = np.maximum.reduceat(v, first)
        full = np.zeros(nb, dtype=np.float64)
        full[self.filled] = mins
        last = np.maximum.accumulate(np.where(have, np.arange(nb), 0))
        full = full[last]  # a sampling gap: the bucket before it
        w = max(1, int(p.window_s * 1000 / p.bucket_ms)) | 1
        self.w = w
        self.base: np.ndarray | None = None  # every bucket's, once many are asked for
        self.known: dict[int, float] = {}
        if nb >= w:
            pad = w // 2
            self.padded = np.pad(full, pad, mode="reflect")
            self.flat = None
        else:
            self.flat = np.median(full)

    def _floor(self) -> np.ndarray:
        """Per filled bucket, a value the baseline is not below: its window's lowest minimum."""
        if self.flat is not None:
            return np.full(len(self.filled), self.flat)
        return sliding_window_view(self.padded, self.w).min(axis=1)[self.filled]

    def _bases(self, js: np.ndarray) -> np.ndarray:
        if self.flat is not None:
            return np.full(len(js), self.flat)
        if self.base is None and len(js) > 32:
            self.base = np.median(sliding_window_view(self.padded, self.w), axis=1)
        if self.base is not None:
            return self.base[js]
        out = np.empty(len(js), dtype=np.float64)
        for k, j in enumerate(js.tolist()):
            got = self.known.get(j)
            if got is None:
                got = self.known[j] = float(np.median(self.padded[j : j + self.w]))
            out[k] = got
        return out

    def runs(self) -> list[dict[str, Any]]:
        p = self.p
        lo = self._floor()
        maybe = self.vmax > lo + np.maximum(p.rel * lo, p.abs_bytes)
        if not maybe.any():
            return []
        js = self.filled[maybe]
        base = self._bases(js)
        thr = base + np.maximum(p.rel * base, p.abs_bytes)
        a, z = self.starts[js], self.ends[js]
        lens = z - a
        # the samples of those buckets, each against its bucket's threshold
        idx = np.arange(int(lens.sum()), dtype=np.int64) + np.repeat(a - (np.cumsum(lens) - lens), lens)
        high = self.v[idx] > np.repeat(thr, lens)
        if not high.any():
            return []
        return runs_of(self.t, self.v, idx[high], self._base_of, p)

    def _bucket(self, i: int) -> int:
        return int(np.searchsorted(self.cuts, i, side="right"))

    def _base_of(self, i: int) -> float:
        return float(self._bases(np.array([self._bucket(i)]))[0])

    def at(self, a: int) -> float:
        """:func:`.spikes.base_at`: the baseline where an interval starting at ``a`` begins."""
        i = min(max(int(np.searchsorted(self.t, a)), 0), len(self.t) - 1)
        return self._base_of(i)
