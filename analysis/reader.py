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
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from spikewatch.sampler.wire import blocks, protocol
from spikewatch.sampler.wire.recording import RecordingError, Salvage, iter_records, resolve_run

from .builder import Builder, finish_sources
from .integrity import integrity, merge_salvages
from .source import Recording, Series, Source
from .tables import columns
from .v2decode import _group_columns as _group_columns_v2
from .v2decode import block_columns, np_ints, v2_blocks

_group_columns = _group_columns_v2  # the name the format tests read before the reader's split

__all__ = [
    "Recording",
    "RecordingError",
    "Series",
    "Source",
    "block_columns",
    "columns",
    "integrity",
    "load",
    "load_records",
    "np_ints",
]


def load_records(records: Iterable[tuple[str, dict[str, Any]]], path: str | os.PathLike[str] = "<stream>") -> Recording:
    """Build a :class:`Recording` from ``(topic, body)`` pairs (e.g. live, from a subscriber)."""
    builders: dict[str, Builder] = {}
    # A journal has no ``src``: its session comes from the first hello. Records
    # before that hello go to the same builder, renamed once the hello arrives.
    default: Builder | None = None
    for topic, body in records:
        if not isinstance(body, dict):
            continue
        src = body.get("src")
        if src is None:
            if default is None:
                default = Builder("")
            if topic == protocol.HELLO and not default.src.src and body.get("session"):
                default.src.src = str(body["session"])
            default.add(topic, body)
            continue
        b = builders.get(src)
        if b is None:
            b = builders[src] = Builder(str(src))
        b.add(topic, body)
    return Recording(Path(path), finish_sources(default, builders))


# A version 2 run larger than this is read in one streaming pass (bounded memory; see
# analysis.stream); smaller ones, and version 1, load every sample.
STREAM_BYTES = 1 << 20


def load(
    path: str | os.PathLike[str],
    *,
    stream: bool | None = None,
    sink: Any = None,
    scrape_intervals: tuple[float, ...] | None = None,
) -> Recording:
    """Load a recording or journal; raise :class:`RecordingError` (or OSError) if it isn't one.

    ``stream``: True reads a version 2 run in one bounded pass (series as min/max envelopes,
    exact figures in ``Source.stream``), False loads every sample, None decides by size.
    ``sink(t, columns)``: a streamed run's samples go there, chunk by chunk, instead of to
    the analyses (``export``), and details and telemetry are kept whole. ``scrape_intervals``:
    the scrape view a streamed run computes on the way (15, 30 and 60 s by default)."""
    files = resolve_run(path)  # a file, a rotated journal's segments, a folder, a glob
    salvages = [Salvage() for _ in files]
    rec = None
    if stream is not False and _streamable(files, stream):
        from .stream import NotStreamable, load_streaming

        try:
            rec = load_streaming(files, salvages, sink, scrape_intervals)
        except NotStreamable:
            salvages = [Salvage() for _ in files]
    if rec is None:
        rec = _load_files(files, salvages)
    p = rec.path
    if not rec.sources:
        raise RecordingError(f"{p} holds no records (empty file?)")
    salvage = merge_salvages(files, salvages)
    rec.integrity = integrity(rec, salvage)
    if len(files) > 1:
        rec.integrity["files"] = [str(f) for f in files]
    for src in rec.sources.values():
        src.integrity = rec.integrity
    return rec


def _streamable(files: list[Path], asked: bool | None) -> bool:
    size = 0
    for p in files:
        with open(p, "rb") as f:
            if not blocks.is_v2(f.read(len(blocks.MAGIC))):
                return False
        size += p.stat().st_size
    return bool(asked) or size > STREAM_BYTES


def _load_files(paths: list[Path], salvages: list[Salvage]) -> Recording:
    """One run from one or more files (a rotated journal's segments), either format."""
    builders: dict[str, Builder] = {}
    default: Builder | None = None

    def builder(body: dict[str, Any], topic: str) -> Builder:
        nonlocal default
        src = body.get("src")
        if src is None:
            if default is None:
                default = Builder("")
            if topic == protocol.HELLO and not default.src.src and body.get("session"):
                default.src.src = str(body["session"])
            return default
        b = builders.get(src)
        if b is None:
            b = builders[src] = Builder(str(src))
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
            v2_blocks(f, path, salvage, expand, builder, lambda: not builders and default is not None, lambda: default)
    return Recording(paths[0] if len(paths) == 1 else paths[0].parent, finish_sources(default, builders))
