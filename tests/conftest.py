"""Shared fixtures: free loopback endpoints and the path to the venv's tools."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


# Every port handed out in this session: the kernel may pick the same free port for two
# calls in a row (4 of 10 000 four-port draws here: publish and inlet then collide), or one a
# process of an earlier test is still about to bind.
_handed_out: set[int] = set()


def free_port() -> int:
    """A loopback TCP port nobody listens on now, and never one this session handed out before."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port


@pytest.fixture
def endpoints() -> dict[str, str]:
    """Fresh loopback endpoints for one sampler: publish, inlet, history, prometheus."""
    return {
        "publish": f"tcp://127.0.0.1:{free_port()}",
        "inlet": f"tcp://127.0.0.1:{free_port()}",
        "history": f"tcp://127.0.0.1:{free_port()}",
        "prometheus": f"127.0.0.1:{free_port()}",
    }


@pytest.fixture(scope="session")
def spikewatch_cmd() -> list[str]:
    """How to invoke the installed command (the same Python as the tests)."""
    return [sys.executable, "-m", "spikewatch"]


@pytest.fixture(scope="session")
def python() -> str:
    return sys.executable


@pytest.fixture
def memory_cgroup() -> None:
    """A writable memory cgroup is needed: skip saying why (fail when CI requires cgroups)."""
    from tests.support.cgroups import require_memory_cgroup

    require_memory_cgroup()


def pytest_runtest_setup(item: pytest.Item) -> None:
    """``cgroup2`` tests need the memory controller on cgroup v2: elsewhere they skip,
    saying why (in the live v2 lane, SPIKEWATCH_LANE_CGROUP2=1, they fail instead)."""
    if item.get_closest_marker("cgroup2") is None:
        return
    from tests.support.cgroups import memory_version, require_memory_cgroup

    version = memory_version()
    if version != 2:
        why = (
            "cgroup v2 only: this host's memory controller is on cgroup v1 (make test-cgroup2 "
            "runs these on cgroup v2 in a guest)"
            if version == 1
            else "cgroup v2 only: this host has no memory cgroup controller"
        )
        if os.environ.get("SPIKEWATCH_LANE_CGROUP2") == "1":
            pytest.fail(f"SPIKEWATCH_LANE_CGROUP2=1 but {why}")
        pytest.skip(why)
    require_memory_cgroup()


os.environ.setdefault("PYTHONUNBUFFERED", "1")


@pytest.fixture
def sleeper():  # type: ignore[no-untyped-def]
    """A process that only sleeps: a target to attach to (killed afterwards)."""
    p = subprocess.Popen(["sleep", "120"])
    yield p
    p.kill()
    p.wait()


def pytest_collection_finish(session: pytest.Session) -> None:
    """Importing locust monkey-patches the process with gevent: every test after it
    would run on gevent's hub (and the console and sampler tests hung). Locust runs
    in its own processes only; a test module that imports it in here is refused."""
    if "gevent" in sys.modules:
        raise pytest.UsageError("a test module imported gevent (locust?) into the test process: run it in a subprocess")
