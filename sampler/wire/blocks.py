"""Recording format version 2: columnar, delta-coded, compressed blocks.

A multi-day soak at 1 kHz is hundreds of millions of samples; version 1 (the
stream itself, length-framed msgpack) costs ~15 bytes a sample. Version 2
keeps the same records (``(topic, body)`` pairs, so every reader sees the same
stream) but stores about one second of them per block, column by column:

    file   = header, frame*
    header = MAGIC (8) | u16 version=2 | u16 flags | u32 n | msgpack map (n bytes) | u32 crc32
    frame  = SYNC (4) | u8 kind | u8 codec | u16 0 | u32 length
             | i64 t_first | i64 t_last | u32 samples | u32 records   (the summary)
             | u32 crc32(everything after SYNC up to the crc, then the payload)
             | payload (length bytes: raw deflate, or zstandard, with a fixed dictionary)

``kind`` is 1 for data, 2 for the index the writer appends when it closes
(every block's offset, time span and sample count, and the phase markers), so
a reader can seek by time or phase without decompressing; a file without a
closing index was still being written or its writer stopped early. After the
index comes a 16-byte tail (``u64 index offset | b"SWIX" | u32 crc32``).

A data payload, once decompressed, is a msgpack map:

* ``tp``: topic names; ``o``: one byte per record, its topic's index, in the
  original order (so the decoded stream is the written one, record for record);
* ``g``: per topic, the bodies as columns (:func:`encode_group`): the key sets
  seen, one shape id per body, and per key either its values or, for integer
  columns, the first value and the deltas;
* ``s``: the samples of every well-formed ``samples`` batch, as columns: batch
  sizes, series membership, times as (grid step, deviation from the period
  grid) and each series as deltas divided by their common divisor (RSS moves in
  whole pages). Small integers are stored one byte each with an escape for the
  rare large one (:func:`pack_ints`), so a column that barely changes is a run
  of zero bytes the compressor all but removes.

Sample times are kept at ``quantum_ns`` resolution (2 µs by default, so within
±1 µs: the loop's own lateness behind its timer is 20-40 µs at the median and
~100 µs at p99, and a spike lasts milliseconds). Timestamps are the costly
column: measured on a 1 kHz journal, at 1 ns they cost ~2.2 bytes a sample, at
1 µs ~0.95, at 2 µs ~0.6 (each halving of the resolution adds a bit of noise
a sample). ``quantum_ns=1`` is lossless. Every other
field round-trips exactly.

This module imports only the standard library and msgpack (zstandard only
for a file written with it): the sampler's journal thread uses it. Readers with numpy decode the sample columns
in bulk (:mod:`spikewatch.analysis.reader`).
"""

from __future__ import annotations

import math
import os
import struct
import sys
import time
import zlib
from array import array
from collections.abc import Callable, Iterator, Mapping
from itertools import accumulate
from typing import Any, BinaryIO, TypeGuard

import msgpack

MAGIC = b"\x89SPKW\r\n\x1a"
VERSION = 2
SYNC = b"\xa7SWB"
KIND_DATA = 1
KIND_INDEX = 2
CODEC_ZSTD = 1  # zstandard with the dictionary below (never changes: a new one gets a new codec number)
# A raw-content dictionary of the protocol's field names and constant strings, so a
# block's one hello and its detail key table do not pay for spelling them out.
_DICT_WORDS = (
    "hello samples detail event marker load v seq t dt series rss cg_usage session host sampler_version pid "
    "wall_ns period_ns detail_period_ns targets kind spec pids launch cgroup version path limit owned started_t "
    "tick_origin_t sched fifo other journal final counters ticks_missed overruns published dropped inlet_ok "
    "inlet_bad journal_errors journal_lost hwm_spikes procs threads rss_anon rss_file rss_shmem vm_hwm vm_swap "
    "sample_max cg_anon cg_file cg_inactive_file cg_working_set cg_limit cg_peak cg_max_usage cg_oom_kill cg_oom "
    "cg_failcnt psi_some_avg10 psi_full_avg10 psi_some_total_us psi_full_total_us psi_scope system proc_start "
    "proc_exit ppid exe cmdline start_t launched code signal oom_kill restart old_pid hwm_spike bytes t_from t_to "
    "sampled_max limit_change old new overrun missed late_ns count journal_error error phase_start phase_end note "
    "name attrs origin_wall_ns interval_ns rate in_flight completed errors lat_p50_ns lat_p90_ns lat_p99_ns "
    "lat_max_ns src steady ramp burst soak target_rate sent bytes_sent bytes_recv late_sends dropped_sends "
    "schedule_lag_ns workers loop_lag_ns"
).split()
DICT_BYTES = b"".join(msgpack.packb(w) for w in _DICT_WORDS)
CODEC_DEFLATE = 2  # raw deflate (zlib, the standard library) with the same dictionary
CODECS = (CODEC_ZSTD, CODEC_DEFLATE)


def _zstd_dict() -> Any:
    import zstandard

    return zstandard.ZstdCompressionDict(DICT_BYTES, dict_type=zstandard.DICT_TYPE_RAWCONTENT)


class Compressor:
    """One codec's compression. Deflate is the default: as small as zstandard
    level 9 on these blocks (within 1 %), from the standard library, and a
    fraction of the memory (zstandard's dictionary tables cost the sampler ~1.4 MiB
    of RSS); zstandard reads ~4x faster, for readers that want it."""

    def __init__(self, codec: int = CODEC_DEFLATE, level: int | None = None) -> None:
        self.codec = codec
        if codec == CODEC_ZSTD:
            import zstandard

            self._z = zstandard.ZstdCompressor(level=level or 9, dict_data=_zstd_dict(), write_content_size=True)
        elif codec == CODEC_DEFLATE:
            self.level = level or 9
        else:
            raise ValueError(f"unknown codec {codec}")

    def compress(self, data: bytes) -> bytes:
        if self.codec == CODEC_ZSTD:
            return bytes(self._z.compress(data))
        # memLevel 8 and a 32 KiB window: a block is ~30 KB; the state stays ~260 KB
        c = zlib.compressobj(self.level, zlib.DEFLATED, -15, 8, zlib.Z_DEFAULT_STRATEGY, DICT_BYTES)
        return c.compress(data) + c.flush()


class Decompressor:
    def __init__(self) -> None:
        self._zstd: Any = None

    def decompress(self, codec: int, data: bytes) -> bytes:
        if codec == CODEC_DEFLATE:
            d = zlib.decompressobj(-15, DICT_BYTES)
            out = d.decompress(data, MAX_PAYLOAD)
            if d.unconsumed_tail or not d.eof:
                raise ValueError("deflate payload larger than allowed or cut short")
            return out
        if self._zstd is None:
            import zstandard

            self._zstd = zstandard.ZstdDecompressor(dict_data=_zstd_dict())
        return bytes(self._zstd.decompress(data, max_output_size=MAX_PAYLOAD))


_HEAD = struct.Struct("<8sHHI")
_FRAME = struct.Struct("<4sBBHIqqII")  # up to and without the crc
_CRC = struct.Struct("<I")
FRAME_BYTES = _FRAME.size + _CRC.size
_TAIL = struct.Struct("<Q4sI")
TAIL_MAGIC = b"SWIX"
MAX_PAYLOAD = 256 * 1024 * 1024  # anything claiming more is damage
SAMPLES = "samples"
_LITTLE = sys.byteorder == "little"
_INT64 = (-(1 << 63), (1 << 63) - 1)
# widths for pack_ints: array type code, smallest value (the escape), largest
_WIDTHS = {
    1: ("b", -128, 127),
    2: ("h", -(1 << 15), (1 << 15) - 1),
    4: ("i", -(1 << 31), (1 << 31) - 1),
    8: ("q", -(1 << 63), (1 << 63) - 1),
}


def is_v2(head: bytes) -> bool:
    return head[: len(MAGIC)] == MAGIC


# ---------------------------------------------------------------- integers


def pack_ints(xs: list[int]) -> list[Any]:
    """Small signed integers in the narrowest width that holds 95 % of them;
    the rest are escaped (the width's smallest value marks them) and listed."""
    if not xs:
        return [1, b"", []]
    lo, hi = min(xs), max(xs)
    if lo < _INT64[0] or hi > _INT64[1]:
        raise OverflowError("integer outside int64")
    for w in (1, 2, 4, 8):
        code, esc, top = _WIDTHS[w]
        if esc < lo and hi <= top:
            a = array(code, xs)
            return [w, a.tobytes() if _LITTLE else _swap(a), []]
        out = sum(1 for x in xs if not esc < x <= top)
        if out * 20 <= len(xs) or w == 8:
            main = [x if esc < x <= top else esc for x in xs]
            a = array(code, main)
            return [w, a.tobytes() if _LITTLE else _swap(a), [x for x in xs if not esc < x <= top]]
    raise AssertionError("unreachable")


def _swap(a: array[int]) -> bytes:
    b = array(a.typecode, a)
    b.byteswap()
    return b.tobytes()


def unpack_ints(packed: list[Any]) -> list[int]:
    w, raw, exc = packed
    code, esc, _ = _WIDTHS[w]
    a = array(code)
    a.frombytes(raw)
    if not _LITTLE:
        a.byteswap()
    xs = a.tolist()
    if exc:
        it = iter(exc)
        xs = [next(it) if x == esc else x for x in xs]
    return xs


def _is_int(x: Any) -> TypeGuard[int]:
    return type(x) is int and _INT64[0] <= x <= _INT64[1]


# ------------------------------------------------------------ generic groups


def encode_group(bodies: list[Mapping[Any, Any]]) -> list[Any]:
    """Maps as columns: ``[keys, shapes (key numbers), shape ids, columns (one a key)]``.

    A column is ``[0, values]`` or, when every value is an int64, ``[1, first,
    packed deltas / g, g]`` (times, counters and sequence numbers move by little,
    memory figures by whole pages) or ``[2, value, count]`` when it never changes.
    """
    shapes: dict[tuple[Any, ...], int] = {}
    ids: list[int] = []
    cols: dict[Any, list[Any]] = {}
    for b in bodies:
        ks = tuple(b)
        sid = shapes.get(ks)
        if sid is None:
            sid = shapes[ks] = len(shapes)
        ids.append(sid)
        for k, v in b.items():
            col = cols.get(k)
            if col is None:
                cols[k] = [v]
            else:
                col.append(v)
    keys = list(cols)
    at = {k: i for i, k in enumerate(keys)}
    return [keys, [[at[k] for k in s] for s in shapes], pack_ints(ids), [_encode_column(v) for v in cols.values()]]


def _encode_column(vals: list[Any]) -> list[Any]:
    if len(vals) > 1 and all(_is_int(x) for x in vals):
        d = [b - a for a, b in zip(vals, vals[1:])]
        if _INT64[0] <= min(d) and max(d) <= _INT64[1]:
            g = math.gcd(*d)
            if g == 0:  # the same value throughout
                return [2, vals[0], len(vals)]
            if g > 1:  # memory figures move in whole pages
                d = [x // g for x in d]
            return [1, vals[0], pack_ints(d), g]
    return [0, vals]


def decode_group(enc: list[Any]) -> list[dict[Any, Any]]:
    keys, shapes, ids_packed, cols = enc
    ids = unpack_ints(ids_packed)
    values: list[Iterator[Any]] = []
    for col in cols:
        if col[0] == 1:
            d = unpack_ints(col[2])
            if col[3] != 1:
                d = [x * col[3] for x in d]
            values.append(iter(accumulate(d, initial=col[1])))
        elif col[0] == 2:
            values.append(iter([col[1]] * col[2]))
        else:
            values.append(iter(col[1]))
    keyed = [[(keys[i], values[i]) for i in s] for s in shapes]
    return [{k: next(it) for k, it in keyed[i]} for i in ids]


# ----------------------------------------------------------------- samples


def clean_batch(body: Mapping[str, Any]) -> bool:
    """A ``samples`` body the columnar path can hold exactly (else it is stored as is)."""
    dt, series, t = body.get("dt"), body.get("series"), body.get("t")
    if not _is_int(t) or type(dt) is not list or not dt or type(series) is not dict:
        return False
    n = len(dt)
    if not all(_is_int(x) for x in dt) or not _is_int(t + dt[-1]) or not _is_int(t + min(dt)):
        return False
    for name, col in series.items():
        if type(name) is not str or type(col) is not list or len(col) != n or not all(_is_int(x) for x in col):
            return False
    return True


def _no_pause() -> None:
    pass


def encode_samples(
    batches: list[Mapping[str, Any]], quantum_ns: int, pause: Callable[[], None] = _no_pause
) -> tuple[list[Any], list[dict[str, Any]]]:
    """The sample columns of clean batches, and each batch's other fields (its head).

    ``pause`` is called between steps of ~50 µs: the sampler's journal thread lets the
    GIL go there, so the sampling thread never waits for a whole block's encoding."""
    q = quantum_ns
    times: list[int] = []
    sizes: list[int] = []
    shapes: dict[tuple[str, ...], int] = {}
    sids: list[int] = []
    cols: dict[str, list[int]] = {}
    heads: list[dict[str, Any]] = []
    half = q // 2
    # quantised on the absolute grid of q, so two files of one stream (journal and
    # recording) hold the very same times whatever their block boundaries
    base = (batches[0]["t"] + batches[0]["dt"][0] + half) // q * q
    ht: list[int] = []
    for b in batches:
        t = b["t"]
        head = {k: v for k, v in b.items() if k != "dt" and k != "series"}
        # the batch time is quantised like its samples (so dt[0] stays 0) and kept as
        # its offset from the first sample, almost always 0: it costs nothing
        tq = (t + half) // q * q
        del head["t"]
        heads.append(head)
        first = (t + b["dt"][0] + half) // q * q
        ht.append((tq - first) // q)
        times.extend([t + d for d in b["dt"]])
        sizes.append(len(b["dt"]))
        series = b["series"]
        ks = tuple(series)
        sid = shapes.get(ks)
        if sid is None:
            sid = shapes[ks] = len(shapes)
        sids.append(sid)
        for name, col in series.items():
            c = cols.get(name)
            if c is None:
                cols[name] = list(col)
            else:
                c.extend(col)
    pause()
    # times: quanta from the block's first sample, then the tick grid: u = k*p + e
    u = [(x + half) // q * q - base for x in times] if q > 1 else [x - base for x in times]
    if q > 1:
        u = [x // q for x in u]
    if len(u) > 1:
        steps = sorted(b - a for a, b in zip(u, u[1:]) if b > a)
        p = steps[len(steps) // 2] if steps else 1
    else:
        p = 1
    pause()
    k = [(x + p // 2) // p for x in u]
    e = [x - kk * p for x, kk in zip(u, k)]
    pause()
    dk = [b - a for a, b in zip(k, k[1:])]
    series_enc = []
    for name, vals in cols.items():
        pause()
        d = [b - a for a, b in zip(vals, vals[1:])]
        g = math.gcd(*d) or 1 if d else 1
        if g > 1:
            d = [x // g for x in d]
        series_enc.append([name, vals[0], g, pack_ints(d)])
    pause()
    enc = [
        base,
        q,
        p,
        pack_ints(sizes),
        [list(s) for s in shapes],
        pack_ints(sids),
        pack_ints(dk),
        pack_ints(e),
        series_enc,
        pack_ints(ht),
    ]
    return enc, heads


def decode_samples(enc: list[Any], heads: list[dict[str, Any]]) -> list[dict[str, Any]]:
    base, q, p, sizes_p, shapes, sids_p, dk_p, e_p, series_enc, ht_p = enc
    sizes = unpack_ints(sizes_p)
    k = list(accumulate(unpack_ints(dk_p), initial=0))
    times = [base + (kk * p + e) * q for kk, e in zip(k, unpack_ints(e_p))]
    cols = {}
    for name, first, g, d_p in series_enc:
        d = unpack_ints(d_p)
        if g != 1:
            d = [x * g for x in d]
        cols[name] = iter(accumulate(d, initial=first))
    sids = unpack_ints(sids_p)
    out = []
    pos = 0
    for head, n, sid, h in zip(heads, sizes, sids, unpack_ints(ht_p)):
        t = times[pos] + h * q
        body = dict(head)
        body["t"] = t
        body["dt"] = [x - t for x in times[pos : pos + n]]
        body["series"] = {name: [next(cols[name]) for _ in range(n)] for name in shapes[sid]}
        out.append(body)
        pos += n
    return out


# ------------------------------------------------------------------ blocks

QUANTUM_NS = 2000  # sample times kept to ±1 µs; see the module docstring


def encode_block(
    records: list[tuple[str, Mapping[str, Any]]], quantum_ns: int = QUANTUM_NS, pause: Callable[[], None] = _no_pause
) -> bytes:
    """The (uncompressed) msgpack payload of one data block."""
    topics: dict[str, int] = {}
    order = bytearray()
    groups: dict[int, list[Mapping[str, Any]]] = {}
    batches: list[Mapping[str, Any]] = []
    for topic, body in records:
        clean = topic == SAMPLES and clean_batch(body)
        key = topic if not clean else "\x00" + SAMPLES  # clean batches are their own group
        ti = topics.get(key)
        if ti is None:
            ti = topics[key] = len(topics)
            if ti > 255:
                raise ValueError("more than 256 topics in one block")
        order.append(ti)
        if clean:
            batches.append(body)
        else:
            groups.setdefault(ti, []).append(body)
    if batches:
        try:
            s, heads = encode_samples(batches, quantum_ns, pause)
        except OverflowError:  # differences beyond int64 (never from a sampler): store the batches as they are
            return _encode_plain(records)
    block: dict[str, Any] = {"tp": list(topics), "o": bytes(order)}
    if batches:
        block["s"] = s
        groups[topics["\x00" + SAMPLES]] = list(heads)
    g = []
    for ti, bodies in groups.items():
        pause()
        g.append([ti, encode_group(bodies)])
    block["g"] = g
    return msgpack.packb(block, use_bin_type=True)


def _encode_plain(records: list[tuple[str, Mapping[str, Any]]]) -> bytes:
    topics: dict[str, int] = {}
    order = bytearray()
    groups: dict[int, list[Mapping[str, Any]]] = {}
    for topic, body in records:
        ti = topics.setdefault(topic, len(topics))
        order.append(ti)
        groups.setdefault(ti, []).append(body)
    return msgpack.packb(
        {"tp": list(topics), "o": bytes(order), "g": [[ti, encode_group(b)] for ti, b in groups.items()]},
        use_bin_type=True,
    )


def decode_block(payload: bytes) -> list[tuple[str, dict[str, Any]]]:
    block = msgpack.unpackb(payload, raw=False, strict_map_key=False)
    topics = block["tp"]
    bodies: dict[int, Iterator[dict[str, Any]]] = {}
    for ti, enc in block["g"]:
        group = decode_group(enc)
        if topics[ti] == "\x00" + SAMPLES:
            group = decode_samples(block["s"], group)
        bodies[ti] = iter(group)
    names = [t[1:] if t.startswith("\x00") else t for t in topics]
    return [(names[ti], next(bodies[ti])) for ti in block["o"]]


def frame(
    kind: int, payload: bytes, t_first: int, t_last: int, samples: int, records: int, codec: int = CODEC_DEFLATE
) -> bytes:
    head = _FRAME.pack(SYNC, kind, codec, 0, len(payload), t_first, t_last, samples, records)
    crc = zlib.crc32(payload, zlib.crc32(head[4:]))
    return head + _CRC.pack(crc) + payload


def file_header(meta: Mapping[str, Any]) -> bytes:
    m = msgpack.packb(dict(meta), use_bin_type=True)
    head = _HEAD.pack(MAGIC, VERSION, 0, len(m)) + m
    return head + _CRC.pack(zlib.crc32(head))


HELLO = "hello"
REF = "\x00ref"  # a hello stored as what changed since the full hello with this seq
GONE = "\x00gone"  # keys that full hello had and this one has not
KEYFRAME_BLOCKS = 10  # a full hello at least every this many blocks


def hello_delta(full: Mapping[str, Any], body: Mapping[str, Any]) -> dict[str, Any]:
    d: dict[str, Any] = {REF: full["seq"]}
    for k, v in body.items():
        if k not in full or full[k] != v or type(full[k]) is not type(v):
            d[k] = v
    gone = [k for k in full if k not in body]
    if gone:
        d[GONE] = gone
    return d


class HelloExpander:
    """Turns stored hello deltas back into whole hellos while reading in order.

    A delta whose full hello was lost (a damaged block) comes back as what it
    holds (counters, time, ``final``…) with ``partial: True``.
    """

    def __init__(self) -> None:
        self.full: dict[Any, dict[str, Any]] = {}

    def __call__(self, topic: str, body: dict[str, Any]) -> dict[str, Any]:
        if topic != HELLO:
            return body
        ref = body.get(REF)
        if ref is None:
            if isinstance(body.get("seq"), int):
                self.full = {body["seq"]: body}
            return body
        full = self.full.get(ref)
        if full is None:
            out = {k: v for k, v in body.items() if k != REF and k != GONE}
            out["partial"] = True
            return out
        gone = body.get(GONE) or ()
        out = {k: (body[k] if k in body else v) for k, v in full.items() if k not in gone}
        for k, v in body.items():
            if k not in out and k != REF and k != GONE:
                out[k] = v
        return out


class BlockWriter:
    """Writes version 2: records gather into a block, sealed when it holds
    ``block_ns`` of sample time or is ``block_s`` old, and written by :meth:`flush`.

    The same interface as :class:`spikewatch.sampler.wire.recording.RecordingWriter`
    (``write_packed``, ``write``, ``flush``, ``close``, the counters), so the
    journal thread and ``spikewatch record`` use either. A crash loses the open
    block (at most ~1 s) and what a full disk refused: errors propagate as
    :class:`OSError`, sealed blocks wait (up to ``max_pending`` bytes) for a retry.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        quantum_ns: int = QUANTUM_NS,
        block_ns: int = 1_000_000_000,
        block_s: float = 1.0,
        max_pending: int = 16 * 1024 * 1024,
        level: int | None = None,
        codec: int = CODEC_DEFLATE,
    ) -> None:
        self.path = os.fspath(path)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self.quantum_ns = quantum_ns
        self.block_ns = block_ns
        self.block_s = block_s
        self.max_pending = max_pending
        self._z = Compressor(codec, level)
        # called between encoding steps; the journal thread sets time.sleep(0) (lets the GIL go)
        self.pause: Callable[[], None] = _no_pause
        self._pending = bytearray()
        self._frames: list[tuple[int, int]] = []  # (bytes, records) of frames not yet wholly written
        self._head_written = 0
        self._open: list[tuple[str, Mapping[str, Any]]] = []
        self._opened = 0.0
        self._t_first: int | None = None
        self._t_last: int | None = None
        self._s_first: int | None = None
        self._samples = 0
        self._index: list[list[int]] = []
        self._key_hello: Mapping[str, Any] | None = None
        self._since_key = 0
        self._phases: list[list[Any]] = []
        self.bytes_written = 0
        self.records_written = 0
        self.records_dropped = 0
        self.blocks_written = 0
        self._offset = os.lseek(self._fd, 0, os.SEEK_END)
        if self._offset == 0:
            head = file_header({"format": VERSION, "quantum_ns": quantum_ns, "created_wall_ns": time.time_ns()})
            self._queue(head, 0)
            self._offset = len(head)

    # -- the RecordingWriter interface
    def write_packed(self, topic: str, packed_body: bytes) -> None:
        self.write(topic, msgpack.unpackb(packed_body, raw=False, strict_map_key=False))

    def write(self, topic: str, body: Mapping[str, Any]) -> None:
        if not self._open:
            self._opened = time.monotonic()
        if topic == HELLO and isinstance(body.get("seq"), int) and REF not in body:
            # a hello a second barely changes (its counters, time): stored whole
            # every KEYFRAME_BLOCKS blocks, as what changed in between
            key = self._key_hello
            if key is not None and self._since_key < KEYFRAME_BLOCKS and key.get("session") == body.get("session"):
                self._open.append((topic, hello_delta(key, body)))
            else:
                self._key_hello = body
                self._since_key = 0
                self._open.append((topic, body))
        else:
            self._open.append((topic, body))
        t = body.get("t")
        if _is_int(t):
            if topic == SAMPLES and type(body.get("dt")) is list and body["dt"]:
                last = t + body["dt"][-1]
                self._samples += len(body["dt"])
                if self._s_first is None:
                    self._s_first = t
                if _is_int(last) and last > t:
                    t2 = last
                else:
                    t2 = t
            else:
                t2 = t
                if topic == "marker" and body.get("kind") in ("phase_start", "phase_end"):
                    self._phases.append([t, body.get("kind"), body.get("name"), len(self._index)])
            self._t_first = t if self._t_first is None else min(self._t_first, t)
            self._t_last = t2 if self._t_last is None else max(self._t_last, t2)
            if self._s_first is not None and t2 - self._s_first >= self.block_ns:
                self.seal()
        if len(self._open) >= 100_000:
            self.seal()

    @property
    def pending(self) -> int:
        return len(self._pending)

    @property
    def pending_records(self) -> int:
        return sum(r for _, r in self._frames) + len(self._open)

    def seal(self) -> None:
        """Close the open block into a frame queued for the file."""
        recs = self._open
        if not recs:
            return
        payload = self._z.compress(encode_block(recs, self.quantum_ns, self.pause))
        t0 = self._t_first if self._t_first is not None else 0
        t1 = self._t_last if self._t_last is not None else t0
        data = frame(KIND_DATA, payload, t0, t1, self._samples, len(recs), self._z.codec)
        self._open = []
        self._since_key += 1
        self._t_first = self._t_last = self._s_first = None
        samples, self._samples = self._samples, 0
        if self._queue(data, len(recs)):
            self._index.append([self._offset, t0, t1, samples])
            self._offset += len(data)

    def _queue(self, data: bytes, records: int) -> bool:
        if len(self._pending) + len(data) > self.max_pending:
            self.records_dropped += records
            return False
        self._pending += data
        self._frames.append((len(data), records))
        return True

    def flush(self) -> None:
        """Seal a block that is ``block_s`` old, then write what is sealed. A write
        cut short (a full disk) leaves the rest first in the buffer."""
        if self._open and time.monotonic() - self._opened >= self.block_s:
            self.seal()
        while self._pending:
            n = os.write(self._fd, self._pending)
            self.bytes_written += n
            del self._pending[:n]
            done = self._head_written + n
            frames = self._frames
            while frames and done >= frames[0][0]:
                done -= frames[0][0]
                self.records_written += frames.pop(0)[1]
            self._head_written = done

    def close(self) -> None:
        try:
            self.seal()
            if self._index or self._phases:
                idx = self._z.compress(
                    msgpack.packb({"blocks": self._index, "phases": self._phases}, use_bin_type=True)
                )
                t0 = self._index[0][1] if self._index else 0
                t1 = self._index[-1][2] if self._index else 0
                at = self._offset
                data = frame(KIND_INDEX, idx, t0, t1, sum(b[3] for b in self._index), 0, self._z.codec)
                tail_off = struct.pack("<Q", at)
                data += _TAIL.pack(at, TAIL_MAGIC, zlib.crc32(tail_off))
                self._queue(data, 0)
            self.flush()
        finally:
            os.close(self._fd)

    def __enter__(self) -> BlockWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ------------------------------------------------------------------ reading


class Salvage:
    """What a reader kept of a file and what it could not: said in the report."""

    def __init__(self, fmt: int = 0) -> None:
        self.format = fmt
        self.bytes_total = 0
        self.torn_tail_bytes = 0
        self.skipped: list[dict[str, Any]] = []  # {"from_byte", "to_byte", "t_before", "t_after"}
        self.closed: bool | None = None  # v2: the writer's closing index is there
        self.blocks = 0
        self.records = 0
        self.last_t: int | None = None

    def skip(self, start: int, end: int) -> None:
        if self.skipped and self.skipped[-1]["to_byte"] == start:
            self.skipped[-1]["to_byte"] = end
            return
        self.skipped.append({"from_byte": start, "to_byte": end, "t_before": self.last_t, "t_after": None})

    def undecodable(self, fr: RawFrame) -> None:
        self.skipped.append(
            {
                "from_byte": fr.offset,
                "to_byte": fr.offset + fr.size,
                "t_before": fr.t_first,
                "t_after": fr.t_last,
                "undecodable": True,
            }
        )
        self.blocks -= 1
        self.records -= fr.records

    def seen_t(self, t: int | None) -> None:
        if t is None:
            return
        if self.skipped and self.skipped[-1]["t_after"] is None:
            self.skipped[-1]["t_after"] = t
        self.last_t = t


class RawFrame:
    __slots__ = ("offset", "kind", "t_first", "t_last", "samples", "records", "payload", "size")

    def __init__(
        self, offset: int, kind: int, t_first: int, t_last: int, samples: int, records: int, payload: bytes
    ) -> None:
        self.offset, self.kind, self.t_first, self.t_last = offset, kind, t_first, t_last
        self.samples, self.records, self.payload = samples, records, payload
        self.size = 0  # bytes in the file, frame header included


class FormatError(ValueError):
    pass


def read_header(f: BinaryIO) -> dict[str, Any]:
    head = f.read(_HEAD.size)
    if len(head) < _HEAD.size or not is_v2(head):
        raise FormatError("not a version 2 recording")
    _, version, _, n = _HEAD.unpack(head)
    if version != VERSION:
        raise FormatError(f"recording format version {version}: this spikewatch reads 1 and 2")
    m = f.read(n)
    crc = f.read(4)
    if len(m) < n or len(crc) < 4 or _CRC.unpack(crc)[0] != zlib.crc32(head + m):
        raise FormatError("damaged recording header")
    header: dict[str, Any] = msgpack.unpackb(m, raw=False)
    return header


def iter_frames(
    f: BinaryIO, salvage: Salvage | None = None, *, chunk: int = 4 << 20, payloads: bool = True
) -> Iterator[RawFrame]:
    """Every frame whose checksum holds, after the header; damage is skipped (found
    again by the next SYNC) and noted in ``salvage``; a torn last frame is noted."""
    s = salvage or Salvage(2)
    s.format = 2
    read_header(f)
    pos = f.tell()
    buf = b""
    bpos = 0  # buf[bpos] is file offset pos
    eof = False
    d = Decompressor()
    s.closed = False
    bad_from: int | None = None

    def more(need: int) -> bool:
        nonlocal buf, bpos, eof
        while len(buf) - bpos < need and not eof:
            data = f.read(max(chunk, need))
            if not data:
                eof = True
                break
            buf = buf[bpos:] + data
            bpos = 0
        return len(buf) - bpos >= need

    while True:
        more(FRAME_BYTES)
        rest = len(buf) - bpos
        if rest >= 4 and buf[bpos : bpos + 4] != SYNC:
            if buf[bpos : bpos + len(MAGIC)] == MAGIC and more(_HEAD.size):
                # another file's header: two recordings joined end to end (cat a b > c)
                hn = _HEAD.unpack_from(buf, bpos)[3]
                if (
                    hn < 65536
                    and more(_HEAD.size + hn + 4)
                    and _CRC.unpack_from(buf, bpos + _HEAD.size + hn)[0]
                    == zlib.crc32(buf[bpos : bpos + _HEAD.size + hn])
                ):
                    if bad_from is not None:
                        s.skip(bad_from, pos)
                        bad_from = None
                    pos += _HEAD.size + hn + 4
                    bpos += _HEAD.size + hn + 4
                    continue
            if (
                rest >= _TAIL.size
                and buf[bpos + 8 : bpos + 12] == TAIL_MAGIC
                and _CRC.unpack_from(buf, bpos + 12)[0] == zlib.crc32(buf[bpos : bpos + 8])
            ):
                if bad_from is not None:
                    s.skip(bad_from, pos)
                    bad_from = None
                pos += _TAIL.size
                bpos += _TAIL.size
                s.closed = True
                continue
            if bad_from is None:
                bad_from = pos
            nxt = buf.find(SYNC, bpos + 1)
            step = (nxt - bpos) if nxt >= 0 else max(1, rest - 3)
            pos += step
            bpos += step
            continue
        if rest < FRAME_BYTES:
            if rest:
                if bad_from is not None and buf[bpos : bpos + 4] != SYNC[: min(4, rest)]:
                    s.skip(bad_from, pos + rest)
                else:
                    if bad_from is not None:
                        s.skip(bad_from, pos)
                    s.torn_tail_bytes += rest
            elif bad_from is not None:
                s.skip(bad_from, pos)
            s.bytes_total = pos + rest
            return
        _, kind, codec, _, n, t0, t1, samples, records = _FRAME.unpack_from(buf, bpos)
        if n > MAX_PAYLOAD or codec not in CODECS or kind not in (KIND_DATA, KIND_INDEX):
            if bad_from is None:
                bad_from = pos
            pos += 1
            bpos += 1
            continue
        if not more(FRAME_BYTES + n):
            # a frame that runs past the end: the torn tail of a writer that stopped
            if bad_from is not None:
                s.skip(bad_from, pos)
            s.torn_tail_bytes += len(buf) - bpos
            s.bytes_total = pos + len(buf) - bpos
            return
        (crc,) = _CRC.unpack_from(buf, bpos + _FRAME.size)
        body = buf[bpos + FRAME_BYTES : bpos + FRAME_BYTES + n]
        if zlib.crc32(body, zlib.crc32(buf[bpos + 4 : bpos + _FRAME.size])) != crc:
            if bad_from is None:
                bad_from = pos
            pos += 1
            bpos += 1
            continue
        if bad_from is not None:
            s.skip(bad_from, pos)
            bad_from = None
        s.closed = False  # anything after an index means the file went on
        if kind == KIND_DATA:
            s.blocks += 1
            s.records += records
            s.seen_t(t0)
            s.last_t = t1
        fr = RawFrame(pos, kind, t0, t1, samples, records, d.decompress(codec, body) if payloads else b"")
        fr.size = FRAME_BYTES + n
        yield fr
        pos += FRAME_BYTES + n
        bpos += FRAME_BYTES + n


def iter_records(f: BinaryIO, salvage: Salvage | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every record of the data blocks, in written order (pure Python)."""
    expand = HelloExpander()
    s = salvage or Salvage(2)
    for fr in iter_frames(f, s):
        if fr.kind == KIND_DATA:
            try:
                records = decode_block(fr.payload)
            except Exception:  # whole by its checksum, yet not decodable: written by another writer version
                s.undecodable(fr)
                continue
            for topic, body in records:
                yield topic, expand(topic, body)


def read_index(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The writer's closing index (blocks: [offset, t_first, t_last, samples], phases:
    [t, kind, name, block]); without one (a writer that stopped), the blocks by a scan."""
    with open(path, "rb") as f:
        read_header(f)
        start = f.tell()
        f.seek(0, os.SEEK_END)
        size = f.tell()
        if size - start >= _TAIL.size + FRAME_BYTES:
            f.seek(size - _TAIL.size)
            at, magic, crc = _TAIL.unpack(f.read(_TAIL.size))
            if magic == TAIL_MAGIC and crc == zlib.crc32(struct.pack("<Q", at)) and start <= at < size:
                f.seek(at)
                payload = _frame_at(f, KIND_INDEX)
                if payload is not None:
                    idx: dict[str, Any] = msgpack.unpackb(payload, raw=False)
                    idx["complete"] = True
                    return idx
        f.seek(0)
        blocks = [
            [fr.offset, fr.t_first, fr.t_last, fr.samples]
            for fr in iter_frames(f, payloads=False)
            if fr.kind == KIND_DATA
        ]
        return {"blocks": blocks, "phases": [], "complete": False}


def _frame_at(f: BinaryIO, kind: int) -> bytes | None:
    """The decompressed payload of the frame at the file position, if whole and of ``kind``."""
    head = f.read(FRAME_BYTES)
    if len(head) < FRAME_BYTES or head[:4] != SYNC:
        return None
    _, k, codec, _, n, *_ = _FRAME.unpack_from(head)
    if k != kind or codec not in CODECS or n > MAX_PAYLOAD:
        return None
    body = f.read(n)
    if len(body) < n or zlib.crc32(body, zlib.crc32(head[4 : _FRAME.size])) != _CRC.unpack_from(head, _FRAME.size)[0]:
        return None
    return Decompressor().decompress(codec, body)
