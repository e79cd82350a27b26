"""Where a version 2-4 recording's bytes go: bytes a sample per topic and per field.

    .venv/bin/python bench/bench_journal_bytes.py FILE_OR_RUN [--top 25]

Each figure is marginal: a block is compressed again with that one part left out
(its value replaced by nil), and the difference is that part's cost, so the
compressor's sharing between parts is charged to neither. Frames, the header
and the closing index are listed apart. Divided by the file's sample count,
as bench/RESULTS.md's sizes are.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import msgpack
from spikewatch.sampler.wire import blocks
from spikewatch.sampler.wire.recording import resolve_run


def _parts(block: dict[str, Any]) -> Iterator[tuple[str, list[Any], int]]:
    """(name, container, index) for every part a block can leave out."""
    topics = [t.lstrip("\x00") for t in block["tp"]]
    yield "order (o)", [block], -1
    for grp in block["g"]:
        ti, enc = grp
        name = topics[ti] + (" heads" if block["tp"][ti].startswith("\x00") else "")
        cols = enc[3]
        for i, key in enumerate(enc[0]):
            yield f"{name}.{key}", cols, i
        yield f"{name} (shapes, ids)", enc, 2
    s = block.get("s")
    if s is not None:
        yield "samples t (grid steps)", s, 6
        yield "samples t (deviation)", s, 7
        yield "samples sizes, shapes, heads t", s, 3
        for i in range(len(s[8])):
            yield f"samples {s[8][i][0]}", s[8], i


def _size(z: blocks.Compressor, block: dict[str, Any]) -> int:
    s = block.get("s")
    # codec 3 codes the tick deviations apart, as the writer does
    sides = [s[7][1]] if s is not None and s[7] is not None else []
    return len(z.compress(msgpack.packb(block, use_bin_type=True), sides))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", help="a file, a rotated journal's name, a folder or a glob of segments")
    ap.add_argument("--top", type=int, default=30)
    a = ap.parse_args()
    files = resolve_run(a.run)
    cost: dict[str, int] = defaultdict(int)
    topic_cost: dict[str, int] = defaultdict(int)
    total = samples = payload = 0
    for path in files:
        total += os.path.getsize(path)
        with open(path, "rb") as f:
            if not blocks.is_v2(f.read(len(blocks.MAGIC))):
                sys.exit(f"{path}: not a version 2 recording (convert it first)")
            f.seek(0)
            version = blocks.read_header(f)["format"]
            z = blocks.Compressor(blocks.CODEC_SECTIONS if version >= 4 else blocks.CODEC_DEFLATE)
            f.seek(0)
            for fr in blocks.iter_frames(f):
                if fr.kind != blocks.KIND_DATA:
                    cost["index frame"] += fr.size
                    continue
                samples += fr.samples
                cost["frame headers"] += blocks.FRAME_BYTES
                block = msgpack.unpackb(fr.payload, raw=False, strict_map_key=False)
                whole = _size(z, block)
                payload += whole
                topics = [t.lstrip("\x00") for t in block["tp"]]
                for ti, enc in block["g"]:
                    saved = enc[3]
                    enc[3] = []
                    topic_cost[topics[ti]] += whole - _size(z, block)
                    enc[3] = saved
                for name, box, i in _parts(block):
                    if i < 0:
                        saved = box[0]["o"]
                        box[0]["o"] = b""
                        cost[name] += whole - _size(z, block)
                        box[0]["o"] = saved
                        continue
                    saved = box[i]
                    box[i] = None
                    cost[name] += whole - _size(z, block)
                    box[i] = saved
    if not samples:
        sys.exit("no samples in the run")
    print(f"{total} bytes, {samples} samples: {total / samples:.3f} bytes a sample ({len(files)} file(s))")
    print(f"block payloads {payload / samples:.3f} a sample; marginal costs, bytes a sample:")
    print("  by topic (its body columns, samples heads included):")
    for k, v in sorted(topic_cost.items(), key=lambda kv: -kv[1]):
        print(f"    {k:<40} {v / samples:7.3f}")
    print("  by part:")
    for k, v in sorted(cost.items(), key=lambda kv: -kv[1])[: a.top]:
        print(f"    {k:<40} {v / samples:7.3f}")


if __name__ == "__main__":
    main()
