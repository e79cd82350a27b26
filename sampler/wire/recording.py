"""The recording formats: version 1 (the stream itself, length-framed) and version 2.

Version 2 (:mod:`.blocks`: columnar, compressed, checksummed blocks) is what
the journal and ``spikewatch record`` write (:func:`open_writer`);
:func:`iter_records` reads both, telling them apart by the first bytes, and
notes what it had to skip. Version 1, described here:

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
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import msgpack

from . import blocks, protocol
from .blocks import BlockWriter

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

    def __enter__(self) -> RecordingWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_writer(
    path: str | os.PathLike[str], *, format: int | None = None, **options: Any
) -> RecordingWriter | BlockWriter:
    """A writer for ``path``: version 2 (:mod:`.blocks`) for a new or version 2 file,
    version 1 when appending to a version 1 file (one file never mixes formats)."""
    if format is None:
        format = 2
        try:
            with open(path, "rb") as f:
                head = f.read(len(blocks.MAGIC))
            if head and not blocks.is_v2(head):
                format = 1
        except FileNotFoundError:
            pass
    if format == 1:
        return RecordingWriter(path, **{k: v for k, v in options.items() if k == "max_pending"})
    return BlockWriter(path, **options)


class RecordingError(ValueError):
    """The file is not a spikewatch recording (or is corrupt before its tail)."""


Salvage = blocks.Salvage
_TOPIC_BYTES = {t.encode() for t in protocol.TOPICS}


def file_format(path: str | os.PathLike[str]) -> int:
    """1 or 2, from the first bytes of the file (2 for an empty one)."""
    with open(path, "rb") as f:
        head = f.read(len(blocks.MAGIC))
    return 2 if (not head or blocks.is_v2(head)) else 1


def iter_records(
    source: str | os.PathLike[str] | BinaryIO, *, chunk: int = 1 << 20, salvage: Salvage | None = None
) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield ``(topic, body)`` for every whole record, either format.

    Works on a file that is still being written: it reads what is there now. What
    could not be read is noted in ``salvage`` (a torn tail, damaged ranges skipped:
    version 1 finds the next plausible length-framed record, version 2 the next
    block whose checksum holds). A file that is no recording at all raises
    :class:`RecordingError`.
    """
    own = not hasattr(source, "read")
    f: BinaryIO = open(source, "rb") if own else source  # type: ignore[arg-type, assignment]
    try:
        start = f.tell()
        head = f.read(len(blocks.MAGIC))
        f.seek(start)
        if blocks.is_v2(head):
            try:
                yield from blocks.iter_records(f, salvage)
            except blocks.FormatError as exc:
                raise RecordingError(f"{getattr(f, 'name', 'recording')}: {exc}") from None
            return
        yield from _iter_v1(f, chunk, salvage or Salvage(1))
    finally:
        if own:
            f.close()


def _plausible_v1(buf: bytes, pos: int) -> int:
    """The length of a record starting at ``pos`` if it looks like one (0 if not, -1 if cut off)."""
    if len(buf) - pos < 6:
        return -1
    (n,) = _LEN.unpack_from(buf, pos)
    if n > MAX_RECORD or n < 2 or buf[pos + 4] != 0x92:
        return 0
    ln = buf[pos + 5] - 0xA0
    if not 0 <= ln < 32 or len(buf) - pos < 6 + ln:
        return 0 if not 0 <= ln < 32 else -1
    if bytes(buf[pos + 6 : pos + 6 + ln]) not in _TOPIC_BYTES:
        return 0
    return int(n)


def _iter_v1(f: BinaryIO, chunk: int, s: Salvage) -> Iterator[tuple[str, dict[str, Any]]]:
    s.format = 1
    buf = b""
    pos = 0
    base = f.tell()  # file offset of buf[0]
    bad_from: int | None = None
    good = 0
    eof = False
    while True:
        data = b"" if eof else f.read(chunk)
        if data:
            base += pos
            buf = buf[pos:] + data
            pos = 0
        else:
            eof = True
        while len(buf) - pos >= 4:
            (n,) = _LEN.unpack_from(buf, pos)
            record = None
            if bad_from is not None or n > MAX_RECORD or n < 2:
                m = _plausible_v1(buf, pos)
                if m < 0 and not eof:
                    break  # need more bytes to judge
                n = m
            if n >= 2 and len(buf) - pos - 4 < n:
                if not eof:
                    break
                n = 0 if bad_from is not None else n
                if n:
                    break  # a torn tail
            if n >= 2:
                try:
                    record = msgpack.unpackb(buf[pos + 4 : pos + 4 + n], raw=False, strict_map_key=False)
                except Exception:
                    record = None
                if not (
                    isinstance(record, list)
                    and len(record) == 2
                    and isinstance(record[0], str)
                    and isinstance(record[1], dict)
                ):
                    record = None
            if record is None:
                if good == 0 and bad_from is None and base + pos == 0:
                    raise RecordingError(f"record at byte 0 claims {n} bytes: not a recording")
                if bad_from is None:
                    bad_from = base + pos
                pos += 1
                continue
            if bad_from is not None:
                s.skip(bad_from, base + pos)
                bad_from = None
            good += 1
            s.records += 1
            t = record[1].get("t")
            s.seen_t(t if isinstance(t, int) and not isinstance(t, bool) else None)
            pos += 4 + n
            yield record[0], record[1]
        if eof:
            rest = len(buf) - pos
            if bad_from is not None:
                s.skip(bad_from, base + len(buf))
            elif rest:
                s.torn_tail_bytes += rest
            s.bytes_total = base + len(buf)
            return


# -- segments: a journal rotated by the sampler (--journal-rotate) is one run in several files

SEGMENT_DIGITS = 6


def segment_path(path: str | os.PathLike[str], n: int) -> Path:
    """The ``n``-th segment of a rotated journal: ``PATH.000001``, ``PATH.000002``…"""
    return Path(f"{os.fspath(path)}.{n:0{SEGMENT_DIGITS}d}")


def segments_of(path: str | os.PathLike[str]) -> list[Path]:
    """The segments of a rotated journal ``path``, oldest first (empty when none)."""
    p = Path(path)
    out = []
    try:
        names = os.listdir(p.parent if str(p.parent) else ".")
    except OSError:
        return []
    prefix = p.name + "."
    for name in names:
        tail = name[len(prefix) :]
        if name.startswith(prefix) and len(tail) == SEGMENT_DIGITS and tail.isdigit():
            out.append(p.parent / name)
    return sorted(out)


def resolve_run(spec: str | os.PathLike[str]) -> list[Path]:
    """The files of one run: a recording, a rotated journal's base name, a folder of
    segments (or holding one ``recording``/``journal``), or a glob; oldest first.
    Raises :class:`FileNotFoundError` naming what was looked for."""
    import glob as globmod

    p = Path(spec)
    if p.is_file():
        return [p]
    if p.is_dir():
        for name in ("recording", "recording.rec", "journal"):
            if (p / name).is_file():
                return [p / name]
        files = sorted(f for f in p.iterdir() if f.is_file() and _looks_like_recording(f))
        if files:
            return files
        raise FileNotFoundError(f"{p} is a folder without a recording or journal segments in it")
    segs = segments_of(p)
    if segs:
        return segs
    if any(c in str(spec) for c in "*?["):
        files = sorted(Path(f) for f in globmod.glob(str(spec)) if os.path.isfile(f))
        if files:
            return files
    raise FileNotFoundError(f"no such recording: {spec}")


def _looks_like_recording(f: Path) -> bool:
    try:
        with open(f, "rb") as fh:
            head = fh.read(len(blocks.MAGIC) + 6)
    except OSError:
        return False
    if blocks.is_v2(head):
        return True
    return len(head) >= 6 and head[4] == 0x92 and 0xA0 <= head[5] < 0xC0
