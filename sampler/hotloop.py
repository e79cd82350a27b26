"""The hot loop: wait for the timerfd, pread the kept-open files, append; the rest
runs in the slack (:mod:`~spikewatch.sampler.slack`)."""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING

from . import cgroup
from .procfs import PAGE_SIZE
from .ticker import Ticker

if TYPE_CHECKING:
    from .daemon import Sampler


def sample_loop(s: Sampler, ticker: Ticker) -> None:
    """The hot loop: wait, read kept-open files, append; the rest in the slack."""
    read, tfd, one = os.read, ticker.fd, (1).to_bytes(8, "little")
    pread = os.pread
    mono = time.monotonic_ns
    fds = s.tree.fds
    cgfd = s.auto.fd if s.auto.fd >= 0 else s.cg.usage_fd if s.cg is not None else -1
    # The v2 root cgroup has no usage file: its usage is summed from memory.stat.
    cg_read = s.cg.read_usage if s.cg is not None and cgfd < 0 else None
    times, rss_col, cg_col = s.batch.times, s.batch.rss, s.batch.cgu
    t_append, r_append, c_append = times.append, rss_col.append, cg_col.append
    page = PAGE_SIZE
    period = s.period_ns
    deadline = s.origin_t - period
    dead: list[int] = []
    tasks = s._tasks
    samples = s.samples
    s.first_t = None
    while not s._stop:
        expirations = read(tfd, 8)  # blocks until the next deadline
        t = mono()
        deadline += period
        if expirations != one:  # the timer fired more than once: ticks were missed
            n = int.from_bytes(expirations, "little")
            deadline += (n - 1) * period
            s._overrun(n - 1, t - deadline, t)
        rss = 0
        for fd in fds:
            try:
                rss += int(pread(fd, 64, 0).split(None, 2)[1])
            except OSError:
                dead.append(fd)
        t_append(t)
        r_append(rss * page)
        if cgfd >= 0:
            try:
                c_append(int(pread(cgfd, 32, 0)))
            except OSError:
                c_append(0)
        elif cg_read is not None:
            try:
                c_append(cg_read())
            except (OSError, ValueError, cgroup.CgroupError):
                c_append(0)
        samples += 1
        if dead:
            s._on_dead(dead)
        if t >= s._next_due or tasks:
            s.samples = samples
            s.last_t = t
            s._slack(t, deadline + period)
    s.samples = samples
    s.last_t = times[-1] if times else s.last_t
