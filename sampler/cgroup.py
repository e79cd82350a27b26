"""Memory cgroups, v1 and v2, behind one small interface.

INTERFACE STUB — the signatures below are the contract between the cgroup
module and the rest of the sampler; the bodies are being written. Keep the
names; add what is needed.

Design notes:
* The hot loop only ever calls ``os.pread(cg.usage_fd, 64, 0)``; everything
  else here is for the detail tier (~100 ms) or for setup.
* v1: ``memory.usage_in_bytes``, ``memory.stat`` (total_* keys when
  hierarchical), ``memory.limit_in_bytes``, ``memory.max_usage_in_bytes``
  (resettable by writing 0, only when we own the cgroup), ``memory.oom_control``
  (``oom_kill``, ``under_oom``), ``memory.failcnt``.
* v2: ``memory.current``, ``memory.stat``, ``memory.max``, ``memory.peak``
  (5.19+; per-descriptor reset since 6.12 by writing to our own open fd),
  ``memory.events`` (``oom``, ``oom_kill``, ``max``, ``high``), ``memory.pressure``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


class CgroupError(Exception):
    """A cgroup problem, with a message that says what to do about it."""


@dataclass(frozen=True)
class CgroupInfo:
    version: int  # 1 or 2
    path: str  # path inside the hierarchy, e.g. "/process_api/abc"
    dir: Path  # absolute directory, e.g. /sys/fs/cgroup/memory/process_api/abc


def memory_hierarchy() -> tuple[int, Path] | None:
    """(version, mount point) of the memory controller, or None when there is none."""
    raise NotImplementedError


def cgroup_of_pid(pid: int) -> CgroupInfo | None:
    """The memory cgroup ``pid`` belongs to (from /proc/PID/cgroup and mountinfo)."""
    raise NotImplementedError


def resolve(path: str) -> CgroupInfo:
    """An absolute directory, or a path relative to the memory hierarchy's root."""
    raise NotImplementedError


def unit_cgroup(unit: str) -> CgroupInfo:
    """The memory cgroup of a systemd unit (``systemctl show -p ControlGroup``)."""
    raise NotImplementedError


class MemoryCgroup:
    """Kept-open files of one memory cgroup."""

    info: CgroupInfo
    usage_fd: int  # for the hot loop: os.pread(usage_fd, 64, 0)
    owned: bool  # created by us: we may reset its peak and must remove it

    def __init__(self, info: CgroupInfo, *, owned: bool = False) -> None:
        raise NotImplementedError

    def read_usage(self) -> int: ...
    def read_stat(self) -> dict[str, int]:
        """Normalised: anon, file, inactive_file, active_file, shmem, ... and working_set."""
        ...
    def read_limit(self) -> int | None:
        """None when unlimited."""
        ...
    def read_peak(self) -> int | None: ...
    def reset_peak(self) -> bool:
        """Start a new peak interval; False when this kernel/cgroup can't."""
        ...
    def read_oom(self) -> dict[str, int]:
        """Counters: oom_kill, oom (v2), under_oom (v1), failcnt / max events."""
        ...
    def read_psi(self) -> dict[str, float] | None: ...
    def pids(self) -> list[int]: ...
    def exists(self) -> bool: ...
    def close(self) -> None: ...


def create_limited(limit_bytes: int, name: str) -> MemoryCgroup:
    """A new child cgroup of ``limit_bytes`` under our own memory cgroup (v2 if the
    memory controller is on v2, else v1), owned=True; CgroupError says what to do."""
    raise NotImplementedError


def move_pid(pid: int, cg: MemoryCgroup) -> None:
    raise NotImplementedError


def remove(cg: MemoryCgroup, timeout: float = 5.0) -> None:
    """Kill what is left inside, then rmdir (retrying while the kernel lets go)."""
    raise NotImplementedError
