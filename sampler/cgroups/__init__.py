"""Memory cgroups, v1 and v2, behind one small interface, by job:

* :mod:`.files` — file names on v1 and v2, errors, :class:`CgroupInfo`, :class:`Limit`, parsers;
* :mod:`.discovery` — mounts, the cgroup of a pid (also through another mount
  namespace), paths given by the user, systemd units;
* :mod:`.memory` — :class:`MemoryCgroup`: kept-open files of one cgroup, read by the
  hot loop (usage) and the detail tier (stat, limits, peak, events, pressure);
* :mod:`.lifecycle` — cgroups of our own: create (``--limit``), move into, start a
  command inside, remove, sweep what dead samplers left.

``spikewatch.sampler.cgroup`` re-exports the same names (the import most code uses).
"""

from .discovery import cgroup_of_pid, cgroup_seen_by, memory_hierarchy, resolve, unit_cgroup
from .files import CgroupError, CgroupGone, CgroupInfo, Limit
from .lifecycle import (
    create_limited,
    join_argv,
    move_pid,
    remove,
    spawn_in,
    sweep_stale,
    wait_stopped,
)
from .memory import MemoryCgroup

__all__ = [
    "CgroupError",
    "CgroupGone",
    "CgroupInfo",
    "Limit",
    "MemoryCgroup",
    "cgroup_of_pid",
    "cgroup_seen_by",
    "create_limited",
    "join_argv",
    "memory_hierarchy",
    "move_pid",
    "remove",
    "resolve",
    "spawn_in",
    "sweep_stale",
    "unit_cgroup",
    "wait_stopped",
]
