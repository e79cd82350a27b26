"""Markers and load telemetry: on a PULL socket acting as the inlet, and on a real sampler's stream."""

from __future__ import annotations

import threading
import time

import zmq
from spikewatch.driver.workers import TICK_NS
from spikewatch.sampler.wire import protocol
from spikewatch.sampler.wire.client import StreamSubscriber

from tests.conftest import free_port
from tests.support.sampler import spawn_sample, stop_sampler
from tests.support.waiting import wait_until

from .conftest import Recorder, make_scenario, quiet_run

SCENARIO = """
    [[requests]]
    path = "/m"
    [[phases]]
    name = "climb"
    kind = "ramp"
    concurrency = [1, 3]
    steps = 2
    duration = "600ms"
    [[phases]]
    name = "flat"
    kind = "steady"
    rate = 100
    duration = "500ms"
    [[phases]]
    name = "rest"
    kind = "idle"
    duration = "400ms"
"""


def _collect(sock: zmq.Socket, out: list, stop: threading.Event) -> None:
    while not stop.is_set():
        if sock.poll(50):
            out.append(protocol.validate_inlet(sock.recv_multipart()))


def test_markers_in_phase_order_and_load_every_100ms(server: Recorder) -> None:
    ctx = zmq.Context.instance()
    pull = ctx.socket(zmq.PULL)
    pull.setsockopt(zmq.LINGER, 0)
    inlet = f"tcp://127.0.0.1:{free_port()}"
    pull.bind(inlet)
    got: list = []
    stop = threading.Event()
    t = threading.Thread(target=_collect, args=(pull, got, stop))
    t.start()
    try:
        logs: list[str] = []
        res = quiet_run(make_scenario(SCENARIO, server.url), inlet=inlet, log=logs.append)
        # every tick the driver reports having sent (its series) and the last phase_end
        assert wait_until(lambda: len([m for m in got if m[0] == protocol.LOAD]) >= len(res.series), 10)
    finally:
        stop.set()
        t.join()
        pull.close()
    assert res.sampler_reachable and not any("markers go nowhere" in m for m in logs)
    markers = [(b["kind"], b["name"]) for topic, b in got if topic == protocol.MARKER]
    assert markers == [
        ("phase_start", "climb"),
        ("phase_end", "climb"),
        ("phase_start", "flat"),
        ("phase_end", "flat"),
        ("phase_start", "rest"),
        ("phase_end", "rest"),
    ]
    starts = {b["name"]: b["attrs"] for topic, b in got if topic == protocol.MARKER and b["kind"] == "phase_start"}
    assert starts["climb"]["concurrency"] == [1, 3] and starts["climb"]["steps"] == 2
    assert starts["flat"]["rate"] == 100 and starts["flat"]["duration_s"] == 0.5
    ends = {b["name"]: b["attrs"] for topic, b in got if topic == protocol.MARKER and b["kind"] == "phase_end"}
    assert ends["flat"]["completed"] >= 25 and "lat_p99_ns" in ends["flat"]
    loads = [b for topic, b in got if topic == protocol.LOAD]
    # one message per tick the driver counted, in order, none lost or repeated
    assert [b["interval_ns"] for b in loads] == list(res.series.cols["interval_ns"])
    assert {"climb", "flat", "rest"} <= {b["phase"] for b in loads}
    # Ticks on a 100 ms grid: a tick k late by lag_k (the loop lag it reports) makes its
    # interval TICK + lag_k - lag_(k-1); 2 ms for a timer that wakes a little early (lag 0).
    # The first interval starts with the run, the last is the partial one at the end.
    for prev, b in zip(loads[:-2], loads[1:-1]):
        assert TICK_NS - prev["loop_lag_ns"] - 2e6 <= b["interval_ns"] <= TICK_NS + b["loop_lag_ns"] + 2e6, (prev, b)
    span = res.total.t_end_ns - res.total.t_start_ns
    assert sum(b["interval_ns"] for b in loads) == span  # the intervals tile the run
    assert len(loads) >= span // (TICK_NS + max(b["loop_lag_ns"] for b in loads) + 2_000_000)
    flat = [b for b in loads if b["phase"] == "flat"]
    assert any(b.get("target_rate") == 100 for b in flat)
    assert sum(b["completed"] for b in loads) == res.total.completed
    assert all(
        set(b) <= set(protocol.LOAD_NUMBER_FIELDS) | {"errors", "phase", "origin_wall_ns", "endpoints", "source"}
        for b in loads
    )


def test_markers_land_between_the_right_samples_on_a_real_sampler(server: Recorder, endpoints) -> None:
    """The sampler stamps markers on its clock; they must sit inside the sampled span, in order."""
    sampler = spawn_sample(endpoints, "--pid", str(server.pid), "--no-journal", "--quiet", "--period", "2ms")
    sub = StreamSubscriber([endpoints["publish"]])
    got: list = []
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # wait until samples flow (the SUB is connected)
            msg = sub.recv(timeout_ms=200)
            if msg is not None and msg[0] == protocol.SAMPLES:
                got.append(msg)  # the driver starts after this batch: markers come later
                break
        else:
            raise AssertionError("no samples from the sampler: " + (sampler.stderr.read() if sampler.poll() else ""))
        stop = threading.Event()
        marker_seen_ns: list[int] = []  # when this process had each marker (same clock as the sampler's)

        def collect() -> None:
            while not stop.is_set():
                m = sub.recv(timeout_ms=50)
                if m is not None:
                    got.append(m)
                    if m[0] == protocol.MARKER:
                        marker_seen_ns.append(time.monotonic_ns())

        t = threading.Thread(target=collect)
        t.start()
        res = quiet_run(make_scenario(SCENARIO, server.url), inlet=endpoints["inlet"])

        def samples_after_last_marker() -> bool:
            snapshot = list(got)
            ends = [
                b["t"]
                for topic, b in snapshot
                if topic == protocol.MARKER and b["name"] == "rest" and b["kind"] == "phase_end"
            ]
            last = max((protocol.sample_times(b)[-1] for topic, b in snapshot if topic == protocol.SAMPLES), default=0)
            return bool(ends) and last > ends[0]

        wait_until(samples_after_last_marker, 10)  # the sampler may lag on a busy machine
        stop.set()
        t.join()
    finally:
        sub.close()
        stop_sampler(sampler)
    assert res.sampler_reachable
    markers = [b for topic, b in got if topic == protocol.MARKER]
    assert [(b["kind"], b["name"]) for b in markers] == [  # in phase order, none lost
        ("phase_start", "climb"),
        ("phase_end", "climb"),
        ("phase_start", "flat"),
        ("phase_end", "flat"),
        ("phase_start", "rest"),
        ("phase_end", "rest"),
    ]
    sample_times = sorted(t for topic, b in got if topic == protocol.SAMPLES for t in protocol.sample_times(b))
    mt = [b["t"] for b in markers]
    assert mt == sorted(mt)
    assert sample_times[0] < mt[0] and mt[-1] < sample_times[-1]
    # Samples between each phase's start and end markers: the phase really spans the stream.
    for start, end, seen, phase in zip(mt[0::2], mt[1::2], marker_seen_ns[0::2], res.phases):
        inside = [s for s in sample_times if start <= s <= end]
        # (not a rate check: a starved sampler on a busy machine takes fewer samples)
        assert len(inside) >= 10, (phase.name, len(inside))
        # the sampler's stamp and the driver's own clock agree (same host, same monotonic clock):
        # stamped after the driver began the phase, before this process received the marker
        assert phase.t_start_ns <= start <= seen, (phase.name, start - phase.t_start_ns, seen - start)
    loads = [b for topic, b in got if topic == protocol.LOAD]
    assert len(loads) >= 10 and all("t" in b and "seq" in b for b in loads)
