"""Polling for a condition with a bounded deadline (instead of a fixed sleep)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

# The live cgroup v2 lane (make test-cgroup2) runs tests in an emulated guest, many
# times slower than the host: there, deadlines for something to happen stretch by
# this factor. What the tests assert about what happened stays the same.
TIME_SCALE = float(os.environ.get("SPIKEWATCH_TEST_TIME_SCALE") or 1)


def scaled(seconds: float) -> float:
    """A deadline of ``seconds`` on the host, stretched on a slow (emulated) machine."""
    return seconds * TIME_SCALE


def wait_until(cond: Callable[[], object], timeout: float = 10.0, interval: float = 0.02) -> bool:
    """Whether ``cond()`` became true within ``timeout`` seconds (checked once more at the end)."""
    end = time.monotonic() + scaled(timeout)
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(interval)
    return bool(cond())
