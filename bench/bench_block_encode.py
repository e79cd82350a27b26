"""CPU of the journal's block encoding (issue 18): ``encode_block`` and BlockWriter's
write + flush, per block (one second of 1 kHz samples), on the blocks of real journals.

    .venv/bin/python bench/bench_block_encode.py JOURNAL... [--compare OTHER_CHECKOUT] [--pause sleep]

Each journal's blocks are taken as written (frame by frame), their times given back
sub-quantum nanoseconds (a journal keeps them to 2 µs; the sampler hands the encoder
raw ones). Thread CPU time, ``--repeats`` passes over every block, best and median
µs a block. ``--compare`` loads the other checkout's ``sampler/wire/blocks`` beside
this one's, checks both write the same bytes, and times them alternately.
``--pause sleep`` hands the encoder the journal thread's pause (``time.sleep(0)``, which
lets the GIL go: ~20 µs of CPU each) instead of none.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

HERE = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(HERE))

from tests.core.journal_blocks import jittered_blocks  # noqa: E402


def load_blocks(checkout: Path, alias: str) -> ModuleType:
    """A checkout's blocks package under its own name (it imports only itself and msgpack)."""
    pkg = checkout / "sampler" / "wire" / "blocks"
    spec = importlib.util.spec_from_file_location(alias, pkg / "__init__.py", submodule_search_locations=[str(pkg)])
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[alias] = mod
    spec.loader.exec_module(mod)
    return mod


def journal_blocks(path: str, blocks: ModuleType, seed: int = 1) -> list[list[tuple[str, dict[str, Any]]]]:
    """The records of each data block, sample times jittered within their quantum."""
    return list(jittered_blocks(path, blocks, random.Random(seed)))


def let_go() -> None:
    """The sampler's journal thread's pause (spikewatch.sampler.wire.stream._let_go)."""
    time.sleep(0)


def time_encode(
    blocks: ModuleType, recs: list[list[tuple[str, dict[str, Any]]]], version: int, pause: Any = None
) -> float:
    """Thread CPU µs a block, one pass."""
    enc = blocks.encode_block
    pause = pause or blocks.samples.no_pause
    sides: list[bytes] = []
    t0 = time.thread_time_ns()
    for r in recs:
        sides.clear()
        enc(r, 2000, pause, version, sides if version >= 4 else None)
    return (time.thread_time_ns() - t0) / 1e3 / len(recs)


def time_writer(
    blocks: ModuleType, recs: list[list[tuple[str, dict[str, Any]]]], version: int, pause: Any = None
) -> float:
    """Thread CPU µs a block of BlockWriter.write for every record, then seal + flush
    (compression and the write(2) included), as the journal thread does."""
    with tempfile.TemporaryDirectory() as d:
        w = blocks.BlockWriter(os.path.join(d, "j"), version=version, block_ns=1 << 62)
        if pause is not None:
            w.pause = pause
        t0 = time.thread_time_ns()
        for r in recs:
            for topic, body in r:
                w.write(topic, body)
            w.seal()
            w.flush()
        spent = time.thread_time_ns() - t0
        w.close()
    return spent / 1e3 / len(recs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("journals", nargs="+")
    ap.add_argument("--compare", type=Path, help="another checkout: its encoder timed beside this one's")
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--version", type=int, default=4, choices=(2, 3, 4))
    ap.add_argument("--pause", choices=("none", "sleep"), default="none", help="sleep: time.sleep(0), as the sampler")
    a = ap.parse_args()
    impls = {"this": load_blocks(HERE, "_blocks_this")}
    if a.compare:
        impls["compare"] = load_blocks(a.compare.resolve(), "_blocks_compare")
    pause = let_go if a.pause == "sleep" else None
    print(f"# version {a.version}; {a.repeats} passes; pause {a.pause}; thread CPU µs a block (best / median)")
    print(
        f"{'journal':>20} {'blocks':>6} {'impl':>8} {'encode best':>11} {'median':>8} {'writer best':>11} {'median':>8}"
    )
    for path in a.journals:
        recs = journal_blocks(path, impls["this"])
        if a.compare:
            for r in recs:
                mine = impls["this"].encode_block(r, version=a.version)
                if impls["compare"].encode_block(r, version=a.version) != mine:
                    sys.exit(f"{path}: the two encoders differ on a block")
        enc: dict[str, list[float]] = {k: [] for k in impls}
        wr: dict[str, list[float]] = {k: [] for k in impls}
        for _ in range(a.repeats):  # alternating, so the host's drift touches both alike
            for name, mod in impls.items():
                enc[name].append(time_encode(mod, recs, a.version, pause))
                wr[name].append(time_writer(mod, recs, a.version, pause))
        for name in impls:
            print(
                f"{Path(path).name[-20:]:>20} {len(recs):>6} {name:>8} {min(enc[name]):>11.0f}"
                f" {statistics.median(enc[name]):>8.0f} {min(wr[name]):>11.0f} {statistics.median(wr[name]):>8.0f}"
            )


if __name__ == "__main__":
    main()
