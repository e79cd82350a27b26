"""Synthesised recordings with known truth, written through the real writer.

Tests and benchmarks describe a memory curve as numpy arrays plus events,
markers, details and load telemetry; :class:`Synth` turns them into real
protocol bodies (``protocol.samples_body`` batches of ``batch`` samples, hellos
every second) in time order, with one ``seq`` counter, through
:func:`spikewatch.sampler.wire.recording.open_writer` — exactly what a sampler journal holds.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np
from spikewatch.sampler.wire import protocol
from spikewatch.sampler.wire.recording import open_writer

MiB = 1 << 20


class Synth:
    def __init__(
        self,
        *,
        period_ns: int = 1_000_000,
        batch: int = 20,
        t0: int = 5_000_000_000,
        session: str = "synth-1",
        limit: int | None = None,
        src: str | None = None,
        series: tuple[str, ...] = ("rss",),
    ) -> None:
        self.period_ns = period_ns
        self.batch = batch
        self.t0 = t0
        self.session = session
        self.limit = limit
        self.src = src
        self.series_names = series
        self._items: list[tuple[int, int, str, dict[str, Any]]] = []  # (t, order, topic, body)
        self._n = 0

    def times(self, seconds: float) -> np.ndarray:
        """Sample times (ns) for ``seconds`` of sampling from t0."""
        n = int(round(seconds * 1e9 / self.period_ns))
        return self.t0 + np.arange(n, dtype=np.int64) * self.period_ns

    def _add(self, t: int, topic: str, body: dict[str, Any]) -> None:
        self._n += 1
        self._items.append((int(t), self._n, topic, body))

    def samples(self, t: np.ndarray, **cols: np.ndarray) -> None:
        """Sample batches of ``batch`` samples (columns in bytes)."""
        t = np.asarray(t, dtype=np.int64)
        lists = {k: np.asarray(v, dtype=np.int64).tolist() for k, v in cols.items()}
        tl = t.tolist()
        for i in range(0, len(tl), self.batch):
            body = protocol.samples_body(
                0, tl[i : i + self.batch], {k: v[i : i + self.batch] for k, v in lists.items()}
            )
            self._add(tl[i], protocol.SAMPLES, dict(body))

    def detail(self, t: int, **fields: Any) -> None:
        self._add(t, protocol.DETAIL, {**protocol.header(0, int(t)), **fields})

    def event(self, t: int, kind: str, **fields: Any) -> None:
        self._add(t, protocol.EVENT, {**protocol.header(0, int(t)), "kind": kind, **fields})

    def marker(self, t: int, kind: str, name: str, attrs: Mapping[str, Any] | None = None) -> None:
        body = {**protocol.header(0, int(t)), **protocol.marker_message(kind, name, attrs, origin_wall_ns=0)}
        self._add(t, protocol.MARKER, body)

    def phase(self, t_start: int, t_end: int, name: str, kind: str, **attrs: Any) -> None:
        self.marker(t_start, protocol.PHASE_START, name, {"kind": kind, **attrs})
        self.marker(t_end, protocol.PHASE_END, name, {"kind": kind, **attrs})

    def load(self, t: int, **fields: Any) -> None:
        body = protocol.validate_load({"interval_ns": 100_000_000, **fields})
        self._add(t, protocol.LOAD, {**protocol.header(0, int(t)), **body})

    def _hello(self, t: int, counters: dict[str, int], final: bool = False) -> dict[str, Any]:
        return {
            **protocol.header(0, t),
            "session": self.session,
            "host": "synth",
            "sampler_version": "synth",
            "pid": os.getpid(),
            "wall_ns": 1_700_000_000_000_000_000 + t,
            "period_ns": self.period_ns,
            "detail_period_ns": 100_000_000,
            "series": list(self.series_names),
            "targets": [{"kind": "launch", "spec": "synth", "pids": [4242]}],
            "cgroup": {"version": 1, "path": "/synth", "limit": self.limit} if self.limit else None,
            "started_t": self.t0,
            "journal": None,
            "final": final,
            "counters": counters,
        }

    def write(self, path: str | os.PathLike[str], *, drop_seq: set[int] | None = None, format: int = 2) -> int:
        """Write everything in time order (hellos every second) in recording ``format``; return records written."""
        items = sorted(self._items)
        t_last = max((it[0] for it in items), default=self.t0)
        hellos = list(range(self.t0, t_last + 1, 1_000_000_000))
        n_samples = 0
        seq = 0
        written = 0
        hi = 0
        open(path, "wb").close()  # a fresh file: the writer appends
        with open_writer(path, format=format) as w:
            for t, _, topic, body in items:
                while hi < len(hellos) and hellos[hi] <= t:
                    h = self._hello(hellos[hi], {"samples": n_samples, "overruns": 0})
                    h["seq"] = seq
                    if not drop_seq or seq not in drop_seq:
                        w.write(protocol.HELLO, self._with_src(h))
                        written += 1
                    seq += 1
                    hi += 1
                body["seq"] = seq
                if topic == protocol.SAMPLES:
                    n_samples += len(body["dt"])
                if not drop_seq or seq not in drop_seq:
                    w.write(topic, self._with_src(body))
                    written += 1
                seq += 1
                if seq % 4096 == 0:
                    w.flush()
            h = self._hello(t_last, {"samples": n_samples, "overruns": 0}, final=True)
            h["seq"] = seq
            w.write(protocol.HELLO, self._with_src(h))
            written += 1
        return written

    def _with_src(self, body: dict[str, Any]) -> dict[str, Any]:
        if self.src is not None:
            body = dict(body)
            body["src"] = self.src
        return body
