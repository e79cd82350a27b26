"""cgroup v2 (and tricky v1 mounts) on captured file trees under trees/.

Each tree mirrors a host's /proc and /sys/fs/cgroup; passing it as ``root=``
runs the very code that reads a live host, on those files. Trees are copied to
a temporary folder first because the v2 peak reset writes to memory.peak.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from spikewatch.sampler import cgroup as cgm

TREES = Path(__file__).parent / "trees"
MiB = 1 << 20


@pytest.fixture
def tree(tmp_path):
    def copy(name: str) -> Path:
        dst = tmp_path / name
        shutil.copytree(TREES / name, dst)
        return dst

    return copy


def test_v2_discovery_and_pid_cgroup(tree) -> None:
    root = tree("v2_peak")
    assert cgm.memory_hierarchy(root=root) == (2, root / "sys/fs/cgroup")
    info = cgm.cgroup_of_pid(4242, root=root)
    assert info == cgm.CgroupInfo(2, "/system.slice/app.service", root / "sys/fs/cgroup/system.slice/app.service")
    # The same cgroup named three ways.
    assert cgm.resolve("system.slice/app.service", root=root) == info
    assert cgm.resolve("/system.slice/app.service", root=root) == info  # systemd's ControlGroup form
    assert cgm.resolve(str(info.dir), root=root) == info
    with pytest.raises(
        cgm.CgroupError, match=r"no memory cgroup at .*nope\.service; list them with ls .*sys/fs/cgroup"
    ):
        cgm.resolve("system.slice/nope.service", root=root)


def test_v2_with_resettable_peak(tree) -> None:
    root = tree("v2_peak")
    with cgm.MemoryCgroup(cgm.cgroup_of_pid(4242, root=root), root=root) as cg:
        assert cg.version == 2 and not cg.owned
        assert int(os.pread(cg.usage_fd, 64, 0)) == 241172480
        assert cg.read_usage() == 241172480
        assert cg.read_limit() == 256 * MiB
        assert cg.read_effective_limit() == 256 * MiB  # system.slice is "max"
        stat = cg.read_stat()
        assert stat["anon"] == 157286400 and stat["file"] == 73400320
        assert stat["shmem"] == 4194304 and stat["active_file"] == 16777216
        assert stat["inactive_file"] == 52428800
        assert stat["working_set"] == 241172480 - 52428800
        # 6.12+: per-descriptor reset, allowed even on a cgroup we only watch
        # (it is invisible to every other reader).
        assert cg.peak_resettable
        assert cg.read_peak() == 314572800
        assert cg.reset_peak() is True
        assert cg.read_peak() == 314572800  # the tree's file is left intact
        oom = cg.read_oom()
        assert oom["oom_kill"] == 1 and oom["oom"] == 2
        assert oom["max"] == 37 and oom["high"] == 0 and oom["limit_hits"] == 37
        psi = cg.read_psi()
        assert cg.psi_scope == "cgroup"
        assert psi["some_avg10"] == 1.25 and psi["full_total"] == 2048000 and psi["system_wide"] == 0.0
        assert cg.pids() == [4242, 4250]
        assert cg.exists()
    assert (root / "sys/fs/cgroup/system.slice/app.service/memory.peak").read_text() == "314572800\n"


def test_v2_old_kernel_without_memory_peak(tree) -> None:
    root = tree("v2_nopeak")
    with cgm.MemoryCgroup(cgm.resolve("system.slice/app.service", root=root), root=root) as cg:
        assert cg.read_limit() == 512 * MiB
        assert cg.read_peak() is None
        assert not cg.peak_resettable and cg.reset_peak() is False
        assert cg.read_oom()["oom_kill"] == 1


def test_v2_unlimited_and_read_only_peak(tree) -> None:
    root = tree("v2_unlimited")
    peak = root / "sys/fs/cgroup/system.slice/app.service/memory.peak"
    peak.chmod(0o444)  # 5.19–6.11: the file exists but has no write op
    with cgm.MemoryCgroup(cgm.cgroup_of_pid(4242, root=root), root=root) as cg:
        assert cg.read_limit() is None
        assert cg.read_effective_limit() is None
        assert cg.read_peak() == 314572800  # peak since creation
        assert not cg.peak_resettable and cg.reset_peak() is False
    assert peak.read_text() == "314572800\n"


def test_v1_container_mount_root_is_joined(tree) -> None:
    root = tree("v1_hier")
    mem = root / "sys/fs/cgroup/memory"
    assert cgm.memory_hierarchy(root=root) == (1, mem)
    # mountinfo's root is /docker/c0ffee: /docker/c0ffee/app lives at <mount>/app.
    info = cgm.cgroup_of_pid(77, root=root)
    assert info == cgm.CgroupInfo(1, "/docker/c0ffee/app", mem / "app")
    assert cgm.cgroup_of_pid("self", root=root).dir == mem
    assert cgm.cgroup_of_pid(88, root=root) is None  # outside what the container sees
    assert cgm.resolve(str(mem / "app"), root=root) == info
    assert cgm.resolve("/docker/c0ffee/app", root=root) == info
    with pytest.raises(cgm.CgroupError, match="no process"):
        cgm.cgroup_of_pid(99999, root=root)
    with cgm.MemoryCgroup(info, root=root) as cg:
        stat = cg.read_stat()
        # Hierarchical: the total_* keys, renamed to the v2 vocabulary.
        assert stat["anon"] == 136314880 and stat["file"] == 62914560
        assert stat["shmem"] == 1048576 and stat["anon_thp"] == 2097152
        assert stat["inactive_file"] == 41943040 and stat["file_mapped"] == 10485760
        assert stat["usage"] == 209715200 and stat["working_set"] == 209715200 - 41943040
        assert cg.read_limit() is None  # 9223372036854771712 means unlimited
        assert cg.read_effective_limit() == 1 << 30  # the container's limit bites
        assert cg.read_peak() == 268435456 and not cg.peak_resettable and cg.reset_peak() is False
        assert cg.read_oom() == {"under_oom": 0, "oom_kill": 3, "failcnt": 0, "limit_hits": 0}
        psi = cg.read_psi()
        assert cg.psi_scope == "system" and psi["system_wide"] == 1.0 and psi["some_total"] == 777


def test_hybrid_host_uses_v1_memory_and_unescapes_mount_points(tree) -> None:
    root = tree("hybrid")
    mem = root / "sys/fs/cgroup/mem ory"
    assert cgm.memory_hierarchy(root=root) == (1, mem)  # unified has no memory controller
    info = cgm.cgroup_of_pid(555, root=root)
    assert info == cgm.CgroupInfo(1, "/system.slice/nginx.service", mem / "system.slice/nginx.service")
    with cgm.MemoryCgroup(info, root=root) as cg:
        assert cg.read_limit() == 100 * MiB
        oom = cg.read_oom()
        assert oom["under_oom"] == 1 and oom["failcnt"] == 12 and oom["limit_hits"] == 12
        stat = cg.read_stat()  # not hierarchical: the plain keys
        assert stat["anon"] == 41943040 and stat["file"] == 10485760
        assert stat["working_set"] == 0  # inactive_file above usage: floored, never negative
        assert cg.read_effective_limit() == 100 * MiB
        # v2's per-cgroup pressure for the same processes, though memory is on v1.
        assert cg.psi_scope == "cgroup" and cg.read_psi()["some_avg10"] == 9.99
    # When the v2 cgroup of the same name holds other processes, it is not used.
    (root / "sys/fs/cgroup/unified/system.slice/nginx.service/cgroup.procs").write_text("555\n")
    with cgm.MemoryCgroup(info, root=root) as cg:
        assert cg.psi_scope == "system" and cg.read_psi()["system_wide"] == 1.0


def test_no_memory_controller_is_a_clear_error(tmp_path) -> None:
    (tmp_path / "proc/self").mkdir(parents=True)
    (tmp_path / "proc/self/mountinfo").write_text(
        "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n"
    )
    (tmp_path / "proc/self/cgroup").write_text("0::/\n")
    (tmp_path / "sys/fs/cgroup/unified").mkdir(parents=True)
    (tmp_path / "sys/fs/cgroup/unified/cgroup.controllers").write_text("cpu pids\n")
    assert cgm.memory_hierarchy(root=tmp_path) is None
    assert cgm.cgroup_of_pid("self", root=tmp_path) is None
    with pytest.raises(cgm.CgroupError, match="no memory cgroup controller"):
        cgm.resolve("x", root=tmp_path)
    with pytest.raises(cgm.CgroupError, match="--limit needs a memory cgroup controller"):
        cgm.create_limited(64 * MiB, root=tmp_path)


def test_v2_home_for_limited_children(tree) -> None:
    """The no-internal-process rule: alone in our cgroup we step into a leaf and
    enable +memory; sharing it with others is a clear error."""
    root = tree("v2_peak")
    me = cgm.cgroup_of_pid("self", root=root)
    assert me.path == "/user.slice/user-1000.slice/session-3.scope"
    procs = me.dir / "cgroup.procs"
    procs.write_text(f"{os.getpid()}\n3001\n")
    with pytest.raises(cgm.CgroupError, match=r"also holds processes \[3001\].*systemd-run --scope"):
        cgm._v2_home(me)
    procs.write_text(f"{os.getpid()}\n")
    home = cgm._v2_home(me)
    assert home == me
    leaf = me.dir / f"spikewatch-{os.getpid()}-self"
    assert (leaf / "cgroup.procs").read_text() == str(os.getpid())
    assert (me.dir / "cgroup.subtree_control").read_text() == "+memory"
    # Called again from inside the leaf: home is still the original cgroup.
    inside = cgm.CgroupInfo(2, me.path + "/" + leaf.name, leaf)
    (me.dir / "cgroup.subtree_control").write_text("cpu memory\n")
    assert cgm._v2_home(inside) == me
    (me.dir / "cgroup.subtree_control").write_text("")
    (me.dir / "cgroup.controllers").write_text("cpu io pids\n")
    with pytest.raises(cgm.CgroupError, match="not delegated"):
        cgm._v2_home(me)


def test_unit_cgroup_parses_systemctl(tree, tmp_path) -> None:
    """A stand-in systemctl (a real executable) answering like systemd does."""
    root = tree("v2_peak")
    fake = tmp_path / "systemctl"
    fake.write_text(
        "#!/bin/sh\n"
        'for a; do last="$a"; done\ncase "$last" in\n'
        "  app.service) printf 'MainPID=4242\\nControlGroup=/system.slice/app.service\\nLoadState=loaded\\n';;\n"
        "  stopped.service) printf 'MainPID=0\\nControlGroup=\\nLoadState=loaded\\n';;\n"
        "  *) printf 'MainPID=0\\nControlGroup=\\nLoadState=not-found\\n';;\n"
        "esac\n"
    )
    fake.chmod(0o755)
    info = cgm.unit_cgroup("app.service", root=root, systemctl=str(fake))
    assert info.dir == root / "sys/fs/cgroup/system.slice/app.service"
    with pytest.raises(cgm.CgroupError, match="no unit 'ghost.service'"):
        cgm.unit_cgroup("ghost.service", root=root, systemctl=str(fake))
    with pytest.raises(cgm.CgroupError, match="not running"):
        cgm.unit_cgroup("stopped.service", root=root, systemctl=str(fake))
