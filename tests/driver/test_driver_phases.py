"""Every phase kind against a real server that records arrivals (loopback, ~1-2 s per phase).

The server runs in its own process and stamps arrivals with CLOCK_MONOTONIC, the same
clock the driver schedules on, so phase windows line up without any offset.
"""

from __future__ import annotations

import json
import math
import statistics
import subprocess
import time

import pytest

from tests.conftest import free_port

from .conftest import (
    Recorder,
    assert_on_schedule,
    count_bounds,
    in_flight_samples,
    lateness_bound_ns,
    make_scenario,
    quiet_run,
)

S = 1_000_000_000


def window(arrivals, t0: int, a: float, b: float):
    return [x for x in arrivals if t0 + a * S <= x[0] < t0 + b * S]


def busy(arrivals, t0: int, a: float, b: float) -> list[int]:
    return in_flight_samples(arrivals, int(t0 + a * S), int(t0 + b * S))


def test_closed_ramp_keeps_exactly_n_in_flight(server: Recorder) -> None:
    sc = make_scenario(
        """
        [[requests]]
        path = "/work?delay=40"
        [[phases]]
        name = "climb"
        kind = "ramp"
        concurrency = [2, 6]
        steps = 2
        duration = "2s"
    """,
        server.url,
    )
    res = quiet_run(sc)
    arr = server.arrivals("/work")
    t0 = res.phases[0].t_start_ns
    first = busy(arr, t0, 0.15, 0.9)
    second = busy(arr, t0, 1.15, 1.9)
    assert first and second
    assert max(first) <= 2 and statistics.median(first) == 2
    assert max(second) <= 6 and statistics.median(second) == 6
    assert res.phases[0].in_flight_max == 6
    assert res.total.error_count == 0


def test_open_steady_rate_is_exact_on_an_absolute_schedule(server: Recorder) -> None:
    sc = make_scenario(
        """
        [[requests]]
        path = "/steady"
        [[phases]]
        name = "flat"
        kind = "steady"
        rate = 300
        duration = "2s"
    """,
        server.url,
    )
    res = quiet_run(sc)
    arr = [x[0] for x in server.arrivals("/steady")]
    t0 = res.phases[0].t_start_ns
    ph = res.phases[0].summary()
    assert ph["target_rate"] == pytest.approx(300)
    assert ph["sent"] + ph["dropped_sends"] == 600  # no drift: exactly rate x duration intended
    assert len(arr) == ph["sent"]
    # every arrival at its place on the absolute schedule t0 + k/300 s: never early, and late by
    # no more than the driver's own measured latency (a stall on a busy machine shifts arrivals
    # by what it cost, never more; on a quiet one this is a few ms)
    assert_on_schedule(arr, [t0 + k * S / 300 for k in range(600)], ph["dropped_sends"], lateness_bound_ns(res))


def test_bursts_start_on_time_with_the_burst_rate(server: Recorder) -> None:
    sc = make_scenario(
        """
        [[requests]]
        path = "/burst"
        [[phases]]
        name = "rush"
        kind = "burst"
        rate = 20
        burst = { every = "800ms", length = "200ms", rate = 500 }
        duration = "2s"
    """,
        server.url,
    )
    res = quiet_run(sc)
    arr = server.arrivals("/burst")
    t0 = res.phases[0].t_start_ns
    late = lateness_bound_ns(res)  # each arrival within this of its intended time, never before

    def rate(t: float) -> float:  # the schedule asked for: 20/s, 500/s for 200 ms every 800 ms from 0.8 s
        if not 0 <= t < 2:
            return 0.0
        return 500.0 if t >= 0.8 and (t - 0.8) % 0.8 < 0.2 else 20.0

    dropped = res.phases[0].dropped  # sends later than max_lag are dropped, never sent
    for start in (0.8, 1.6):
        # 100 burst arrivals (+2 of the baseline), give or take what lateness shifts across the edges
        n = len(window(arr, t0, start, start + 0.3))
        low, high = count_bounds(rate, start, start + 0.3, late / S)
        assert low - dropped <= n <= high, (start, n, low, high, dropped)
        first = min(x[0] for x in arr if x[0] >= t0 + start * S)
        assert first - (t0 + start * S) <= late  # the burst begins on schedule
    for a, b in ((0.0, 0.78), (1.1, 1.58)):  # the 20/s baseline between bursts
        low, high = count_bounds(rate, a, b, late / S)
        n = len(window(arr, t0, a, b))
        assert low - dropped <= n <= high, (a, b, n, low, high, dropped)


def test_spike_multiplies_a_closed_baseline_once(server: Recorder) -> None:
    sc = make_scenario(
        """
        [[requests]]
        path = "/spike?delay=40"
        [[phases]]
        name = "spike"
        kind = "spike"
        concurrency = 1
        burst = { at = "500ms", length = "500ms", multiplier = 4 }
        duration = "1500ms"
    """,
        server.url,
    )
    res = quiet_run(sc)
    arr = server.arrivals("/spike")
    t0 = res.phases[0].t_start_ns
    before = busy(arr, t0, 0.1, 0.45)
    during = busy(arr, t0, 0.6, 0.95)
    after = busy(arr, t0, 1.15, 1.5)
    assert max(before) == 1 and max(after) == 1
    assert statistics.median(during) == 4 and max(during) <= 4


def test_poisson_and_gamma_arrivals(server: Recorder, intended_times: list[int]) -> None:
    sc = make_scenario(
        """
        [[requests]]
        path = "/poisson"
        [[phases]]
        name = "p"
        kind = "steady"
        rate = 400
        arrivals = "poisson"
        duration = "1500ms"
        [[phases]]
        name = "g"
        kind = "steady"
        rate = 400
        arrivals = { kind = "gamma", cv = 3.0 }
        duration = "1500ms"
    """,
        server.url,
    )
    res = quiet_run(sc)
    arr = [x[0] for x in server.arrivals("/poisson")]
    p, g = res.phases
    # what reached the server is the schedule the engine played, each arrival no later than the
    # driver's highest measured latency (on a busy machine stalls bunch arrivals: the shape of
    # the schedule is read where the engine made it, the wire is held to it)
    assert_on_schedule(arr, sorted(intended_times), 0, lateness_bound_ns(res))  # (dropped sends are never sent)
    pa = [t for t in intended_times if p.t_start_ns <= t < p.t_end_ns]
    ga = [t for t in intended_times if g.t_start_ns <= t < g.t_end_ns]
    # Poisson: 600 expected in 1.5 s, standard deviation √600 (4 of them either side)
    assert abs(len(pa) - 600) <= 4 * math.sqrt(600), len(pa)
    gaps = [b - a for a, b in zip(pa, pa[1:])]
    # exponential gaps: cv 1 (evenly spaced: 0); its estimate from ~600 gaps has sd ≈ √(2/n) ≈ 0.06
    cv = statistics.pstdev(gaps) / statistics.mean(gaps)
    assert 0.75 <= cv <= 1.3, cv
    ggaps = [b - a for a, b in zip(ga, ga[1:])]
    assert statistics.pstdev(ggaps) / statistics.mean(ggaps) > 1.8  # burstier than Poisson (cv 3 asked)


def test_startup_waits_for_readiness_and_idle_sends_nothing() -> None:
    late = Recorder("--ready-after", "0.8")
    try:
        sc = make_scenario(
            """
            [target]
            ready = "/health"
            [[requests]]
            path = "/x"
            [[phases]]
            name = "boot"
            kind = "startup"
            interval = "50ms"
            [[phases]]
            name = "a"
            kind = "steady"
            rate = 50
            duration = "500ms"
            [[phases]]
            name = "rest"
            kind = "idle"
            duration = "800ms"
            [[phases]]
            name = "b"
            kind = "steady"
            concurrency = 2
            duration = "300ms"
        """,
            late.url,
        )
        res = quiet_run(sc)
        boot, a, rest, b = res.phases
        assert boot.ready is True and 0.4 <= boot.time_to_ready_s <= 10
        arr = late.arrivals("/x")
        assert not [x for x in arr if x[0] < a.t_start_ns]  # no load before ready
        assert not [x for x in arr if rest.t_start_ns + 20_000_000 <= x[0] < rest.t_end_ns]
        assert [x for x in arr if x[0] >= b.t_start_ns]
        assert a.t_end_ns == rest.t_start_ns and rest.t_end_ns == b.t_start_ns  # phases abut
    finally:
        late.stop()


def test_startup_timeout_aborts_the_run() -> None:
    sc = make_scenario(
        """
        [target]
        ready = "/health"
        [[phases]]
        kind = "startup"
        timeout = "500ms"
        [[phases]]
        kind = "steady"
        rate = 10
        duration = "5s"
    """,
        f"http://127.0.0.1:{free_port()}",
    )
    res = quiet_run(sc)
    assert res.exit_code == 3 and "did not answer 2xx within 0.5s" in res.aborted
    assert res.phases[0].ready is False and res.phases[1].sent == 0


def test_payload_sizes_at_the_server_follow_the_seeded_distribution(server: Recorder) -> None:
    text = """
        seed = 5
        [[requests]]
        method = "POST"
        path = "/sizes"
        body = { size = "lognormal", median = "20KiB", sigma = 0.5, max = "200KiB" }
        [[phases]]
        kind = "steady"
        concurrency = 1
        duration = "1s"
    """
    quiet_run(make_scenario(text, server.url))
    first = [x[3] for x in server.arrivals("/sizes")]
    server.reset()
    quiet_run(make_scenario(text, server.url))
    second = [x[3] for x in server.arrivals("/sizes")]
    assert len(first) > 100
    assert abs(statistics.median(first) / 20480 - 1) < 0.12
    assert max(first) <= 200 * 1024
    n = min(len(first), len(second))
    assert first[:n] == second[:n]  # same seed, same bodies in the same order


def test_bounded_pool_counts_late_and_drops_instead_of_queueing(server: Recorder) -> None:
    sc = make_scenario(
        """
        [client]
        connections = 4
        max_lag = "300ms"
        [[requests]]
        path = "/slow?delay=200"
        [[phases]]
        kind = "steady"
        rate = 100
        duration = "1500ms"
    """,
        server.url,
    )
    res = quiet_run(sc)
    ph = res.phases[0].summary()
    arr = server.arrivals("/slow")
    assert max(x[4] for x in arr) <= 4  # never more connections than the pool
    assert ph["late_sends"] > 0 and ph["dropped_sends"] > 50
    assert ph["sent"] + ph["dropped_sends"] == 150  # every arrival accounted for
    assert ph["schedule_lag_max_ns"] <= 300_000_000 + 50_000_000
    assert ph["lat_p50_ns"] > 200_000_000  # measured from the intended time, waits included


def test_timeouts_and_connection_errors_are_counted(server: Recorder) -> None:
    sc = make_scenario(
        """
        [client]
        timeout = "200ms"
        [[requests]]
        path = "/hang?delay=1000"
        [[phases]]
        kind = "steady"
        concurrency = 2
        duration = "700ms"
    """,
        server.url,
    )
    res = quiet_run(sc)
    assert res.total.errors.get("timeout", 0) >= 4
    dead = make_scenario(
        '[[phases]]\nkind = "steady"\nrate = 40\nduration = "500ms"\n', f"http://127.0.0.1:{free_port()}"
    )
    res = quiet_run(dead)
    assert 15 <= res.total.errors.get("connect", 0) <= 25
    assert res.total.completed == res.total.errors["connect"]


def test_two_workers_split_rate_and_concurrency(server: Recorder) -> None:
    sc = make_scenario(
        """
        [[requests]]
        name = "lane"
        path = "/lane?delay=40"
        [[requests]]
        name = "arrival"
        path = "/open"
        [[phases]]
        name = "closed"
        kind = "steady"
        concurrency = 5
        duration = "1s"
        requests = ["lane"]
        [[phases]]
        name = "open"
        kind = "steady"
        rate = 200
        duration = "1s"
        requests = ["arrival"]
    """,
        server.url,
    )
    res = quiet_run(sc, workers=2)
    closed, opened = res.phases
    arr = server.arrivals("/lane")
    mid = busy(arr, closed.t_start_ns, 0.2, 0.9)
    assert max(mid) <= 5 and statistics.median(mid) == 5
    # the two workers' interleaved halves make one 200/s schedule: each arrival within the
    # driver's highest measured latency of its place on it
    low, high = count_bounds(lambda t: 200.0 if 0 <= t < 1 else 0.0, 0.0, 1.0, lateness_bound_ns(res) / S)
    # (its own path: a worker told late of the phase change may still run a closed lane or two)
    n = len([x for x in server.arrivals("/open") if opened.t_start_ns <= x[0] < opened.t_end_ns])
    assert low - opened.dropped <= n <= high, (n, low, high, opened.dropped)
    assert opened.sent + opened.dropped == 200 and res.workers == 2
    assert res.total.hist.get_total_count() == res.total.completed  # histograms merged across processes


def test_cli_thresholds_fail_the_run_and_json_has_the_series(server: Recorder, tmp_path, spikewatch_cmd) -> None:
    sc = tmp_path / "t.toml"
    sc.write_text(f"""
        [target]
        url = "{server.url}"
        [[requests]]
        path = "/status/503"
        [[phases]]
        name = "flat"
        kind = "steady"
        rate = 50
        duration = "1200ms"
        [thresholds]
        error_rate = "<1%"
        p99 = "<10s"
    """)
    out_json = tmp_path / "out.json"
    inlet = f"tcp://127.0.0.1:{free_port()}"
    out = subprocess.run(
        [*spikewatch_cmd, "drive", str(sc), "--inlet", inlet, "--json", str(out_json)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1, out.stdout + out.stderr
    assert "✗ error_rate < 1%  (observed 100%)" in out.stdout
    assert "✓ p99 < 10s" in out.stdout
    assert "[1/1 flat steady]" in out.stdout  # plain progress lines when not a terminal
    assert f"no sampler at {inlet}: markers go nowhere" in out.stderr
    data = json.loads(out_json.read_text())
    assert data["phases"][0]["errors"] == {"http_503": data["phases"][0]["completed"]}
    assert data["passed"] is False and data["thresholds"][0]["ok"] is False
    series = data["telemetry"]
    assert 10 <= len(series["phase"]) <= 16 and set(series["phase"]) == {"flat"}
    assert sum(series["fields"]["completed"]) == data["total"]["completed"]


@pytest.mark.parametrize("path", ["/chunked", "/close"])
def test_chunked_answers_and_closed_connections_are_handled(server: Recorder, path: str) -> None:
    sc = make_scenario(
        f"""
        [[requests]]
        path = "{path}"
        [[phases]]
        kind = "steady"
        concurrency = 2
        duration = "400ms"
    """,
        server.url,
    )
    res = quiet_run(sc)
    assert res.total.completed > 20 and res.total.error_count == 0
    assert len(server.arrivals(path)) == res.total.completed
    if path == "/chunked":
        assert res.total.bytes_recv > 3000 * res.total.completed


def test_a_stalled_driver_loop_is_reported_as_saturation(server: Recorder) -> None:
    """Latency measured by a stalled client includes its own queueing: the run must say so."""
    sc = make_scenario(
        """
        [[requests]]
        path = "/sat"
        [[phases]]
        kind = "steady"
        rate = 50
        duration = "800ms"
    """,
        server.url,
    )
    import asyncio

    def stall(p) -> None:  # block the driver's loop for 80 ms in the middle of every tick interval
        asyncio.get_running_loop().call_later(0.05, time.sleep, 0.08)

    res = quiet_run(sc, progress=stall)
    assert res.saturated_intervals >= 3 and res.max_loop_lag_ns > 20_000_000
    assert any("saturated" in n for n in res.notes)
    assert res.phases[0].summary()["saturated_intervals"] >= 3


def test_python_api_bundled_scenario_with_url_and_an_early_stop(server: Recorder) -> None:
    """What `spikewatch run` calls: load a bundled scenario, aim it, stop it from another thread."""
    import threading

    import spikewatch.driver as driver

    sc = driver.load_scenario(driver.bundled("quick")).with_url(server.url)
    assert sc.target.ready == "/health" and sc.target.port == server.port
    stop = threading.Event()
    timer = threading.Timer(1.5, stop.set)
    timer.start()
    t = time.monotonic()
    res = driver.run_scenario(sc, inlet=f"tcp://127.0.0.1:{free_port()}", log=lambda m: None, stop=stop)
    timer.cancel()
    assert time.monotonic() - t < 3.5  # the quick scenario would take ~4 s
    assert res.interrupted and res.exit_code == 130
    played = [p for p in res.phases if p.t_end_ns]
    assert played and played[0].ready is True and len(played) < len(res.phases)
    assert res.to_json()["phases"][0]["name"] == "boot"
