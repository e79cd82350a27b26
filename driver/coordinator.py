"""The coordinator: plays a scenario's phases on one event loop, sends a marker at every
phase boundary and merges the workers' snapshots into one ``load`` message every 100 ms.

Phase boundaries are absolute times on the monotonic clock (phase i+1 starts exactly
where phase i ended); markers go to the sampler's inlet, where the sampler stamps them
on its own clock. Ctrl-C / SIGTERM (or the ``stop`` event) end the current phase at once.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from spikewatch.sampler.wire import protocol
from spikewatch.sampler.wire.client import InletClient

from .engine import new_histogram
from .profile import Profile
from .result import Progress
from .scenario import Phase, Scenario
from .stats import SATURATION_LAG_NS, PhaseStats, Series, percentiles
from .workers import TICK_NS, LocalBackend, ProcessBackend

_now = time.monotonic_ns

# After Ctrl-C / SIGTERM the whole stop (answers in flight, the last markers, the
# summary) fits in a second: these bound its parts.
STOP_GRACE_S = 0.3


class NullInlet:
    """``--inlet off``: markers and telemetry go nowhere (no ZeroMQ socket at all)."""

    handshake = None
    dropped = 0

    def marker(self, *args: Any, **kwargs: Any) -> None:
        pass

    def load(self, *args: Any, **kwargs: Any) -> None:
        pass

    def close(self) -> None:
        pass


async def probe(scenario: Scenario, path: str, timeout_s: float) -> int | None:
    """HTTP status of one GET (new connection each time), or None if nothing answered."""
    t = scenario.target
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(t.host, t.port, ssl=(t.scheme == "https") or None), timeout_s
        )
    except (TimeoutError, OSError):
        return None
    try:
        host = t.host if t.port in (80, 443) else f"{t.host}:{t.port}"
        writer.write(f"GET {t.base_path}{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        line = await asyncio.wait_for(reader.readline(), timeout_s)
        return int(line.split()[1])
    except (TimeoutError, OSError, ValueError, IndexError):
        return None
    finally:
        writer.close()


class Coordinator:
    def __init__(
        self,
        scenario: Scenario,
        inlet: InletClient | NullInlet,
        workers: int,
        progress: Callable[[Progress], None] | None,
        keep_series: bool,
        log: Callable[[str], None],
        stop: threading.Event | None,
    ) -> None:
        self.scenario = scenario
        self.inlet = inlet
        self.workers = workers
        self.progress = progress
        self.log = log
        self.stop_flag = stop
        self.backend: LocalBackend | ProcessBackend = (
            LocalBackend(scenario) if workers == 1 else ProcessBackend(scenario, workers)
        )
        self.phases = [PhaseStats(p.name, p.kind, p.model, p.params()) for p in scenario.phases]
        self.total = PhaseStats("total", "total", "-", {})
        self.series = Series() if keep_series else None
        self.cur = -1
        self.cur_t0 = 0
        self.cur_profile: Profile | None = None
        self.t_origin = 0
        self.last_tick = 0
        self.max_loop_lag = 0
        self.saturated = 0
        self.interrupted = False
        self._wake: asyncio.Event | None = None
        self._stop_evt: asyncio.Event | None = None  # set on Ctrl-C/SIGTERM: waits end at once
        # who sends this telemetry: a report sums several driver hosts marking one sampler
        self.source = f"drive {socket.gethostname()}:{os.getpid()}"

    # --- telemetry ------------------------------------------------------------------

    def tick(self, now: int, loop_lag: int) -> None:
        snaps, in_flight = self.backend.take(now)
        interval = max(1, now - self.last_tick)
        self.last_tick = now
        merged = {"sent": 0, "completed": 0, "bytes_sent": 0, "bytes_recv": 0, "late": 0, "dropped": 0, "lag_max": 0}
        errors: dict[str, int] = {}
        busy: list[int] | None = None
        hist = snaps[0][1]["hist"] if len(snaps) == 1 else new_histogram()
        for idx, snap, wlag in snaps:
            if wlag is not None:
                loop_lag = max(loop_lag, wlag)
            if 0 <= idx < len(self.phases):
                self.phases[idx].add(snap)
            elif snap["completed"] or snap["sent"]:
                self.phases[0].add(snap)
            self.total.add(snap)
            for k in merged:
                merged[k] = max(merged[k], snap[k]) if k == "lag_max" else merged[k] + snap[k]
            for k, v in snap["errors"].items():
                errors[k] = errors.get(k, 0) + v
            b = snap.get("busy_ns")
            if b:
                busy = list(b) if busy is None else [x + y for x, y in zip(busy, b)]
            if len(snaps) > 1:
                hist.add(snap["hist"])
        self.max_loop_lag = max(self.max_loop_lag, loop_lag)
        saturated = loop_lag > SATURATION_LAG_NS
        if saturated:
            self.saturated += 1
        cur = self.phases[self.cur] if self.cur >= 0 else None
        target_rate = None
        if self.cur_profile is not None and self.cur_profile.model == "open":
            target_rate = self.cur_profile.total_level(now - self.cur_t0)
        if cur is not None:
            cur.in_flight_max = max(cur.in_flight_max, in_flight)
            cur.loop_lag_max = max(cur.loop_lag_max, loop_lag)
            cur.saturated_intervals += saturated
            if target_rate is not None:
                cur.target_level_sum += target_rate
                cur.intervals += 1
        msg: dict[str, Any] = {
            "interval_ns": interval,
            "rate": merged["completed"] * 1e9 / interval,
            "in_flight": in_flight,
            "completed": merged["completed"],
            "sent": merged["sent"],
            "bytes_sent": merged["bytes_sent"],
            "bytes_recv": merged["bytes_recv"],
            "late_sends": merged["late"],
            "dropped_sends": merged["dropped"],
            "schedule_lag_ns": merged["lag_max"],
            "workers": self.workers,
            "loop_lag_ns": loop_lag,
            "errors": errors,
            "phase": cur.name if cur is not None else "",
            "origin_wall_ns": time.time_ns(),
            "source": self.source,
        }
        if target_rate is not None:
            msg["target_rate"] = target_rate
        # per request name, so the report can tell which endpoint holds the memory
        by_name = list(self.backend.in_flight_by_name().items())[: protocol.MAX_ATTRS]
        eps: dict[str, dict[str, Any]] = {name: {"in_flight": n} for name, n in by_name}
        if busy is not None:
            for ep, area in zip(eps.values(), busy):
                ep["in_flight_mean"] = round(area / interval, 3)
        msg["endpoints"] = eps
        msg.update(percentiles(hist))
        try:
            self.inlet.load(msg)
        except protocol.ProtocolError as exc:  # never let telemetry stop the load
            self.log(f"telemetry not sent: {exc}")
        handshake = getattr(self.inlet, "handshake", None)
        if handshake is not None:  # a sampler that refuses our keys: say so once, load goes on
            for sentence in handshake.poll():
                self.log(f"{sentence}: markers go nowhere")
        if self.series is not None:
            self.series.append((now - self.t_origin) / 1e9, max(self.cur, 0), msg)
        if self.progress is not None and cur is not None:
            self.progress(self._progress(now, msg, in_flight, saturated))

    def _progress(self, now: int, msg: dict[str, Any], in_flight: int, saturated: bool) -> Progress:
        phase = self.scenario.phases[self.cur]
        elapsed_phase = (now - self.cur_t0) / 1e9
        rest = sum(p.duration_ns for p in self.scenario.phases[self.cur + 1 :]) / 1e9
        dur = phase.duration_ns / 1e9 if phase.kind != "startup" else None
        if self.cur_profile is None or self.cur_profile.model == "none":
            target = "ready?" if phase.kind == "startup" else "idle"
        elif self.cur_profile.model == "open":
            target = f"{self.cur_profile.total_level(now - self.cur_t0):.0f}/s"
        else:
            target = f"{int(round(self.cur_profile.total_level(now - self.cur_t0)))} conc"
        return Progress(
            phase=phase.name,
            kind=phase.kind,
            index=self.cur,
            phases=len(self.phases),
            phase_elapsed_s=elapsed_phase,
            phase_duration_s=dur,
            elapsed_s=(now - self.t_origin) / 1e9,
            remaining_s=max(0.0, (dur or 0) - elapsed_phase) + rest,
            rate=msg["rate"],
            target=target,
            in_flight=in_flight,
            completed=self.total.completed,
            errors=self.total.error_count,
            p99_ns=msg.get("lat_p99_ns"),
            loop_lag_ns=msg["loop_lag_ns"],
            saturated=saturated,
        )

    async def ticker(self) -> None:
        due = _now() + TICK_NS
        while True:
            await asyncio.sleep(max(0, due - _now()) / 1e9)
            now = _now()
            self.tick(now, max(0, now - due))
            due += TICK_NS
            if due < now:
                due = now + TICK_NS

    # --- phases ---------------------------------------------------------------------

    def _stopped(self) -> bool:
        return self.interrupted or (self.stop_flag is not None and self.stop_flag.is_set())

    async def _wait_until(self, end: int) -> None:
        while not self._stopped():
            left = end - _now()
            if left <= 0:
                return
            await asyncio.sleep(min(left / 1e9, 0.05))

    async def _unless_stopped(self, aw: Any) -> Any:
        """``await aw``, or None as soon as a stop is requested (a readiness probe can
        take seconds; a stop must not wait for it)."""
        task = asyncio.ensure_future(aw)
        while not task.done():
            if self._stopped():
                task.cancel()
                return None
            await asyncio.wait({task}, timeout=0.05)
        return task.result()

    async def _startup(self, phase: Phase, stats: PhaseStats, t0: int) -> bool:
        deadline = t0 + phase.timeout_ns
        while not self._stopped():
            before = _now()
            status = await self._unless_stopped(
                probe(self.scenario, phase.ready_path or "/", min(2.0, phase.timeout_ns / 1e9))
            )
            now = _now()
            if status is not None and 200 <= status < 300:
                stats.time_to_ready_s = round((now - t0) / 1e9, 4)
                stats.ready = True
                return True
            if now >= deadline:
                break
            await self._wait_until(now + max(0, min(phase.interval_ns - (now - before), deadline - now)))
        stats.ready = False
        return False

    async def run(self) -> tuple[str | None, int]:
        loop = asyncio.get_running_loop()
        if threading.current_thread() is threading.main_thread():
            try:
                loop.add_signal_handler(signal.SIGINT, self._interrupt)
                loop.add_signal_handler(signal.SIGTERM, self._interrupt)
            except (NotImplementedError, RuntimeError):
                pass
        await self.backend.start()
        self.t_origin = self.last_tick = _now()
        ticker = loop.create_task(self.ticker())
        aborted = None
        t0 = self.t_origin
        try:
            for i, phase in enumerate(self.scenario.phases):
                if self._stopped():
                    break
                stats = self.phases[i]
                stats.t_start_ns, stats.wall_start_ns = t0, time.time_ns()
                attrs = {**phase.params(), "index": i, "workers": self.workers}
                self.inlet.marker(protocol.PHASE_START, phase.name, attrs)
                end = t0 + (phase.timeout_ns if phase.kind == "startup" else phase.duration_ns)
                self.cur, self.cur_t0 = i, t0
                self.cur_profile = Profile(phase)
                await self.backend.start_phase(i, phase, t0, end)
                if phase.kind == "startup":
                    ok = await self._startup(phase, stats, t0)
                    end = _now()
                    if not ok and not self._stopped():
                        aborted = (
                            f"phase {phase.name!r}: {self.scenario.target.url}{phase.ready_path} did not "
                            f"answer 2xx within {phase.timeout_ns / 1e9:g}s"
                        )
                else:
                    await self._wait_until(end)
                    end = min(end, _now())
                stats.t_end_ns = end
                end_attrs = {**stats.marker_attrs(), "index": i}
                if self._stopped():
                    end_attrs["interrupted"] = True
                self.inlet.marker(protocol.PHASE_END, phase.name, end_attrs)
                t0 = end
                if aborted:
                    break
        finally:
            stopping = self._stopped()
            if stopping and isinstance(self.backend, ProcessBackend):
                self.backend.join_s = 0.3
            unfinished = await self.backend.finish(STOP_GRACE_S if stopping else 5.0)
            ticker.cancel()
            try:
                await ticker
            except asyncio.CancelledError:
                pass
            self.tick(_now(), 0)  # the last partial interval
            self.backend.close()
            if threading.current_thread() is threading.main_thread():
                for sig in (signal.SIGINT, signal.SIGTERM):
                    try:
                        loop.remove_signal_handler(sig)
                    except (NotImplementedError, RuntimeError):
                        pass
        return aborted, unfinished

    def _interrupt(self) -> None:
        if self.interrupted:  # second Ctrl-C: stop hard
            raise KeyboardInterrupt
        self.interrupted = True
        self.log("interrupted: finishing the current phase's markers and summary (Ctrl-C again to quit)")
