"""The processes being sampled, and how their membership is refreshed off the hot path.

:class:`ProcessTree` keeps one :class:`~spikewatch.sampler.procfs.ProcHandle` per process
(a pid is counted once, whatever the number of roots that reach it) and the
list of statm descriptors the hot loop reads. That list is mutated in place:
the hot loop holds a reference to it.

Membership comes from the target's cgroup when there is one (``cgroup.procs``,
a few µs), otherwise from a /proc scan that reads the stat (ppid) of new pids
only — this kernel has no ``/proc/PID/task/*/children`` (CONFIG_PROC_CHILDREN
is off here), and a full scan costs ~30 µs per process. Members stay while they
live, even when re-parented: a daemonizing worker is still the service.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Generator

from . import procfs
from .procfs import ProcfsError, ProcHandle

# A fork shows its parent's command line until it execs; a pid first seen less
# than this long ago gets its command line read again when matching.
_YOUNG_NS = 1_000_000_000
# Some forks exec much later: a container's first process is forked by the runtime
# at `create` and held until `start` (seconds apart under a busy podman). Older pids
# are read again until this age, each time after half their age more (at ~1, 1.5,
# 2.3, 3.4, 5, ... s: a dozen reads in their first minute instead of one per scan).
_HELD_NS = 60_000_000_000
_STEP = 8  # /proc files read per slow-work step


class ProcessTree:
    def __init__(
        self,
        *,
        exclude: set[int],
        pattern: re.Pattern[str] | None = None,
        cgroup_pids: Callable[[], set[int]] | None = None,
    ) -> None:
        self.exclude = exclude  # the sampler and its ancestors: never sampled by a match
        self.pattern = pattern
        self.cgroup_pids = cgroup_pids  # membership from a cgroup instead of /proc
        self.procs: dict[int, ProcHandle] = {}
        self.by_fd: dict[int, ProcHandle] = {}
        self.fds: list[int] = []  # statm descriptors read by the hot loop (mutated in place)
        self.roots: set[int] = set()
        self._known: dict[int, int] = {}  # pid -> ppid of every process the scan has seen
        self._first_seen: dict[int, int] = {}
        self._next_look: dict[int, int] = {}  # past _YOUNG_NS: when its command line is read again

    def add(self, pid: int, *, root: bool = False) -> ProcHandle:
        """Start sampling ``pid``; raises ProcessGone / AccessDenied."""
        h = self.procs.get(pid)
        if h is None:
            h = ProcHandle(pid)
            self.procs[pid] = h
            self.by_fd[h.statm_fd] = h
            self.fds.append(h.statm_fd)
        if root:
            self.roots.add(pid)
        return h

    def drop_fd(self, h: ProcHandle) -> None:
        """Stop reading its statm (it was reaped) but keep the handle."""
        try:
            self.fds.remove(h.statm_fd)
        except ValueError:
            pass
        self.by_fd.pop(h.statm_fd, None)

    def forget(self, h: ProcHandle) -> None:
        self.drop_fd(h)
        self.procs.pop(h.pid, None)
        self.roots.discard(h.pid)
        h.close()

    def close(self) -> None:
        for h in list(self.procs.values()):
            h.close()
        self.procs.clear()
        self.by_fd.clear()
        self.fds.clear()

    # ------------------------------------------------------------ membership

    def scan(self, now: Callable[[], int]) -> Generator[None, None, set[int]]:
        """Yield between small steps; return the pids that should be members now
        (matched roots found on the way are added as roots)."""
        if self.cgroup_pids is not None:
            try:
                return self.cgroup_pids()
            except OSError:
                return set()
        known = self._known
        pids = procfs.all_pids()
        alive = set(pids)
        for pid in [p for p in known if p not in alive]:
            del known[pid]
        new = [p for p in pids if p not in known]
        for i in range(0, len(new), _STEP):
            for pid in new[i : i + _STEP]:
                try:
                    known[pid] = procfs.read_stat(pid).ppid
                except (ProcfsError, ValueError, IndexError):
                    continue
            yield
        matches: list[int] = []
        if self.pattern is not None:
            cands = [p for p in self.match_candidates(pids, now()) if p not in self.procs and p not in self.exclude]
            for i in range(0, len(cands), _STEP):
                matches += [p for p in cands[i : i + _STEP] if self.matches(p)]
                yield
        members: set[int] = set()
        for root in self.roots:
            members |= procfs.descendants(root, known) if root in known else {root}
        for pid in outermost(matches, known):
            if pid in members or pid in self.procs:
                continue  # already counted as part of a matched tree
            try:
                self.add(pid, root=True)
            except ProcfsError:
                continue
            members |= procfs.descendants(pid, known)
        return members | (self.procs.keys() & alive)

    def find_matches(self, now: int) -> set[int]:
        """For waiting on --match: add the outermost matching processes as roots and
        return the members (their trees); empty when nothing matches yet."""
        assert self.pattern is not None
        pids = procfs.all_pids()
        found = [p for p in self.match_candidates(pids, now) if p not in self.exclude and self.matches(p)]
        if not found:
            return set()
        self._known = procfs.ppid_map()
        members: set[int] = set()
        for pid in outermost(found, self._known):
            try:
                self.add(pid, root=True)
            except ProcfsError:
                continue
            members |= procfs.descendants(pid, self._known)
        return members

    def match_candidates(self, pids: list[int], now: int) -> list[int]:
        """Pids whose command line is worth reading: new ones, young ones, and now and
        then those under a minute old (a fork that may exec late)."""
        first, later = self._first_seen, self._next_look
        alive = set(pids)
        for pid in [p for p in first if p not in alive]:
            del first[pid]
            later.pop(pid, None)
        out = []
        for pid in pids:
            age = now - first.setdefault(pid, now)
            if age < _YOUNG_NS:
                out.append(pid)
            elif age < _HELD_NS and now >= later.get(pid, 0):
                out.append(pid)
                later[pid] = now + age // 2
        return out

    def matches(self, pid: int) -> bool:
        assert self.pattern is not None
        try:
            argv = procfs.cmdline(pid)
        except ProcfsError:
            return False
        return bool(argv) and bool(self.pattern.search(" ".join(argv)))


def outermost(pids: list[int], parents: dict[int, int]) -> list[int]:
    """The pids that are not descendants of another one in the list."""
    s = set(pids)
    out = []
    for pid in pids:
        p, inner = parents.get(pid, 0), False
        while p > 1:
            if p in s:
                inner = True
                break
            p = parents.get(p, 0)
        if not inner:
            out.append(pid)
    return out
