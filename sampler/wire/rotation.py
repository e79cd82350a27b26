"""Rotation and retention for a recording written for weeks: one implementation
for the sampler's journal (``sample --journal-rotate/--journal-keep``) and for
``spikewatch record --rotate/--keep``.

With rotation the recording is segments PATH.000001, PATH.000002… (a restart goes
on numbering after the last one), each a whole file with its closing index;
retention deletes the oldest whole segments beyond an age or a total size. Every
reader takes PATH (or the folder, or a glob) as one run
(:func:`spikewatch.sampler.wire.recording.resolve_run`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .blocks import BlockWriter
from .recording import open_writer, segment_path, segments_of


class RotatingWriter:
    """A recording writer (the :class:`~spikewatch.sampler.wire.recording.RecordingWriter`
    interface) that starts a new segment after :meth:`flush` once the current one
    holds ``rotate_bytes`` or is ``rotate_s`` old. Without either it writes PATH itself.

    ``opener`` makes each segment's writer (the journal sets its encoder's pause there).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        rotate_bytes: int | None = None,
        rotate_s: float | None = None,
        keep_bytes: int | None = None,
        keep_s: float | None = None,
        opener: Callable[[Path], Any] = open_writer,
    ) -> None:
        self.base = Path(path)
        self.rotating = bool(rotate_bytes or rotate_s)
        self.rotate_bytes, self.rotate_s = rotate_bytes, rotate_s
        self.keep_bytes, self.keep_s = keep_bytes, keep_s
        self._opener = opener
        self.segments_deleted = 0
        self._done_bytes = 0  # of closed segments
        self._done_dropped = 0
        if self.rotating:
            old = segments_of(self.base)
            self._segment = int(old[-1].name.rsplit(".", 1)[1]) + 1 if old else 1
            self.path = segment_path(self.base, self._segment)
        else:
            self._segment = 0
            self.path = self.base
        self._writer = opener(self.path)
        self._opened = time.monotonic()

    # -- the RecordingWriter interface
    def write(self, topic: str, body: Mapping[str, Any]) -> None:
        self._writer.write(topic, body)

    def write_packed(self, topic: str, packed_body: bytes) -> None:
        self._writer.write_packed(topic, packed_body)

    @property
    def takes_bodies(self) -> bool:
        """Whether the segment being written encodes bodies itself (version 2 and 3 blocks),
        so a caller holding the body can spare it being unpacked again."""
        return isinstance(self._writer, BlockWriter)

    @property
    def pending(self) -> int:
        return int(self._writer.pending)

    @property
    def pending_records(self) -> int:
        return int(self._writer.pending_records)

    @property
    def bytes_written(self) -> int:
        """Over every segment this writer wrote (deleted ones included)."""
        return self._done_bytes + int(self._writer.bytes_written)

    @property
    def records_dropped(self) -> int:
        return self._done_dropped + int(self._writer.records_dropped)

    @property
    def samples_from(self) -> int | None:
        """The time of the open block's first ``samples`` batch (None: none yet, or version 1)."""
        return getattr(self._writer, "samples_from", None)

    @property
    def records_written(self) -> int:
        return int(self._writer.records_written)

    def flush(self) -> None:
        """Write what waits; then, with everything written, rotate when due."""
        w = self._writer
        w.flush()
        if (
            self.rotating
            and not w.pending
            and (
                (self.rotate_bytes and w.bytes_written >= self.rotate_bytes)
                or (self.rotate_s and time.monotonic() - self._opened >= self.rotate_s)
            )
        ):
            self.rotate()

    def rotate(self) -> None:
        """Close this segment (its index written), open the next, apply retention."""
        w = self._writer
        w.close()
        self._done_bytes += int(w.bytes_written)
        self._done_dropped += int(w.records_dropped)
        self._segment += 1
        self.path = segment_path(self.base, self._segment)
        self._writer = self._opener(self.path)
        self._opened = time.monotonic()
        self.retain()

    def retain(self) -> None:
        """Delete the oldest whole segments beyond ``keep_s`` of age or ``keep_bytes`` in all."""
        if not (self.keep_bytes or self.keep_s):
            return
        segs = [s for s in segments_of(self.base) if s != self.path]
        now = time.time()
        sizes = {}
        for s in segs:
            try:
                st = s.stat()
            except OSError:
                continue
            sizes[s] = (st.st_size, st.st_mtime)
        total = sum(v[0] for v in sizes.values()) + int(self._writer.bytes_written)
        for s in segs:  # oldest first
            if s not in sizes:
                continue
            size, mtime = sizes[s]
            if (self.keep_bytes and total > self.keep_bytes) or (self.keep_s and now - mtime > self.keep_s):
                try:
                    s.unlink()
                except OSError:
                    continue
                total -= size
                self.segments_deleted += 1

    def close(self) -> None:
        self._writer.close()

    def __enter__(self) -> RotatingWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
