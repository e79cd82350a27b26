"""Fixtures for the driver's tests: a real recording HTTP server, scenarios from TOML text."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import tomllib
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from spikewatch.driver.scenario import Scenario, parse_scenario

from tests.conftest import free_port

HERE = Path(__file__).resolve().parent


class Recorder:
    """A recorder_server.py subprocess: every arrival with its monotonic time, body size, in flight."""

    def __init__(self, *args: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "recorder_server.py"), "--port", str(self.port), *args],
            stdout=subprocess.PIPE,
            text=True,
        )
        line = self.proc.stdout.readline()  # type: ignore[union-attr]
        assert line.strip() == "ready", f"recorder server did not start: {line!r}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def arrivals(self, path_prefix: str = "/") -> list[tuple[int, str, str, int, int, int]]:
        with urllib.request.urlopen(f"{self.url}/_arrivals", timeout=10) as r:
            records = json.load(r)["records"]
        return sorted(tuple(x) for x in records if x[2].startswith(path_prefix))  # type: ignore[misc]

    def reset(self) -> None:
        urllib.request.urlopen(urllib.request.Request(f"{self.url}/_reset", method="POST"), timeout=10).read()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="module")
def recorder() -> Iterator[Recorder]:
    r = Recorder()
    yield r
    r.stop()


@pytest.fixture
def server(recorder: Recorder) -> Recorder:
    recorder.reset()
    return recorder


def make_scenario(text: str, url: str, base_dir: str | Path = ".") -> Scenario:
    """A scenario from TOML text aimed at ``url`` (the [target] table is added if missing)."""
    data: dict[str, Any] = tomllib.loads(text)
    data.setdefault("target", {})["url"] = url
    return parse_scenario(data, base_dir)


def quiet_run(scenario: Scenario, **kw: Any) -> Any:
    from spikewatch.driver.run import run_scenario

    kw.setdefault("inlet", f"tcp://127.0.0.1:{free_port()}")
    kw.setdefault("log", lambda msg: None)
    return run_scenario(scenario, **kw)


def in_flight_samples(arrivals: list, t_from: int, t_to: int, step_ns: int = 2_000_000) -> list[int]:
    """How many requests the server was handling at each instant from t_from to t_to."""
    out = []
    for t in range(t_from, t_to, step_ns):
        out.append(sum(1 for x in arrivals if x[0] <= t < x[5]))
    return out


def lateness_bound_ns(res: Any) -> int:
    """How late after its intended time any request of the run can have reached the server.

    The driver measures each latency from the request's intended time (never earlier than
    that) to its answer, and the server stamps an arrival before it answers: so every
    arrival lies within [intended, intended + the run's highest latency]. The highest
    latency the driver reports (rounded up by its histogram) is what a busy machine cost
    this run, measured, not guessed. Only meaningful when every request was answered.
    """
    assert res.total.error_count == 0 and res.unfinished == 0, res.total.errors
    return int(res.total.hist.get_max_value())


def intended_count(rate: Callable[[float], float], a: float, b: float, step: float = 0.0005) -> float:
    """Arrivals an open schedule of ``rate(t)`` per second intends in [a, b) (seconds into the phase)."""
    n = max(0, round((b - a) / step))
    return sum(rate(a + (k + 0.5) * step) for k in range(n)) * step


def count_bounds(rate: Callable[[float], float], a: float, b: float, late_s: float) -> tuple[int, int]:
    """Arrivals the server can see in [a, b) of an evenly spaced schedule, each arrival at most
    ``late_s`` after its intended time and never before it: at least those intended in
    [a, b - late_s), at most those intended in [a - late_s, b) (one either way for the spacing
    at each end and at each rate change inside)."""
    low = intended_count(rate, a, b - late_s) if b - late_s > a else 0.0
    high = intended_count(rate, a - late_s, b)
    return math.floor(low) - 2, math.ceil(high) + 2


def assert_on_schedule(arrivals: list[int], intended: list[float], dropped: int, late_ns: int) -> None:
    """Each request arrives in [its intended time, that + ``late_ns``]; sorting both sides keeps
    the bound for the k-th of each (``dropped`` sends leave holes: the k-th arrival then belongs
    to one of the intended times k .. k + dropped)."""
    arrivals = sorted(arrivals)
    assert len(arrivals) + dropped == len(intended)
    for k, x in enumerate(arrivals):
        # 1 µs: the driver truncates its float schedule to whole nanoseconds
        assert intended[k] - 1_000 <= x, ("early", k, (x - intended[k]) / 1e6)
        assert x <= intended[k + dropped] + late_ns, (
            "later than any latency",
            k,
            (x - intended[k]) / 1e6,
            late_ns / 1e6,
        )


@pytest.fixture
def intended_times(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The intended time of every open-model request the driver sends in this process (in
    send order), read off the real engine as it sends: the schedule it actually played."""
    from spikewatch.driver import engine

    times: list[int] = []
    send = engine.Engine._send

    def spy(self: engine.Engine, conn: Any, tag: int, intended: int) -> None:
        if tag == engine.OPEN:
            times.append(intended)
        send(self, conn, tag, intended)

    monkeypatch.setattr(engine.Engine, "_send", spy)
    return times
