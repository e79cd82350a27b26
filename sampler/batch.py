"""The open batch: samples not yet published, and the maxima they set.

The hot loop appends to :attr:`Batch.times`, :attr:`Batch.rss` and
:attr:`Batch.cgu` through bound ``append`` methods it took once, so the lists are
emptied in place, never replaced."""

from __future__ import annotations

from .wire import protocol


class Batch:
    def __init__(self) -> None:
        self.times: list[int] = []
        self.rss: list[int] = []
        self.cgu: list[int] = []
        self.cgroup = False  # whether cgu is sampled (known after setup)
        self.peak: dict[str, int] = {}  # over the whole run
        self.peak_t: dict[str, int] = {}
        self.imax: dict[str, int] = {}  # largest sample since the previous detail
        self._prev_imax: dict[str, int] = {}

    def take(self) -> tuple[list[int], dict[str, list[int]]] | None:
        """The samples to publish (times, columns by series), or None if there are
        none; the batch is empty afterwards and the maxima include them."""
        times = self.times
        if not times:
            return None
        cols = {protocol.SERIES_RSS: self.rss[:]}
        if self.cgroup:
            cols[protocol.SERIES_CG_USAGE] = self.cgu[:]
        ts = times[:]
        del times[:], self.rss[:], self.cgu[:]
        for name, col in cols.items():
            m = max(col)
            if m > self.imax.get(name, -1):
                self.imax[name] = m
            if m > self.peak.get(name, -1):
                self.peak[name] = m
                self.peak_t[name] = ts[col.index(m)]
        return ts, cols

    def interval_max(self) -> dict[str, int]:
        """The largest sample of each series since the previous detail, the open batch
        included (the detail tier reads its files before the batch is taken)."""
        out = dict(self.imax)
        cols = {protocol.SERIES_RSS: self.rss}
        if self.cgroup:
            cols[protocol.SERIES_CG_USAGE] = self.cgu
        for name, col in cols.items():
            if col:
                m = max(col)
                if m > out.get(name, -1):
                    out[name] = m
        return out

    def next_interval(self) -> None:
        """A detail interval ended: the maxima start over (the last one is kept for
        :meth:`headline_bytes`)."""
        self._prev_imax = self.imax
        self.imax = {}

    def headline_bytes(self) -> int:
        """The largest recent sample of the headline series (cgroup usage when
        sampled, else RSS): what an OOM kill event reports as the last level."""
        name = protocol.SERIES_CG_USAGE if self.cgroup else protocol.SERIES_RSS
        col = self.cgu if self.cgroup else self.rss
        vals = [self.imax.get(name, 0), self._prev_imax.get(name, 0)]
        if col:
            vals.append(max(col))
        return max(vals)
