"""What a streamed run's one pass computes exactly, per series: the report prefers these
figures to the ones it would take on the chart's points (:mod:`.stream`)."""

from __future__ import annotations

import numpy as np

from .scrape import DEFAULT_INTERVALS_S
from .spikestream import SpikeAcc
from .streamacc import Envelope, ScrapeAcc, Segments, SeriesAcc


class Figures:
    """What the streaming pass computed exactly, per series (the report prefers these)."""

    def __init__(self) -> None:
        self.stats: dict[str, SeriesAcc] = {}
        self.scrape: dict[str, ScrapeAcc] = {}
        self.spikes: dict[str, SpikeAcc] = {}
        self.envelope: dict[str, Envelope] = {}
        self.hello_samples: dict[int, int] = {}  # id(hello) -> samples at or before it
        self.detail_stride = 1
        self.scrape_intervals: tuple[float, ...] = DEFAULT_INTERVALS_S
        self.load_merged = 1
        self.thread_jumps: list[tuple[int, int, int]] = []  # (t, threads before, after)
        self.bounds: list[int] = []  # phase marker times, sorted: where stretches begin
        self.segs: dict[str, Segments] = {}
        self.held: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # newer than the horizon: not in a stretch yet
        self.t0 = 0
        self.t_end = 0

    def mark(self, t: int) -> None:
        if not self.bounds or t > self.bounds[-1]:
            self.bounds.append(t)
        elif t not in self.bounds:
            self.bounds.append(t)
            self.bounds.sort()

    def feed(
        self, name: str, t: np.ndarray, v: np.ndarray, horizon: int | None, gaps: bool = True, mono: bool = False
    ) -> None:
        """Into the stretches, once no marker can still come before them: a marker is written
        when the sampler hears it, a detail when it is read, so the order on file can lag the
        order in time by a little; what is newer than ``horizon`` waits in a short buffer."""
        segs = self.segs.get(name)
        if segs is None:
            segs = self.segs[name] = Segments(gaps)
        held = self.held.get(name)
        if held is not None:
            inorder = mono and (not len(held[0]) or not len(t) or held[0][-1] <= t[0])
            t, v = np.concatenate((held[0], t)), np.concatenate((held[1], v))
            if not inorder and np.any(np.diff(t) < 0):
                order = np.argsort(t, kind="stable")
                t, v = t[order], v[order]
        i = len(t) if horizon is None else int(np.searchsorted(t, horizon, side="left"))
        self.held[name] = (t[i:].copy(), v[i:].copy())  # not views: they would keep the whole chunk alive
        if i:
            segs.feed(t[:i], v[:i], np.asarray(self.bounds, dtype=np.int64))

    def window(self, name: str, a: int, b: int) -> SeriesAcc | None:
        """Exact figures of ``name`` over [a, b) when a phase's edges bound it, else None."""
        segs = self.segs.get(name)
        if segs is None:
            return None
        acc = segs.window(a, b, np.asarray(self.bounds, dtype=np.int64), self.t0, self.t_end)
        return acc if acc is not None and acc.count else None
