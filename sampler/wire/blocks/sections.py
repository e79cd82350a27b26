"""Codec 3 (recording format 4): a block's payload as deflate sections.

One deflate stream over a whole block shares one Huffman table between very
different bytes: the sample-time deviations (noise of a few bits a tick, a third of
a block) and everything else (structure, zero runs, wide integers). Cut out and
coded alone (run-length and Huffman only), the deviations cost ~8 % less, and the
rest compresses better too. The rest is compressed against :data:`.dict4.DICT4`, a
fixed dictionary of typical blocks (key lists, column headers, a hello), so a
block's structure costs little more than a reference to it: together about a
quarter less than codec 2 on a journal.

    payload = u8 n | n x (u32 position, u32 length) | u32 main length | main | side*

``main`` is raw deflate with :data:`DICT4` of the payload less the ``n`` sides;
each side is raw deflate (no dictionary) of the bytes that stood at ``position``
(in the whole payload, in increasing order). The decompressed payload is the very
msgpack block codec 2 would hold, so every reader above this is unchanged.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence

from .dict4 import DICT4

_N = struct.Struct("<B")
_SIDE = struct.Struct("<II")
_LEN = struct.Struct("<I")
MIN_SIDE = 256  # a smaller side would pay more for its own Huffman table than it saves


def compress(data: bytes, sides: Sequence[bytes], level: int) -> bytes:
    """``data`` with each of ``sides`` (byte strings found in it; too short or not
    found: left in) coded as a section of its own."""
    cuts: list[tuple[int, bytes]] = []
    for raw in sides:
        if len(raw) < MIN_SIDE or len(cuts) == 255:
            continue
        at = data.find(raw)  # any occurrence: putting the same bytes back where they were is exact
        if at >= 0 and all(at + len(raw) <= p or p + len(r) <= at for p, r in cuts):
            cuts.append((at, raw))
    cuts.sort()
    view = memoryview(data)  # the main section fed to the compressor piece by piece, never copied whole
    c = zlib.compressobj(level, zlib.DEFLATED, -15, 8, zlib.Z_DEFAULT_STRATEGY, DICT4)
    parts = []
    done = 0
    for at, raw in cuts:
        parts.append(c.compress(view[done:at]))
        done = at + len(raw)
    parts.append(c.compress(view[done:]))
    parts.append(c.flush())
    del c
    packed_main = b"".join(parts)
    heads = [_N.pack(len(cuts))]
    bodies = [packed_main]
    for at, raw in cuts:
        s = zlib.compressobj(level, zlib.DEFLATED, -15, 8, zlib.Z_RLE)
        body = s.compress(raw) + s.flush()
        heads.append(_SIDE.pack(at, len(body)))
        bodies.append(body)
    heads.append(_LEN.pack(len(packed_main)))
    return b"".join(heads + bodies)


def _inflate(data: bytes, zdict: bytes | None, limit: int) -> bytes:
    d = zlib.decompressobj(-15, zdict) if zdict is not None else zlib.decompressobj(-15)
    out = d.decompress(data, limit)
    if d.unconsumed_tail or not d.eof or d.unused_data:
        raise ValueError("deflate section larger than allowed, cut short or followed by junk")
    return out


def decompress(data: bytes, limit: int) -> bytes:
    (n,) = _N.unpack_from(data, 0)
    pos = _N.size
    cuts = []
    for _ in range(n):
        cuts.append(_SIDE.unpack_from(data, pos))
        pos += _SIDE.size
    (main_len,) = _LEN.unpack_from(data, pos)
    pos += _LEN.size
    main = _inflate(data[pos : pos + main_len], DICT4, limit)
    pos += main_len
    out = bytearray()
    used = 0
    for at, length in cuts:
        if at < len(out):
            raise ValueError("sections out of order")
        side = _inflate(data[pos : pos + length], None, limit)
        pos += length
        take = at - len(out)
        if used + take > len(main):
            raise ValueError("a section placed past the end of its block")
        out += main[used : used + take]
        used += take
        out += side
        if len(out) > limit:
            raise ValueError("block payload larger than allowed")
    if pos != len(data):
        raise ValueError("bytes after the last section")
    out += main[used:]
    if len(out) > limit:
        raise ValueError("block payload larger than allowed")
    return bytes(out)
