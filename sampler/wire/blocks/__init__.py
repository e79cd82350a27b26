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

Version 3 is version 2 with more column kinds in ``g`` (maps as nested groups,
floats exact, integers relative to another column or as offsets, short decimals;
:mod:`.columns`) and the sample deviations optionally as deltas (``s[10]``).
Version 4 (written now) is version 3 with codec 3 (:mod:`.sections`: the
deviations compressed apart, the rest against a dictionary of typical blocks),
kind 7 (a float derived from two integer columns), integer columns relative to an
earlier twin, a series relative to the first (``s[8][i][4]``) and the closing
index as columns. The header's version field tells them apart, and a block
appended to an older file keeps to that version's kinds and codec.
docs/recording.md has the tables.

The package, one job a module; this face re-exports what readers and writers use:

* :mod:`.ints` — integers packed narrow;
* :mod:`.columns` — maps as columns (``g``);
* :mod:`.samples` — the sample columns (``s``);
* :mod:`.codec` — one block's payload, and the hello stored as deltas;
* :mod:`.framing` — the file header, the frame, the codecs;
* :mod:`.sections` — codec 3, and :mod:`.dict4` its dictionary;
* :mod:`.writer` — :class:`BlockWriter`;
* :mod:`.reader` — frames, records and the index back, damage salvaged.

It imports only the standard library and msgpack (zstandard only for a file
written with it): the sampler's journal thread uses it. Readers with numpy
decode the sample columns in bulk (:mod:`spikewatch.analysis.reader`).
"""

from __future__ import annotations

from .codec import (
    GONE,
    HELLO,
    KEYFRAME_BLOCKS,
    QUANTUM_NS,
    REF,
    SAMPLES,
    HelloExpander,
    decode_block,
    encode_block,
    hello_delta,
)
from .columns import decode_group, encode_group, group_columns
from .framing import (
    CODEC_DEFLATE,
    CODEC_SECTIONS,
    CODEC_ZSTD,
    CODECS,
    DICT_BYTES,
    FRAME_BYTES,
    KIND_DATA,
    KIND_INDEX,
    MAGIC,
    MAX_PAYLOAD,
    SYNC,
    TAIL_MAGIC,
    VERSION,
    VERSIONS,
    Compressor,
    Decompressor,
    FormatError,
    RawFrame,
    file_header,
    frame,
    is_v2,
    read_header,
)
from .ints import is_int, pack_ints, unpack_ints
from .reader import Salvage, iter_frames, iter_records, read_index
from .samples import clean_batch, decode_samples, encode_samples, series_deltas, series_ref
from .writer import BlockWriter

_is_int = is_int  # the name analysis.reader used before the split

__all__ = [
    "CODECS",
    "CODEC_DEFLATE",
    "CODEC_SECTIONS",
    "CODEC_ZSTD",
    "DICT_BYTES",
    "FRAME_BYTES",
    "GONE",
    "HELLO",
    "KEYFRAME_BLOCKS",
    "KIND_DATA",
    "KIND_INDEX",
    "MAGIC",
    "MAX_PAYLOAD",
    "QUANTUM_NS",
    "REF",
    "SAMPLES",
    "SYNC",
    "TAIL_MAGIC",
    "VERSION",
    "VERSIONS",
    "group_columns",
    "BlockWriter",
    "Compressor",
    "Decompressor",
    "FormatError",
    "HelloExpander",
    "RawFrame",
    "Salvage",
    "clean_batch",
    "decode_block",
    "decode_group",
    "decode_samples",
    "encode_block",
    "encode_group",
    "encode_samples",
    "file_header",
    "frame",
    "hello_delta",
    "is_int",
    "is_v2",
    "iter_frames",
    "iter_records",
    "pack_ints",
    "read_header",
    "read_index",
    "series_deltas",
    "series_ref",
    "unpack_ints",
]
