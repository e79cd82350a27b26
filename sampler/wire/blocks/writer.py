"""The version 2 writer: records gather into blocks, sealed and framed, written
by :meth:`BlockWriter.flush`, the closing index appended by :meth:`BlockWriter.close`."""

from __future__ import annotations

import os
import struct
import time
import zlib
from collections.abc import Callable, Mapping
from typing import Any

import msgpack

from .codec import HELLO, KEYFRAME_BLOCKS, QUANTUM_NS, REF, SAMPLES, encode_block, hello_delta
from .columns import encode_group
from .framing import (
    _TAIL,
    CODEC_DEFLATE,
    CODEC_SECTIONS,
    KIND_DATA,
    KIND_INDEX,
    TAIL_MAGIC,
    VERSION,
    Compressor,
    file_header,
    frame,
    read_header,
)
from .ints import is_int as _is_int
from .samples import no_pause


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
        codec: int | None = None,
        version: int | None = None,
    ) -> None:
        """``codec`` None: the best the file's version reads (codec 3 from version 4);
        ``version``: of a new file (default the newest; an existing file keeps its own)."""
        self.path = os.fspath(path)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self.quantum_ns = quantum_ns
        self.block_ns = block_ns
        self.block_s = block_s
        self.max_pending = max_pending
        # called between encoding steps; the journal thread sets time.sleep(0) (lets the GIL go)
        self.pause: Callable[[], None] = no_pause
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
        self.version = version or VERSION
        head = b""
        if self._offset == 0:
            meta = {"format": self.version, "quantum_ns": quantum_ns, "created_wall_ns": time.time_ns()}
            head = file_header(meta, self.version)
        else:
            # appending: blocks a reader of the file's own version can read
            with open(self.path, "rb") as f:
                self.version = read_header(f)["format"]
        if codec is None or (codec == CODEC_SECTIONS and self.version < 4):
            codec = CODEC_SECTIONS if self.version >= 4 else CODEC_DEFLATE
        self._z = Compressor(codec, level)
        if head:
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
    def samples_from(self) -> int | None:
        """The time of the open block's first ``samples`` batch: the block ends with the
        batch whose last sample is ``block_ns`` after it (None: no batch yet)."""
        return self._s_first

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
        sides: list[bytes] | None = [] if self._z.codec == CODEC_SECTIONS else None
        payload = self._z.compress(encode_block(recs, self.quantum_ns, self.pause, self.version, sides), sides or ())
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
                index: dict[str, Any] = {"blocks": self._index, "phases": self._phases}
                if self.version >= 4:  # as columns: ~1 byte a block instead of ~20
                    del index["blocks"]
                    index["bc"] = encode_group([{"o": o, "a": a, "z": z - a, "n": n} for o, a, z, n in self._index])
                idx = self._z.compress(msgpack.packb(index, use_bin_type=True))
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
