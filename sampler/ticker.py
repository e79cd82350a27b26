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
