"""Frames and bodies: ``[topic, msgpack map]`` in and out, and the one error a malformed
message raises. Part of the wire's public face (re-exported by
:mod:`spikewatch.sampler.wire.protocol`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import msgpack


class ProtocolError(ValueError):
    """A message that does not follow the protocol; says what is wrong."""


def pack(body: Mapping[str, Any]) -> bytes:
    """msgpack-encode one message body."""
    return msgpack.packb(body, use_bin_type=True)


def packer() -> Callable[[Mapping[str, Any]], bytes]:
    """:func:`pack` for one thread that packs often (the sampler's publisher): one
    Packer kept, instead of one made (with its buffer) for every message."""
    return msgpack.Packer(use_bin_type=True).pack


def unpack(data: bytes, max_size: int | None = None) -> dict[str, Any]:
    """Decode one message body; raise :class:`ProtocolError` if it is not a map."""
    if max_size is not None and len(data) > max_size:
        raise ProtocolError(f"frame of {len(data)} bytes exceeds {max_size}")
    try:
        body = msgpack.unpackb(data, raw=False, strict_map_key=True, max_bin_len=max_size or 0x7FFFFFFF)
    except Exception as exc:  # msgpack raises several unrelated types
        raise ProtocolError(f"bad msgpack: {exc.__class__.__name__}: {exc}") from None
    if not isinstance(body, dict):
        raise ProtocolError(f"body is {type(body).__name__}, expected a map")
    return body


def encode(topic: str, body: Mapping[str, Any]) -> list[bytes]:
    """Frames for one message: ``[topic, packed body]``."""
    return [topic.encode(), pack(body)]


def decode(frames: Sequence[bytes], max_size: int | None = None) -> tuple[str, dict[str, Any]]:
    """Parse ``[topic, body]`` frames from the stream; raise :class:`ProtocolError`."""
    if len(frames) != 2:
        raise ProtocolError(f"expected 2 frames [topic, body], got {len(frames)}")
    try:
        topic = bytes(frames[0]).decode()
    except UnicodeDecodeError:
        raise ProtocolError("topic is not UTF-8") from None
    return topic, unpack(bytes(frames[1]), max_size)
