"""Is a writable memory cgroup here? One probe for every test area that needs one.

Tests that need a real memory controller skip, saying why, where there is none;
CI sets ``SPIKEWATCH_REQUIRE_CGROUPS=1`` and there a missing controller fails
them instead, so a misconfigured runner cannot pass by skipping.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import pytest
from spikewatch.sampler import cgroup as cgm

MiB = 1 << 20


@functools.cache
def memory_cgroup_unavailable() -> str | None:
    """Why no limited memory cgroup can be made under ours, or None when one can (probed once)."""
    if cgm.memory_hierarchy() is None:
        return "no memory cgroup controller mounted on this host"
    try:
        cg = cgm.create_limited(16 * MiB, f"spikewatch-probe-{os.getpid()}")
    except cgm.CgroupError as exc:
        return f"memory cgroup not writable here: {exc}"
    cgm.remove(cg)
    return None


def require_memory_cgroup() -> None:
    """Skip the calling test where there is no writable memory cgroup (fail under CI's flag)."""
    reason = memory_cgroup_unavailable()
    if reason is None:
        return
    if os.environ.get("SPIKEWATCH_REQUIRE_CGROUPS") == "1":
        pytest.fail(f"SPIKEWATCH_REQUIRE_CGROUPS=1 but {reason}")
    pytest.skip(reason)


# On a test or a module's pytestmark: runs the check above before the test (tests/conftest.py).
needs_cgroup = pytest.mark.usefixtures("memory_cgroup")


def nested(parent: cgm.MemoryCgroup, name: str, *, enable_memory: bool = True) -> Path:
    """A child cgroup directory of ``parent`` (made by us, removed with it by cgm.remove).

    On v2 a child has the memory controller only when the parent lists +memory in
    its cgroup.subtree_control; ``enable_memory`` writes that first (the parent must
    hold no processes then), as a container runtime does."""
    if parent.version == 2 and enable_memory:
        (parent.info.dir / "cgroup.subtree_control").write_text("+memory")
    d = parent.info.dir / name
    d.mkdir()
    return d


def peak_resets_per_interval() -> bool:
    """Whether the kernel peak of a cgroup we made can be restarted each interval: always
    on v1 (``memory.max_usage_in_bytes``), on v2 only since Linux 6.12 (a write to our own
    ``memory.peak`` descriptor); v2 from 5.19 to 6.11 keeps the peak since creation.
    Told by the kernel's version, not by asking the code under test."""
    if memory_version() != 2:
        return True
    major, minor = os.uname().release.split(".")[:2]
    return (int(major), int("".join(c for c in minor if c.isdigit()) or 0)) >= (6, 12)


def memory_version() -> int | None:
    """1 or 2: where this host's memory controller is; None without one."""
    hier = cgm.memory_hierarchy()
    return hier[0] if hier else None
