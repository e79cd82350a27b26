"""The data blocks of a real journal as the sampler's journal thread would hand them to
the encoder: a journal keeps sample times to its 2 µs quantum, the sampler has raw
nanoseconds, so each batch gets sub-quantum jitter back (the test of the encoder and
bench/bench_block_encode.py both read blocks this way)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any


def jittered_blocks(
    path: str | Path, blocks: ModuleType, rng: random.Random
) -> Iterator[list[tuple[str, dict[str, Any]]]]:
    """Each data block's records (``blocks``: a ``sampler.wire.blocks`` package, this
    checkout's or another's), sample times moved by up to ±1 µs."""
    with open(path, "rb") as f:
        for fr in blocks.iter_frames(f):
            if fr.kind != blocks.KIND_DATA:
                continue
            recs = blocks.decode_block(fr.payload)
            for topic, body in recs:
                if topic == "samples" and isinstance(body.get("dt"), list):
                    j = rng.randrange(-1000, 1000)
                    body["t"] += j
                    body["dt"] = [0, *(d - j + rng.randrange(-1000, 1000) for d in body["dt"][1:])]
            yield recs
