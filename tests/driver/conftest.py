"""Fixtures for the driver's tests: a real recording HTTP server, scenarios from TOML text."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
import urllib.request
from collections.abc import Iterator
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
