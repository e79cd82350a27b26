"""One data block's payload: records to columns (:func:`encode_block`) and back,
and the hello stored as what changed since its keyframe."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from time import perf_counter_ns
from typing import Any

import msgpack

from .columns import decode_group, encode_group
from .framing import VERSION
from .samples import clean_batch, decode_samples, encode_samples, no_pause

SAMPLES = "samples"
QUANTUM_NS = 2000  # sample times kept to ±1 µs; see the module docstring


def encode_block(
    records: list[tuple[str, Mapping[str, Any]]],
    quantum_ns: int = QUANTUM_NS,
    pause: Callable[[], None] = no_pause,
    version: int = VERSION,
    sides: list[bytes] | None = None,
) -> bytes:
    """The (uncompressed) msgpack payload of one data block; ``version`` 2 (3) uses only
    the column kinds a version 2 (3) reader knows (a block appended to an older file).
    ``sides`` gets the parts worth compressing apart (codec 3): the tick deviations."""
    ext = 0 if version <= 2 else 1 if version == 3 else 2
    pause = _paced(pause)
    topics: dict[str, int] = {}
    order = bytearray()
    groups: dict[int, list[Mapping[str, Any]]] = {}
    batches: list[Mapping[str, Any]] = []
    for topic, body in records:
        clean = topic == SAMPLES and clean_batch(body)
        key = topic if not clean else "\x00" + SAMPLES  # clean batches are their own group
        ti = topics.get(key)
        if ti is None:
            ti = topics[key] = len(topics)
            if ti > 255:
                raise ValueError("more than 256 topics in one block")
        order.append(ti)
        if clean:
            batches.append(body)
        else:
            groups.setdefault(ti, []).append(body)
    if batches:
        try:
            s, heads = encode_samples(batches, quantum_ns, pause, ext)
        except OverflowError:  # differences beyond int64 (never from a sampler): store the batches as they are
            return _encode_plain(records, ext)
    block: dict[str, Any] = {"tp": list(topics), "o": bytes(order)}
    if batches:
        block["s"] = s
        if sides is not None:
            sides.append(s[7][1])
        groups[topics["\x00" + SAMPLES]] = list(heads)
    g = []
    for ti, bodies in groups.items():
        pause()
        g.append([ti, encode_group(bodies, ext)])
    block["g"] = g
    return msgpack.packb(block, use_bin_type=True)


PAUSE_NS = 50_000  # the GIL held at most about this long, plus one step


def _paced(pause: Callable[[], None]) -> Callable[[], None]:
    """``pause`` where at least :data:`PAUSE_NS` have passed since the last one (or
    since the block began). The journal thread's pause, ``time.sleep(0)``, costs it
    ~20 µs of CPU (and ~70 µs until it runs again); a step of a few µs (a hello's
    group, the last packs of the samples) is not worth one."""
    if pause is no_pause:
        return pause
    last = perf_counter_ns()

    def paced() -> None:
        nonlocal last
        if perf_counter_ns() - last >= PAUSE_NS:
            pause()
            last = perf_counter_ns()

    return paced


def _encode_plain(records: list[tuple[str, Mapping[str, Any]]], ext: int) -> bytes:
    topics: dict[str, int] = {}
    order = bytearray()
    groups: dict[int, list[Mapping[str, Any]]] = {}
    for topic, body in records:
        ti = topics.setdefault(topic, len(topics))
        order.append(ti)
        groups.setdefault(ti, []).append(body)
    return msgpack.packb(
        {"tp": list(topics), "o": bytes(order), "g": [[ti, encode_group(b, ext)] for ti, b in groups.items()]},
        use_bin_type=True,
    )


def decode_block(payload: bytes) -> list[tuple[str, dict[str, Any]]]:
    block = msgpack.unpackb(payload, raw=False, strict_map_key=False)
    topics = block["tp"]
    bodies: dict[int, Iterator[dict[str, Any]]] = {}
    for ti, enc in block["g"]:
        group = decode_group(enc)
        if topics[ti] == "\x00" + SAMPLES:
            group = decode_samples(block["s"], group)
        bodies[ti] = iter(group)
    names = [t[1:] if t.startswith("\x00") else t for t in topics]
    return [(names[ti], next(bodies[ti])) for ti in block["o"]]


HELLO = "hello"
REF = "\x00ref"  # a hello stored as what changed since the full hello with this seq
GONE = "\x00gone"  # keys that full hello had and this one has not
KEYFRAME_BLOCKS = 30  # a full hello at least every this many blocks (10 before format 4: ~0.013 bytes a sample more)


def hello_delta(full: Mapping[str, Any], body: Mapping[str, Any]) -> dict[str, Any]:
    d: dict[str, Any] = {REF: full["seq"]}
    for k, v in body.items():
        if k not in full or full[k] != v or type(full[k]) is not type(v):
            d[k] = v
    gone = [k for k in full if k not in body]
    if gone:
        d[GONE] = gone
    return d


class HelloExpander:
    """Turns stored hello deltas back into whole hellos while reading in order.

    A delta whose full hello was lost (a damaged block) comes back as what it
    holds (counters, time, ``final``…) with ``partial: True``.
    """

    def __init__(self) -> None:
        self.full: dict[Any, dict[str, Any]] = {}

    def __call__(self, topic: str, body: dict[str, Any]) -> dict[str, Any]:
        if topic != HELLO:
            return body
        ref = body.get(REF)
        if ref is None:
            if isinstance(body.get("seq"), int):
                self.full = {body["seq"]: body}
            return body
        full = self.full.get(ref)
        if full is None:
            out = {k: v for k, v in body.items() if k != REF and k != GONE}
            out["partial"] = True
            return out
        gone = body.get(GONE) or ()
        out = {k: (body[k] if k in body else v) for k, v in full.items() if k not in gone}
        for k, v in body.items():
            if k not in out and k != REF and k != GONE:
                out[k] = v
        return out
