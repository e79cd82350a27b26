"""The sampler's outputs and its inlet: PUB socket, journal, in-process listeners.

Every message is packed once (:func:`protocol.pack`) and the same bytes go to
the socket and to the journal. Nothing here may block the sampling thread:

* the PUB socket sends with NOBLOCK and a bounded SNDHWM; a PUB socket drops
  silently for a slow subscriber (the subscriber sees the gap in ``seq``), and
  what the socket refuses outright is counted in ``dropped``;
* the journal is written by its own thread (a write can block for a long time
  under dirty-page throttling); a write error is reported once and the lost
  records are counted, sampling goes on;
* the inlet has its own thread so that a marker is stamped with the sampler
  clock the moment it arrives, not when the sampling thread next looks.
"""

from __future__ import annotations

import collections
import errno
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import zmq

from . import protocol
from .recording import open_writer
from .rotation import RotatingWriter

# (topic, body, packed body): called for every published message, on the
# sampling thread but off its hot path. Keep them quick (e.g. update a gauge).
Listener = Callable[[str, Mapping[str, Any], bytes], None]


_TOPICS = {t: t.encode() for t in protocol.TOPICS}


class EndpointError(Exception):
    """An endpoint that cannot be bound; the message says what to do."""


def close_endpoint(sock: zmq.Socket[bytes], endpoint: str) -> None:
    """Close ``sock``; remove the socket file of an ``ipc://`` endpoint we bound."""
    sock.close()
    if endpoint.startswith("ipc://") and not endpoint.startswith("ipc://@"):
        try:
            os.unlink(endpoint[len("ipc://") :])
        except OSError:
            pass


def bind(sock: zmq.Socket[bytes], endpoint: str, what: str) -> None:
    try:
        sock.bind(endpoint)
    except zmq.ZMQError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise EndpointError(
                f"{what} endpoint {endpoint} is already in use (another sampler running?); "
                f"stop that process, or pick a free one: --{what} tcp://127.0.0.1:PORT"
            ) from None
        raise EndpointError(f"cannot bind {what} endpoint {endpoint!r}: {exc}") from None


_V1_FLUSH_S = 0.25


def _let_go() -> None:
    """Release the GIL for a moment (a thread waiting for it, the sampling one, takes it)."""
    time.sleep(0)


class Journal:
    """The recording file, written by a background thread.

    The thread wakes when the queued ``samples`` complete a block (``block_ns`` of
    sample time, the rule the block writer seals by), so each block is encoded and
    written as soon as it is whole, and otherwise every ``flush_s`` (a stream without
    samples; a block one second old is sealed then). Each wake-up costs ~0.1 ms of
    CPU on a VM (cold caches): waking on a timer four times a second cost ~0.3 ms a
    second and kept a crash's loss no smaller than the open block plus the queue
    (1.25 s); now what a crash loses is the samples since the last whole block."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        flush_s: float = 1.5,
        *,
        block_ns: int = 1_000_000_000,
        rotate_bytes: int | None = None,
        rotate_s: float | None = None,
        keep_bytes: int | None = None,
        keep_s: float | None = None,
    ) -> None:
        self.base = Path(path)
        # How this thread lets the GIL go between steps of its long work (encoding a block
        # is ~1 ms of Python): by default at every step; the sampler sets one that knows
        # its tick grid (:func:`~spikewatch.sampler.ticker.between_ticks`).
        self.pause: Callable[[], None] = _let_go
        # The sampler wakes the thread itself (kick) once its burst of slow work is over:
        # woken at once, the thread would take the GIL between the burst's system calls.
        self.defer_wake = False
        self._wake_due = False
        # With rotation the journal is segments PATH.000001, PATH.000002…: the one
        # implementation that `spikewatch record --rotate` uses too (.rotation).
        # Version 2 blocks (or version 1 when appending to an old journal): encoded here, off the hot loop.
        self._writer = RotatingWriter(
            self.base,
            rotate_bytes=rotate_bytes,
            rotate_s=rotate_s,
            keep_bytes=keep_bytes,
            keep_s=keep_s,
            opener=self._open,
        )
        self._queue: collections.deque[tuple[str, bytes, Mapping[str, Any] | None]] = collections.deque()
        self._flush_s = flush_s
        self._block_ns = block_ns
        self._span_from: int | None = None  # the first queued sample time of the block being filled
        self._wake = threading.Event()
        self._stop = False
        self.errors = 0
        self.last_error: str | None = None
        self._records_failed = 0
        self._thread = threading.Thread(target=self._run, name="spikewatch-journal", daemon=True)
        self._thread.start()

    def put(self, topic: str, packed: bytes, body: Mapping[str, Any] | None = None) -> None:
        """Queue one message. ``body`` (what was packed, never changed afterwards) spares
        a version 2 writer unpacking ``packed`` again: ~15 µs a message on this thread."""
        self._queue.append((topic, packed, body))
        if topic == protocol.SAMPLES and body is not None:
            # the writer's own rule: a block ends with the batch whose last sample is
            # block_ns or more after the block's first batch time
            t, dt = body.get("t"), body.get("dt")
            if type(t) is not int or not dt:
                return
            if self._span_from is None:
                self._span_from = t
            elif t + dt[-1] - self._span_from >= self._block_ns:
                self._span_from = None
                if self.defer_wake:
                    self._wake_due = True
                else:
                    self._wake.set()

    @property
    def wake_due(self) -> bool:
        return self._wake_due

    def kick(self) -> None:
        """Wake the thread if a block became whole since the last call (``defer_wake``)."""
        if self._wake_due:
            self._wake_due = False
            self._wake.set()

    @property
    def records_lost(self) -> int:
        """Records not in the file: dropped when the retry buffer was full, plus
        those still waiting for a disk that refuses them (all lost at close)."""
        w = self._writer
        return int(w.records_dropped + ((w.pending_records + len(self._queue)) if self.errors else 0))

    def _drain(self) -> None:
        q = self._queue
        w = self._writer
        n = 0
        as_body = w.takes_bodies  # version 1 stores the packed bytes as they are
        while q:
            topic, packed, body = q.popleft()
            if as_body and body is not None:
                w.write(topic, body)
            else:
                w.write_packed(topic, packed)
            n += 1
            if n % 8 == 0:
                self.pause()
        try:
            w.flush()  # and a new segment when one is due
        except OSError as exc:
            self.errors += 1
            self.last_error = f"{exc.strerror or exc} ({errno.errorcode.get(exc.errno or 0, '?')})"

    @property
    def path(self) -> Path:
        """The segment being written (the journal's path without rotation)."""
        return self._writer.path

    @property
    def rotating(self) -> bool:
        return self._writer.rotating

    @property
    def segments_deleted(self) -> int:
        return self._writer.segments_deleted

    def _open(self, path: Path):  # type: ignore[no-untyped-def]
        w = open_writer(path)
        if hasattr(w, "pause"):
            # Encoding a block is ~1 ms of Python: let the GIL go between its steps, or the
            # sampling thread, waking for a tick, could wait up to the 5 ms switch interval.
            w.pause = lambda: self.pause()
        return w

    def _run(self) -> None:
        self._drain()  # the file's header now: a full disk or a refused write is said at once
        while not self._stop:
            # Woken when a block's samples are all queued (the writer seals it as it takes
            # them in). A version 1 file (appended to) has no blocks: every 0.25 s.
            self._wake.wait(self._flush_s if self._writer.takes_bodies else _V1_FLUSH_S)
            self._wake.clear()
            self._drain()
            if not self._queue:
                # The writer's block may have begun elsewhere than put() counted from
                # (sealed by age, a new segment): count from where it did.
                self._span_from = self._writer.samples_from

    def close(self) -> None:
        self._stop = True
        self._wake.set()
        self._thread.join(timeout=5)
        self._drain()
        try:
            self._writer.close()
        except OSError:
            pass


class Publisher:
    """Stamps ``seq`` on every message, packs it once, sends it and journals it."""

    def __init__(
        self,
        ctx: zmq.Context[Any],
        endpoint: str,
        *,
        hwm: int = 10_000,
        socket_options: Mapping[int, Any] | None = None,
    ) -> None:
        self.sock = ctx.socket(zmq.PUB)
        self.sock.setsockopt(zmq.SNDHWM, hwm)
        self.sock.setsockopt(zmq.LINGER, 500)
        for opt, value in (socket_options or {}).items():
            self.sock.setsockopt(opt, value)
        bind(self.sock, endpoint, "publish")
        self.endpoint = endpoint
        self.seq = 0
        self.published = 0
        self.dropped = 0
        self.journal: Journal | None = None
        self.listeners: list[Listener] = []
        self.listener_errors = 0
        self._pack = protocol.packer()  # publish() runs on the sampling thread only
        self._held: list[tuple[str, Mapping[str, Any]]] = []

    def next_seq(self) -> int:
        s = self.seq
        self.seq = s + 1
        return s

    def publish(self, topic: str, body: Mapping[str, Any]) -> None:
        """Send ``body`` (which must already carry v/seq/t) on ``topic``."""
        self.publish_all(((topic, body),))

    def hold(self, messages: Sequence[tuple[str, Mapping[str, Any]]]) -> None:
        """Keep messages (their seq already taken) to go out ahead of the next publish:
        fewer, larger sends (each wakes ZeroMQ's I/O thread, ~0.1 ms of CPU on a VM)."""
        self._held.extend(messages)

    @property
    def holding(self) -> bool:
        return bool(self._held)

    def publish_all(self, messages: Sequence[tuple[str, Mapping[str, Any]]]) -> None:
        """Send several messages (after any held ones) back to back, in order, all
        packed before the first goes out: ZeroMQ's I/O thread, woken by the first,
        finds the others queued too (one wake-up instead of one a message)."""
        if self._held:
            messages = [*self._held, *messages]
            self._held = []
        packed = [self._pack(body) for _, body in messages]
        sock = self.sock
        for (topic, _), data in zip(messages, packed):
            try:
                # Two sends instead of send_multipart: less Python per message. A PUB
                # socket queues a message whole or not at all, so the first part
                # never goes out alone.
                sock.send(_TOPICS.get(topic) or topic.encode(), zmq.NOBLOCK | zmq.SNDMORE)
                sock.send(data, zmq.NOBLOCK)
                self.published += 1
            except zmq.Again:
                self.dropped += 1
        for (topic, body), data in zip(messages, packed):
            self._keep(topic, body, data)

    def _keep(self, topic: str, body: Mapping[str, Any], packed: bytes) -> None:
        """The journal and the in-process listeners get what the socket got."""
        if self.journal is not None:
            self.journal.put(topic, packed, body)
        for listener in self.listeners:
            try:
                listener(topic, body, packed)
            except Exception as exc:  # someone else's code must not stop the sampling
                self.listener_errors += 1
                if self.listener_errors == 1:
                    import sys
                    import traceback

                    print(
                        f"spikewatch: a publish listener failed ({exc!r}); it keeps being called, "
                        "further errors are only counted:\n" + traceback.format_exc().rstrip(),
                        file=sys.stderr,
                    )

    def close(self) -> None:
        if self._held:
            self.publish_all(())
        close_endpoint(self.sock, self.endpoint)


class Inlet:
    """A PULL socket read by its own thread; valid messages are stamped on arrival
    and queued for the sampling thread to republish."""

    # More than this per second is a flood (the driver sends a few): the excess is
    # counted as bad and dropped unread, so validating it cannot starve the sampling.
    MAX_PER_SECOND = 2000

    def __init__(
        self,
        ctx: zmq.Context[Any],
        endpoint: str,
        *,
        socket_options: Mapping[int, Any] | None = None,
        sender_allowed: Callable[[str | None], bool] | None = None,
    ) -> None:
        self.sock = ctx.socket(zmq.PULL)
        # ZAP admits a client once, at the handshake; this asks again per message so a
        # key revoked while its session is open stops getting markers published.
        self.sender_allowed = sender_allowed
        self.sock.setsockopt(zmq.LINGER, 0)
        # A small receive queue bounds what a flood can make us hold (~0.5 s at
        # the rate cap); senders never block on it (their PUSH drops or queues).
        self.sock.setsockopt(zmq.RCVHWM, 1_000)
        # Frames far beyond the limit are refused by libzmq before we see them.
        self.sock.setsockopt(zmq.MAXMSGSIZE, protocol.MAX_INLET_FRAME * 4)
        for opt, value in (socket_options or {}).items():
            self.sock.setsockopt(opt, value)
        bind(self.sock, endpoint, "inlet")
        self.endpoint = endpoint
        self.queue: collections.deque[tuple[int, str, dict[str, Any]]] = collections.deque(maxlen=100_000)
        self.ok = 0
        self.bad = 0
        self.last_error: str | None = None
        self._stop = False
        # close() wakes the thread through this pair instead of the thread polling with
        # a timeout to look at _stop: an idle inlet costs no wake-ups (~0.1 ms each on a VM).
        self._wake_addr = f"inproc://spikewatch-inlet-stop-{id(self)}"
        self._wake_rx = ctx.socket(zmq.PAIR)
        self._wake_rx.bind(self._wake_addr)
        self._wake_tx = ctx.socket(zmq.PAIR)
        self._wake_tx.connect(self._wake_addr)
        self._thread = threading.Thread(target=self._run, name="spikewatch-inlet", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        sock = self.sock
        mono = time.monotonic_ns
        second, in_second = 0, 0
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(self._wake_rx, zmq.POLLIN)
        while not self._stop:
            if sock not in dict(poller.poll()):
                continue  # close() woke us
            try:
                frames = sock.recv_multipart(flags=zmq.NOBLOCK, copy=self.sender_allowed is None)
            except zmq.Again:
                continue
            except zmq.ZMQError:
                if self._stop:
                    return
                raise
            t = mono()
            if t // 1_000_000_000 != second:
                second, in_second = t // 1_000_000_000, 0
            in_second += 1
            if in_second > self.MAX_PER_SECOND:
                self.bad += 1
                self.last_error = f"more than {self.MAX_PER_SECOND} messages per second"
                continue
            if self.sender_allowed is not None:
                if not self.sender_allowed(frames[0].get("User-Id")):
                    self.bad += 1
                    self.last_error = "a message from a client key no longer authorized"
                    continue
                frames = [f.bytes for f in frames]
            try:
                topic, body = protocol.validate_inlet(frames)
            except protocol.ProtocolError as exc:
                self.bad += 1
                self.last_error = str(exc)[:200]
                continue
            self.ok += 1
            self.queue.append((t, topic, body))

    def close(self) -> None:
        self._stop = True
        if self._thread.is_alive():
            self._wake_tx.send(b"", zmq.NOBLOCK)
            self._thread.join(timeout=2)
        self._wake_tx.close(0)
        self._wake_rx.close(0)
        close_endpoint(self.sock, self.endpoint)
