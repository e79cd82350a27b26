"""The console's receiving side: SUB sockets in a background thread.

One SUB socket per endpoint, because stream bodies do not name their sampler:
the socket a message came in on is what ties it to its source. The thread
drains everything that is waiting, applies it to :class:`StreamState`, and
calls ``notify`` at most ``fps`` times a second (never per sample), which is
how the UI learns there is something new to draw.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import zmq
from spikewatch.sampler.backfill import Backfill, BackfillError
from spikewatch.sampler.wire import protocol
from spikewatch.sampler.wire.handshake import HandshakeWatch

from .state import StreamState


class StreamReceiver:
    """Subscribe to ``endpoints`` and keep ``state`` up to date until :meth:`stop`."""

    def __init__(
        self,
        endpoints: Sequence[str],
        state: StreamState,
        notify: Callable[[], object] | None = None,
        *,
        fps: float = 15.0,
        hwm: int = 100_000,
        context: zmq.Context | None = None,
        history: Sequence[str | None] = (),
        socket_options: Mapping[int, Any] | None = None,
        keys: str | None = None,
    ) -> None:
        if not endpoints:
            raise ValueError("at least one endpoint is needed")
        self.endpoints = list(endpoints)
        self.state = state
        self.notify = notify
        self.interval = 1.0 / max(0.5, fps)
        self._ctx = context or zmq.Context.instance()
        self._hwm = hwm
        self.history = list(history) + [None] * (len(self.endpoints) - len(history))
        self.socket_options = dict(socket_options or {})
        self.keys = keys
        self.notices: list[str] = []  # things to tell the user (e.g. a history endpoint that did not answer)
        self.handshake_errors: list[str] = []  # those of the notices that say a sampler refused us
        self._merges: dict[str, Backfill] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

    def start(self) -> StreamReceiver:
        # Sockets are made in the thread that uses them (zmq sockets are not thread-safe).
        self._thread = threading.Thread(target=self._run, name="spikewatch-console-rx", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 0.3) -> None:
        # A thread still in a history backfill (its answer may take seconds) closes its
        # sockets on its own when that ends: a stop does not wait for it.
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def __enter__(self) -> StreamReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        socks: dict[zmq.Socket, str] = {}
        watches: dict[zmq.Socket, HandshakeWatch] = {}  # monitor socket -> its watch
        poller = zmq.Poller()
        try:
            for ep in self.endpoints:
                s = self._ctx.socket(zmq.SUB)
                s.setsockopt(zmq.RCVHWM, self._hwm)
                s.setsockopt(zmq.LINGER, 0)
                for opt, value in self.socket_options.items():
                    s.setsockopt(opt, value)
                s.setsockopt(zmq.SUBSCRIBE, b"")
                # A sampler that refuses our keys would just look silent: say why (spikewatch.sampler.wire.handshake).
                watch = HandshakeWatch(s, self.socket_options, keys=self.keys)
                assert watch.monitor is not None
                watches[watch.monitor] = watch
                poller.register(watch.monitor, zmq.POLLIN)
                s.connect(ep)
                socks[s] = ep
                poller.register(s, zmq.POLLIN)
            for s, ep in socks.items():
                history = self.history[self.endpoints.index(ep)]
                if history and not self._stop.is_set():
                    self._backfill(s, ep, history)
            last_notify = 0.0
            seen_version = self.state.version
            while not self._stop.is_set():
                # short polls: a stop (the run ending) is noticed within 50 ms, not a frame
                ready = dict(poller.poll(int(min(self.interval, 0.05) * 1000)))
                for s in ready:
                    if s in watches:
                        self._handshakes(watches[s])
                    else:
                        self._drain(s, socks[s])
                now = time.monotonic()
                if (
                    self.notify is not None
                    and self.state.version != seen_version
                    and now - last_notify >= self.interval
                ):
                    seen_version = self.state.version
                    last_notify = now
                    self.notify()
        except BaseException as exc:  # surfaced by the UI; a dead receiver must not be silent
            self.error = exc
            if self.notify is not None:
                self.notify()
        finally:
            for watch in watches.values():
                watch.close()
            for s in socks:
                s.close()

    def _handshakes(self, watch: HandshakeWatch) -> None:
        sentences = watch.poll()
        if sentences:
            self.handshake_errors.extend(sentences)
            self.notices.extend(sentences)
            if self.notify is not None:
                self.notify()  # nothing else would wake the UI: no data comes

    def _backfill(self, sock: zmq.Socket, endpoint: str, history: str) -> None:
        """History first, then live (spikewatch.sampler.backfill): the window starts full."""
        merge = Backfill(history, socket_options=self.socket_options)
        try:
            messages = merge.attach(sock)
        except BackfillError as exc:
            self.notices.append(f"{endpoint}: no history ({exc}); showing the live stream only")
            return
        self._merges[endpoint] = merge
        with self.state.lock:
            for topic, body in messages:
                # recv None: replayed history says nothing about how late the stream is.
                self.state.ingest(endpoint, topic, body, None)
        self.notices.append(f"{endpoint}: {merge.history_count} messages of history")

    def _drain(self, sock: zmq.Socket, endpoint: str, budget: int = 2000) -> None:
        """Apply what is waiting on ``sock`` (bounded, so one busy sampler cannot starve the rest)."""
        batch: list[tuple[str, dict]] = []
        for _ in range(budget):
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            try:
                message = protocol.decode(frames)
            except protocol.ProtocolError:
                self.state.bad_messages += 1
                continue
            merge = self._merges.get(endpoint)
            if merge is None or merge.keep(message[1]):
                batch.append(message)
        if not batch:
            return
        recv = time.time_ns()
        with self.state.lock:
            for topic, body in batch:
                self.state.ingest(endpoint, topic, body, recv)
