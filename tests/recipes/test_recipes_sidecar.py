"""The Kubernetes sidecar: ``spikewatch sample --cgroup auto`` finds the app container's memory cgroup.

First :func:`spikewatch.sampler.cgroup.cgroup_seen_by` on captured /proc trees shaped like
a pod's (cgroup v2 with cgroup namespaces, cgroup v1 with a process in a
sub-cgroup), then for real: an "app container" in its own memory cgroup, cgroup
namespace and mount namespace (cgroupfs mounted inside it, as a container
runtime does), and the real ``spikewatch sample`` in a sibling cgroup with its
own cgroup namespace, as a sidecar is. The last part needs root, unshare and a
writable cgroup v1 memory controller (this machine and CI have them).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from spikewatch.sampler import cgroup as cgm
from spikewatch.sampler.wire import protocol

from tests.conftest import free_port
from tests.support.privileges import why_nobody_cannot_run
from tests.support.sampler import Stream

MiB = 1 << 20


def fake_root(
    tmp: Path,
    pid: int,
    cgroup: str,
    mountinfo: list[str],
    files: dict[str, str],
    own_mountinfo: list[str],
    own_files: dict[str, str] | None = None,
) -> Path:
    """A captured tree: the sidecar's own view (proc/self, its mounts) and the app's
    (proc/PID/cgroup, proc/PID/mountinfo, files under proc/PID/root)."""
    d = tmp / "proc" / str(pid)
    d.mkdir(parents=True)
    (d / "cgroup").write_text(cgroup)
    (d / "mountinfo").write_text("\n".join(mountinfo) + "\n")
    me = tmp / "proc" / "self"
    me.mkdir()
    (me / "mountinfo").write_text("\n".join(own_mountinfo) + "\n")
    for base, tree in ((d / "root", files), (tmp, own_files or {})):
        for rel, text in tree.items():
            f = base / rel
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_text(text)
    return tmp


def test_cgroup_v2_pod_with_cgroup_namespaces(tmp_path: Path) -> None:
    # What a sidecar sees of an app container on a cgroup v2 node (containerd, private cgroupns):
    # the app's cgroup lies outside the sidecar's namespace, hence the "/..". The sidecar's own
    # /sys/fs/cgroup is its own cgroup only.
    app = "/../cri-containerd-3f9a.scope"
    v2 = "1201 1180 0:29 {root} /sys/fs/cgroup ro,nosuid,nodev,noexec,relatime - cgroup2 cgroup rw,nsdelegate"
    root = fake_root(
        tmp_path,
        4242,
        f"0::{app}\n",
        [v2.format(root=app)],
        {
            "sys/fs/cgroup/cgroup.controllers": "cpu io memory pids\n",
            "sys/fs/cgroup/memory.current": "314572800\n",
            "sys/fs/cgroup/memory.max": "536870912\n",
        },
        [v2.format(root="/")],
        {"sys/fs/cgroup/cgroup.controllers": "cpu io memory pids\n", "sys/fs/cgroup/memory.current": "1\n"},
    )
    info = cgm.cgroup_seen_by(4242, root=root)
    assert info.version == 2 and info.path == app
    assert info.dir == root / "proc/4242/root/sys/fs/cgroup"
    with cgm.MemoryCgroup(info, root=root) as cg:
        assert cg.read_usage() == 314572800 and cg.read_limit() == 512 * MiB


def test_cgroup_v1_pod_and_a_process_in_a_sub_cgroup(tmp_path: Path) -> None:
    pod = "/kubepods/burstable/pod7c1e"
    container = f"{pod}/9d2b"
    root = fake_root(
        tmp_path,
        77,
        f"12:pids:{container}\n4:memory:{container}/worker\n1:name=systemd:/x\n",
        [
            f"900 880 0:33 {container} /sys/fs/cgroup/memory ro,nosuid - cgroup cgroup rw,memory",
            f"901 880 0:34 {container} /sys/fs/cgroup/pids ro,nosuid - cgroup cgroup rw,pids",
        ],
        {"sys/fs/cgroup/memory/worker/memory.usage_in_bytes": "1\n"},
        # The sidecar's own mount shows only its own container's subtree.
        [f"700 680 0:33 {pod}/5e6f /sys/fs/cgroup/memory ro,nosuid - cgroup cgroup rw,memory"],
    )
    info = cgm.cgroup_seen_by(77, root=root)
    assert info.version == 1 and info.path == f"{container}/worker"
    assert info.dir == root / "proc/77/root/sys/fs/cgroup/memory/worker"


def test_the_samplers_own_mounts_come_first(tmp_path: Path) -> None:
    """On the host (a Docker container seen from outside): the host's own directory, no /proc/PID/root."""
    root = fake_root(
        tmp_path,
        91,
        "4:memory:/docker/abc\n",
        ["900 880 0:33 /docker/abc /sys/fs/cgroup/memory ro - cgroup cgroup rw,memory"],
        {"sys/fs/cgroup/memory/memory.usage_in_bytes": "1\n"},
        ["35 31 0:33 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory"],
        {"sys/fs/cgroup/memory/docker/abc/memory.usage_in_bytes": "2\n"},
    )
    info = cgm.cgroup_seen_by(91, root=root)
    assert info.dir == root / "sys/fs/cgroup/memory/docker/abc"
    assert info == cgm.cgroup_of_pid(91, root=root)


def test_unreachable_cgroup_and_missing_process_say_what_to_check(tmp_path: Path) -> None:
    root = fake_root(
        tmp_path,
        5,
        "0::/../other\n",
        ["1 1 0:29 /../mine /sys/fs/cgroup rw - cgroup2 cgroup rw"],
        {"sys/fs/cgroup/cgroup.controllers": "memory\n"},
        ["1 1 0:29 / /sys/fs/cgroup rw - cgroup2 cgroup rw"],
        {"sys/fs/cgroup/cgroup.controllers": "memory\n"},
    )
    with pytest.raises(cgm.CgroupError, match=r"not reachable") as err:
        cgm.cgroup_seen_by(5, root=root)
    assert "0::/../other" in str(err.value) and "--cgroup PATH" in str(err.value)
    with pytest.raises(cgm.CgroupError, match=r"no process 6\b"):
        cgm.cgroup_seen_by(6, root=root)


def test_no_memory_controller_anywhere(tmp_path: Path) -> None:
    root = fake_root(
        tmp_path,
        5,
        "0::/x\n",
        ["1 1 0:29 / /sys/fs/cgroup rw - cgroup2 cgroup rw"],
        {"sys/fs/cgroup/cgroup.controllers": "cpu io\n"},
        ["1 1 0:29 / /sys/fs/cgroup rw - cgroup2 cgroup rw"],
        {"sys/fs/cgroup/cgroup.controllers": "cpu io\n"},
    )
    with pytest.raises(cgm.CgroupError, match=r"no memory cgroup controller"):
        cgm.cgroup_seen_by(5, root=root)


# --------------------------------------------------------------- for real


def _can_namespace() -> str | None:
    if os.geteuid() != 0:
        return "needs root"
    if shutil.which("unshare") is None or shutil.which("setpriv") is None:
        return "needs unshare and setpriv (util-linux)"
    try:
        hier = cgm.memory_hierarchy()
        own = cgm.cgroup_of_pid(os.getpid())
    except cgm.CgroupError as exc:
        return str(exc)
    if hier is None or hier[0] != 1 or own is None or not os.access(own.dir, os.W_OK):
        return "needs a writable cgroup v1 memory controller"
    return None


@pytest.fixture
def app_container(tmp_path: Path):  # type: ignore[no-untyped-def]
    """An 'app container': own memory cgroup + cgroup and mount namespaces, cgroupfs mounted inside."""
    reason = _can_namespace()
    if reason:
        if os.environ.get("SPIKEWATCH_REQUIRE_CGROUPS") == "1":
            pytest.fail(f"SPIKEWATCH_REQUIRE_CGROUPS=1 but {reason}")
        pytest.skip(reason)
    base = cgm.cgroup_of_pid(os.getpid()).dir
    tag = f"swrecipe-{os.getpid()}-{free_port()}"
    app_cg, side_cg = base / f"{tag}-app", base / f"{tag}-side"
    app_cg.mkdir()
    side_cg.mkdir()
    mnt = tmp_path / "ctr-cgroupfs"
    mnt.mkdir()
    marker = f"spikewatch-recipe-app-{tag}"
    app = tmp_path / "app.py"
    app.write_text("import time\nb = b'x' * (30 << 20)\ntime.sleep(60)\n")
    inner = f"mount -t cgroup -o memory none {mnt} && exec {sys.executable} {app} {marker}"
    outer = f'echo $$ > {app_cg}/cgroup.procs && exec unshare --cgroup --mount --propagation private sh -c "{inner}"'
    proc = subprocess.Popen(["sh", "-c", outer])
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                cmd = Path(f"/proc/{proc.pid}/cmdline").read_bytes()
                if (
                    cmd.startswith(sys.executable.encode())
                    and int((app_cg / "memory.usage_in_bytes").read_text()) > 30 * MiB
                ):
                    break
            except OSError:
                pass
            assert proc.poll() is None, "the app container did not start"
            assert time.monotonic() < deadline, "the app container did not come up"
            time.sleep(0.05)
        yield {"pid": proc.pid, "mnt": mnt, "app_cg": app_cg, "side_cg": side_cg, "marker": marker}
    finally:
        proc.kill()
        proc.wait(timeout=10)
        for d in (app_cg, side_cg):
            for _ in range(50):
                try:
                    d.rmdir()
                    break
                except OSError:
                    time.sleep(0.1)


@pytest.mark.parametrize("target", ["--pid", "--match"])
def test_sidecar_finds_the_app_containers_cgroup_through_its_mount_namespace(
    app_container: dict, tmp_path: Path, target: str
) -> None:
    """The whole sidecar path: `spikewatch sample ... --cgroup auto` in a sibling cgroup with
    its own cgroup namespace, like a second container of the pod."""
    c = app_container
    journal = tmp_path / "sidecar.journal"
    which = str(c["pid"]) if target == "--pid" else c["marker"]
    side = (
        f"echo $$ > {c['side_cg']}/cgroup.procs && exec unshare --cgroup "
        f"{sys.executable} -m spikewatch sample {target} {which} --cgroup auto --duration 1s "
        f"--journal {journal} --inlet off --publish tcp://127.0.0.1:{free_port()}"
    )
    out = subprocess.run(["sh", "-c", side], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    # From inside its cgroup namespace the app's cgroup is "/../…": the case a pod has. It is
    # the app's own cgroupfs mount, reached through /proc/<pid>/root.
    line = next(x for x in out.stderr.splitlines() if "--cgroup auto" in x)
    assert f"pid {c['pid']} is in memory cgroup /../{c['app_cg'].name} (v1)" in line, line
    assert line.endswith(f"read at /proc/{c['pid']}/root{c['mnt']}"), line
    assert not any(Path(c["mnt"]).iterdir()), "outside its mount namespace the mount point is empty"
    s = Stream.from_journal(journal)
    assert s.topic(protocol.HELLO)[-1]["cgroup"]["path"] == f"/../{c['app_cg'].name}"
    cg = s.series[protocol.SERIES_CG_USAGE]
    direct = int((c["app_cg"] / "memory.usage_in_bytes").read_text())
    assert min(cg) > 30 * MiB and abs(max(cg) - direct) < 4 * MiB, (min(cg), max(cg), direct)


def test_sidecar_without_ptrace_rights_says_which_capability(app_container: dict) -> None:
    """Another user, no capabilities: /proc/<pid>/root of a root-owned app is refused."""
    if (why := why_nobody_cannot_run()) is not None:
        pytest.skip(why)
    c = app_container
    side = (
        f"echo $$ > {c['side_cg']}/cgroup.procs && exec unshare --cgroup setpriv --reuid 65534 "
        f"--regid 65534 --clear-groups --inh-caps=-all --bounding-set=-all {sys.executable} -m spikewatch "
        f"sample --pid {c['pid']} --cgroup auto --no-journal --inlet off --publish tcp://127.0.0.1:{free_port()}"
    )
    out = subprocess.run(["sh", "-c", side], capture_output=True, text=True, timeout=60, cwd="/")
    assert out.returncode == 3, out.stderr
    assert "Traceback" not in out.stderr
    assert f"no permission to follow /proc/{c['pid']}/root" in out.stderr and "CAP_SYS_PTRACE" in out.stderr
