"""The tree's memory without double counting: PSS and USS, read off the hot loop.

A forked child maps its parent's pages copy-on-write, so the per-tick sum of
RSS counts every shared page once per process (a 300 MiB parent with a child
of 200 MiB of its own sums to ~820 MiB while ~510 MiB are in use). The
proportional set size (``Pss`` of ``/proc/PID/smaps_rollup``) splits each page
between the processes that map it, so summed over the tree it is the memory the
tree really holds; the unique set size (``Private_Clean + Private_Dirty``) is
what the processes hold alone.

smaps_rollup walks every mapping under the process's mm lock: ~0.1 ms for a
small process, ~10 ms of CPU per GiB resident. So the sampling thread never
reads it: :class:`PssReader` hands the member pids to a helper process
(:mod:`~spikewatch.sampler.smaps`, ~3 MiB of PSS) and picks its answer up at a
later detail interval, never waiting for it. The period stretches so that the
helper's CPU stays within a budget (1 % of a core by default): never shorter
than the detail tier, never longer than :data:`MAX_PERIOD_NS`. Processes that
join the tree, and summed RSS growing by over 5 %, each pull the next sweep
forward once per period (so at most three times the budget): a prefork
server's workers, or a child that allocated, are read soon, not a whole period
later. Growth by copy-on-write (a child writing to pages it shares) changes no
cheap figure: it is seen at the next periodic sweep. Every reading says its period: a spike shorter than that may fall between two readings (the
cgroup's usage, sampled every tick, has no such gap).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

MAX_PERIOD_NS = 10_000_000_000
DEFAULT_BUDGET = 0.01  # share of one core
GROWTH, GROWTH_MIN, STILL = 0.05, 8 << 20, 0.02  # summed RSS up 5 % + 8 MiB, then still within 2 %
LONE_SHARE = 30  # a tree of one process is swept at budget / LONE_SHARE
MAX_PIDS = 4096  # per sweep (a request line stays far below a pipe's buffer)
_HELPER = Path(__file__).with_name("smaps.py")


@dataclass(frozen=True)
class PssReading:
    """One sweep over the tree's members (bytes; times on the sampler's monotonic clock)."""

    t: int  # middle of the sweep
    rss: int  # RSS summed over the same processes in the same sweep (shared pages once per process)
    pss: int
    uss: int
    swap_pss: int
    procs: int  # processes read (zombies and vanished ones are not)
    cost_ns: int  # CPU time the sweep took
    period_ns: int  # the period the readings run at after this one

    def detail_fields(self) -> dict[str, int]:
        """The ``detail`` body fields (see :mod:`spikewatch.sampler.wire.protocol`)."""
        return {
            "pss": self.pss,
            "uss": self.uss,
            "pss_rss": self.rss,
            "pss_swap": self.swap_pss,
            "pss_procs": self.procs,
            "pss_t": self.t,
            "pss_period_ns": self.period_ns,
        }


def next_period(cost_ns: int, budget: float, min_period_ns: int) -> int:
    """The shortest multiple of ``min_period_ns`` over which ``cost_ns`` stays within
    ``budget`` (share of a core), at most :data:`MAX_PERIOD_NS`."""
    if budget <= 0:
        return max(MAX_PERIOD_NS, min_period_ns)
    steps = max(1, -(-int(cost_ns / budget) // min_period_ns))
    return min(steps * min_period_ns, max(MAX_PERIOD_NS, min_period_ns))


def parse_answer(line: bytes, budget: float, min_period_ns: int) -> PssReading | None:
    t0, t1, cost, procs, rss, pss, uss, swap = (int(x) for x in line.split())
    if not procs:
        return None
    # One process counts nothing twice: its readings only keep the series going
    # until a fork (which pulls a sweep forward), at a thirtieth of the budget
    # (a tenth cost a 1 kHz sampler ~2 % of its own CPU for almost no news).
    share = budget if procs > 1 else budget / LONE_SHARE
    return PssReading(
        t=(t0 + t1) // 2,
        rss=rss,
        pss=pss,
        uss=uss,
        swap_pss=swap,
        procs=procs,
        cost_ns=cost,
        period_ns=next_period(cost, share, min_period_ns),
    )


class PssReader:
    """Asks the helper for a sweep when one is due and collects its answer, never
    blocking: :meth:`poll` is called by the sampling thread in its slack."""

    def __init__(self, *, min_period_ns: int, budget: float = DEFAULT_BUDGET) -> None:
        self.min_period_ns = min_period_ns
        self.budget = budget
        self.period_ns = min_period_ns
        self.latest: PssReading | None = None
        self.sweeps = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._out_fd = -1
        self._buf = b""
        self._asked = False
        self._asked_t = 0
        self._periodic_t = 0
        self._pulled = False  # a sweep was pulled forward by a newcomer in this period
        self._grew = False  # ... by summed RSS growing
        self._prev_rss: int | None = None
        self._members: set[int] = set()  # asked for in the last sweep
        self._seen: set[int] = set()  # at the last poll
        self._changed_t = 0
        self._due = 0

    @property
    def running(self) -> bool:
        return self._proc is not None

    def start(self) -> bool:
        """Start the helper; False (and no readings) when the budget is 0 or it cannot start."""
        if self.budget <= 0 or self._proc is not None:
            return self._proc is not None
        try:
            # -I -S: no site-packages, no user environment: the helper needs the standard library only.
            # Its own session: a terminal's Ctrl-C or a signal to our process group is ours to handle.
            self._proc = subprocess.Popen(
                [sys.executable, "-I", "-S", str(_HELPER)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                close_fds=True,
                start_new_session=True,
            )
        except OSError:
            return False
        assert self._proc.stdout is not None
        self._out_fd = self._proc.stdout.fileno()
        os.set_blocking(self._out_fd, False)
        return True

    def poll(self, t: int, members: Sequence[int], rss: int | None = None) -> PssReading | None:
        """Collect an answer that arrived (returned, once), and ask for the next sweep when
        due; ``rss`` is the largest summed RSS sampled since the previous poll."""
        proc = self._proc
        if proc is None:
            return None
        got = None
        if self._asked:
            try:
                chunk = os.read(self._out_fd, 4096)
            except BlockingIOError:
                chunk = None
            except OSError:
                chunk = b""
            if chunk == b"":
                self.stop()  # the helper died: no more readings, sampling goes on
                return None
            if chunk:
                self._buf += chunk
            if b"\n" in self._buf:
                line, _, self._buf = self._buf.partition(b"\n")
                self._asked = False
                self.sweeps += 1
                try:
                    got = parse_answer(line, self.budget, self.min_period_ns)
                except ValueError:
                    got = None
                if got is not None:
                    self.period_ns = got.period_ns
                    self.latest = got
                # Half a detail early: polled once a detail, a sweep due a hair later
                # would otherwise wait a whole interval more.
                self._due = self._periodic_t + self.period_ns - self.min_period_ns // 2
        if self._asked or not members:
            return got
        periodic = t >= self._due
        now = set(members)
        if now != self._seen:
            self._seen, self._changed_t = now, t
        prev_rss, self._prev_rss = self._prev_rss, rss
        # Between periodic sweeps, two changes pull one forward, each once per period
        # (so at most three times the budget): processes that joined (workers just
        # forked), once the tree has not changed for two detail intervals (a prefork
        # server's forks come tens of ms apart); and summed RSS grown by over 5 % since
        # the last sweep, once it holds still for an interval (a child allocating).
        # Growth by copy-on-write shows in no cheap figure: that waits for the period.
        free = not periodic and t - self._asked_t >= self.min_period_ns
        joined = (
            free
            and not self._pulled
            and not self._members.issuperset(now)
            and t - self._changed_t >= 2 * self.min_period_ns
        )
        grew = (
            free
            and not self._grew
            and rss is not None
            and prev_rss is not None
            and self.latest is not None
            and rss > self.latest.rss * (1 + GROWTH) + GROWTH_MIN
            and abs(rss - prev_rss) <= STILL * rss
        )
        if periodic or joined or grew:
            assert proc.stdin is not None
            try:
                # Into an empty pipe, well under its 64 KiB: never blocks.
                os.write(proc.stdin.fileno(), (" ".join(map(str, members[:MAX_PIDS])) + "\n").encode())
            except OSError:
                self.stop()
                return got
            self._asked, self._asked_t = True, t
            self._members = now
            if periodic:
                self._periodic_t, self._pulled, self._grew = t, False, False
            elif joined:
                self._pulled = True
            else:
                self._grew = True
        return got

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        for f in (proc.stdin, proc.stdout):
            try:
                if f is not None:
                    f.close()
            except OSError:
                pass
        try:
            proc.wait(timeout=1)  # stdin closed: it ends after the sweep in progress
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
