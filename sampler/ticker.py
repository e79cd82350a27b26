"""A periodic timer on absolute CLOCK_MONOTONIC deadlines: timerfd via ctypes.

Python 3.11 has no ``os.timerfd_create`` (3.13+), so this calls libc directly.
A periodic timerfd has two properties the hot loop wants: deadlines are
absolute (``origin + k * period``, no drift however late a tick runs), and a
read returns how many periods expired since the previous read, so missed ticks
are counted by the kernel instead of being guessed. Timer slack is lowered to
1 ns (PR_SET_TIMERSLACK): the default 50 µs would otherwise be added to every
wake-up and 100 µs periods could not be held (bench/RESULTS.md).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import time
from collections.abc import Callable

CLOCK_MONOTONIC = 1
TFD_CLOEXEC = 0o2000000
TFD_TIMER_ABSTIME = 1
PR_SET_TIMERSLACK = 29


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
_libc.timerfd_create.argtypes = [ctypes.c_int, ctypes.c_int]
_libc.timerfd_settime.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.POINTER(_Itimerspec), ctypes.c_void_p]
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]


def _ts(ns: int) -> _Timespec:
    return _Timespec(ns // 1_000_000_000, ns % 1_000_000_000)


def set_timer_slack(ns: int = 1) -> bool:
    """Lower this thread's timer slack; False when the kernel refuses."""
    return bool(_libc.prctl(PR_SET_TIMERSLACK, ns, 0, 0, 0) == 0)


class Ticker:
    """Expires every ``period_ns`` from ``origin_ns`` (monotonic); :meth:`wait`
    blocks until the next expiration and returns how many periods passed."""

    def __init__(self, period_ns: int) -> None:
        if period_ns <= 0:
            raise ValueError("period must be positive")
        self.period_ns = period_ns
        fd = _libc.timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC)
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"timerfd_create: {os.strerror(err)}")
        self.fd: int = fd
        self.origin_ns = 0

    def start(self, origin_ns: int | None = None) -> int:
        """Arm the timer; the first expiration is at ``origin_ns`` (default: one
        period from now). Returns the origin: deadline k is origin + k * period."""
        if origin_ns is None:
            origin_ns = time.monotonic_ns() + self.period_ns
        spec = _Itimerspec(_ts(self.period_ns), _ts(origin_ns))
        if _libc.timerfd_settime(self.fd, TFD_TIMER_ABSTIME, ctypes.byref(spec), None) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"timerfd_settime: {os.strerror(err)}")
        self.origin_ns = origin_ns
        return origin_ns

    def wait(self) -> int:
        """Block until the next deadline; the number of periods that expired (>= 1)."""
        return int.from_bytes(os.read(self.fd, 8), "little")

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> Ticker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def try_realtime(priority: int = 1) -> bool:
    """Put the calling thread under SCHED_FIFO at the lowest real-time priority.

    On a busy host this is the difference between ~10 % and ~0 % missed ticks at
    1 ms (bench/RESULTS.md). Only the sampling thread: helper threads
    started before keep the normal policy, and SCHED_RESET_ON_FORK keeps any
    process started later from inheriting it. The tick's work is bounded (reads,
    then slack work that stops at the next deadline), and the kernel's RT
    throttling keeps 5 % of every second for everyone else. False when not
    permitted (no CAP_SYS_NICE / RLIMIT_RTPRIO) — sampling goes on at normal policy.
    """
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO | os.SCHED_RESET_ON_FORK, os.sched_param(priority))
        return True
    except (OSError, AttributeError):
        return False


def reset_scheduling() -> None:
    try:
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
    except OSError:
        pass


def between_ticks(
    origin_ns: int, period_ns: int, *, before_ns: int = 250_000, after_ns: int = 100_000
) -> Callable[[], None] | None:
    """A pause for another thread's long Python work (the journal's encoder) that keeps
    it off the sampling thread's ticks: nothing unless a tick is near, then a sleep past
    it, so the tick finds the GIL free. Letting the GIL go at every step instead
    (``time.sleep(0)``) cost ~20 µs a step, and a tick that woke into the middle of a
    step waited on the GIL: two more context switches on each side. Called between
    steps of at most ~0.1-0.2 ms. None when the period leaves no room between ticks
    (under 1 ms): then the caller keeps its own pause."""
    if period_ns < 2 * (before_ns + after_ns):
        return None
    mono, sleep = time.monotonic_ns, time.sleep

    def pause() -> None:
        phase = (mono() - origin_ns) % period_ns
        if phase < after_ns:  # the tick is being read now
            sleep((after_ns - phase) / 1e9)
        elif period_ns - phase < before_ns:  # the next one comes before a step would end
            sleep((period_ns - phase + after_ns) / 1e9)

    return pause
