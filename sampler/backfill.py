"""Late-joiner backfill on the consumer side: history first, then live, by ``seq``.

Clone-pattern order (ZeroMQ guide): subscribe to the live stream, wait until it
delivers (so the subscription is in place), *then* ask the history endpoint for
its ring. The ring reaches at least up to the first live message, so history +
live has no hole; live messages the history already holds are dropped, so there
are no duplicates. Anything the ring no longer had (older than its window) or
the live stream dropped stays a gap in ``seq``, which consumers already count.

Use::

    sub = StreamSubscriber([stream_ep])              # subscribe first
    merge = Backfill(history_ep, socket_options=opts)
    for topic, body in merge.attach(sub.sock):       # history + the live messages seen meanwhile
        handle(topic, body)
    for frames in ...live...:
        topic, body = protocol.decode(frames)
        if merge.keep(body):
            handle(topic, body)
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import msgpack
import zmq

from .wire import protocol

Message = tuple[str, dict[str, Any]]


class BackfillError(Exception):
    """The history endpoint did not answer (in time); the live stream is unaffected."""


def fetch_history(
    endpoint: str,
    *,
    since_seq: int | None = None,
    timeout_ms: int = 5000,
    context: zmq.Context | None = None,
    socket_options: Mapping[int, Any] | None = None,
) -> tuple[dict[str, Any], list[Message]]:
    """Ask a sampler's history endpoint for its ring: (meta, [(topic, body), ...] oldest first)."""
    ctx = context or zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    for opt, value in (socket_options or {}).items():
        sock.setsockopt(opt, value)
    try:
        sock.connect(endpoint)
        sock.send_multipart([protocol.HISTORY.encode(), msgpack.packb({"since_seq": since_seq})])
        out: list[Message] = []
        meta: dict[str, Any] = {}
        deadline = time.monotonic() + timeout_ms / 1000
        while True:
            left = int((deadline - time.monotonic()) * 1000)
            if left <= 0 or not sock.poll(left):
                raise BackfillError(
                    f"no answer from the history endpoint {endpoint} within {timeout_ms} ms "
                    "(wrong endpoint, sampler without --history, or keys not accepted)"
                )
            frames = sock.recv_multipart()
            if len(frames) != 2 or frames[0] != protocol.HISTORY.encode():
                raise BackfillError(f"{endpoint} is not a spikewatch history endpoint")
            reply = msgpack.unpackb(frames[1], raw=False)
            for topic, packed in reply.pop("records", []):
                try:
                    out.append((topic, protocol.unpack(packed)))
                except protocol.ProtocolError:
                    continue
            meta = reply
            if reply.get("last", True):
                return meta, out
    finally:
        sock.close()


def _read_ready(sub: zmq.Socket, into: list[Message]) -> None:
    """Append every message already queued on ``sub`` (undecodable ones skipped)."""
    while True:
        try:
            frames = sub.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            return
        try:
            into.append(protocol.decode(frames))
        except protocol.ProtocolError:
            continue


class Backfill:
    """Merge one sampler's history with its live stream (one SUB socket per sampler)."""

    def __init__(
        self,
        endpoint: str,
        *,
        timeout_ms: int = 5000,
        context: zmq.Context | None = None,
        socket_options: Mapping[int, Any] | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.timeout_ms = timeout_ms
        self._ctx = context
        self._opts = socket_options
        self.last_seq: int | None = None  # newest seq the history gave us
        self.session: str | None = None
        self.history_count = 0
        self.duplicates = 0
        self.trimmed = 0
        self._passed = False  # a live seq beyond the history: nothing left to drop

    def attach(self, sub: zmq.Socket, *, first_live_timeout_ms: int = 5000) -> list[Message]:
        """Wait for the first live message on ``sub`` (already subscribed), fetch the
        history, and return history + the live messages read meanwhile, deduplicated.
        If the stream is silent, the history alone is returned."""
        live: list[Message] = []
        if sub.poll(first_live_timeout_ms):
            _read_ready(sub, live)
        meta, history = fetch_history(
            self.endpoint, timeout_ms=self.timeout_ms, context=self._ctx, socket_options=self._opts
        )
        self.session = meta.get("session")
        self.trimmed = int(meta.get("trimmed") or 0)
        self.last_seq = meta.get("last_seq")
        self.history_count = len(history)
        # Live messages that arrived during the request are also kept in order.
        _read_ready(sub, live)
        return history + [(t, b) for t, b in live if self.keep(b)]

    def keep(self, body: Mapping[str, Any]) -> bool:
        """False for a live message the history already delivered."""
        if self._passed or self.last_seq is None:
            return True
        seq = body.get("seq")
        if not isinstance(seq, int) or seq > self.last_seq:
            self._passed = seq is not None
            return True
        self.duplicates += 1
        return False
