"""Play a scenario: :func:`run_scenario` opens the inlet, runs the :class:`Coordinator`
on a uvloop event loop and returns a :class:`DriveResult`. Call it from any thread
without a running event loop.

The phases and telemetry are :mod:`.coordinator`, the results :mod:`.result`.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import zmq
from spikewatch.sampler.wire import protocol
from spikewatch.sampler.wire.client import InletClient

from .coordinator import Coordinator, NullInlet
from .result import DriveResult, Progress, check_thresholds
from .scenario import Scenario

__all__ = ["DriveResult", "Progress", "inlet_reachable", "run_scenario"]

# Like `spikewatch mark`: at the end, wait at most this long for the last phase_end and
# telemetry to reach the sampler.
INLET_LINGER_MS = 1000
# After Ctrl-C / SIGTERM: the last markers get this long (the whole stop fits in a second).
STOP_LINGER_MS = 300


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
        thresholds=check_thresholds(scenario, total) if aborted is None else [],
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
