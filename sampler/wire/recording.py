"""The recording format: the stream itself, length-framed, append only.

A recording (the sampler's journal, or what ``spikewatch record`` writes) is a
sequence of records, each ``<u32 little-endian length><msgpack [topic, body]>``
where ``body`` is exactly the map that went on the wire. The length frame lets
a reader stop cleanly at the last whole record of a file that is still being
written or whose writer crashed mid-record.

The writer takes already-packed bodies so the sampler packs each message once
for the socket and the journal alike.
"""

from __future__ import annotations

import collections
import os
import struct
from pathlib import Path
from typing import Any, BinaryIO, Iterator, Mapping

import msgpack

from . import protocol

#: The newest recording format this code writes (``spikewatch --version`` says it).
FORMAT_VERSION = 1

_LEN = struct.Struct("<I")
MAX_RECORD = 64 * 1024 * 1024  # anything claiming to be larger is corruption
_ARRAY2 = b"\x92"  # msgpack fixarray header for two elements


def frame_packed(topic: str, packed_body: bytes) -> bytes:
    """One record from a topic and a body already packed with :func:`protocol.pack`."""
    payload = _ARRAY2 + msgpack.packb(topic) + packed_body
    return _LEN.pack(len(payload)) + payload


def frame(topic: str, body: Mapping[str, Any]) -> bytes:
    """One record from a topic and a body map."""
    return frame_packed(topic, protocol.pack(body))


class RecordingWriter:
    """Appends records to a file; buffered, flushed on :meth:`flush`.

    Errors (a full disk, a removed folder) propagate as :class:`OSError` so the
    caller can report them; records that could not be written are kept in the
    buffer up to ``max_pending`` bytes and retried on the next flush.
    """

    def __init__(self, path: str | os.PathLike[str], max_pending: int = 16 * 1024 * 1024) -> None:
        self.path = Path(path)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._pending = bytearray()
        # Sizes of the records in the buffer, oldest first, and how much of the
        # oldest already reached the file: so a full disk can be reported as
        # a count of records, not bytes.
        self._sizes: collections.deque[int] = collections.deque()
        self._head_written = 0
        self.max_pending = max_pending
        self.bytes_written = 0
        self.records_written = 0
        self.records_dropped = 0

    def write_packed(self, topic: str, packed_body: bytes) -> None:
        rec = frame_packed(topic, packed_body)
        if len(self._pending) + len(rec) > self.max_pending:
            self.records_dropped += 1
            return
        self._pending += rec
        self._sizes.append(len(rec))

    def write(self, topic: str, body: Mapping[str, Any]) -> None:
        self.write_packed(topic, protocol.pack(body))

    @property
    def pending(self) -> int:
        """Bytes buffered, not yet in the file."""
        return len(self._pending)

    @property
    def pending_records(self) -> int:
        """Records not (wholly) in the file yet."""
        return len(self._sizes)

    def flush(self) -> None:
        """Write out what is buffered. A write cut short (a full disk) leaves the
        rest of its record first in the buffer, so the file stays a sequence of
        whole records followed at most by one torn one, completed on retry."""
        while self._pending:
            n = os.write(self._fd, self._pending)
            self.bytes_written += n
            del self._pending[:n]
            done = self._head_written + n
            sizes = self._sizes
            while sizes and done >= sizes[0]:
                done -= sizes.popleft()
                self.records_written += 1
            self._head_written = done

    def close(self) -> None:
        try:
            self.flush()
        finally:
            os.close(self._fd)

    def __enter__(self) -> "RecordingWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RecordingError(ValueError):
    """The file is not a spikewatch recording (or is corrupt before its tail)."""


def iter_records(source: str | os.PathLike[str] | BinaryIO, *, chunk: int = 1 << 20) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield ``(topic, body)`` for every whole record; a torn tail is ignored.

    Works on a file that is still being written: it reads what is there now.
    """
    own = not hasattr(source, "read")
    f: BinaryIO = open(source, "rb") if own else source  # type: ignore[arg-type, assignment]
    try:
        buf = b""
        pos = 0
        while True:
            data = f.read(chunk)
            if data:
                buf = buf[pos:] + data
                pos = 0
            while len(buf) - pos >= 4:
                (n,) = _LEN.unpack_from(buf, pos)
                if n > MAX_RECORD or n < 2:
                    raise RecordingError(f"record at byte {f.tell() - len(buf) + pos} claims {n} bytes: not a recording")
                if len(buf) - pos - 4 < n:
                    break
                try:
                    topic, body = msgpack.unpackb(buf[pos + 4 : pos + 4 + n], raw=False, strict_map_key=False)
                except Exception as exc:
                    raise RecordingError(f"record at byte {f.tell() - len(buf) + pos} is not msgpack [topic, body]: {exc}") from None
                pos += 4 + n
                yield topic, body
            if not data:
                return
    finally:
        if own:
            f.close()
