"""Spike detection chunk by chunk, with the same result as over the whole series.

The baseline at a sample depends only on samples within half its window (5 s by
default) and a spike's end on the sample after it, so the series is cut into cores
of ``core_s`` seconds, each analysed with ``context`` seconds of the neighbours on
both sides; a spike belongs to the core its first sample falls in. Only a core and
its context are ever held (two minutes of samples, not the run).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from spikewatch.sampler.wire import protocol

from .spikes import SpikeParams, base_at, baseline, runs

CORE_S = 120.0  # seconds of samples analysed at a time (with the context on both sides)


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
        self.found: list[dict[str, Any]] = []
        self.pending: list[dict[str, Any]] = []  # hwm_spike events whose baseline is not known yet
        self.ev_base: dict[int, float] = {}  # id(event) -> baseline where it starts

    def event(self, ev: dict[str, Any]) -> None:
        if ev.get("kind") == protocol.EV_HWM_SPIKE and ev.get("series") == self.name:
            if isinstance(ev.get("bytes"), (int, float)):
                self.pending.append(ev)

    def feed(self, t: np.ndarray, v: np.ndarray) -> None:
        if not len(t):
            return
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
        if len(t) > 1 and np.any(np.diff(t) < 0):
            order = np.argsort(t, kind="stable")
            t, v = t[order], v[order]
        lo = self.core_start
        hi = core_end if core_end is not None else int(t[-1]) + 1
        if core_end is not None:
            j = int(np.searchsorted(t, core_end + self.ctx_ns, side="right"))
            tw, vw = t[:j], v[:j]
        else:
            tw, vw = t, v
        base = baseline(tw, vw, self.p, self.origin)
        for s in runs(tw, vw, base, self.p):
            if lo <= s["_t0"] < hi:
                self.found.append(s)
        keep = []
        for ev in self.pending:
            a = int(ev.get("t_from", ev["t"]))
            if a < hi or core_end is None:
                self.ev_base[id(ev)] = base_at(tw, base, a)
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
