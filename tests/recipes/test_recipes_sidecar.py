"""The Kubernetes sidecar's entrypoint: finding the app container's process and memory cgroup.

First on captured /proc trees shaped like a pod's (cgroup v2 with cgroup
namespaces, cgroup v1), then for real: an "app container" in its own memory
cgroup, cgroup namespace and mount namespace (cgroupfs mounted inside it, as a
container runtime does), and the entrypoint in a sibling cgroup with its own
cgroup namespace, as a sidecar is. The last part needs root, unshare and a
writable cgroup v1 memory controller (this machine and CI have them).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, free_port

SCRIPT = ROOT / "docs" / "recipes" / "kubernetes" / "sidecar_entrypoint.py"
_spec = importlib.util.spec_from_file_location("sidecar_entrypoint", SCRIPT)
entry = importlib.util.module_from_spec(_spec)
assert _spec.loader is not None
_spec.loader.exec_module(entry)

MiB = 1 << 20


def fake_proc(tmp: Path, pid: int, cmdline: str, cgroup: str, mountinfo: list[str], files: dict[str, str]) -> Path:
    proc = tmp / "proc"
    d = proc / str(pid)
    d.mkdir(parents=True)
    (d / "cmdline").write_bytes(cmdline.replace(" ", "\0").encode() + b"\0")
    (d / "stat").write_text(f"{pid} (x) S 1 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 12345 0 0\n")
    (d / "cgroup").write_text(cgroup)
    (d / "mountinfo").write_text("\n".join(mountinfo) + "\n")
    for rel, text in files.items():
        f = d / "root" / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(text)
    return proc


def run_entry(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, dict, str]:
    code = entry.main(args)
    out, err = capsys.readouterr()
    return code, (json.loads(out) if code == 0 and out.strip() else {}), err


def test_cgroup_v2_pod_with_cgroup_namespaces(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # What a sidecar sees of an app container on a cgroup v2 node (containerd, private cgroupns):
    # the app's cgroup lies outside the sidecar's namespace, hence the "/..".
    app = "/../cri-containerd-3f9a.scope"
    proc = fake_proc(
        tmp_path, 4242, "myapp --listen 0.0.0.0:8080", f"0::{app}\n",
        [f"1201 1180 0:29 {app} /sys/fs/cgroup ro,nosuid,nodev,noexec,relatime - cgroup2 cgroup rw,nsdelegate"],
        {"sys/fs/cgroup/memory.current": "314572800\n", "sys/fs/cgroup/memory.max": "536870912\n"},
    )
    code, got, err = run_entry(["--match", "^myapp ", "--proc", str(proc), "--dry-run", "--", "--period", "1ms"],
                               capsys)
    assert code == 0, err
    assert got["pid"] == 4242 and got["version"] == 2
    assert got["cgroup_dir"] == f"{proc}/4242/root/sys/fs/cgroup"
    assert got["command"] == ["spikewatch", "sample", "--pid", "4242", "--cgroup", got["cgroup_dir"],
                              "--period", "1ms"]
    assert "cgroup v2" in err


def test_cgroup_v1_pod_and_a_process_in_a_sub_cgroup(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    container = "/kubepods/burstable/pod7c1e/9d2b"
    proc = fake_proc(
        tmp_path, 77, "java -jar app.jar", f"12:pids:{container}\n4:memory:{container}/worker\n1:name=systemd:/x\n",
        [f"900 880 0:33 {container} /sys/fs/cgroup/memory ro,nosuid - cgroup cgroup rw,memory",
         f"901 880 0:34 {container} /sys/fs/cgroup/pids ro,nosuid - cgroup cgroup rw,pids"],
        {"sys/fs/cgroup/memory/worker/memory.usage_in_bytes": "1\n"},
    )
    code, got, err = run_entry(["--match", "app\\.jar", "--proc", str(proc), "--dry-run"], capsys)
    assert code == 0, err
    assert got["version"] == 1
    assert got["cgroup_dir"] == f"{proc}/77/root/sys/fs/cgroup/memory/worker"


def test_unreachable_cgroup_and_missing_app_say_what_to_check(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    proc = fake_proc(tmp_path, 5, "myapp", "0::/../other\n",
                     ["1 1 0:29 /../mine /sys/fs/cgroup rw - cgroup2 cgroup rw"], {})
    code, _, err = run_entry(["--match", "myapp", "--proc", str(proc), "--dry-run"], capsys)
    assert code == 2 and "CAP_SYS_PTRACE" in err and "0::/../other" in err
    t0 = time.monotonic()
    code, _, err = run_entry(["--match", "nothing-like-this", "--proc", str(proc), "--timeout", "0.6"], capsys)
    assert code == 2 and "shareProcessNamespace" in err
    assert time.monotonic() - t0 < 10


# --------------------------------------------------------------- for real


def _can_namespace() -> str | None:
    if os.geteuid() != 0:
        return "needs root"
    if shutil.which("unshare") is None:
        return "needs unshare (util-linux)"
    from sampler import cgroup

    try:
        hier = cgroup.memory_hierarchy()
        own = cgroup.cgroup_of_pid(os.getpid())
    except cgroup.CgroupError as exc:
        return str(exc)
    if hier is None or hier[0] != 1 or own is None or not os.access(own.dir, os.W_OK):
        return "needs a writable cgroup v1 memory controller"
    return None


@pytest.fixture
def app_container(tmp_path: Path):  # type: ignore[no-untyped-def]
    """An 'app container': own memory cgroup + cgroup and mount namespaces, cgroupfs mounted inside."""
    reason = _can_namespace()
    if reason:
        pytest.skip(reason)
    from sampler import cgroup

    base = cgroup.cgroup_of_pid(os.getpid()).dir
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
                if marker.encode() in cmd and int((app_cg / "memory.usage_in_bytes").read_text()) > 30 * MiB:
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


def test_sidecar_finds_the_app_containers_cgroup_through_its_mount_namespace(app_container: dict) -> None:
    c = app_container
    # The sidecar: a sibling cgroup and its own cgroup namespace, like a second container.
    side = (f'echo $$ > {c["side_cg"]}/cgroup.procs && exec unshare --cgroup '
            f'{sys.executable} {SCRIPT} --match {c["marker"]} --timeout 10 --dry-run -- --period 1ms')
    out = subprocess.run(["sh", "-c", side], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert got["pid"] == c["pid"]
    # From inside its namespace the app's cgroup is "/..": the case a pod has.
    assert "'/../" in out.stderr, out.stderr
    # The directory is the app's own cgroupfs mount, reached through /proc/<pid>/root.
    assert got["cgroup_dir"] == f"/proc/{c['pid']}/root{c['mnt']}"
    assert not any(Path(c["mnt"]).iterdir()), "outside its mount namespace the mount point is empty"
    through = int(Path(got["cgroup_dir"], "memory.usage_in_bytes").read_text())
    direct = int((c["app_cg"] / "memory.usage_in_bytes").read_text())
    assert through > 30 * MiB
    assert abs(through - direct) < 2 * MiB


def test_the_sidecar_samples_the_app_containers_cgroup(app_container: dict, tmp_path: Path) -> None:
    """The whole sidecar path: entrypoint in its own cgroup namespace execs spikewatch sample."""
    from sampler import protocol
    from sampler.recording import iter_records

    c = app_container
    spikewatch = Path(sys.executable).parent / "spikewatch"
    if not spikewatch.exists():
        pytest.skip("no spikewatch console script beside the test interpreter")
    journal = tmp_path / "sidecar.journal"
    side = (f'echo $$ > {c["side_cg"]}/cgroup.procs && exec unshare --cgroup '
            f'{sys.executable} {SCRIPT} --match {c["marker"]} --timeout 10 --spikewatch {spikewatch} -- '
            f'--duration 1s --journal {journal} --inlet off --publish tcp://127.0.0.1:{free_port()} -q')
    out = subprocess.run(["sh", "-c", side], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    cg = [v for topic, body in iter_records(journal) if topic == protocol.SAMPLES
          for v in body["series"].get(protocol.SERIES_CG_USAGE, [])]
    assert cg, "no cgroup samples"
    direct = int((c["app_cg"] / "memory.usage_in_bytes").read_text())
    assert min(cg) > 30 * MiB and abs(max(cg) - direct) < 4 * MiB
