"""The driver never runs away (issue 19): impossible rates are refused with the achievable
figure, an engine pushed past them anyway stays bounded and ends its phase, SIGTERM under
load stops it promptly with the summary, and a run that measured nothing does not pass."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from spikewatch.driver.scenario import RATE_PER_WORKER, ScenarioError

from tests.conftest import free_port
from tests.driver.conftest import Recorder, make_scenario, quiet_run

STEADY = """
[[requests]]
name = "get"
method = "GET"
path = "/x"

[[phases]]
name = "flat"
kind = "steady"
{load}
duration = "{duration}"
{extra}
"""


def _write(tmp_path: Path, url: str, load: str, duration: str = "4s", extra: str = "") -> Path:
    p = tmp_path / "s.toml"
    p.write_text(f'[target]\nurl = "{url}"\n' + STEADY.format(load=load, duration=duration, extra=extra))
    return p


def _drive(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "spikewatch", "drive", *args], capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.parametrize("rate", ["1e12", "1e8", "1e7"])
def test_a_rate_beyond_the_driver_is_refused_at_once_naming_what_it_can_send(tmp_path: Path, rate: str) -> None:
    res = _drive(str(_write(tmp_path, "http://127.0.0.1:9", f"rate = {rate}")), "--inlet", "off")
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr
    assert f"{RATE_PER_WORKER:,}/s per worker" in res.stderr
    assert "driving" not in res.stdout  # refused before anything started


def test_more_workers_raise_the_ceiling_and_the_error_says_how_many(tmp_path: Path) -> None:
    res = _drive(str(_write(tmp_path, "http://127.0.0.1:9", f"rate = {RATE_PER_WORKER * 3}")), "--inlet", "off")
    assert res.returncode == 2
    assert "with --workers 3" in res.stderr


def test_an_engine_pushed_past_its_ceiling_stays_bounded_and_ends_the_phase_on_time(server: Recorder) -> None:
    # run_scenario has no ceiling of its own (the command line checks it): this is the
    # engine's own guard. 1e8/s used to spin generating arrivals: the 1 s phase took
    # minutes and the backlog grew without end.
    sc = make_scenario(STEADY.format(load="rate = 1e8", duration="1s", extra=""), server.url)
    t0 = time.monotonic()
    res = quiet_run(sc, keep_series=False)
    took = time.monotonic() - t0
    ph = res.phases[0]
    assert ph.dropped > 1_000_000  # counted, not queued
    assert 0.9e8 < ph.sent + ph.dropped < 1.1e8  # every arrival accounted for
    assert ph.duration_s < 1.5, ph.duration_s  # the phase itself ended when planned
    assert took < 15  # the whole run (finish grace included) returned: bound, not timing


def test_rate_1e12_in_the_engine_does_not_stand_still(server: Recorder) -> None:
    # A 1 ps gap added to a ~1e14 ns float is the same float: the schedule never advanced.
    sc = make_scenario(STEADY.format(load="rate = 1e12", duration="500ms", extra=""), server.url)
    res = quiet_run(sc, keep_series=False)
    assert res.phases[0].duration_s < 1.5


def _drive_under_load(scenario: Path) -> subprocess.Popen[str]:
    """``spikewatch drive`` started and past its first progress line (load is flowing)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "spikewatch", "drive", str(scenario), "--inlet", "off"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        assert line.startswith("driving"), line
        assert "[1/1" in proc.stdout.readline()  # type: ignore[union-attr]
    except BaseException:
        proc.kill()
        raise
    return proc


def test_sigterm_under_load_stops_within_a_second_with_the_summary(tmp_path: Path, server: Recorder) -> None:
    scenario = _write(tmp_path, server.url, "concurrency = 64", duration="60s")
    proc = _drive_under_load(scenario)
    try:
        proc.send_signal(signal.SIGTERM)
        t0 = time.monotonic()
        out, err = proc.communicate(timeout=10)
        stopped_in = time.monotonic() - t0
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "per phase" in out and "interrupted" in err
    assert "Traceback" not in err
    print(f"drive stopped {stopped_in:.2f} s after SIGTERM")
    assert stopped_in < 5  # a bound that the old 5 s grace + 1 s linger could not meet


def test_sigint_with_worker_processes_stops_without_tracebacks(tmp_path: Path, server: Recorder) -> None:
    scenario = _write(tmp_path, server.url, "rate = 500", duration="60s")
    proc = subprocess.Popen(
        [sys.executable, "-m", "spikewatch", "drive", str(scenario), "--inlet", "off", "--workers", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert proc.stdout.readline().startswith("driving")  # type: ignore[union-attr]
        assert "[1/1" in proc.stdout.readline()  # type: ignore[union-attr]
        import os

        os.killpg(proc.pid, signal.SIGINT)  # as Ctrl-C: the whole process group
        out, err = proc.communicate(timeout=10)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert "per phase" in out


def test_a_run_whose_requests_all_failed_exits_3_not_0(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    res = _drive(str(_write(tmp_path, dead, "rate = 50", duration="500ms")), "--inlet", "off")
    assert res.returncode == 3, res.stderr
    assert "no result: every request to" in res.stderr and "connect" in res.stderr


def test_an_error_rate_threshold_that_allows_failures_decides_instead(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    extra = '[thresholds]\nerror_rate = "<=100%"\n'
    res = _drive(str(_write(tmp_path, dead, "rate = 50", duration="500ms", extra=extra)), "--inlet", "off")
    assert res.returncode == 0, res.stderr


def test_requests_that_never_finished_have_no_latency(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    res = _drive(
        str(_write(tmp_path, dead, "rate = 50", duration="500ms")), "--inlet", "off", "--json", str(tmp_path / "d.json")
    )
    assert res.returncode == 3, res.stderr
    import json

    total = json.loads((tmp_path / "d.json").read_text())["total"]
    assert total["completed"] > 0 and "lat_p50_ns" not in total


def test_a_bad_scenario_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[[phases]]\nkind = 'nope'\n")
    res = _drive(str(bad))
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert _drive(str(tmp_path / "missing.toml")).returncode == 2


def test_inlet_off_sends_no_telemetry_and_works(tmp_path: Path, server: Recorder) -> None:
    res = _drive(str(_write(tmp_path, server.url, "rate = 50", duration="300ms")), "--inlet", "off")
    assert res.returncode == 0, res.stderr
    assert "markers -> nowhere" in res.stdout and "ZMQError" not in res.stderr


@pytest.mark.parametrize("inlet", ["tcp://127.0.0.1:99999", "tcp://127.0.0.1:80a", "tcp://127.0.0.1"])
def test_a_bad_inlet_is_refused_before_anything_runs(tmp_path: Path, inlet: str) -> None:
    res = _drive(str(_write(tmp_path, "http://127.0.0.1:9", "rate = 5")), "--inlet", inlet)
    assert res.returncode == 2 and "--inlet" in res.stderr and "driving" not in res.stdout


def test_check_capacity_names_concurrency_ceiling() -> None:
    sc = make_scenario(STEADY.format(load="concurrency = 1000000", duration="1s", extra=""), "http://127.0.0.1:9")
    with pytest.raises(ScenarioError, match="connections per worker"):
        sc.check_capacity(1)


def test_a_concurrency_beyond_the_open_files_limit_is_refused_naming_it(tmp_path: Path) -> None:
    import resource

    def low_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))

    scenario = _write(tmp_path, "http://127.0.0.1:9", "concurrency = 5000")
    res = subprocess.run(
        [sys.executable, "-m", "spikewatch", "drive", str(scenario), "--inlet", "off"],
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=low_limit,
    )
    assert res.returncode == 2, res.stderr
    assert "at most 1,024 files (ulimit -n)" in res.stderr and "driving" not in res.stdout


def test_a_second_ctrl_c_stops_at_once_without_a_traceback(tmp_path: Path, server: Recorder) -> None:
    scenario = _write(tmp_path, server.url, "rate = 500", duration="60s")
    proc = _drive_under_load(scenario)
    try:
        proc.send_signal(signal.SIGINT)
        time.sleep(0.02)  # the second lands while the first is still finishing the phase
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "Error" not in err, err
