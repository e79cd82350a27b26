"""Subscribe to one or more samplers and write their stream as a recording.

One SUB socket per endpoint, so every message is known to come from one
sampler. With more than one endpoint each body gets ``src`` (the session id
from that sampler's hello); messages that arrive before an endpoint's first
hello wait (bounded) until it comes, or fall back to the endpoint as ``src``.
Gaps in ``seq`` are counted per session and reported.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import zmq
from spikewatch.sampler.wire import protocol
from spikewatch.sampler.wire.client import StreamSubscriber
from spikewatch.sampler.wire.rotation import RotatingWriter
from spikewatch.sampler.wire.seqgaps import SeqGaps

HELLO_WAIT_S = 3.0
MAX_PENDING = 20_000
# On stop, what already arrived is read too: until the sockets stay quiet this long
# (what is queued, and what is still in flight on the connection), and never longer
# than DRAIN_MAX_S in all, so a sampler that keeps publishing cannot hold the stop.
DRAIN_QUIET_S = 0.1
DRAIN_MAX_S = 0.5


@dataclass
class EndpointState:
    endpoint: str
    session: str | None = None
    pending: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    first_t: float = 0.0
    messages: int = 0


@dataclass
class RecordStats:
    messages: dict[str, int] = field(default_factory=dict)
    samples: int = 0
    missed: int = 0
    gaps: list[tuple[str, int, int]] = field(default_factory=list)
    sessions: list[str] = field(default_factory=list)
    bad_messages: int = 0
    bytes_written: int = 0
    records_dropped: int = 0
    seconds: float = 0.0
    handshake_errors: list[str] = field(default_factory=list)  # sentences from spikewatch.sampler.wire.handshake
    write_error: OSError | None = None  # the first write that failed (a full disk…); recording went on buffered
    records_lost: int = 0  # received but not in the file: dropped from the full buffer, or still buffered at the end


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class Recorder:
    def __init__(
        self,
        endpoints: Sequence[str],
        path: str | os.PathLike[str],
        *,
        on_gap: Callable[[str, int], None] | None = None,
        context: zmq.Context | None = None,
        history: Sequence[str | None] | None = None,
        socket_options: dict[int, Any] | None = None,
        warn: Callable[[str], None] | None = None,
        keys: str | None = None,
        rotate: tuple[int | None, float | None] = (None, None),
        keep: tuple[int | None, float | None] = (None, None),
    ) -> None:
        if not endpoints:
            raise ValueError("at least one endpoint is needed")
        self.endpoints = list(endpoints)
        self.multi = len(self.endpoints) > 1
        # segments PATH.000001… with --rotate: the sampler's journal rotation, one implementation
        self.writer = RotatingWriter(
            path, rotate_bytes=rotate[0], rotate_s=rotate[1], keep_bytes=keep[0], keep_s=keep[1]
        )
        # Each socket's handshakes are watched: a sampler that refuses our keys would
        # otherwise just look silent (spikewatch.sampler.wire.handshake). ``warn`` says it (stderr by default).
        self.warn = warn or _stderr
        self.subs = [
            StreamSubscriber([ep], context=context, socket_options=socket_options, watch_handshakes=True, keys=keys)
            for ep in self.endpoints
        ]
        # Late-joiner backfill (spikewatch.sampler.backfill): history endpoint per stream endpoint, or None.
        self.history = list(history or [])
        self._context, self._socket_options = context, socket_options
        self.backfills: list[Any] = [None] * len(self.endpoints)
        self.backfill_errors: list[str] = []
        self.states = [EndpointState(ep) for ep in self.endpoints]
        self.poller = zmq.Poller()
        for s in self.subs:
            self.poller.register(s.sock, zmq.POLLIN)
            if s.handshake is not None and s.handshake.monitor is not None:
                self.poller.register(s.handshake.monitor, zmq.POLLIN)
        self.gaps = SeqGaps()
        self._reported = 0
        self.stats = RecordStats()
        self.on_gap = on_gap
        self.stop_event = threading.Event()
        self.write_error: OSError | None = None

    def _flush(self) -> None:
        """Write out the buffer; a failing disk is said once and retried on the next
        flush (the writer keeps what it could not write, up to its bound)."""
        try:
            self.writer.flush()
        except OSError as exc:
            if self.write_error is None:
                self.write_error = exc
                self.warn(
                    f"spikewatch record: cannot write {self.writer.path}: {exc.strerror or exc}; "
                    "keeping what arrives in memory (bounded) and retrying"
                )

    def _write(self, st: EndpointState, topic: str, body: dict[str, Any]) -> None:
        seq = body.get("seq")
        key = f"{st.endpoint}|{st.session}"
        if isinstance(seq, int):
            self.gaps.see(seq, key)
        if self.multi:
            body = dict(body)
            body["src"] = st.session or st.endpoint
        self.writer.write(topic, body)
        self.stats.messages[topic] = self.stats.messages.get(topic, 0) + 1
        if topic == protocol.SAMPLES:
            self.stats.samples += len(body.get("dt") or ())

    def _handle(self, st: EndpointState, topic: str, body: dict[str, Any]) -> None:
        # Live and backfilled messages alike enter here: a malformed one is counted
        # (bad_messages) and kept out of the recording, where the report would trip on it.
        try:
            protocol.as_message(topic, body)
        except protocol.ProtocolError:
            self.stats.bad_messages += 1
            return
        st.messages += 1
        if topic == protocol.HELLO and body["session"]:
            if st.session != body["session"]:
                st.session = str(body["session"])
                if st.session not in self.stats.sessions:
                    self.stats.sessions.append(st.session)
        if st.session is None and self.multi:
            if not st.pending:
                st.first_t = time.monotonic()
            if len(st.pending) < MAX_PENDING:
                st.pending.append((topic, body))
            return
        if st.pending:
            for t, b in st.pending:
                self._write(st, t, b)
            st.pending.clear()
        self._write(st, topic, body)

    def _report_gaps(self) -> None:
        """Say so when messages are surely lost (far behind the newest: not just reordered)."""
        lost = self.gaps.lost
        if lost > self._reported and self.on_gap:
            self.on_gap(", ".join(k.split("|", 1)[1] for k in self.gaps.keys_with_gaps()) or "?", lost - self._reported)
        self._reported = max(self._reported, lost)

    def _flush_waiting(self, force: bool = False) -> None:
        now = time.monotonic()
        for st in self.states:
            if st.pending and (force or now - st.first_t > HELLO_WAIT_S):
                for t, b in st.pending:
                    self._write(st, t, b)
                st.pending.clear()

    def _backfill(self) -> None:
        """Subscribed already: fetch each sampler's history and merge it by seq."""
        from spikewatch.sampler.backfill import Backfill, BackfillError

        for i, (sub, st, ep) in enumerate(zip(self.subs, self.states, self.history)):
            if not ep:
                continue
            bf = Backfill(ep, context=self._context, socket_options=self._socket_options)
            try:
                merged = bf.attach(sub.sock)
            except BackfillError as exc:
                self.backfill_errors.append(str(exc))
                continue
            self.backfills[i] = bf
            for topic, body in merged:
                self._handle(st, topic, body)

    def run(self, duration_s: float | None = None) -> RecordStats:
        self._backfill()
        start = time.monotonic()
        last_flush = start
        try:
            while not self.stop_event.is_set():
                now = time.monotonic()
                if duration_s is not None and now - start >= duration_s:
                    break
                wait = 200 if duration_s is None else max(1, min(200, int((duration_s - (now - start)) * 1000)))
                self._read_ready(self.poller.poll(wait))
                if time.monotonic() - last_flush > 0.2:
                    self._flush_waiting()
                    self._flush()
                    self._report_gaps()
                    last_flush = time.monotonic()
            if self.stop_event.is_set():
                self._drain()
        finally:
            self._flush_waiting(force=True)
            self.stats.seconds = time.monotonic() - start
            self.stats.missed = self.gaps.missed
            self.stats.gaps = [(k.split("|", 1)[1], a, b) for k, a, b in self.gaps.gaps()]
            self.close()
        return self.stats

    def _read_ready(self, polled: list[tuple[Any, int]]) -> None:
        """Read up to 1000 messages from each socket ``polled`` says is readable (then
        the caller looks at the clock again)."""
        ready = dict(polled)
        for sub in self.subs:
            if sub.handshake is not None and sub.handshake.monitor in ready:
                for sentence in sub.handshake.poll():
                    self.stats.handshake_errors.append(sentence)
                    self.warn(f"spikewatch record: {sentence}")
        for sub, st, bf in zip(self.subs, self.states, self.backfills):
            if sub.sock not in ready:
                continue
            for _ in range(1000):
                try:
                    frames = sub.sock.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                try:
                    topic, body = protocol.decode(frames)
                except protocol.ProtocolError:
                    self.stats.bad_messages += 1
                    continue
                if bf is not None and not bf.keep(body):
                    continue  # already delivered by the history
                self._handle(st, topic, body)

    def _drain(self) -> None:
        """After Ctrl-C / SIGTERM: what had already arrived is written too, not left in
        the sockets (bounded: DRAIN_QUIET_S of silence, DRAIN_MAX_S in all)."""
        end = time.monotonic() + DRAIN_MAX_S
        while (left := end - time.monotonic()) > 0:
            polled = self.poller.poll(max(1, int(min(DRAIN_QUIET_S, left) * 1000)))
            if not polled:
                return
            self._read_ready(polled)

    def close(self) -> None:
        try:
            try:
                self.writer.close()
            except OSError as exc:
                self.write_error = self.write_error or exc
        finally:
            self.stats.bytes_written = self.writer.bytes_written
            self.stats.records_dropped = self.writer.records_dropped
            self.stats.records_lost = self.writer.records_dropped + self.writer.pending_records
            self.stats.write_error = self.write_error
            for s in self.subs:
                s.close()

    def install_signal_handlers(self) -> None:
        """Ctrl-C and SIGTERM end the recording cleanly (everything received is written)."""

        def stop(signum: int, frame: Any) -> None:
            self.stop_event.set()

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
