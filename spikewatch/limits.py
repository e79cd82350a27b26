"""Whether ``--limit`` can be honoured here, and removing cgroups a dead sampler left behind."""

from __future__ import annotations

import os
from pathlib import Path

from spikewatch.sampler import cgroup


def limit_unavailable(limit_bytes: int) -> str | None:
    """None when this process may create a memory cgroup of ``limit_bytes``; else why not.

    Tries for real (create + remove an empty child), because only the kernel
    knows: a mounted controller may still be read-only or not delegated to us.
    """
    try:
        cg = cgroup.create_limited(limit_bytes, f"spikewatch-{os.getpid()}-probe")
    except cgroup.CgroupError as exc:
        return str(exc)
    try:
        cgroup.remove(cg)
    except cgroup.CgroupError as exc:
        return f"could create a probe cgroup but not remove it: {exc}"
    return None


def leftover_cgroups(sampler_pid: int) -> list[Path]:
    """Cgroups named after ``sampler_pid`` (``spikewatch-<pid>-<n>``) that still exist.

    The sampler creates them under its own memory cgroup, which is ours (it is our child)."""
    me = cgroup.cgroup_of_pid(os.getpid())
    if me is None:
        return []
    return sorted(p for p in me.dir.glob(f"spikewatch-{sampler_pid}-*") if p.is_dir())


def remove_leftovers(sampler_pid: int) -> list[str]:
    """Kill what is left in the sampler's cgroups and remove them; return problems (empty: all gone)."""
    problems = []
    for d in leftover_cgroups(sampler_pid):
        try:
            cgroup.remove(cgroup.MemoryCgroup(cgroup.resolve(str(d)), owned=True))
        except cgroup.CgroupError as exc:
            if d.exists():
                problems.append(str(exc))
    return problems
