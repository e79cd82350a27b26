"""Process start, exit and restart events: which pids were announced, which are
muted (over the event budget), and which exit a newcomer is the restart of."""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Any

from .buildinfo import BuildEvidence
from .detail import EventFn
from .procfs import ProcHandle
from .tree import ProcessTree
from .wire import protocol

_RESTART_WINDOW_NS = 60_000_000_000  # the same command line back within a minute is a restart
_STARTS_PER_S = 50
_CHURN_EVERY_NS = 1_000_000_000


class ProcessEvents:
    """``event`` publishes an event; ``flush`` publishes the open sample batch first."""

    def __init__(
        self,
        tree: ProcessTree,
        *,
        event: EventFn,
        flush: Callable[[], None],
        probe: Callable[[int, str], None] | None = None,
    ) -> None:
        self.tree = tree
        self._probe = probe  # reads a newcomer's executable off the hot path (sampler.buildinfo)
        self._event, self._flush = event, flush
        self.announced: set[int] = set()  # live pids whose proc_start went out
        self.muted: set[int] = set()  # live pids over the proc_start budget
        self._recent_exits: collections.deque[tuple[list[str], int, int]] = collections.deque(maxlen=64)
        self._root_exits: collections.deque[int] = collections.deque(maxlen=16)
        self._this_s = 0
        self._window = 0
        # Muted processes that came or went since the last proc_churn event.
        self._churn_started = 0
        self._churn_exited = 0
        self._churn_from: int | None = None
        self._churn_sent = 0

    def pending(self, pid: int) -> bool:
        """Not announced yet, nor muted."""
        return pid not in self.announced and pid not in self.muted

    def launched(
        self, pid: int, t: int, ppid: int, exe: str, argv: list[str], build: BuildEvidence | None = None
    ) -> None:
        """proc_start for the command we launched, as it is released (``build``: what
        its executable says about its build profile, read before it ran)."""
        self.announced.add(pid)
        ev = protocol.ProcStart(
            kind=protocol.EV_PROC_START, pid=pid, ppid=ppid, exe=exe, cmdline=argv, start_t=t, launched=True
        )
        if build is not None:
            ev["build"], ev["build_evidence"] = build.profile, build.evidence
        self._event(t, ev)

    def announce(self, h: ProcHandle, t: int) -> None:
        """proc_start (and restart) for a process that joined the tree, once it had
        time to exec (so its command line is its own, not its parent's)."""
        if h.pid in self.announced or h.pid in self.muted or h.gone:
            return
        h.refresh_identity()
        # A descendant that looks like a restart (same command line as one that just
        # exited) still counts against the budget: a prefork server respawning the
        # same worker is exactly the storm the cap exists for.
        if h.pid not in self.tree.roots and not self._budget(t):
            self.muted.add(h.pid)  # sampled all the same; counted in the next proc_churn
            self._churn_started += 1
            if self._churn_from is None:
                self._churn_from = t
            return
        restart_of = None
        for i, (argv, old_pid, t_exit) in enumerate(self._recent_exits):
            if argv == h.argv and h.argv and t - t_exit < _RESTART_WINDOW_NS:
                restart_of = old_pid
                del self._recent_exits[i]
                break
        if restart_of is None and h.pid in self.tree.roots and self._root_exits:
            restart_of = self._root_exits.popleft()  # a matched target came back
        self.announced.add(h.pid)
        ev = protocol.ProcStart(
            kind=protocol.EV_PROC_START, pid=h.pid, ppid=h.ppid, exe=h.exe, cmdline=h.argv, launched=False
        )
        if h.start_t is not None:
            ev["start_t"] = h.start_t
        self._event(t, ev)
        if self._probe is not None and h.exe:
            self._probe(h.pid, h.exe)
        if restart_of is not None:
            self._event(t, protocol.Restart(kind=protocol.EV_RESTART, pid=h.pid, old_pid=restart_of))

    def exited(self, h: ProcHandle, t: int, oom: bool, exit_info: dict[str, Any]) -> bool:
        """proc_exit if its start was announced (returned); forgets the pid either way."""
        announced = h.pid in self.announced
        self.announced.discard(h.pid)  # bounded however many processes come and go
        if h.pid in self.muted:
            self.muted.discard(h.pid)
            self._churn_exited += 1
        if announced:
            self._flush()
            ev = protocol.ProcExit(kind=protocol.EV_PROC_EXIT, pid=h.pid, oom=oom)
            if "code" in exit_info:
                ev["code"] = exit_info["code"]
            if "signal" in exit_info:
                ev["signal"] = exit_info["signal"]
            self._event(t, ev)
            self._recent_exits.append((h.argv, h.pid, t))
        return announced

    def churn(self, t: int) -> None:
        """At most once a second: one proc_churn event for the processes that
        started or exited without events of their own (a fork storm is
        summarised, never sent one event per process)."""
        if not (self._churn_started or self._churn_exited) or t - self._churn_sent < _CHURN_EVERY_NS:
            return
        self._flush()
        self._event(
            t,
            protocol.ProcChurn(
                kind=protocol.EV_PROC_CHURN,
                started=self._churn_started,
                exited=self._churn_exited,
                members=len(self.tree.procs),
                t_from=self._churn_from if self._churn_from is not None else t,
            ),
        )
        self._churn_started = self._churn_exited = 0
        self._churn_from = None
        self._churn_sent = t

    def root_exited(self, pid: int) -> None:
        """A matched root left: the next match to appear is its restart."""
        self._root_exits.append(pid)

    def _budget(self, t: int) -> bool:
        """At most 50 proc_start events per second for descendants (a forking
        shell script must not flood the stream)."""
        window = t // 1_000_000_000
        if window != self._window:
            self._window, self._this_s = window, 0
        self._this_s += 1
        return self._this_s <= _STARTS_PER_S
