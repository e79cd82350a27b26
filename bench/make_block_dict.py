"""Build codec 3's dictionary (``sampler/wire/blocks/dict4.py``) from recordings.

    .venv/bin/python bench/make_block_dict.py RUN [RUN ...] [-o FILE]

The dictionary is frozen once shipped: files written with it are read with it,
so a changed dictionary needs a new codec number. This script says how the
shipped one was made: the protocol's field names (codec 2's dictionary), then,
per run given, a block holding a full hello and one without, re-encoded by this
spikewatch's encoder, their strings that name a host, path, session or command
replaced by neutral ones, and the sections codec 3 codes apart left out. Deflate
reaches back 32 KiB, the nearest bytes best: the last run given comes last.
The shipped one came from a 60 s spiky-target journal and a ``spikewatch demo`` run,
given in that order, as encoded on 2026-12-04; a later encoder makes other bytes from
the same runs, which is why the module, not this script, is the authority.
"""

from __future__ import annotations

import argparse
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from spikewatch.sampler.wire import blocks
from spikewatch.sampler.wire.recording import iter_records

_NEUTRAL = {
    "session": "0" * 32,
    "host": "host",
    "journal": "/var/tmp/spikewatch.journal",
    "spec": "python3 -m app",
    "path": "/spikewatch-1",
    "limit_from": "/spikewatch-1",
    "source": "drive host:1",
    "exe": "/usr/bin/python3",
}
_WINDOW = 32 * 1024


def _scrub(x: Any, key: str = "") -> Any:
    if isinstance(x, dict):
        return {k: _scrub(v, k) for k, v in x.items()}
    if isinstance(x, list):
        return ["python3" if key == "cmdline" else _scrub(v) for v in x]
    if isinstance(x, str) and key in _NEUTRAL:
        return _NEUTRAL[key]
    return x


def _blocks(path: str) -> Iterator[list[tuple[str, dict[str, Any]]]]:
    """The run's records grouped into blocks as the writer seals them (one second of samples)."""
    out: list[tuple[str, dict[str, Any]]] = []
    first = None
    for topic, body in iter_records(path):
        out.append((topic, _scrub(body)))
        if topic == "samples" and body.get("dt"):
            first = body["t"] if first is None else first
            if body["t"] + body["dt"][-1] - first >= 1_000_000_000:
                yield out
                out, first = [], None
    if out:
        yield out


def _main_section(records: list[tuple[str, dict[str, Any]]]) -> bytes:
    sides: list[bytes] = []
    payload = blocks.encode_block(records, sides=sides)
    for raw in sides:
        if len(raw) >= blocks.sections.MIN_SIDE:
            at = payload.find(raw)
            payload = payload[:at] + payload[at + len(raw) :]
    return payload


def build(runs: list[str]) -> bytes:
    parts = [blocks.DICT_BYTES]
    for run in runs:
        bl = list(_blocks(run))[2:-2]  # not the start's or the end's
        keyed = [b for b in bl if any(t == "hello" and "\x00ref" not in body for t, body in b)]
        plain = [b for b in bl if b not in keyed]
        for b in keyed[len(keyed) // 2 : len(keyed) // 2 + 2] + plain[len(plain) // 2 : len(plain) // 2 + 2]:
            parts.append(_main_section(b))
    return b"".join(parts)[-_WINDOW:]


def _literal(data: bytes, width: int = 96) -> list[str]:
    """``data`` as lines of a bytes literal (letters and digits as they are, the rest as
    ``\\xNN``): loaded from the byte code as one constant, nothing decoded at import."""
    lines, cur = [], ""
    for b in data:
        c = chr(b) if chr(b).isascii() and chr(b).isalnum() else f"\\x{b:02x}"
        if len(cur) + len(c) > width:
            lines.append(cur)
            cur = ""
        cur += c
    return [*lines, cur] if cur else lines


def write_module(data: bytes, out: Path) -> None:
    lines = "\n".join(f'    b"{line}"' for line in _literal(zlib.compress(data, 9)))
    out.write_text(
        '"""Codec 3\'s dictionary (:mod:`.sections`): typical blocks, made by bench/make_block_dict.py.\n\n'
        "Frozen: files written with it are read with it (a new dictionary needs a new codec\n"
        'number); the checksum guards it."""\n\n'
        "import zlib\n\n"
        f"DICT4 = zlib.decompress(\n{lines}\n)\n"
        f"CRC32 = {zlib.crc32(data)}\n"
        f"if zlib.crc32(DICT4) != CRC32 or len(DICT4) != {len(data)}:\n"
        '    raise ImportError("codec 3\'s dictionary is damaged: reinstall spikewatch")\n'
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+")
    ap.add_argument("-o", "--out", default=str(Path(blocks.__file__).with_name("dict4.py")))
    a = ap.parse_args()
    data = build(a.runs)
    write_module(data, Path(a.out))
    print(f"{len(data)} bytes of dictionary -> {a.out}")


if __name__ == "__main__":
    main()
