"""Memory cgroups, v1 and v2: the names the rest of spikewatch imports
(``from spikewatch.sampler import cgroup``). The code lives in
:mod:`spikewatch.sampler.cgroups`, one module per job."""

from .cgroups import (
    CgroupError,
    CgroupGone,
    CgroupInfo,
    Limit,
    MemoryCgroup,
    cgroup_of_pid,
    cgroup_seen_by,
    create_limited,
    join_argv,
    memory_hierarchy,
    move_pid,
    preexec_join,
    remove,
    resolve,
    spawn_in,
    sweep_stale,
    unit_cgroup,
    wait_stopped,
)
from .cgroups.lifecycle import _v2_home  # noqa: F401  (tests of the v2 leaf move use it)

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
    "preexec_join",
    "remove",
    "resolve",
    "spawn_in",
    "sweep_stale",
    "unit_cgroup",
    "wait_stopped",
]
