"""Backfill for late joiners: a bounded ring of recent messages and a ROUTER that replays it.

Like the ZeroMQ guide's clone pattern: a consumer subscribes to the stream
*first*, then asks this endpoint for what it missed, and merges the two by
``seq`` (see :mod:`spikewatch.sampler.backfill`).

The ring is a publish listener (:attr:`spikewatch.sampler.daemon.Sampler.listeners`): it
keeps the packed bytes the sampler already made, so the sampling thread pays one
deque append (and an occasional trim) per message. The ROUTER has its own
thread; a request copies the ring under a short lock and replays it in chunks.

Request (DEALER or REQ -> ROUTER): ``[b"history", msgpack {"since_seq": int | None}]``.
Reply: one or more ``[b"history", msgpack {"session", "records": [[topic, packed body], ...],
"last": bool, "first_seq", "last_seq", "window_ns", "trimmed"}]``; ``records`` hold
every message with ``seq >= since_seq`` still in the ring, oldest first; ``trimmed``
counts messages that fell out of the ring since the sampler started (by age or size).
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Mapping
from typing import Any

import msgpack
import zmq

from .wire import protocol

DEFAULT_WINDOW_NS = 300_000_000_000  # 5 minutes
DEFAULT_MAX_BYTES = 64 << 20
CHUNK_BYTES = 1 << 20
_TAG = protocol.HISTORY.encode()


class HistoryRing:
    """The last ``window_ns`` of published messages, at most ``max_bytes`` of packed bodies."""

    def __init__(self, window_ns: int = DEFAULT_WINDOW_NS, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        if window_ns <= 0 or max_bytes <= 0:
            raise ValueError("the history window and size must be positive")
        self.window_ns = window_ns
        self.max_bytes = max_bytes
        self._ring: collections.deque[tuple[int, int, str, bytes]] = collections.deque()
        self._bytes = 0
        self._lock = threading.Lock()
        self.session: str | None = None
        self.trimmed = 0

    def __call__(self, topic: str, body: Mapping[str, Any], packed: bytes) -> None:
        """Publish listener: keep the message (called on the sampling thread)."""
        seq, t = body.get("seq"), body.get("t")
        if not isinstance(seq, int) or not isinstance(t, int):
            return
        if topic == protocol.HELLO and self.session is None:
            self.session = body.get("session")
        with self._lock:
            ring = self._ring
            ring.append((seq, t, topic, packed))
            self._bytes += len(packed)
            horizon = t - self.window_ns
            while ring and (ring[0][1] < horizon or self._bytes > self.max_bytes) and len(ring) > 1:
                old = ring.popleft()
                self._bytes -= len(old[3])
                self.trimmed += 1

    def snapshot(self, since_seq: int | None = None) -> list[tuple[int, int, str, bytes]]:
        with self._lock:
            items = list(self._ring)
        if since_seq is not None:
            items = [x for x in items if x[0] >= since_seq]
        return items

    @property
    def nbytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._ring)


class HistoryServer(HistoryRing):
    """A :class:`HistoryRing` that answers requests on a ROUTER ``endpoint``."""

    def __init__(
        self,
        ctx: zmq.Context,
        endpoint: str,
        *,
        window_ns: int = DEFAULT_WINDOW_NS,
        max_bytes: int = DEFAULT_MAX_BYTES,
        socket_options: Mapping[int, Any] | None = None,
    ) -> None:
        super().__init__(window_ns, max_bytes)
        from .wire.stream import bind

        self.endpoint = endpoint
        self.sock = ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self.sock.setsockopt(zmq.SNDTIMEO, 2000)  # a peer that stops reading loses its reply, nothing else
        self.sock.setsockopt(zmq.MAXMSGSIZE, 4096)  # requests are tiny
        for opt, value in (socket_options or {}).items():
            self.sock.setsockopt(opt, value)
        bind(self.sock, endpoint, "history")
        self.requests = 0
        self.bad_requests = 0
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="spikewatch-history", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        sock = self.sock
        while not self._stop:
            try:
                if not sock.poll(200):
                    continue
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                continue
            except zmq.ZMQError:
                return  # closed
            peer, rest = frames[0], frames[1:]
            if rest and rest[0] == b"":  # a REQ client puts an empty delimiter first
                envelope, rest = [peer, b""], rest[1:]
            else:
                envelope = [peer]
            since = None
            try:
                if len(rest) != 2 or rest[0] != _TAG:
                    raise ValueError("expected [history, {since_seq}]")
                req = msgpack.unpackb(rest[1], raw=False)
                since = req.get("since_seq") if isinstance(req, dict) else None
                if since is not None and (not isinstance(since, int) or isinstance(since, bool)):
                    raise ValueError("since_seq must be an integer")
            except Exception:
                self.bad_requests += 1
                continue
            self.requests += 1
            try:
                self._reply(envelope, since)
            except zmq.ZMQError:
                pass  # peer gone or not reading: drop its reply

    def _reply(self, envelope: list[bytes], since: int | None) -> None:
        items = self.snapshot(since)
        meta = {
            "session": self.session,
            "window_ns": self.window_ns,
            "trimmed": self.trimmed,
            "first_seq": items[0][0] if items else None,
            "last_seq": items[-1][0] if items else None,
        }
        chunk: list[list[Any]] = []
        size = 0
        for i, (_seq, _t, topic, packed) in enumerate(items):
            chunk.append([topic, packed])
            size += len(packed) + 16
            if size >= CHUNK_BYTES and i < len(items) - 1:
                self.sock.send_multipart([*envelope, _TAG, msgpack.packb({**meta, "records": chunk, "last": False})])
                chunk, size = [], 0
        self.sock.send_multipart([*envelope, _TAG, msgpack.packb({**meta, "records": chunk, "last": True})])

    def close(self) -> None:
        from .wire.stream import close_endpoint

        self._stop = True
        self._thread.join(timeout=2)
        close_endpoint(self.sock, self.endpoint)
