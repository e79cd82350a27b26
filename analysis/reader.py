"""Load a recording (or a sampler journal) into numpy columns.

A recording is the stream itself (see :mod:`spikewatch.sampler.wire.recording`); this module
turns it into, per source (sampler session):

* ``series``: name -> :class:`Series` (``t`` int64 ns, ``v`` int64 bytes),
* ``details``/``load``: columnar tables (``t`` int64 plus one float64 column per
  numeric field, NaN where a message lacked the field),
* ``events``, ``markers``, ``hellos``: lists of the original bodies (they are few).

Speed matters (a 1 h recording at 1 kHz is 3.6 M samples), so sample values
never become per-sample Python objects for long: each batch's lists are
appended to flat lists (C-level ``extend``) and converted to numpy in chunks,
which bounds the transient Python-int memory to one chunk.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from spikewatch.sampler.wire import protocol
from spikewatch.sampler.wire.recording import RecordingError, iter_records
from spikewatch.sampler.wire.seqgaps import SeqGaps


_CHUNK = 1 << 17  # values buffered as Python ints before conversion to numpy


@dataclass
class Series:
    """One sampled series: times (sampler monotonic ns) and values (bytes)."""

    name: str
    t: np.ndarray
    v: np.ndarray

    def __len__(self) -> int:
        return len(self.v)


@dataclass
class Source:
    """Everything one sampler session contributed to a recording."""

    src: str
    series: dict[str, Series] = field(default_factory=dict)
    details: dict[str, np.ndarray] = field(default_factory=dict)
    load: dict[str, np.ndarray] = field(default_factory=dict)
    load_records: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    markers: list[dict[str, Any]] = field(default_factory=list)
    hellos: list[dict[str, Any]] = field(default_factory=list)
    t0: int = 0  # first time seen in this source (ns): reports count seconds from here
    t_end: int = 0
    seq_missed: int = 0  # messages missing from the recording, from gaps in ``seq``
    seq_gaps: list[tuple[int, int]] = field(default_factory=list)
    records: int = 0
    batches: int = 0

    # -- conveniences used by the analyses ---------------------------------
    @property
    def hello(self) -> dict[str, Any]:
        """The last hello (its counters are the most complete), or {}."""
        return self.hellos[-1] if self.hellos else {}

    @property
    def period_ns(self) -> int | None:
        for h in reversed(self.hellos):
            if h.get("period_ns"):
                return int(h["period_ns"])
        for s in self.series.values():
            if len(s) > 1:
                return int(np.median(np.diff(s.t[: 10_000])))
        return None

    @property
    def limit_bytes(self) -> int | None:
        """The memory limit in force at the end (detail cg_limit, else hello/limit_change)."""
        lim = self.details.get("cg_limit")
        if lim is not None:
            ok = lim[~np.isnan(lim)]
            if len(ok):
                return int(ok[-1])
        for ev in reversed(self.events):
            if ev.get("kind") == protocol.EV_LIMIT_CHANGE and ev.get("new"):
                return int(ev["new"])
        for h in reversed(self.hellos):
            cg = h.get("cgroup") or {}
            if cg.get("limit"):
                return int(cg["limit"])
        return None

    def rel(self, t_ns: Any) -> Any:
        """Seconds from the start of the recording (scalar or array)."""
        if isinstance(t_ns, np.ndarray):
            return (t_ns - self.t0) / 1e9
        return None if t_ns is None else (t_ns - self.t0) / 1e9

    def events_of(self, *kinds: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("kind") in kinds]

    @property
    def duration_s(self) -> float:
        return (self.t_end - self.t0) / 1e9


@dataclass
class Recording:
    """A loaded recording: one :class:`Source` per sampler session."""

    path: Path
    sources: dict[str, Source]

    @property
    def main(self) -> Source:
        """The source a report is about by default: the one with the most samples."""
        if not self.sources:
            raise RecordingError(f"{self.path}: no records")
        return max(self.sources.values(), key=lambda s: (sum(len(x) for x in s.series.values()), s.records))

    def source(self, name: str | None) -> Source:
        if name is None:
            return self.main
        if name in self.sources:
            return self.sources[name]
        matches = [k for k in self.sources if k.startswith(name)]
        if len(matches) == 1:
            return self.sources[matches[0]]
        raise KeyError(f"no source {name!r} in {self.path} (have: {', '.join(self.sources)})")


class _Builder:
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
        for chunk in self.dt_chunks:  # add the offsets chunk by chunk: no second full-size array
            t_all[pos : pos + len(chunk)] += chunk
            pos += len(chunk)
        self.dt_chunks = []
        for name in self.vals:
            self._flush_vals(name)
            chunks = self.val_chunks.pop(name)
            v = np.concatenate(chunks) if chunks else np.zeros(0, np.int64)
            del chunks
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
        s.details = columns(self.det)
        self.det = []
        s.load = columns(s.load_records)
        s.events.sort(key=lambda e: e.get("t", 0))
        s.markers.sort(key=lambda e: e.get("t", 0))
        s.t0 = self.tmin or 0
        s.t_end = self.tmax or s.t0
        s.seq_missed = self.gaps.missed
        s.seq_gaps = [(a, b) for _, a, b in self.gaps.gaps()]
        return s


def columns(bodies: list[Mapping[str, Any]]) -> dict[str, np.ndarray]:
    """A columnar table from maps: ``t`` (int64) plus a float64 column per numeric key."""
    if not bodies:
        return {}
    # distinct key sets are few (messages of one kind look alike): find the numeric keys from them
    keys: dict[str, None] = {}
    seen: set[tuple[str, ...]] = set()
    for b in bodies:
        ks = tuple(b)
        if ks in seen:
            continue
        seen.add(ks)
        for k in ks:
            if k not in keys and k not in ("v", "seq", "t"):
                keys[k] = None
    out: dict[str, np.ndarray] = {"t": np.array([b.get("t", 0) for b in bodies], dtype=np.int64)}
    nan = float("nan")
    for k in keys:
        col = [b.get(k) for b in bodies]
        try:
            arr = np.array(col, dtype=np.float64)  # None becomes NaN
        except (TypeError, ValueError):
            vals = [x for x in col if x is not None]
            if not vals or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in vals):
                continue  # text or nested: not a numeric column
            arr = np.array([nan if x is None else x for x in col], dtype=np.float64)
        else:
            first = next((x for x in col if x is not None), None)
            if isinstance(first, bool):
                continue
        out[k] = arr
    order = np.argsort(out["t"], kind="stable")
    if np.any(order != np.arange(len(order))):
        out = {k: v[order] for k, v in out.items()}
    return out


def load_records(records: Iterable[tuple[str, dict[str, Any]]], path: str | os.PathLike[str] = "<stream>") -> Recording:
    """Build a :class:`Recording` from ``(topic, body)`` pairs (e.g. live, from a subscriber)."""
    builders: dict[str, _Builder] = {}
    # A journal has no ``src``: its session comes from the first hello. Records
    # before that hello go to the same builder, renamed once the hello arrives.
    default: _Builder | None = None
    for topic, body in records:
        if not isinstance(body, dict):
            continue
        src = body.get("src")
        if src is None:
            if default is None:
                default = _Builder("")
            if topic == protocol.HELLO and not default.src.src and body.get("session"):
                default.src.src = str(body["session"])
            default.add(topic, body)
            continue
        b = builders.get(src)
        if b is None:
            b = builders[src] = _Builder(str(src))
        b.add(topic, body)
    sources: dict[str, Source] = {}
    if default is not None:
        if not default.src.src:
            default.src.src = "main"
        sources[default.src.src] = default.finish()
    for b in builders.values():
        s = b.finish()
        sources[s.src if s.src not in sources else s.src + "+"] = s
    return Recording(Path(path), sources)


def load(path: str | os.PathLike[str]) -> Recording:
    """Load a recording or journal; raise :class:`RecordingError` (or OSError) if it isn't one."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"no such recording: {p}")
    if p.is_dir():
        for name in ("recording", "recording.rec", "journal"):
            if (p / name).is_file():
                p = p / name
                break
        else:
            raise RecordingError(f"{p} is a folder without a 'recording' file")
    rec = load_records(iter_records(p), p)
    if not rec.sources:
        raise RecordingError(f"{p} holds no records (empty file?)")
    return rec
