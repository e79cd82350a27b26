"""A small real publisher of the spikewatch stream for console tests and the bench.

It binds a real PUB socket and sends real protocol messages (``protocol.encode``)
the way the sampler does: a ``hello`` every second, a ``samples`` batch every
~20 ms holding one sample per period, and events/markers/load on request.
Sample times are the real monotonic clock, so lag measured against it is real.
"""

from __future__ import annotations

import queue
import socket
import threading
import time
import uuid
from typing import Any

import zmq
from spikewatch.sampler.wire import protocol


class Publisher:
    def __init__(
        self,
        endpoint: str,
        *,
        period_ns: int = 1_000_000,
        batch_ns: int = 20_000_000,
        baseline: int = 100 << 20,
        limit: int | None = 256 << 20,
        series: tuple[str, ...] = ("rss", "cg_usage"),
        prefill_ns: int = 0,
    ) -> None:
        self.endpoint = endpoint
        self.period_ns, self.batch_ns = period_ns, batch_ns
        self.baseline, self.limit, self.series = baseline, limit, series
        self.prefill_ns = prefill_ns  # history sent at once on start (to fill long windows)
        self.session = uuid.uuid4().hex
        self._cmds: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self._spikes: list[tuple[int, int, int]] = []
        self.samples_sent = 0
        self.seq = 0
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    # --- commands (any thread) --------------------------------------------

    def start(self) -> Publisher:
        self._thread.start()
        self._ready.wait(5)
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def __enter__(self) -> Publisher:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def spike(self, value: int, duration_ns: int, delay_ns: int = 0) -> tuple[int, int]:
        """Samples in [now+delay, now+delay+duration) read ``value``; returns that interval."""
        t0 = time.monotonic_ns() + delay_ns
        self._cmds.put(("spike", (t0, t0 + duration_ns, value)))
        return t0, t0 + duration_ns

    def set_baseline(self, value: int) -> None:
        self._cmds.put(("baseline", value))

    def send(self, topic: str, **fields: Any) -> None:
        self._cmds.put(("send", (topic, fields)))

    def event(self, kind: str, **fields: Any) -> None:
        self.send(protocol.EVENT, kind=kind, **fields)

    def marker(self, kind: str, name: str) -> None:
        self.send(protocol.MARKER, kind=kind, name=name, attrs={}, origin_wall_ns=time.time_ns())

    def skip_seq(self, n: int) -> None:
        """Pretend ``n`` messages were lost on the way."""
        self._cmds.put(("skip", n))

    # --- the sending thread -------------------------------------------------

    def _next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def _hello(self, sock: zmq.Socket, started: int) -> None:
        t = time.monotonic_ns()
        body = protocol.header(self._next_seq(), t) | {
            "session": self.session,
            "host": socket.gethostname(),
            "sampler_version": "test",
            "pid": 0,
            "wall_ns": time.time_ns(),
            "period_ns": self.period_ns,
            "detail_period_ns": 100_000_000,
            "series": list(self.series),
            "targets": [],
            "started_t": started,
            "journal": None,
            "final": False,
            "cgroup": {"version": 1, "path": "/test", "limit": self.limit} if self.limit else None,
            "counters": {
                "samples": self.samples_sent,
                "ticks_missed": 0,
                "overruns": 0,
                "published": self.seq,
                "dropped": 0,
            },
        }
        sock.send_multipart(protocol.encode(protocol.HELLO, body))

    def _value(self, t: int) -> int:
        for a, b, v in self._spikes:
            if a <= t < b:
                return v
        return self.baseline

    def _run(self) -> None:
        ctx = zmq.Context.instance()
        sock = ctx.socket(zmq.PUB)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, 100_000)
        # A just-closed socket on the same port is released by ZeroMQ's I/O thread a
        # moment later (a restarted sampler meets the same): retry for a while.
        deadline = time.monotonic() + 10
        while True:
            try:
                sock.bind(self.endpoint)
                break
            except zmq.ZMQError as exc:
                if exc.errno != zmq.EADDRINUSE or time.monotonic() > deadline:
                    sock.close()
                    raise
                time.sleep(0.05)
        self._ready.set()
        if self.prefill_ns:
            time.sleep(1.5)  # let subscribers connect before the history goes out
        started = next_t = time.monotonic_ns() - self.prefill_ns
        next_hello = time.monotonic_ns()
        try:
            while not self._stop.is_set():
                while True:
                    try:
                        cmd, arg = self._cmds.get_nowait()
                    except queue.Empty:
                        break
                    if cmd == "spike":
                        self._spikes.append(arg)
                    elif cmd == "baseline":
                        self.baseline = arg
                    elif cmd == "skip":
                        self.seq += arg
                    elif cmd == "send":
                        topic, fields = arg
                        body = protocol.header(self._next_seq(), time.monotonic_ns()) | fields
                        sock.send_multipart(protocol.encode(topic, body))
                now = time.monotonic_ns()
                if now >= next_hello:
                    self._hello(sock, started)
                    next_hello += 1_000_000_000
                if now - next_t >= self.batch_ns:
                    # One batch per batch_ns of sample time (history goes out back to back).
                    times = list(range(next_t, min(now, next_t + self.batch_ns), self.period_ns))
                    next_t = times[-1] + self.period_ns
                    values = [self._value(t) for t in times]
                    cols = {name: values for name in self.series}
                    sock.send_multipart(
                        protocol.encode(protocol.SAMPLES, protocol.samples_body(self._next_seq(), times, cols))
                    )
                    self.samples_sent += len(times)
                    self._spikes = [s for s in self._spikes if s[1] > next_t - 60_000_000_000]
                    if now - next_t >= self.batch_ns:
                        continue  # still catching up with the prefill
                time.sleep(0.002)
        finally:
            sock.close()
