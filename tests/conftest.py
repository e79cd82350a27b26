"""Shared fixtures: free loopback endpoints and the path to the venv's tools."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


os.environ.setdefault("PYTHONUNBUFFERED", "1")
