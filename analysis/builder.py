"""Accumulates one source's records and converts them to numpy columns in chunks."""

from __future__ import annotations

from typing import Any

import numpy as np
from spikewatch.sampler.wire import protocol
from spikewatch.sampler.wire.seqgaps import SeqGaps

from .loadmerge import merge_sources
from .source import Series, Source
from .tables import columns, concat_tables

_CHUNK = 1 << 17  # values buffered as Python ints before conversion to numpy


def next_seq(gaps: SeqGaps, last_seq: int, seq: Any) -> int:
    """The newest samples seq after ``seq``: the common case (the next one) without a call
    into ``gaps``, which sees only the jumps (both readers, in memory and streamed)."""
    if seq == last_seq + 1:
        return int(seq)
    if isinstance(seq, int) and not isinstance(seq, bool):
        if last_seq >= 0:
            gaps.last["k"] = last_seq
        gaps.see(seq, "k")
        return gaps.last["k"]
    return last_seq


class Ragged(Exception):
    """A block the column path cannot take (series membership changes): decode it record by record."""


class Builder:
    """Accumulates one source's records; converts to numpy in chunks."""

    def __init__(self, src: str) -> None:
        self.src = Source(src)
        self.batch_t0: list[int] = []
        self.batch_n: list[int] = []
        self.dt: list[int] = []
        self.dt_chunks: list[np.ndarray] = []
        self.vals: dict[str, list[int]] = {}
        self.val_chunks: dict[str, list[np.ndarray]] = {}
        self.batch_of: dict[str, list[int]] = {}  # batches holding the series (when not all)
        self.keys: Any = None  # the series of the first batch (a dict keys view)
        self.last_seq = -2
        self.uniform = True  # every batch had the same series
        self.det: list[dict[str, Any]] = []
        self.det_blocks: list[dict[str, np.ndarray]] = []  # detail columns straight from v2 blocks
        self.tmin: int | None = None
        self.tmax: int | None = None
        self.gaps = SeqGaps()

    def _times(self, t: int) -> None:
        if self.tmin is None or t < self.tmin:
            self.tmin = t
        if self.tmax is None or t > self.tmax:
            self.tmax = t

    def add(self, topic: str, body: dict[str, Any]) -> None:
        s = self.src
        s.records += 1
        seq = body.get("seq")
        if seq == self.last_seq + 1:  # the common case, without a call
            self.last_seq = seq
        elif isinstance(seq, int) and not isinstance(seq, bool):
            if self.last_seq >= 0:
                self.gaps.last["k"] = self.last_seq
            self.gaps.see(seq, "k")
            self.last_seq = self.gaps.last["k"]
        self.add_plain(topic, body)

    def add_plain(self, topic: str, body: dict[str, Any]) -> None:
        """:meth:`add` without the record count and ``seq`` bookkeeping."""
        s = self.src
        t = body.get("t")
        if topic == protocol.SAMPLES:
            dt = body.get("dt")
            series = body.get("series")
            if not dt or not isinstance(t, int) or not isinstance(series, dict):
                return
            n = len(dt)
            b = len(self.batch_t0)
            self.batch_t0.append(t)
            self.batch_n.append(n)
            self.dt.extend(dt)
            if series.keys() != self.keys:
                if self.keys is None:
                    self.keys = series.keys()
                else:
                    self._go_ragged(b)
            vals = self.vals
            for name, col in series.items():
                if len(col) != n:  # a malformed batch: keep the times honest
                    col = (list(col) + [None] * n)[:n]
                buf = vals.get(name)
                if buf is None:
                    if b > 0:
                        self._go_ragged(b)
                    if not self.uniform:
                        self.batch_of[name] = []
                    buf = vals[name] = []
                    self.val_chunks[name] = []
                buf.extend(col)
                if not self.uniform:
                    self.batch_of[name].append(b)
                if len(buf) >= _CHUNK:
                    self._flush_vals(name)
            if len(self.dt) >= _CHUNK:
                self.dt_chunks.append(np.array(self.dt, dtype=np.int64))
                self.dt.clear()
            if self.tmin is None or t < self.tmin:
                self.tmin = t
            te = t + dt[-1]
            if self.tmax is None or te > self.tmax:
                self.tmax = te
            s.batches += 1
            return
        if isinstance(t, int):
            self._times(t)
        if topic == protocol.DETAIL:
            self.det.append(body)
        elif topic == protocol.EVENT:
            s.events.append(body)
        elif topic == protocol.MARKER:
            s.markers.append(body)
        elif topic == protocol.LOAD:
            s.load_records.append(body)
        elif topic == protocol.HELLO:
            s.hellos.append(body)

    def add_block(
        self, records: list[tuple[str, dict[str, Any]]], t: np.ndarray, cols: dict[str, np.ndarray], sizes: list[int]
    ) -> None:
        """A version 2 block's records, its ``samples`` bodies without ``dt``/``series``
        (their samples arrive as whole columns ``t`` and ``cols``, in batch order)."""
        names = tuple(cols)
        if self.keys is None:
            self.keys = dict.fromkeys(names).keys()
        elif tuple(self.keys) != names or not self.uniform:
            raise Ragged
        if self.dt:
            self.dt_chunks.append(np.array(self.dt, dtype=np.int64))
            self.dt.clear()
        for name in names:
            if name not in self.vals:
                self.vals[name] = []
                self.val_chunks[name] = []
            self._flush_vals(name)
            self.val_chunks[name].append(cols[name])
        s = self.src
        heads_t: list[int] = []
        for topic, body in records:
            if topic != protocol.SAMPLES or "dt" in body:
                self.add(topic, body)
                continue
            s.records += 1
            self.last_seq = next_seq(self.gaps, self.last_seq, body.get("seq"))
            heads_t.append(body["t"])
            s.batches += 1
        self.batch_t0.extend(heads_t)
        self.batch_n.extend(sizes)
        starts = np.repeat(np.array(heads_t, dtype=np.int64), np.array(sizes, dtype=np.int64))
        self.dt_chunks.append(t - starts)
        if len(t):
            lo, hi = int(min(heads_t)), int(t.max())
            self.tmin = lo if self.tmin is None else min(self.tmin, lo)
            self.tmax = hi if self.tmax is None else max(self.tmax, hi)

    def _go_ragged(self, b: int) -> None:
        """From batch ``b`` on, series membership differs: track batches per series."""
        if self.uniform:
            self.uniform = False
            for name in self.vals:
                self.batch_of[name] = list(range(b))

    def _flush_vals(self, name: str) -> None:
        buf = self.vals[name]
        if not buf:
            return
        try:
            arr = np.array(buf, dtype=np.int64)
        except (TypeError, ValueError, OverflowError):
            # A missing reading (None) inside a batch: keep it as -1 and drop it at the end.
            arr = np.array([-1 if x is None else x for x in buf], dtype=np.int64)
        self.val_chunks[name].append(arr)
        buf.clear()

    def finish(self) -> Source:
        s = self.src
        if self.dt:
            self.dt_chunks.append(np.array(self.dt, dtype=np.int64))
        bt0 = np.array(self.batch_t0, dtype=np.int64)
        bn = np.array(self.batch_n, dtype=np.int64)
        self.batch_t0 = self.batch_n = []  # type: ignore[assignment]
        t_all = np.repeat(bt0, bn)
        pos = 0
        chunks = self.dt_chunks
        self.dt_chunks = []
        chunks.reverse()
        while chunks:  # add the offsets chunk by chunk, each freed once added: no second full-size array
            chunk = chunks.pop()
            t_all[pos : pos + len(chunk)] += chunk
            pos += len(chunk)
            del chunk
        for name in self.vals:
            self._flush_vals(name)
            chunks = self.val_chunks.pop(name)
            v = np.empty(sum(len(c) for c in chunks), dtype=np.int64)
            chunks.reverse()
            pos = 0
            while chunks:  # copied one by one and freed: never the chunks and the whole column at once
                c = chunks.pop()
                v[pos : pos + len(c)] = c
                pos += len(c)
            if self.uniform:
                t = t_all
            else:
                mask_b = np.zeros(len(bn), dtype=bool)
                mask_b[np.array(self.batch_of[name], dtype=np.int64)] = True
                t = t_all[np.repeat(mask_b, bn)]
            keep = v >= 0
            if not keep.all():
                t, v = t[keep], v[keep]
            if len(t) > 1 and np.any(np.diff(t) < 0):
                order = np.argsort(t, kind="stable")
                t, v = t[order], v[order]
            s.series[name] = Series(name, t, v)
        s.details = concat_tables(self.det_blocks + ([columns(self.det)] if self.det else []))
        self.det = []
        self.det_blocks = []
        s.load_records = merge_sources(s.load_records)  # several driver hosts: the load the service saw
        s.load = columns(s.load_records)
        s.events.sort(key=lambda e: e.get("t", 0))
        s.markers.sort(key=lambda e: e.get("t", 0))
        s.t0 = self.tmin or 0
        s.t_end = self.tmax or s.t0
        s.seq_missed = self.gaps.missed
        s.seq_gaps = [(a, b) for _, a, b in self.gaps.gaps()]
        return s


def finish_sources(default: Builder | None, builders: dict[str, Builder]) -> dict[str, Source]:
    """The sources a recording holds: a journal's own (named by its first hello, or
    "main"), then one per ``src`` a recorder added."""
    sources: dict[str, Source] = {}
    if default is not None:
        if not default.src.src:
            default.src.src = "main"
        sources[default.src.src] = default.finish()
    for bld in builders.values():
        s = bld.finish()
        sources[s.src if s.src not in sources else s.src + "+"] = s
    return sources
