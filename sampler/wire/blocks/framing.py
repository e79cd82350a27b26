"""Version 2's framing: the file header, the frame around each block, the
codecs that compress a block's payload, and reading one header or frame back.

Standard library and msgpack only (zstandard only for a file written with it):
the sampler's journal thread uses it.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Mapping, Sequence
from typing import Any, BinaryIO

import msgpack

from . import sections

MAGIC = b"\x89SPKW\r\n\x1a"
VERSION = 4  # 3 plus codec 3 (sections, a dictionary of typical blocks) and column kind 7
VERSIONS = (2, 3, 4)  # what this reader reads
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
CODEC_SECTIONS = 3  # version 4: deflate sections, the main one against a dictionary of typical blocks (.sections)
CODECS = (CODEC_ZSTD, CODEC_DEFLATE, CODEC_SECTIONS)


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
        elif codec == CODEC_SECTIONS:
            # level 7: against a dictionary of similar blocks level 9's long match searches
            # cost ~5x the CPU (~4 ms a block) for 1 % of the size
            self.level = level or 7
        else:
            raise ValueError(f"unknown codec {codec}")

    def compress(self, data: bytes, sides: Sequence[bytes] = ()) -> bytes:
        """``data`` compressed; ``sides``: byte strings in it worth a section of their own (codec 3)."""
        if self.codec == CODEC_ZSTD:
            return bytes(self._z.compress(data))
        if self.codec == CODEC_SECTIONS:
            return sections.compress(data, sides, self.level)
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
        if codec == CODEC_SECTIONS:
            return sections.decompress(data, MAX_PAYLOAD)
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


def is_v2(head: bytes) -> bool:
    return head[: len(MAGIC)] == MAGIC


def frame(
    kind: int, payload: bytes, t_first: int, t_last: int, samples: int, records: int, codec: int = CODEC_DEFLATE
) -> bytes:
    head = _FRAME.pack(SYNC, kind, codec, 0, len(payload), t_first, t_last, samples, records)
    crc = zlib.crc32(payload, zlib.crc32(head[4:]))
    return head + _CRC.pack(crc) + payload


def file_header(meta: Mapping[str, Any], version: int = VERSION) -> bytes:
    m = msgpack.packb(dict(meta), use_bin_type=True)
    head = _HEAD.pack(MAGIC, version, 0, len(m)) + m
    return head + _CRC.pack(zlib.crc32(head))


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
    if version not in VERSIONS:
        raise FormatError(f"recording format version {version}: this spikewatch reads 1, 2, 3 and 4")
    m = f.read(n)
    crc = f.read(4)
    if len(m) < n or len(crc) < 4 or _CRC.unpack(crc)[0] != zlib.crc32(head + m):
        raise FormatError("damaged recording header")
    header: dict[str, Any] = msgpack.unpackb(m, raw=False)
    header["format"] = version  # the fixed field is the authority
    return header


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
    try:
        return Decompressor().decompress(codec, body)
    except (zlib.error, ValueError, struct.error):  # whole, yet not ours to read: as if absent
        return None
