"""The coordinator: plays a scenario's phases, sends markers and 100 ms load telemetry.

Phase boundaries are absolute times on the monotonic clock (phase i+1 starts exactly
where phase i ended), markers go to the sampler's inlet where the sampler stamps them
on its own clock, and every 100 ms the workers' snapshots are merged into one ``load``
message. Call :func:`run_scenario` from any thread without a running event loop.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import zmq
from spikewatch.sampler.wire import protocol
from spikewatch.sampler.wire.client import InletClient

from .engine import new_histogram
from .profile import Profile
from .scenario import Phase, Scenario
from .stats import SATURATION_LAG_NS, PhaseStats, Series, percentiles
from .workers import TICK_NS, LocalBackend, ProcessBackend

_now = time.monotonic_ns

# Like `spikewatch mark`: at the end, wait at most this long for the last phase_end and
# telemetry to reach the sampler.
INLET_LINGER_MS = 1000
# After Ctrl-C / SIGTERM the whole stop (answers in flight, the last markers, the
# summary) fits in a second: these bound its parts.
STOP_GRACE_S = 0.3
STOP_LINGER_MS = 300


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


@dataclass
class Progress:
    """What a live display needs, once per telemetry interval."""

    phase: str
    kind: str
    index: int
    phases: int
    phase_elapsed_s: float
    phase_duration_s: float | None  # None while waiting for readiness
    elapsed_s: float
    remaining_s: float
    rate: float
    target: str
    in_flight: int
    completed: int
    errors: int
    p99_ns: int | None
    loop_lag_ns: int
    saturated: bool


@dataclass
class DriveResult:
    scenario: Scenario
    phases: list[PhaseStats]
    total: PhaseStats
    thresholds: list[dict[str, Any]]
    series: Series | None
    workers: int
    inlet: str
    sampler_reachable: bool
    started_wall_ns: int
    aborted: str | None = None
    interrupted: bool = False
    unfinished: int = 0
    saturated_intervals: int = 0
    max_loop_lag_ns: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def failed_thresholds(self) -> list[dict[str, Any]]:
        return [t for t in self.thresholds if not t["ok"]]

    @property
    def no_result(self) -> str | None:
        """Why the run measured nothing, or None: no request was sent though phases asked
        for load, or every request failed and no ``error_rate`` threshold says errors are
        expected (then that threshold decides)."""
        if self.aborted is not None or self.interrupted:
            return None
        wants_load = any(p.model != "none" for p in self.scenario.phases)
        if not wants_load:
            return None
        tot = self.total
        if tot.sent == 0 and tot.completed == 0:
            return f"no request was sent to {self.scenario.target.url}"
        if any(t["metric"] == "error_rate" for t in self.thresholds):
            return None
        if tot.completed and tot.error_count >= tot.completed:
            kinds = ", ".join(f"{k} {v}" for k, v in sorted(tot.errors.items())) or "errors"
            return f"every request to {self.scenario.target.url} failed ({kinds})"
        return None

    @property
    def passed(self) -> bool:
        return self.aborted is None and not self.failed_thresholds and self.no_result is None

    @property
    def exit_code(self) -> int:
        """0 passed, 1 a threshold failed, 3 no result (target never ready, nothing sent,
        every request failed), 130 interrupted (spikewatch.exits)."""
        if self.interrupted:
            return 130
        if self.aborted is not None or self.no_result is not None:
            return 3
        return 1 if self.failed_thresholds else 0

    def to_json(self) -> dict[str, Any]:
        return {
            "version": 1,
            "scenario": self.scenario.source,
            "target": self.scenario.target.url,
            "workers": self.workers,
            "inlet": self.inlet,
            "sampler_reachable": self.sampler_reachable,
            "started_wall_ns": self.started_wall_ns,
            "aborted": self.aborted,
            "interrupted": self.interrupted,
            "unfinished": self.unfinished,
            "driver": {"max_loop_lag_ns": self.max_loop_lag_ns, "saturated_intervals": self.saturated_intervals},
            "phases": [p.summary() for p in self.phases],
            "total": self.total.summary(),
            "thresholds": self.thresholds,
            "passed": self.passed,
            "no_result": self.no_result,
            "notes": self.notes,
            "telemetry": self.series.to_json([p.name for p in self.phases]) if self.series is not None else None,
        }


def inlet_reachable(endpoint: str | None, timeout: float = 0.3) -> bool:
    """Whether something listens at a tcp:// or ipc:// inlet (a PUSH never tells us)."""
    if endpoint is None:
        return False
    if endpoint.startswith("ipc://"):
        return os.path.exists(endpoint[6:])
    address = protocol.tcp_address(endpoint)
    if address is None:
        return True  # other transports: cannot check, assume so
    try:
        with socket.create_connection(address, timeout=timeout):
            return True
    except OSError:
        return False


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


def _check_thresholds(scenario: Scenario, total: PhaseStats) -> list[dict[str, Any]]:
    out = []
    h = total.hist
    n = h.get_total_count()
    for th in scenario.thresholds:
        observed: float | None
        if th.metric == "error_rate":
            observed = total.error_count / total.completed if total.completed else None
        elif n == 0:
            observed = None
        elif th.metric == "max":
            observed = h.get_max_value()
        elif th.metric == "mean":
            observed = h.get_mean_value()
        else:
            q = {"p50": 50, "p90": 90, "p95": 95, "p99": 99, "p999": 99.9}[th.metric]
            observed = h.get_value_at_percentile(q)
        ok = observed is not None and th.check(observed)
        if th.metric == "error_rate":
            shown = "no requests" if observed is None else f"{observed * 100:.3g}%"
        else:
            shown = "no requests" if observed is None else f"{observed / 1e6:.3g}ms"
        out.append({"metric": th.metric, "text": th.text, "observed": observed, "shown": shown, "ok": ok})
    return out


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run_scenario(
    scenario: Scenario,
    *,
    inlet: str | None = protocol.DEFAULT_INLET,
    workers: int = 1,
    progress: Callable[[Progress], None] | None = None,
    keep_series: bool = True,
    log: Callable[[str], None] = _stderr,
    stop: threading.Event | None = None,
    socket_options: dict[int, Any] | None = None,
) -> DriveResult:
    """Play ``scenario`` to the end and return its statistics.

    ``inlet``: the sampler's inlet (markers and telemetry; nothing blocks if none listens;
    None: none at all).
    ``workers``: processes with their own event loop (1: in this thread).
    ``progress``: called every 100 ms. ``stop``: set it to end the run early (cleanly).
    """
    import uvloop

    if workers < 1:
        raise ValueError("workers must be >= 1")
    reachable = inlet_reachable(inlet)
    if inlet is not None and not reachable:
        log(f"no sampler at {inlet}: markers go nowhere")
    # Nobody listening yet: a sampler that is still starting (spikewatch run) gets what was
    # queued once it binds, but the queue stays small (~100 s of telemetry, ~0.4 MiB) so a
    # run without any sampler does not grow the driver.
    # Our own context: terminating it is what waits for the queue (the shared instance is
    # never terminated, so at exit whatever is still queued would be lost).
    ctx = zmq.Context()
    client: InletClient | NullInlet = (
        NullInlet()
        if inlet is None
        else InletClient(
            inlet,
            context=ctx,
            linger_ms=INLET_LINGER_MS,
            hwm=10_000 if reachable else 1_000,
            socket_options=socket_options,
            watch_handshakes=True,
        )
    )  # CURVE client options (spikewatch.sampler.wire.security)
    coord = Coordinator(scenario, client, workers, progress, keep_series, log, stop)
    started = time.time_ns()
    loop = uvloop.new_event_loop()
    try:
        aborted, unfinished = loop.run_until_complete(coord.run())
    finally:
        loop.close()
        # A sampler there now (also one that came up after the start) gets the last
        # phase_end and telemetry, waited for at most INLET_LINGER_MS; with nobody
        # listening they are dropped at once (no wait at exit).
        listening = reachable or inlet_reachable(inlet)
        stopped = coord.interrupted or (stop is not None and stop.is_set())
        linger = (STOP_LINGER_MS if stopped else INLET_LINGER_MS) if listening else 0
        ctx.destroy(linger=linger)  # closes the client's socket too
    total = coord.total
    total.t_start_ns = coord.t_origin
    total.t_end_ns = coord.last_tick
    result = DriveResult(
        scenario=scenario,
        phases=coord.phases,
        total=total,
        thresholds=_check_thresholds(scenario, total) if aborted is None else [],
        series=coord.series,
        workers=workers,
        inlet=inlet or "off",
        sampler_reachable=reachable,
        started_wall_ns=started,
        aborted=aborted,
        interrupted=coord.interrupted or (stop is not None and stop.is_set()),
        unfinished=unfinished,
        saturated_intervals=coord.saturated,
        max_loop_lag_ns=coord.max_loop_lag,
    )
    if coord.saturated:
        result.notes.append(
            f"the driver itself was saturated in {coord.saturated} intervals of 100 ms (event-loop lag up to "
            f"{coord.max_loop_lag / 1e6:.0f} ms): latencies there include client-side queueing; "
            "use --workers or less load"
        )
    if client.dropped and reachable:
        result.notes.append(f"{client.dropped} telemetry/marker messages dropped (inlet queue full)")
    return result
