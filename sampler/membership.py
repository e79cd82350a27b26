"""Keeping the tree in step with the processes that exist, off the hot path:
newcomers join (and are announced once they had time to exec), processes that
left are reported, attached roots that turned zombies are noticed."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Generator

from . import cgroup, procfs
from .lifecycle import ProcessEvents
from .procfs import ProcfsError, ProcHandle
from .tree import ProcessTree

ExitFn = Callable[[ProcHandle, int, "dict[str, int] | None"], None]
_EXEC_WAIT_NS = 50_000_000
_STEP = 2  # newcomers added per slow-work step (~80 µs each: opens and reads)
_FULL_EVERY_NS = 1_000_000_000  # a refresh however still the pid counter stands


class Membership:
    """``exited(h, t, exit_info)`` is called for every process that left."""

    def __init__(self, tree: ProcessTree, events: ProcessEvents, *, exited: ExitFn) -> None:
        self.tree, self.events, self._exited = tree, events, exited
        self.launched_pid: int | None = None  # reaped by its parent (us), not polled here
        self.scan_running = False
        self._cg: cgroup.MemoryCgroup | None = None
        self._procs_path: str | None = None
        self._last_pid = procfs.LastPid()
        self._seen_pid: int | None = None
        self._full_due = 0

    def follow_cgroup(self, cg: cgroup.MemoryCgroup, *, members: bool) -> None:
        """With ``members`` the tree is the cgroup's processes (our own cgroup:
        its ``cgroup.procs`` alone, one small read)."""
        self._cg = cg
        self._procs_path = str(cg.info.dir / "cgroup.procs") if cg.owned else None
        if members:
            self.tree.cgroup_pids = self._cgroup_members

    @property
    def cheap(self) -> bool:
        """Membership is one read of our own cgroup's ``cgroup.procs`` (no /proc scan)."""
        return self._procs_path is not None

    def close(self) -> None:
        self._procs_path = None
        self._last_pid.close()

    def unchanged(self, t: int) -> bool:
        """Whether this refresh may be skipped: no process was created since the last
        one (the pid counter stands), it is under a second old and no newcomer waits to
        be announced. A member joins by a fork (a new pid) or, rarely, by a write to
        cgroup.procs or a reparenting: the refresh a second catches those. One that
        leaves needs no refresh: once reaped, its kept-open files fail at the next tick
        and that is its ``proc_exit`` (until then a zombie's read zeros). Reading
        cgroup.procs costs ~95 µs on a VM after the loop's sleeps (v1 builds the pid
        list), the counter ~10 µs."""
        last = self._last_pid.read()
        if last is not None and last == self._seen_pid and t < self._full_due:
            pending = self.events.pending
            if not any(pending(pid) for pid in self.tree.procs):
                return True
        self._seen_pid = last  # read before the members: a fork after it moves it again
        self._full_due = t + _FULL_EVERY_NS
        return False

    def scan(self) -> Generator[None, None, None]:
        """Refresh the tree off the hot path, a few /proc reads per step."""
        self.scan_running = True
        try:
            members = yield from self.tree.scan(time.monotonic_ns)
            yield from self.apply_steps(members, time.monotonic_ns())
        finally:
            self.scan_running = False

    def quick_scan(self) -> Generator[None, None, None] | None:
        """Cheap membership (:attr:`cheap`): read ``cgroup.procs`` now; the steps that
        bring the tree in line, or None when it already is (at nearly every refresh:
        then no generator, no queued step, no pass over the tree's processes)."""
        tree = self.tree
        try:
            pids = self._cgroup_members()
        except OSError:
            pids = set()
        procs = tree.procs
        if not (pids - procs.keys() - tree.exclude) and not (procs.keys() - pids - tree.roots):
            pending = self.events.pending
            if not any(pending(pid) for pid in procs if pid in pids):
                return None  # what apply_steps would find: no newcomer, no leaver, no announcement
        return self._apply_scanned(pids)

    def _apply_scanned(self, pids: set[int]) -> Generator[None, None, None]:
        self.scan_running = True
        try:
            yield from self.apply_steps(pids, time.monotonic_ns())
        finally:
            self.scan_running = False

    def apply(self, pids: set[int], t: int) -> None:
        """:meth:`apply_steps` run through at once."""
        for _ in self.apply_steps(pids, t):
            pass

    def apply_steps(self, pids: set[int], t: int) -> Generator[None, None, None]:
        """Make the tree ``pids`` (roots excepted: they leave through :meth:`check_roots`),
        yielding every few processes: a fork storm brings hundreds at once, and each
        newcomer costs a few /proc opens and reads."""
        tree = self.tree
        for i, pid in enumerate(pids - tree.procs.keys()):
            if pid in tree.exclude:
                continue
            try:
                tree.add(pid)
            except ProcfsError:
                continue
            if i % _STEP == _STEP - 1:
                yield
        for pid in list(tree.procs.keys() - pids):
            if pid in tree.roots:
                continue  # roots leave through the launcher's reaping / check_roots
            h = tree.procs.get(pid)
            if h is None:
                continue  # reaped meanwhile (the hot loop saw it go)
            info: dict[str, int] = {}
            try:
                st = procfs.read_stat(pid)
                if st.state in ("Z", "X") and st.exit_code is not None:
                    info = procfs.wait_status_to_exit(st.exit_code)
            except ProcfsError:
                pass
            self._exited(h, t, info)
        t = time.monotonic_ns()
        for h in list(tree.procs.values()):
            if h.pid in pids and self.events.pending(h.pid):
                # A fork shows its parent's command line until it execs: wait a little.
                if h.start_t is None or t - h.start_t >= _EXEC_WAIT_NS or h.pid in tree.roots:
                    self.events.announce(h, t)

    def check_roots(self, t: int) -> None:
        """Attached roots that became zombies (their parent has not reaped them yet)."""
        for pid in list(self.tree.roots):
            if pid == self.launched_pid:
                continue
            h = self.tree.procs.get(pid)
            if h is None:
                continue
            try:
                st = procfs.read_stat(pid)
            except ProcfsError:
                self._exited(h, t, None)
                continue
            if st.state in ("Z", "X"):
                info = procfs.wait_status_to_exit(st.exit_code) if st.exit_code is not None else {}
                self._exited(h, t, info)

    def _cgroup_members(self) -> set[int]:
        assert self._cg is not None
        if self._procs_path is not None:
            # Opened anew every time: on cgroup v1 a kept-open cgroup.procs serves
            # the pid list it loaded first for as long as it is re-read within a
            # second (the kernel's pidlist cache), so a fork never showed up.
            fd = os.open(self._procs_path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                # 64 KiB reads to the end: one 1 MiB read buffer was mapped and
                # unmapped by malloc every time (~20 µs, ten times a second).
                parts = []
                while chunk := os.read(fd, 65536):
                    parts.append(chunk)
                return {int(x) for x in b"".join(parts).split()}
            finally:
                os.close(fd)
        return set(self._cg.pids(recursive=True))  # a unit may have sub-cgroups
