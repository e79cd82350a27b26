"""What one sampling session is asked to do: :class:`Target`, :class:`SamplerConfig`,
the checks that reject a contradictory request, and the default journal name."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .wire import protocol

MIN_PERIOD_NS = 100_000
# --cgroup auto: the memory cgroup the --pid / --match target lives in (its container's).
AUTO_CGROUP = "auto"


class SamplerError(Exception):
    """A problem the user can fix; the message says how."""


@dataclass
class Target:
    """What to sample. One process target (pid, match or launch) and/or one
    cgroup target (cgroup or unit)."""

    pid: int | None = None
    match: str | None = None
    argv: list[str] | None = None
    cgroup: str | None = None
    unit: str | None = None

    @property
    def auto_cgroup(self) -> bool:
        """``--cgroup auto``: the cgroup is found from the target process."""
        return self.cgroup == AUTO_CGROUP

    def describe(self) -> list[tuple[str, str]]:
        out = []
        if self.pid is not None:
            out.append(("pid", str(self.pid)))
        if self.match is not None:
            out.append(("match", self.match))
        if self.argv:
            out.append(("launch", " ".join(self.argv)))
        if self.cgroup is not None:
            out.append(("cgroup", self.cgroup))
        if self.unit is not None:
            out.append(("unit", self.unit))
        return out


@dataclass
class SamplerConfig:
    target: Target
    period_ns: int = 1_000_000
    detail_period_ns: int = 100_000_000
    publish: str = protocol.DEFAULT_PUBLISH
    inlet: str | None = protocol.DEFAULT_INLET
    journal: str | None = None
    # --journal-rotate / --journal-keep: (bytes, seconds), either may be None
    journal_rotate: tuple[int | None, float | None] = (None, None)
    journal_keep: tuple[int | None, float | None] = (None, None)
    limit: int | None = None
    duration_ns: int | None = None
    reset_hwm: bool = False
    realtime: bool = True  # SCHED_FIFO for the sampling thread when permitted
    quiet: bool = False
    # What is published goes out every batch period (--batch-period), on the detail
    # tier's grid: two detail intervals and their samples share one ZeroMQ wake-up (each
    # costs ~0.1 ms of CPU on a VM, the I/O thread's included: see bench/RESULTS.md).
    batch_ns: int = 200_000_000
    hello_ns: int = 1_000_000_000
    tree_ns: int = 200_000_000
    tail_ns: int = 300_000_000
    # after a stop was asked for (a signal, --duration): the user is waiting, and the
    # target's end is already on record
    stop_tail_ns: int = 50_000_000
    # Share of one core the tree's PSS/USS readings (smaps_rollup) may use; 0: none.
    pss_budget: float = 0.01
    stop_grace_ns: int = 10_000_000_000
    socket_options: dict[int, Any] = field(default_factory=dict)
    #: (url, metric name) of the service's own heap gauge in Prometheus text (--heap-metric).
    heap_metric: tuple[str, str] | None = None
    # With CURVE: is the client key behind an inlet message (its User-Id) still
    # authorized? Markers of a key revoked while its session is open are dropped.
    inlet_sender_allowed: Callable[[str | None], bool] | None = None
    # Bound for in-process use: where to print the start line and the summary.
    log: Callable[[str], None] | None = None


def check(c: SamplerConfig) -> re.Pattern[str] | None:
    """Raise :class:`SamplerError` for a request that cannot work; returns the
    compiled ``--match`` pattern, if any."""
    if c.period_ns < MIN_PERIOD_NS:
        raise SamplerError(f"the period must be at least 100us (got {c.period_ns} ns)")
    t = c.target
    if t.auto_cgroup and (t.unit is not None or t.argv or (t.pid is None and t.match is None)):
        raise SamplerError(auto_cgroup_misuse(t))
    procs = sum(x is not None and x != [] for x in (t.pid, t.match, t.argv))
    cgs = sum(x is not None for x in (t.cgroup, t.unit))
    if procs > 1 or cgs > 1 or procs + cgs == 0:
        raise SamplerError(
            "give one target: --pid N, --match REGEX or -- CMD (optionally with one of --cgroup PATH / --unit NAME)"
        )
    if c.limit is not None and not t.argv:
        raise SamplerError("--limit applies to a launched command: spikewatch sample --limit 512M -- CMD ARGS")
    if c.limit is not None and cgs:
        raise SamplerError("--limit creates its own cgroup; drop --cgroup/--unit")
    if t.match is None:
        return None
    try:
        return re.compile(t.match)
    except re.error as exc:
        raise SamplerError(f"--match {t.match!r} is not a regular expression: {exc}") from None


def auto_cgroup_misuse(t: Target) -> str:
    """Why ``--cgroup auto`` cannot go with the rest of ``t`` (it needs --pid or --match)."""
    if t.unit is not None:
        return (
            "--cgroup auto and --unit both name the cgroup to sample: give one "
            "(--cgroup auto takes the cgroup of --pid N or --match REGEX)"
        )
    if t.argv:
        return (
            "--cgroup auto finds the cgroup of an existing process (--pid N or --match REGEX); "
            "a launched command runs in the sampler's cgroup: use --limit SIZE to give it its own"
        )
    return "--cgroup auto samples the cgroup a process lives in: say which process with --pid N or --match REGEX"


def default_journal_path(now: float | None = None) -> str:
    """``spikewatch-YYYYmmdd-HHMMSS.journal`` in the current folder (``-2``, ``-3``…
    when a run in the same second already took the name)."""
    stem = time.strftime("spikewatch-%Y%m%d-%H%M%S", time.localtime(now))
    path, n = f"{stem}.journal", 1
    while os.path.exists(path):
        n += 1
        path = f"{stem}-{n}.journal"
    return path
