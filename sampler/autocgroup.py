"""``--cgroup auto``: sample the memory cgroup the target process lives in (its
container's), and follow a ``--match`` restart into another cgroup.

The hot loop reads cgroup usage from one descriptor number for the whole run. When
a restarted container lands in a new cgroup, :meth:`AutoCgroup.moved` re-points that
number at the new cgroup's usage file with ``dup2`` — between two ticks, off the hot
path — so the loop never needs to learn that anything changed."""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Mapping

from . import cgroup
from .tree import ProcHandle


class AutoCgroup:
    def __init__(self, log: Callable[[str], None], warn: Callable[[str], None]) -> None:
        self._log = log  # quiet-able progress lines
        self._warn = warn  # said even with --quiet
        self.pid: int | None = None  # whose cgroup is sampled
        self.fd = -1  # the descriptor the hot loop reads (ours: a dup)

    def find(self, pid: int) -> cgroup.MemoryCgroup:
        """The memory cgroup ``pid`` lives in (raises CgroupError)."""
        info = cgroup.cgroup_seen_by(pid)
        self._log(
            f"spikewatch: --cgroup auto: pid {pid} is in memory cgroup {info.path} "
            f"(v{info.version}), read at {info.dir}"
        )
        return cgroup.MemoryCgroup(info)

    def attach(self, roots: Collection[int], procs: Mapping[int, ProcHandle]) -> cgroup.MemoryCgroup | None:
        """At the first ``--match``: the cgroup of the oldest matched process, or None
        (said why) when it cannot be found."""
        pid = _oldest(roots, procs)
        if len(roots) > 1:
            self._log(
                f"spikewatch: --cgroup auto: {len(roots)} processes match; the cgroup is the oldest one's (pid {pid})"
            )
        try:
            cg = self.find(pid)
        except cgroup.CgroupError as exc:
            self._warn(f"spikewatch: --cgroup auto: {exc}")
            return None
        self.pid = pid
        # The v2 root has no usage descriptor to re-point: the hot loop reads it another way.
        self.fd = os.dup(cg.usage_fd) if cg.usage_fd >= 0 else -1
        return cg

    def moved(
        self, roots: Collection[int], procs: Mapping[int, ProcHandle], current: cgroup.MemoryCgroup
    ) -> cgroup.MemoryCgroup | None:
        """After a tree scan: when the process whose cgroup is sampled is gone and a newly
        matched one lives in another cgroup (a restarted container), that cgroup, with
        :attr:`fd` already re-pointed at it; else None."""
        if self.fd < 0 or not roots or self.pid in roots:
            return None
        pid = _oldest(roots, procs)
        self.pid = pid  # tried once per new process, whatever the outcome
        try:
            info = cgroup.cgroup_seen_by(pid)
            now = os.stat(info.usage_file)
            was = os.fstat(self.fd)
            if (now.st_dev, now.st_ino) == (was.st_dev, was.st_ino):
                return None  # restarted within the same cgroup: nothing to change
            new = cgroup.MemoryCgroup(info)
        except (cgroup.CgroupError, OSError) as exc:
            self._warn(
                f"spikewatch: --cgroup auto: cannot follow pid {pid} into its cgroup ({exc}); "
                f"cg_usage still reads {current.info.dir}"
            )
            return None
        os.dup2(new.usage_fd, self.fd)
        self._log(
            f"spikewatch: --cgroup auto: pid {pid} (a restart) is in another memory cgroup; "
            f"now sampling {new.info.path} at {new.info.dir}"
        )
        return new

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _oldest(roots: Collection[int], procs: Mapping[int, ProcHandle]) -> int:
    def started(pid: int) -> tuple[int, int]:
        h = procs.get(pid)
        return (h.start_t if h is not None and h.start_t is not None else 1 << 62, pid)

    return min(roots, key=started)
