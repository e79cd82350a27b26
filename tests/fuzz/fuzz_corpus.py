"""Malformed inlet messages: random bytes, wrong types, oversize, deep nesting, wrong frame counts.

``corpus(seed)`` returns a list of multipart messages, none of them valid for
:func:`spikewatch.sampler.wire.protocol.validate_inlet` (checked when built), spread over the
kinds of damage a stray client or an attacker can do. Shared by the CI fuzz
test and ``bench/bench_fuzz.py``.
"""

from __future__ import annotations

import os
import random
import struct
from pathlib import Path

import msgpack
from spikewatch.sampler.wire import protocol

Frames = list[bytes]
KINDS = (
    "random",
    "wrong_type",
    "bad_marker",
    "bad_load",
    "oversize",
    "deep",
    "frame_count",
    "topic",
    "truncated",
    "exotic",
)


def _deep_list(depth: int) -> bytes:
    # Built by hand: msgpack.packb itself refuses this depth.
    return b"\x91" * depth + b"\xc0"


def _deep_map(depth: int) -> bytes:
    return (b"\x81\xa1k" * depth) + b"\xc0"


def _nested(depth: int):
    v: object = 1
    for _ in range(depth):
        v = {"a": v}
    return v


def _one(rng: random.Random, kind: str) -> Frames:
    M, L = protocol.MARKER.encode(), protocol.LOAD.encode()
    pack = lambda o: msgpack.packb(o, use_bin_type=True)  # noqa: E731
    if kind == "random":
        return [rng.choice([M, L, b"", os.urandom(rng.randint(1, 12))]), rng.randbytes(rng.randint(0, 300))]
    if kind == "wrong_type":
        body = rng.choice([[1, 2, 3], 42, "marker", None, True, 1.5, b"bytes", [{"kind": "note"}]])
        return [rng.choice([M, L]), pack(body)]
    if kind == "bad_marker":
        good = {"kind": "note", "name": "x", "attrs": {}, "origin_wall_ns": 1}
        bad = dict(good)
        k = rng.randrange(9)
        if k == 0:
            bad["kind"] = rng.choice(["nope", 3, None, ["note"]])
        elif k == 1:
            bad["name"] = rng.choice(["", 7, None, ["a"], "n" * (protocol.MAX_NAME_LEN + rng.randint(1, 500))])
        elif k == 2:
            bad["attrs"] = rng.choice([[1], "a", 3])
        elif k == 3:
            bad["attrs"] = {"d": _nested(protocol.MAX_DEPTH + rng.randint(1, 20))}
        elif k == 4:
            bad["attrs"] = {f"k{i}": i for i in range(protocol.MAX_ATTRS + rng.randint(1, 50))}
        elif k == 5:
            bad["attrs"] = {"x": float(rng.choice(["nan", "inf", "-inf"]))}
        elif k == 6:
            bad["origin_wall_ns"] = rng.choice(["now", 1.5, True, [1]])
        elif k == 7:
            bad["attrs"] = {"l": list(range(protocol.MAX_ATTRS * 16 + rng.randint(1, 100)))}
        else:
            del bad["kind"]
        return [M, pack(bad)]
    if kind == "bad_load":
        body = rng.choice(
            [
                {},
                {"interval_ns": "1s"},
                {"interval_ns": 1, "rate": "fast"},
                {"interval_ns": 1, "bogus": 1},
                {"interval_ns": 1, "errors": {"e": "x"}},
                {"interval_ns": 1, "rate": float("nan")},
                {"interval_ns": True},
            ]
        )
        return [L, pack(body)]
    if kind == "oversize":
        # Above the 64 KiB protocol limit, below libzmq's MAXMSGSIZE (4x), so the
        # sampler sees it and must count it (bigger ones cost the sender its connection).
        n = rng.randint(protocol.MAX_INLET_FRAME + 1, 3 * protocol.MAX_INLET_FRAME)
        return [M, pack({"kind": "note", "name": "x", "attrs": {"blob": "a" * n}})]
    if kind == "deep":
        return [M, rng.choice([_deep_list, _deep_map])(rng.randint(50, 5000))]
    if kind == "frame_count":
        body = pack({"kind": "note", "name": "x"})
        return rng.choice([[M], [M, body, body], [M, b"", body], [b""] * rng.randint(3, 20), [body]])
    if kind == "topic":
        return [
            rng.choice([b"\xff\xfe", b"hello", b"samples", b"MARKER", b"marker\x00", b"x" * 1000]),
            pack({"kind": "note", "name": "x"}),
        ]
    if kind == "truncated":
        full = pack({"kind": "note", "name": "truncated name", "attrs": {"a": [1, 2, 3]}})
        return [M, full[: rng.randint(0, len(full) - 1)]]
    # exotic msgpack: ext types, non-string keys, bin where str is expected, huge declared lengths
    return [
        M,
        rng.choice(
            [
                pack({1: "int key"}),
                pack({b"kind": b"note", b"name": b"x"}),
                msgpack.packb(msgpack.ExtType(5, b"xx")),
                pack({"kind": "note", "name": "x", "attrs": {"t": msgpack.Timestamp(1, 0)}}),
                b"\xdb" + struct.pack(">I", 0xFFFFFFF0) + b"abc",  # str32 claiming 4 GiB
                b"\xdd" + struct.pack(">I", 0xFFFFFFF0),  # array32 claiming 4 G items
                b"\xdf" + struct.pack(">I", 0x7FFFFFFF),  # map32 claiming 2 G pairs
                pack({"kind": "note", "name": "x"}) + b"trailing",
            ]
        ),
    ]


def corpus(size: int = 4000, seed: int = 6) -> list[Frames]:
    """``size`` malformed messages, every kind represented, each checked to be rejected."""
    rng = random.Random(seed)
    out: list[Frames] = []
    while len(out) < size:
        # Oversize ones are rare (1 in 100): each costs ~130 KB of loopback traffic.
        kind = "oversize" if len(out) % 100 == 0 else KINDS[len(out) % len(KINDS)]
        if kind == "oversize" and len(out) % 100:
            kind = "random"
        frames = _one(rng, kind)
        try:
            protocol.validate_inlet(frames)
        except protocol.ProtocolError:
            out.append(frames)
    return out


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0
