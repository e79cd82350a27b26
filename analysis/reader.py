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
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from spikewatch.sampler.wire import blocks, protocol
from spikewatch.sampler.wire.recording import RecordingError, Salvage, iter_records, resolve_run
from spikewatch.sampler.wire.seqgaps import SeqGaps

from .loadmerge import merge_sources

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
    integrity: dict[str, Any] = field(default_factory=dict)  # what the reader salvaged (see integrity())

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
                return int(np.median(np.diff(s.t[:10_000])))
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

    @property
    def limit_origin(self) -> tuple[str | None, str | None]:
        """(limit_from, limit_kind) of the limit in force at the end: which cgroup sets it
        (a container's own cgroup is often unlimited under a limited pod or slice) and
        whether it is memory.max or memory.high. (None, None) when not said."""
        for ev in reversed(self.events):
            if ev.get("kind") == protocol.EV_LIMIT_CHANGE:
                return ev.get("limit_from"), ev.get("limit_kind")
        for h in reversed(self.hellos):
            cg = h.get("cgroup") or {}
            if cg.get("limit") is not None:
                return cg.get("limit_from"), cg.get("limit_kind")
        return None, None

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
    integrity: dict[str, Any] = field(default_factory=dict)

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


class _Ragged(Exception):
    """A block the column path cannot take (series membership changes): decode it record by record."""


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
            raise _Ragged
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
            seq = body.get("seq")
            if seq == self.last_seq + 1:
                self.last_seq = seq
            elif isinstance(seq, int) and not isinstance(seq, bool):
                if self.last_seq >= 0:
                    self.gaps.last["k"] = self.last_seq
                self.gaps.see(seq, "k")
                self.last_seq = self.gaps.last["k"]
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
        s.details = _concat_tables(self.det_blocks + ([columns(self.det)] if self.det else []))
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


def _numeric(col: list[Any]) -> np.ndarray | None:
    """A float64 column (None as NaN), or None for text, nested or boolean values."""
    try:
        arr = np.array(col, dtype=np.float64)  # None becomes NaN
    except (TypeError, ValueError):
        vals = [x for x in col if x is not None]
        if not vals or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in vals):
            return None  # text or nested: not a numeric column
        return np.array([float("nan") if x is None else x for x in col], dtype=np.float64)
    first = next((x for x in col if x is not None), None)
    if isinstance(first, bool) or arr.ndim != 1:  # lists of equal length (pids) are not a column either
        return None
    return arr


def columns(bodies: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
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
    for k in keys:
        arr = _numeric([b.get(k) for b in bodies])
        if arr is not None:
            out[k] = arr
    order = np.argsort(out["t"], kind="stable")
    if np.any(order != np.arange(len(order))):
        out = {k: v[order] for k, v in out.items()}
    return out


def _finish(default: _Builder | None, builders: dict[str, _Builder]) -> dict[str, Source]:
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
    return Recording(Path(path), _finish(default, builders))


def load(path: str | os.PathLike[str]) -> Recording:
    """Load a recording or journal; raise :class:`RecordingError` (or OSError) if it isn't one."""
    files = resolve_run(path)  # a file, a rotated journal's segments, a folder, a glob
    salvages = [Salvage() for _ in files]
    rec = _load_files(files, salvages)
    p = rec.path
    if not rec.sources:
        raise RecordingError(f"{p} holds no records (empty file?)")
    salvage = _merge(files, salvages)
    rec.integrity = integrity(rec, salvage)
    if len(files) > 1:
        rec.integrity["files"] = [str(f) for f in files]
    for src in rec.sources.values():
        src.integrity = rec.integrity
    return rec


# ------------------------------------------------------- version 2, in bulk

_DT = {1: "<i1", 2: "<i2", 4: "<i4", 8: "<i8"}


def np_ints(packed: list[Any]) -> np.ndarray:
    """:func:`blocks.unpack_ints` as an int64 array."""
    w, raw, exc = packed
    a = np.frombuffer(raw, dtype=_DT[w]).astype(np.int64)
    if exc:
        a[a == np.iinfo(_DT[w]).min] = np.array(exc, dtype=np.int64)
    return a


def block_columns(
    payload: bytes,
) -> tuple[list[tuple[str, dict[str, Any]]], np.ndarray | None, dict[str, np.ndarray], list[int], bool]:
    """A data block as (records with samples bodies reduced to their heads, sample times,
    series columns, batch sizes, uniform): ``uniform`` is False when batches differ in
    their series (then the records are whole bodies and the columns empty)."""
    import msgpack

    block = msgpack.unpackb(payload, raw=False, strict_map_key=False)
    topics = block["tp"]
    enc = block.get("s")
    if enc is not None and len(enc[4]) != 1:
        return blocks.decode_block(payload), None, {}, [], False
    groups = {ti: iter(blocks.decode_group(g)) for ti, g in block["g"]}
    names = [t[1:] if t.startswith("\x00") else t for t in topics]
    records = [(names[ti], next(groups[ti])) for ti in block["o"]]
    if enc is None:
        return records, None, {}, [], True
    base, q, p, sizes_p, shapes, _sids, dk_p, e_p, series_enc, ht_p = enc[:10]
    k = np.concatenate(([0], np.cumsum(np_ints(dk_p))))
    e = np_ints(e_p)
    t = base + (k * p + (np.cumsum(e) if len(enc) > 10 and enc[10] else e)) * q  # v3: deviations may be deltas
    sizes = np_ints(sizes_p)
    starts = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    head_t = iter((t[starts] + np_ints(ht_p) * q).tolist())
    for topic, body in records:
        if topic == protocol.SAMPLES and "dt" not in body:
            body["t"] = next(head_t)
    cols: dict[str, np.ndarray] = {}
    for name, first, g, d_p in series_enc:
        d = np_ints(d_p)
        v = np.empty(len(d) + 1, dtype=np.int64)
        v[0] = first
        np.cumsum(d * g if g != 1 else d, out=v[1:])
        v[1:] += first
        cols[name] = v
    cols = {name: cols[name] for name in shapes[0]}
    return records, t, cols, sizes.tolist(), True


def _load_files(paths: list[Path], salvages: list[Salvage]) -> Recording:
    """One run from one or more files (a rotated journal's segments), either format."""
    builders: dict[str, _Builder] = {}
    default: _Builder | None = None

    def builder(body: dict[str, Any], topic: str) -> _Builder:
        nonlocal default
        src = body.get("src")
        if src is None:
            if default is None:
                default = _Builder("")
            if topic == protocol.HELLO and not default.src.src and body.get("session"):
                default.src.src = str(body["session"])
            return default
        b = builders.get(src)
        if b is None:
            b = builders[src] = _Builder(str(src))
        return b

    expand = blocks.HelloExpander()
    for path, salvage in zip(paths, salvages):
        with open(path, "rb") as f:
            v2 = blocks.is_v2(f.read(len(blocks.MAGIC)))
            f.seek(0)
            if not v2:
                for tp, b in iter_records(f, salvage=salvage):
                    if isinstance(b, dict):
                        builder(b, tp).add(tp, b)
                continue
            _v2_blocks(f, path, salvage, expand, builder, lambda: not builders and default is not None, lambda: default)
    return Recording(paths[0] if len(paths) == 1 else paths[0].parent, _finish(default, builders))


def _v2_blocks(
    f: Any, path: Path, salvage: Salvage, expand: Any, builder: Any, default_only: Any, fast_builder: Any
) -> None:
    if True:
        try:
            for fr in blocks.iter_frames(f, salvage):
                if fr.kind != blocks.KIND_DATA:
                    continue
                try:
                    if default_only():
                        import msgpack

                        if _fast_block(
                            msgpack.unpackb(fr.payload, raw=False, strict_map_key=False), fast_builder(), expand
                        ):
                            continue
                    records, t, cols, sizes, uniform = block_columns(fr.payload)
                except Exception:  # whole by its checksum, yet not decodable: another writer version
                    salvage.undecodable(fr)
                    continue
                records = [(tp, expand(tp, b)) if tp == protocol.HELLO else (tp, b) for tp, b in records]
                if t is not None:
                    owner = [builder(b, tp) for tp, b in records]
                    heads = {id(o) for o, (tp, b) in zip(owner, records) if tp == protocol.SAMPLES and "dt" not in b}
                    if len(heads) == 1:
                        b0 = next(o for o, (tp, b) in zip(owner, records) if tp == protocol.SAMPLES and "dt" not in b)
                        others = [(o, tp, b) for o, (tp, b) in zip(owner, records) if o is not b0]
                        mine = [(tp, b) for o, (tp, b) in zip(owner, records) if o is b0]
                        try:
                            b0.add_block(mine, t, cols, sizes)
                        except _Ragged:
                            pass
                        else:
                            for o, tp, b in others:
                                o.add(tp, b)
                            continue
                    # the hellos were expanded above (once: expanding twice would take them for keyframes)
                    hellos = iter([b for tp, b in records if tp == protocol.HELLO])
                    records = [
                        (tp, next(hellos) if tp == protocol.HELLO else b) for tp, b in blocks.decode_block(fr.payload)
                    ]
                for tp, b in records:
                    if isinstance(b, dict):
                        builder(b, tp).add(tp, b)
        except blocks.FormatError as exc:
            raise RecordingError(f"{path}: {exc}") from None


def integrity(rec: Recording, s: Salvage) -> dict[str, Any]:
    """What was salvaged, as the report says it: ``complete`` and one sentence per loss."""
    notes: list[str] = []
    src = rec.sources and rec.main
    t0 = src.t0 if src else 0

    def rel(t: int | None) -> str:
        return "?" if t is None else f"{(t - t0) / 1e9:.1f} s"

    if s.torn_tail_bytes:
        notes.append(
            f"the file ends in a torn record ({s.torn_tail_bytes:,} bytes unread): its writer stopped mid-write"
        )
    for g in s.skipped:
        notes.append(
            f"damaged bytes {g['from_byte']:,}-{g['to_byte']:,} skipped "
            f"({g['to_byte'] - g['from_byte']:,} bytes, between {rel(g['t_before'])} and {rel(g['t_after'])}); "
            "read on after them"
        )
    stopped_early = False
    hello_samples = file_samples = None
    if src:
        hellos = [h for h in src.hellos if isinstance(h.get("counters"), dict)]
        final = any(h.get("final") for h in src.hellos)
        if s.format == 2 and s.closed is False and not final:
            stopped_early = True
        elif s.format == 1 and hellos and "final" in hellos[-1] and not final:
            stopped_early = True
        if stopped_early:
            notes.append(
                f"the writer stopped early (killed, or the disk filled): no closing record; "
                f"the file ends at {rel(src.t_end)}"
            )
        ser = src.series.get("rss") or next(iter(src.series.values()), None)
        if len(hellos) >= 2 and ser is not None and len(ser):
            h0, h1 = hellos[0], hellos[-1]
            c0, c1 = h0["counters"].get("samples"), h1["counters"].get("samples")
            if isinstance(c0, int) and isinstance(c1, int):
                hello_samples = c1 - c0
                i0, i1 = np.searchsorted(ser.t, [int(h0.get("t", 0)), int(h1.get("t", 0))], side="right")
                file_samples = int(i1 - i0)
                slack = 2 * max(1, src.batches and len(ser) // max(src.batches, 1)) + 2
                if hello_samples - file_samples > slack:
                    notes.append(
                        f"the sampler counted {hello_samples:,} samples between its first and last hello "
                        f"in this file; the file holds {file_samples:,} "
                        f"({hello_samples - file_samples:,} missing)"
                    )
            lost = h1["counters"].get("journal_lost") or 0
            errs = h1["counters"].get("journal_errors") or 0
            if errs or lost:
                notes.append(f"the sampler's journal reported {errs} write error(s), {lost:,} records lost")
    return {
        "format": s.format,
        "complete": not notes,
        "bytes": s.bytes_total,
        "torn_tail_bytes": s.torn_tail_bytes,
        "skipped": [
            dict(
                g,
                bytes=g["to_byte"] - g["from_byte"],
                t_before=None if g["t_before"] is None else round((g["t_before"] - t0) / 1e9, 3),
                t_after=None if g["t_after"] is None else round((g["t_after"] - t0) / 1e9, 3),
            )
            for g in s.skipped
        ],
        "writer_stopped_early": stopped_early,
        "hello_samples": hello_samples,
        "file_samples": file_samples,
        "notes": notes,
    }


def _merge(files: list[Path], salvages: list[Salvage]) -> Salvage:
    """One account of what several segments lost (damage is named by file and byte)."""
    if len(salvages) == 1:
        return salvages[0]
    out = Salvage(max(s.format for s in salvages))
    for f, s in zip(files, salvages):
        out.bytes_total += s.bytes_total
        out.torn_tail_bytes += s.torn_tail_bytes  # only the last segment should have one
        out.skipped.extend(dict(g, file=f.name) for g in s.skipped)
        out.blocks += s.blocks
        out.records += s.records
    out.closed = salvages[-1].closed
    out.format = salvages[-1].format
    return out


def _concat_tables(tables: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Columnar tables one after another (a key missing from one is NaN there), sorted by ``t``."""
    tables = [t for t in tables if t and len(t.get("t", ()))]
    if not tables:
        return {}
    if len(tables) == 1:
        out = tables[0]
    else:
        keys: dict[str, None] = {}
        for tb in tables:
            keys.update(dict.fromkeys(tb))
        out = {}
        for k in keys:
            shapes = {tb[k].shape[1:] for tb in tables if k in tb}
            if len(shapes) != 1:
                continue  # nested values of different lengths: not one column
            tail = shapes.pop()
            parts = [tb[k] if k in tb else np.full((len(tb["t"]), *tail), np.nan) for tb in tables]
            out[k] = np.concatenate(parts).astype(np.int64 if k == "t" else np.float64)
    order = np.argsort(out["t"], kind="stable")
    if np.any(order != np.arange(len(order))):
        out = {k: v[order] for k, v in out.items()}
    return out


def _group_columns(enc: list[Any]) -> tuple[list[Any], list[list[int]], list[int], list[Any]]:
    """A v2 group as (keys, shapes, shape ids, values per key) without building a map per body."""
    keys, shapes, ids_p, cols = enc
    if any(col[0] > 2 for col in cols):  # version 3's column kinds: a few bodies a second, decoded in Python
        return keys, shapes, blocks.unpack_ints(ids_p), blocks.group_columns(enc)
    values: list[Any] = []
    for col in cols:
        if col[0] == 1:
            d = np_ints(col[2])
            if col[3] != 1:
                d = d * col[3]
            v = np.empty(len(d) + 1, dtype=np.int64)
            v[0] = col[1]
            np.cumsum(d, out=v[1:])
            v[1:] += col[1]
            values.append(v)
        elif col[0] == 2:
            values.append(np.full(col[2], col[1], dtype=np.int64) if blocks._is_int(col[1]) else [col[1]] * col[2])
        else:
            values.append(col[1])
    return keys, shapes, blocks.unpack_ints(ids_p), values


_SKIP_DETAIL = ("v", "seq")


def _fast_block(block: dict[str, Any], b: _Builder, expand: Any) -> bool:
    """Take a v2 block of one source whose ``seq`` runs on from the last: sample and
    detail columns go in as arrays, without a Python object per sample or detail.
    False (nothing taken) when the block is not that simple."""
    enc = block.get("s")
    if b.last_seq < 0 or (enc is not None and (len(enc[4]) != 1 or not b.uniform)):
        return False
    topics = [t[1:] if t.startswith("\x00") else t for t in block["tp"]]
    groups = {}
    for ti, g in block["g"]:
        keys = g[0]
        if "src" in keys or "seq" not in keys:
            return False
        groups[ti] = _group_columns(g)
    order = block["o"]
    n = len(order)
    # seq in record order: consecutive from the last one seen, or the slow path
    seq_it = {}
    for ti, (keys, _shapes, ids, values) in groups.items():
        col = values[keys.index("seq")]
        if len(col) != len(ids):
            return False
        seq_it[ti] = iter(col.tolist() if isinstance(col, np.ndarray) else col)
    first = b.last_seq + 1
    for i, ti in enumerate(order):
        if next(seq_it[ti]) != first + i:
            return False
    if enc is not None:
        names = tuple(enc[4][0])
        if b.keys is not None and tuple(b.keys) != names:
            return False
    s = b.src
    b.last_seq = first + n - 1
    s.records += n
    for ti, (keys, shapes, ids, values) in groups.items():
        topic = topics[ti]
        if block["tp"][ti] == "\x00" + protocol.SAMPLES:
            _fast_samples(b, enc or [], len(ids))
            continue
        if topic == protocol.DETAIL and len(shapes) == 1:
            table: dict[str, np.ndarray] = {}
            for k, v in zip(keys, values):
                if k in _SKIP_DETAIL:
                    continue
                if k == "t":
                    table["t"] = np.asarray(v, dtype=np.int64)
                    continue
                arr = v.astype(np.float64) if isinstance(v, np.ndarray) else _numeric(v)
                if arr is not None:
                    table[k] = arr
            if "t" in table and len(table["t"]):
                b._times(int(table["t"].min()))
                b._times(int(table["t"].max()))
                b.det_blocks.append(table)
            continue
        bodies = blocks.decode_group(block["g"][[g[0] for g in block["g"]].index(ti)][1])
        for body in bodies:
            if topic == protocol.HELLO:
                body = expand(topic, body)
                if not b.src.src and body.get("session"):
                    # a recording that began between hellos: its session comes from the first one
                    b.src.src = str(body["session"])
            b.add_plain(topic, body)
    return True


def _fast_samples(b: _Builder, enc: list[Any], n_batches: int) -> None:
    base, q, p, sizes_p, shapes, _sids, dk_p, e_p, series_enc, ht_p = enc[:10]
    k = np.concatenate(([0], np.cumsum(np_ints(dk_p))))
    e = np_ints(e_p)
    t = base + (k * p + (np.cumsum(e) if len(enc) > 10 and enc[10] else e)) * q  # v3: deviations may be deltas
    sizes = np_ints(sizes_p)
    starts = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    head_t = t[starts] + np_ints(ht_p) * q
    names = tuple(shapes[0])
    if b.keys is None:
        b.keys = dict.fromkeys(names).keys()
    if b.dt:
        b.dt_chunks.append(np.array(b.dt, dtype=np.int64))
        b.dt.clear()
    for name, first, g, d_p in series_enc:
        d = np_ints(d_p)
        v = np.empty(len(d) + 1, dtype=np.int64)
        v[0] = first
        np.cumsum(d * g if g != 1 else d, out=v[1:])
        v[1:] += first
        if name not in b.vals:
            b.vals[name] = []
            b.val_chunks[name] = []
        b._flush_vals(name)
        b.val_chunks[name].append(v)
    b.batch_t0.extend(head_t.tolist())
    b.batch_n.extend(sizes.tolist())
    b.dt_chunks.append(t - np.repeat(head_t, sizes))
    b.src.batches += n_batches
    if len(t):
        lo, hi = int(head_t.min()), int(t.max())
        b.tmin = lo if b.tmin is None else min(b.tmin, lo)
        b.tmax = hi if b.tmax is None else max(b.tmax, hi)
