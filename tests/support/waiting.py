"""Polling for a condition with a bounded deadline (instead of a fixed sleep)."""

from __future__ import annotations

import time
from typing import Callable


def wait_until(cond: Callable[[], object], timeout: float = 10.0, interval: float = 0.02) -> bool:
    """Whether ``cond()`` became true within ``timeout`` seconds (checked once more at the end)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(interval)
    return bool(cond())
