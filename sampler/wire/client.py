"""Small ZeroMQ clients of a sampler: send to its inlet, subscribe to its stream.

Used by ``spikewatch mark``, the driver, the recorder and the console, so the
socket options (no blocking on a missing sampler, bounded queues) live in one
place. Encoding is :mod:`spikewatch.sampler.wire.protocol`'s.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import zmq

from . import protocol
from .handshake import HandshakeWatch


class InletClient:
    """A PUSH socket to a sampler's inlet that never blocks its caller.

    If no sampler listens, messages queue up to ``hwm`` and then are dropped
    (counted in :attr:`dropped`); closing waits at most ``linger_ms``.
    """

    def __init__(
        self,
        endpoint: str = protocol.DEFAULT_INLET,
        *,
        hwm: int = 10_000,
        linger_ms: int = 500,
        context: zmq.Context[Any] | None = None,
        socket_options: Mapping[int, Any] | None = None,
        watch_handshakes: bool = False,
        keys: str | None = None,
    ) -> None:
        self.endpoint = endpoint
        self._ctx = context or zmq.Context[Any].instance()
        self._sock = self._ctx.socket(zmq.PUSH)
        self._sock.setsockopt(zmq.SNDHWM, hwm)
        self._sock.setsockopt(zmq.LINGER, linger_ms)
        self._sock.setsockopt(zmq.IMMEDIATE, 0)
        for opt, value in (socket_options or {}).items():
            self._sock.setsockopt(opt, value)
        # watch_handshakes: say why a sampler refused us (spikewatch.sampler.wire.handshake); keys: the
        # --keys folder, named in those sentences.
        self.handshake = HandshakeWatch(self._sock, socket_options, keys) if watch_handshakes else None
        self._sock.connect(endpoint)
        self.sent = 0
        self.dropped = 0

    def send(self, topic: str, body: Mapping[str, Any]) -> bool:
        """Queue one message; return False (and count it) when it had to be dropped."""
        try:
            self._sock.send_multipart(protocol.encode(topic, body), flags=zmq.NOBLOCK)
        except zmq.Again:
            self.dropped += 1
            return False
        self.sent += 1
        return True

    def marker(self, kind: str, name: str, attrs: Mapping[str, Any] | None = None) -> bool:
        return self.send(protocol.MARKER, protocol.marker_message(kind, name, attrs))

    def note(self, text: str, attrs: Mapping[str, Any] | None = None) -> bool:
        return self.marker(protocol.NOTE, text, attrs)

    def load(self, body: Mapping[str, Any]) -> bool:
        return self.send(protocol.LOAD, protocol.validate_load(body))

    def discard_queue(self) -> None:
        """Do not wait (linger) on close for what is still queued: nobody will take it."""
        self._sock.setsockopt(zmq.LINGER, 0)

    def close(self) -> None:
        if self.handshake is not None:
            self.handshake.close()
        self._sock.close()

    def __enter__(self) -> InletClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class StreamSubscriber:
    """A SUB socket on one or more samplers' streams, yielding decoded messages."""

    def __init__(
        self,
        endpoints: Sequence[str],
        topics: Sequence[str] = (),
        *,
        hwm: int = 100_000,
        context: zmq.Context[Any] | None = None,
        socket_options: Mapping[int, Any] | None = None,
        watch_handshakes: bool = False,
        keys: str | None = None,
    ) -> None:
        self._ctx = context or zmq.Context[Any].instance()
        self.sock = self._ctx.socket(zmq.SUB)
        self.sock.setsockopt(zmq.RCVHWM, hwm)
        self.sock.setsockopt(zmq.LINGER, 0)
        for opt, value in (socket_options or {}).items():
            self.sock.setsockopt(opt, value)
        for t in topics or (b"",):
            self.sock.setsockopt(zmq.SUBSCRIBE, t.encode() if isinstance(t, str) else t)
        self.handshake = HandshakeWatch(self.sock, socket_options, keys) if watch_handshakes else None
        for ep in endpoints:
            self.sock.connect(ep)
        self.bad_messages = 0

    def recv(self, timeout_ms: int | None = None) -> tuple[str, dict[str, Any]] | None:
        """One decoded message, or None when ``timeout_ms`` passes first."""
        while True:
            if timeout_ms is not None and not self.sock.poll(timeout_ms):
                return None
            frames = self.sock.recv_multipart()
            try:
                return protocol.decode(frames)
            except protocol.ProtocolError:
                self.bad_messages += 1

    def __iter__(self) -> Iterator[tuple[str, dict[str, Any]]]:
        while True:
            msg = self.recv()
            if msg is not None:
                yield msg

    def close(self) -> None:
        if self.handshake is not None:
            self.handshake.close()
        self.sock.close()

    def __enter__(self) -> StreamSubscriber:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
