"""Reading version 2: every frame whose checksum holds, damage skipped and said
(:class:`Salvage`), the records back in written order, and the closing index."""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Iterator
from typing import Any, BinaryIO

import msgpack

from .codec import HelloExpander, decode_block
from .columns import decode_group
from .framing import (
    _CRC,
    _FRAME,
    _HEAD,
    _TAIL,
    CODECS,
    FRAME_BYTES,
    KIND_DATA,
    KIND_INDEX,
    MAGIC,
    MAX_PAYLOAD,
    SYNC,
    TAIL_MAGIC,
    Decompressor,
    RawFrame,
    _frame_at,
    read_header,
)


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
        _, kind, codec, pad, n, t0, t1, samples, records = _FRAME.unpack_from(buf, bpos)
        # the zero pad too: a damaged length could otherwise pass for a torn tail mid-file
        if n > MAX_PAYLOAD or codec not in CODECS or kind not in (KIND_DATA, KIND_INDEX) or pad:
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
        try:
            payload = d.decompress(codec, body) if payloads else b""
        except (zlib.error, ValueError, struct.error):
            payload = None  # whole by its checksum, yet not decompressible: another writer's codec or dictionary
        fr = RawFrame(pos, kind, t0, t1, samples, records, payload or b"")
        fr.size = FRAME_BYTES + n
        if payload is None:
            if kind == KIND_DATA:
                s.undecodable(fr)
        else:
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
                    bc = idx.pop("bc", None)
                    if bc is not None:  # version 4: the blocks as columns
                        idx["blocks"] = [[b["o"], b["a"], b["a"] + b["z"], b["n"]] for b in decode_group(bc)]
                    idx["complete"] = True
                    return idx
        f.seek(0)
        blocks = [
            [fr.offset, fr.t_first, fr.t_last, fr.samples]
            for fr in iter_frames(f, payloads=False)
            if fr.kind == KIND_DATA
        ]
        return {"blocks": blocks, "phases": [], "complete": False}
