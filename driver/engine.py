"""One worker's load engine: a bounded connection pool playing phases on one event loop.

Open model: an absolute schedule on the monotonic clock. Every wake-up dispatches all
arrivals whose intended time has passed (no per-request ``sleep(1/rate)``, whose ~1 ms
timer rounding under-delivers), latency is measured from the intended time
(coordinated-omission correct), and when the pool is exhausted sends wait in a backlog
that is pruned at ``max_lag``: a send that late is dropped and counted, never queued
without bound. Closed model: exactly N requests in flight, each lane sending its next
request as soon as the previous answer is complete.
"""

from __future__ import annotations

import asyncio
import bisect
import random
import ssl as ssl_mod
import time
from collections import deque
from typing import Any

from hdrh.histogram import HdrHistogram

from .httpconn import Conn
from .payload import Payloads
from .profile import Arrivals, Profile
from .scenario import Phase, Scenario

HIST_LOW = 1_000  # 1 µs
HIST_HIGH = 3_600_000_000_000  # 1 h: longer latencies are clamped
HIST_DIGITS = 2

CLOSED, OPEN = 1, 2
# At most this many arrivals are scheduled per wake-up, then the loop yields (signals,
# telemetry, the phase end), and at most BACKLOG_MAX sends wait for a connection: a
# driver that falls behind drops and counts, it never runs away.
MAX_BATCH = 4096
BACKLOG_MAX = 100_000
_now = time.monotonic_ns


def new_histogram() -> HdrHistogram:
    return HdrHistogram(HIST_LOW, HIST_HIGH, HIST_DIGITS)


class Interval:
    """Counters of one telemetry interval (reset after each :meth:`Engine.take`)."""

    __slots__ = ("sent", "completed", "bytes_sent", "bytes_recv", "late", "dropped", "lag_max", "errors", "hist")

    def __init__(self) -> None:
        self.sent = self.completed = self.bytes_sent = self.bytes_recv = 0
        self.late = self.dropped = self.lag_max = 0
        self.errors: dict[str, int] = {}
        self.hist = new_histogram()


class Engine:
    def __init__(self, scenario: Scenario, index: int = 0, workers: int = 1) -> None:
        self.scenario = scenario
        self.index = index
        self.workers = workers
        seed = scenario.seed
        self.rng = random.Random(None if seed is None else seed * 1_000_003 + index)
        self.payloads = Payloads(scenario.requests, self.rng)
        t = scenario.target
        self.host, self.port = t.host, t.port
        self.ssl = ssl_mod.create_default_context() if t.scheme == "https" else None
        host_hdr = t.host if t.port in (80, 443) else f"{t.host}:{t.port}"
        self._specs = []
        # Requests that share a name share one in-flight count (the name is the endpoint).
        self.names: list[str] = list(dict.fromkeys(r.name for r in scenario.requests))
        self.in_flight_by = [0] * len(self.names)
        # time in flight per name since iv_start (ns x requests): the interval's mean in-flight
        # count, which is what the interval's mean memory answers to
        self.busy_ns = [0] * len(self.names)
        self.iv_start = _now()
        for r in scenario.requests:
            lines = [f"{r.method} {t.base_path}{r.path} HTTP/1.1", f"Host: {host_hdr}", "User-Agent: spikewatch"]
            if r.body is not None and r.body.content == "json":
                lines.append("Content-Type: application/json")
            lines += [f"{k}: {v}" for k, v in r.headers]
            head = ("\r\n".join(lines) + "\r\n").encode()
            full = head + (b"Content-Length: 0\r\n\r\n" if r.method in ("POST", "PUT", "PATCH") else b"\r\n")
            self._specs.append((r, head + b"Content-Length: ", full, r.method == "HEAD", self.names.index(r.name)))
        self._all_specs = self._specs
        self._all_cum = self._cum = self._cumulative(self._specs)
        c = scenario.client
        self.limit = max(1, c.connections // workers)
        self.timeout_ns = c.timeout_ns
        self.max_lag_ns = c.max_lag_ns
        self.late_ns = c.late_ns
        self.conns: set[Conn] = set()
        self.idle: list[Conn] = []
        self.connecting = 0
        self.in_flight = 0
        self.mode = "none"
        self.target = 0  # closed-model lanes wanted
        self.lanes = 0  # closed-model lanes alive (sending, connecting or backing off)
        self.backlog: deque[int] = deque()
        self.st = Interval()
        self.sent_total = 0
        self.loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task | None = None

    # --- requests -----------------------------------------------------------------

    @staticmethod
    def _cumulative(specs: list) -> list[float]:
        total = sum(s[0].weight for s in specs)
        acc, cum = 0.0, []
        for s in specs:
            acc += s[0].weight / total
            cum.append(acc)
        cum[-1] = 1.0
        return cum

    def _use_requests(self, only: tuple[str, ...] | None) -> None:
        """The phase's request mix: all [[requests]], or only the named ones."""
        if only is None:
            self._specs, self._cum = self._all_specs, self._all_cum
            return
        self._specs = [s for s in self._all_specs if s[0].name in only]
        self._cum = self._cumulative(self._specs)

    def _request_parts(self) -> tuple[list, int, bool, int]:
        specs = self._specs
        spec = specs[0] if len(specs) == 1 else specs[bisect.bisect_left(self._cum, self.rng.random())]
        r, prefix, full, no_body, req = spec
        if r.body is None:
            return [full], len(full), no_body, req
        parts, n = self.payloads.body(r.body)
        head = prefix + b"%d\r\n\r\n" % n
        return [head, *parts], len(head) + n, no_body, req

    def _send(self, conn: Conn, tag: int, intended: int) -> None:
        parts, n, no_body, req = self._request_parts()
        conn.tag = tag
        conn.req = req
        st = self.st
        st.sent += 1
        st.bytes_sent += n
        self.in_flight += 1
        self.in_flight_by[req] += 1
        self.sent_total += 1
        conn.send(parts, intended, no_body)
        if tag == CLOSED:
            conn.intended_ns = conn.sent_ns

    def _done(self, conn: Conn, status: int, err: str | None) -> None:
        now = _now()
        self.in_flight -= 1
        req = conn.req
        self.in_flight_by[req] -= 1
        sent, start = conn.sent_ns, self.iv_start
        self.busy_ns[req] += now - (sent if sent > start else start)
        st = self.st
        st.completed += 1
        st.bytes_recv += conn.bytes_recv
        if err is None and status >= 400:
            err = f"http_{status}"
        if err is not None:
            st.errors[err] = st.errors.get(err, 0) + 1
        if status and (err is None or err.startswith("http_")):
            # Only a complete answer has a latency: a request cut off (timeout, reset,
            # unfinished at the end) would show as a fast or arbitrary one.
            lat = now - conn.intended_ns
            st.hist.record_value(lat if lat < HIST_HIGH else HIST_HIGH)
        if conn.closed:
            self.conns.discard(conn)
        if conn.tag == CLOSED:
            if self.mode == "closed" and self.lanes <= self.target:
                if not conn.closed:
                    self._send(conn, CLOSED, 0)
                else:
                    self._lane_connect()
                return
            self.lanes -= 1
        self._release(conn)

    def _lost(self, conn: Conn, was_busy: bool) -> None:
        self.conns.discard(conn)
        if conn in self.idle:
            self.idle.remove(conn)

    def _release(self, conn: Conn) -> None:
        if conn.closed:
            if self.mode == "open":
                self._pump()
            return
        if self.mode == "open" and self.backlog:
            self._send_open(conn)
        else:
            self.idle.append(conn)

    # --- connections --------------------------------------------------------------

    def _open(self, for_lane: bool) -> None:
        self.connecting += 1
        self.loop.create_task(self._connect(for_lane))  # type: ignore[union-attr]

    async def _connect(self, for_lane: bool) -> None:
        try:
            _, conn = await self.loop.create_connection(  # type: ignore[union-attr]
                lambda: Conn(self._done, self._lost), self.host, self.port, ssl=self.ssl
            )
        except (TimeoutError, OSError, ssl_mod.SSLError) as exc:
            self.connecting -= 1
            self._connect_failed(for_lane, exc)
            return
        self.connecting -= 1
        self.conns.add(conn)
        if for_lane:
            if self.mode == "closed" and self.lanes <= self.target:
                self._send(conn, CLOSED, 0)
                return
            self.lanes -= 1
        self._release(conn)

    def _connect_failed(self, for_lane: bool, exc: BaseException) -> None:
        st = self.st
        st.completed += 1
        st.errors["connect"] = st.errors.get("connect", 0) + 1
        if for_lane:
            if self.mode == "closed" and self.lanes <= self.target:
                # Back off a little: a dead server must not spin the driver at 100 % CPU.
                self.loop.call_later(0.05, self._lane_retry)  # type: ignore[union-attr]
            else:
                self.lanes -= 1
        elif self.backlog:
            self.backlog.popleft()
            st.sent += 1

    def _lane_connect(self) -> None:
        if self.idle:
            self._send(self.idle.pop(), CLOSED, 0)
        else:
            self._open(True)

    def _lane_retry(self) -> None:
        if self.mode == "closed" and self.lanes <= self.target:
            self._lane_connect()
        else:
            self.lanes -= 1

    def _set_lanes(self, target: int) -> None:
        self.target = target
        while self.lanes < target:
            self.lanes += 1
            self._lane_connect()

    # --- open model ---------------------------------------------------------------

    def _send_open(self, conn: Conn) -> None:
        now = _now()
        backlog = self.backlog
        st = self.st
        while backlog:
            intended = backlog.popleft()
            lag = now - intended
            if lag > self.max_lag_ns:
                st.dropped += 1
                continue
            if lag > st.lag_max:
                st.lag_max = lag
            if lag > self.late_ns:
                st.late += 1
            self._send(conn, OPEN, intended)
            return
        self.idle.append(conn)

    def _pump(self) -> None:
        backlog = self.backlog
        idle = self.idle
        while backlog and idle:
            self._send_open(idle.pop())
        want = len(backlog) - self.connecting
        room = self.limit - len(self.conns) - self.connecting
        for _ in range(min(want, room)):
            self._open(False)

    def _prune(self, now: int) -> None:
        backlog = self.backlog
        limit = now - self.max_lag_ns
        while backlog and backlog[0] < limit:
            backlog.popleft()
            self.st.dropped += 1

    async def _run_open(self, profile: Profile, t0: int, end: int) -> None:
        arrivals = Arrivals(profile.phase, self.rng)
        rate0 = profile.rate(0)
        t_next = float(t0)
        if profile.phase.arrivals.kind == "uniform" and rate0 > 0 and self.workers > 1:
            t_next += arrivals.gap_ns(rate0) * self.index / self.workers  # interleave workers
        elif rate0 > 0 and profile.phase.arrivals.kind != "uniform":
            t_next += arrivals.gap_ns(rate0)
        is_arrival = rate0 > 0
        if not is_arrival:
            t_next = float(t0 + min(profile.next_change(0), 10_000_000))
        backlog = self.backlog
        sleep = asyncio.sleep
        st_max_lag = self.max_lag_ns
        while True:
            now = _now()
            if is_arrival and t_next < now - st_max_lag:
                # So far behind that these sends would be dropped as too late anyway:
                # count them and jump, instead of generating each one.
                skip_to = min(float(now - st_max_lag), float(end))
                self.st.dropped += int((skip_to - t_next) * profile.rate(int(t_next) - t0) / 1e9)
                t_next = skip_to
            batch = 0
            while t_next <= now and t_next < end and batch < MAX_BATCH:
                batch += 1
                rel = int(t_next) - t0
                if is_arrival:
                    backlog.append(int(t_next))
                rate = profile.rate(rel)
                nc = t0 + profile.next_change(rel)
                if rate <= 0:
                    t_next = float(min(nc, int(t_next) + 10_000_000))
                    is_arrival = False
                    continue
                cand = arrivals.after(t_next, rate)
                if cand > nc and nc < end:
                    # The rate changes before the next arrival: warp the rest of the gap to
                    # the new rate (exact for piecewise-constant rates, Poisson included).
                    new = profile.rate(nc - t0)
                    if new > 0:
                        cand = nc + (cand - nc) * rate / new
                    else:
                        cand = float(nc)
                        is_arrival = False
                        t_next = cand
                        continue
                if cand <= t_next:  # a gap below the clock's resolution: never stands still
                    cand = t_next + 1.0
                t_next = cand
                is_arrival = True
            if batch >= MAX_BATCH and is_arrival and t_next < now:
                # More due than one wake-up may schedule: the rate cannot be held, so what
                # is due now is dropped and counted in one step (it would only age out).
                skip_to = float(min(now, end))
                self.st.dropped += int((skip_to - t_next) * profile.rate(int(t_next) - t0) / 1e9)
                t_next = skip_to
            if len(backlog) > BACKLOG_MAX:
                for _ in range(len(backlog) - BACKLOG_MAX):
                    backlog.popleft()
                    self.st.dropped += 1
            if backlog:
                self._prune(now)
                self._pump()
            if now >= end:
                return
            wait = min(t_next, end) - _now()
            await sleep(wait / 1e9 if wait > 0 else 0)

    async def _run_closed(self, profile: Profile, t0: int, end: int) -> None:
        while True:
            rel = _now() - t0
            self._set_lanes(profile.concurrency(rel))
            nxt = t0 + profile.next_change(rel)
            if nxt >= end or rel >= end - t0:
                wait = end - _now()
                if wait > 0:
                    await asyncio.sleep(wait / 1e9)
                return
            await asyncio.sleep(max(0, nxt - _now()) / 1e9)

    # --- phases -------------------------------------------------------------------

    def prepare(self, phase: Phase) -> Profile:
        """Switch model at once (before the phase's first snapshot), so nothing the old
        phase's lanes would still send is attributed to the new phase."""
        profile = Profile(phase, self.index, self.workers)
        self._use_requests(phase.requests)
        self.mode = profile.model
        if self.mode != "open":
            self.st.dropped += len(self.backlog)
            self.backlog.clear()
        if self.mode != "closed":
            self.target = 0
        return profile

    async def run_phase(self, phase: Phase, t0: int, end: int) -> None:
        """Play ``phase`` from absolute monotonic ``t0`` until ``end`` (ns)."""
        self.loop = asyncio.get_running_loop()
        profile = self.prepare(phase)
        if self.mode == "open":
            await self._run_open(profile, t0, end)
        elif self.mode == "closed":
            await self._run_closed(profile, t0, end)
        else:
            wait = end - _now()
            if wait > 0:
                await asyncio.sleep(wait / 1e9)

    def sweep(self, now: int) -> None:
        """Abort requests older than the client timeout (called every telemetry tick)."""
        limit = now - self.timeout_ns
        for conn in [c for c in self.conns if c.busy and c.sent_ns < limit]:
            conn.abort("timeout")

    async def finish(self, grace_s: float = 5.0) -> int:
        """Stop sending, wait up to ``grace_s`` for answers in flight, close everything.

        Returns how many requests were still unanswered (counted as errors ``unfinished``)."""
        self.mode = "none"
        self.target = 0
        self.st.dropped += len(self.backlog)
        self.backlog.clear()
        deadline = time.monotonic() + grace_s
        while self.in_flight > 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        left = self.in_flight
        for conn in list(self.conns):
            if conn.busy:
                conn.abort("unfinished")
            elif conn.transport is not None:
                conn.transport.close()
        self.conns.clear()
        self.idle.clear()
        return left

    def take(self) -> dict[str, Any]:
        """This interval's counters (with its histogram object); starts a new interval."""
        st, self.st = self.st, Interval()
        now, start, busy = _now(), self.iv_start, self.busy_ns
        for c in self.conns:
            if c.busy:
                busy[c.req] += now - (c.sent_ns if c.sent_ns > start else start)
        self.busy_ns, self.iv_start = [0] * len(self.names), now
        return {
            "busy_ns": busy,
            "sent": st.sent,
            "completed": st.completed,
            "bytes_sent": st.bytes_sent,
            "bytes_recv": st.bytes_recv,
            "late": st.late,
            "dropped": st.dropped,
            "lag_max": st.lag_max,
            "errors": st.errors,
            "in_flight": self.in_flight,
            "hist": st.hist,
        }

    def in_flight_by_name(self) -> dict[str, int]:
        return dict(zip(self.names, self.in_flight_by))
