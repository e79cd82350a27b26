"""Target management: the cgroup followed, the launched command, and processes that
leave the tree (the tree itself is kept in step by :mod:`~spikewatch.sampler.membership`)."""

from __future__ import annotations

import os
import shutil
import time

from . import cgroup
from .procfs import ProcHandle
from .publishing import Publishing
from .wire import protocol


class Targets(Publishing):
    def _sample_cgroup(self, cg: cgroup.MemoryCgroup, *, members: bool) -> None:
        """Add ``cg`` to what is sampled (at setup, or at the first ``--match`` with
        ``--cgroup auto``)."""
        self.cg = cg
        self.series.append(protocol.SERIES_CG_USAGE)
        self.batch.cgroup = True
        self.membership.follow_cgroup(cg, members=members)
        self.detail.cg = cg
        self.detail.baseline()

    def _follow_auto_cgroup(self) -> None:
        """After a tree scan (``--match`` + ``--cgroup auto``): a restart that landed in
        another cgroup is sampled there from now on (the hot loop's descriptor was
        re-pointed by :meth:`AutoCgroup.moved`)."""
        if self.cg is None:
            return
        new = self.auto.moved(self.tree.roots, self.tree.procs, self.cg)
        if new is None:
            return
        old, self.cg = self.cg, new
        self.membership.follow_cgroup(new, members=False)
        self.detail.cg = new
        self.detail.rebaseline_events()  # the new cgroup's counters are a new baseline, not news
        try:
            # Primes the peak and OOM baselines; publishes limit_change if its limit differs.
            self.detail.read_cgroup({}, {}, time.monotonic_ns(), time.monotonic_ns())
        except (cgroup.CgroupError, OSError):
            pass
        old.close()

    def _release_child(self) -> None:
        """SIGCONT after the first tick: its first samples precede its first instruction."""
        child = self._child
        if child is None or not child.held:
            return
        t = time.monotonic_ns()
        child.release()
        argv = list(self.config.target.argv or [])
        h = self.tree.procs.get(child.pid)
        if h is not None:
            h.argv, h.start_t = argv, t
        self.events.launched(child.pid, t, os.getpid(), shutil.which(argv[0]) or argv[0], argv, self._launched_build)

    def _proc_exited(self, h: ProcHandle, t: int, exit_info: dict[str, int] | None = None) -> None:
        """A process left the tree: publish what we know, end the run if it was the launched one."""
        if h.gone:
            return
        h.gone = True
        was_root = h.pid in self.tree.roots
        self.tree.forget(h)
        self.detail.forget(h.pid)
        if exit_info is None:
            exit_info = {}
        oom = self.detail.oom_at_exit(h.pid, t, exit_info)
        announced = self.events.exited(h, t, oom, exit_info)
        if was_root:
            if self._pattern is not None and announced:
                self.events.root_exited(h.pid)
            launched = self._child is not None and h.pid == self._child.pid
            if launched:
                code = exit_info.get("code")
                sig = exit_info.get("signal")
                self.exit_status = code if code is not None else 128 + (sig or 0)
                if sig is not None and sig in self._our_signals:
                    self.exit_status = 0  # ended by --duration: a normal end of the run
            if launched or (self.config.target.pid is not None and not self.tree.roots):
                self._end_after_tail(t, "the target exited")

    def _end_after_tail(self, t: int, reason: str) -> None:
        if self._stop_at is None:
            # a requested stop (signal, --duration) has a user waiting: the short tail
            requested = self._signal_count > 0
            self._stop_at = t + (
                min(self.config.tail_ns, self.config.stop_tail_ns) if requested else self.config.tail_ns
            )
            self._stop_reason = self._stop_reason or reason
            self._schedule("end", self._stop_at)

    def _on_dead(self, dead: list[int]) -> None:
        """Hot-loop path: some statm reads failed with ESRCH (process reaped)."""
        t = time.monotonic_ns()
        for fd in dead:
            h = self.tree.by_fd.get(fd)
            if h is None:
                continue
            if self._child is not None and h.pid == self._child.pid:
                self.tree.drop_fd(h)  # the launched child: reaped by _reap_child, which knows the status
                continue
            try:
                self._proc_exited(h, t)
            except Exception:
                self.tree.drop_fd(h)
                self._internal_error()
        dead.clear()

    def _reap_child(self, t: int) -> None:
        info = self._child.reap() if self._child is not None else None
        if info is not None and self._child_handle is not None:
            self._proc_exited(self._child_handle, t, info)

    def _wait_for_match(self) -> bool:
        """Block (publishing hellos) until a process matches; False if stopped first."""
        assert self._pattern is not None
        self._log(f"spikewatch: waiting for a process matching {self._pattern.pattern!r}")
        next_hello = 0
        end = None if self.config.duration_ns is None else time.monotonic_ns() + self.config.duration_ns
        while not self._stop:
            members = self.tree.find_matches(time.monotonic_ns())
            if members:
                self.membership.apply(members, time.monotonic_ns())
                return True
            now = time.monotonic_ns()
            if end is not None and now >= end:
                return False
            if now >= next_hello:
                self._hello(now)
                next_hello = now + self.config.hello_ns
            self._drain_inlet()
            # A plain sleep, not an Event wait: request_stop runs in the signal handler on
            # this same thread, and Event.set() there can deadlock on the lock wait() holds.
            time.sleep(0.05)
        return False
