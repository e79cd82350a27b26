"""Containers for real: Debian's podman with crun, in the live v2 lane's guest (pure
cgroup v2; on this project's hybrid host crun refuses to start). A container runs
from ``--rootfs`` (no image, no pull): a tiny root in tmpfs with the host's /usr and
Python bound in read-only, its own mount, pid, ipc, uts and cgroup namespaces, and
its own cgroup under podman's (cgroupfs manager: no systemd in the guest). spikewatch
runs outside it, as a sidecar on a node would: attached by pid, by cgroup path and
with ``--cgroup auto``, and following a container that is replaced under it.

Marked cgroup2: they skip on a v1 host, saying why, and run (never skip) in the lane.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from spikewatch.sampler.wire import protocol

from tests.support.sampler import MiB, Stream, run_sample, spawn_sample, stop_sampler
from tests.support.waiting import scaled, wait_until

pytestmark = [pytest.mark.cgroup2, pytest.mark.timeout(scaled(30))]

CGROOT = Path("/sys/fs/cgroup")

# The container's one process: allocates and touches SIZE MiB, says so, holds.
HOLD = """\
import sys, time
size = int(sys.argv[1])
b = bytearray(size << 20)
for i in range(0, len(b), 4096):
    b[i] = 1
print("have", size, flush=True)
time.sleep(600)
"""


class Podman:
    """podman with all of its state under ``base`` (tmpfs in the guest) and a root
    file system made of bind mounts, so nothing is pulled or written outside."""

    def __init__(self) -> None:
        # Short: podman refuses a runroot over 50 characters (pytest's tmp_path is longer).
        base = self.base = Path(tempfile.mkdtemp(prefix="swpod-", dir="/tmp"))
        self.cmd = [
            "podman",
            "--root", str(base / "storage"),
            "--runroot", str(base / "run"),
            "--tmpdir", str(base / "tmp"),
            "--storage-driver", "vfs",
            "--cgroup-manager", "cgroupfs",
            "--events-backend", "file",
            "--runtime", "crun",
        ]  # fmt: skip
        self.rootfs = base / "rootfs"
        for d in ("usr", "proc", "sys", "dev", "tmp", "etc", "w"):
            (self.rootfs / d).mkdir(parents=True, exist_ok=True)
        for d in ("bin", "lib", "lib64", "sbin"):  # merged /usr, as on the host
            if not (self.rootfs / d).exists():
                (self.rootfs / d).symlink_to(f"usr/{d}")
        (base / "w").mkdir(exist_ok=True)
        (base / "w" / "hold.py").write_text(HOLD)
        self.python = os.path.realpath(sys.executable)  # the venv's interpreter is a link to it
        self.binds = ["-v", "/usr:/usr:ro", "-v", f"{base / 'w'}:/w:ro"]
        if not sys.base_prefix.startswith("/usr/"):
            (self.rootfs / sys.base_prefix.lstrip("/")).mkdir(parents=True, exist_ok=True)
            self.binds += ["-v", f"{sys.base_prefix}:{sys.base_prefix}:ro"]

    def __call__(self, *args: str, timeout: float = 60) -> str:
        res = subprocess.run([*self.cmd, *args], capture_output=True, text=True, timeout=scaled(timeout))
        assert res.returncode == 0, f"podman {' '.join(args)}: {res.stderr.strip()}"
        return res.stdout.strip()

    def run(self, name: str, mib: int, marker: str, *opts: str) -> tuple[str, int]:
        """Start container ``name`` holding ``mib`` MiB: its id, and its process's pid
        as we (the host) see it. Each podman command costs seconds on the emulated CPU:
        the pid is looked up in /proc by the marker rather than with podman inspect."""
        cid = self(
            "run", "-d", "--name", name, "--network", "none", *opts, *self.binds,
            "--rootfs", str(self.rootfs), self.python, "/w/hold.py", str(mib), marker,
        )  # fmt: skip
        found: list[int] = []

        def look() -> bool:
            for d in Path("/proc").iterdir():
                if d.name.isdigit():
                    try:
                        argv = (d / "cmdline").read_bytes().split(b"\0")
                    except OSError:
                        continue
                    if argv[0] == self.python.encode() and marker.encode() in argv:
                        found.append(int(d.name))
                        return True
            return False

        assert wait_until(look, 30), f"no process of container {name} ({marker})"
        return cid.splitlines()[-1], found[0]

    def remove(self, name: str) -> None:
        subprocess.run([*self.cmd, "rm", "-f", "-t", "0", name], capture_output=True, timeout=scaled(60))


@pytest.fixture
def podman() -> Iterator[Podman]:
    if shutil.which("podman") is None or shutil.which("crun") is None:
        why = "podman and crun are not installed (tests/cgroup2/setup.sh installs them for the lane)"
        if os.environ.get("SPIKEWATCH_LANE_CGROUP2") == "1":
            pytest.fail(why)
        pytest.skip(why)
    pm = Podman()
    yield pm
    subprocess.run([*pm.cmd, "rm", "-a", "-f", "-t", "0"], capture_output=True, timeout=scaled(60))
    shutil.rmtree(pm.base, ignore_errors=True)


def cgroup_path(pid: int) -> str:
    """The cgroup ``pid`` is in, as the root cgroup namespace (ours) names it."""
    line = Path(f"/proc/{pid}/cgroup").read_text().strip()
    assert line.startswith("0::"), line
    return line[3:]


def usage(path: str) -> int:
    return int((CGROOT / path.lstrip("/") / "memory.current").read_text())


class Lines:
    """A sampler's stderr, read by a thread, so a test can wait for a line."""

    def __init__(self, stream) -> None:  # type: ignore[no-untyped-def]
        self.lines: list[str] = []
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream) -> None:  # type: ignore[no-untyped-def]
        for line in stream:
            self.lines.append(line)

    def wait_for(self, pattern: str, timeout: float = 20.0) -> str:
        found: list[str] = []

        def seen() -> bool:
            found.extend(line for line in list(self.lines) if re.search(pattern, line))
            return bool(found)

        assert wait_until(seen, timeout), f"no line matching {pattern!r} in {self.lines}"
        return found[0]


def test_attach_to_a_container_by_pid_by_cgroup_path_and_auto(podman: Podman, tmp_path: Path, endpoints) -> None:
    marker = f"swctr{os.getpid()}"
    cid, pid = podman.run("ctr", 48, marker, "--memory", "256m")
    path = cgroup_path(pid)
    # podman gave it a cgroup of its own (cgroupfs manager: libpod_parent/libpod-<id>).
    assert cid in path, (cid, path)
    assert (CGROOT / path.lstrip("/") / "memory.max").read_text().strip() == str(256 * MiB)
    # Inside, it is pid 1 of its own namespace and sees its own cgroup as the root.
    assert Path(f"/proc/{pid}/status").read_text().split("NSpid:")[1].split()[1] == "1"
    assert wait_until(lambda: usage(path) >= 48 * MiB, 30), usage(path)

    def sample(name: str, *how: str) -> Stream:
        journal = tmp_path / f"{name}.journal"
        res = run_sample(endpoints, *how, "--duration", "2s", "--journal", str(journal), timeout=90)
        assert res.returncode == 0, res.stderr
        return Stream.from_journal(journal)

    # By pid (the host's pid of the container's pid 1), its cgroup found from it.
    auto = sample("auto", "--pid", str(pid), "--cgroup", "auto")
    hello = auto.topic(protocol.HELLO)[-1]
    assert hello["targets"][0]["pids"] == [pid]
    assert 48 * MiB <= max(auto.series["rss"]) < 96 * MiB
    assert hello["cgroup"]["path"] == path and hello["cgroup"]["limit"] == 256 * MiB
    assert 48 * MiB <= min(auto.series["cg_usage"])

    # By the cgroup's path, as podman made it.
    by_path = sample("path", "--cgroup", path)
    hello = by_path.topic(protocol.HELLO)[-1]
    assert hello["cgroup"]["path"] == path and hello["cgroup"]["owned"] is False
    assert hello["cgroup"]["limit"] == 256 * MiB
    assert 48 * MiB <= min(by_path.series["cg_usage"]) and max(by_path.series["cg_usage"]) < 96 * MiB


def test_a_container_replaced_under_the_sampler_is_followed(podman: Podman, tmp_path: Path, endpoints) -> None:
    """``podman rm -f`` then ``podman run`` again (what a restart policy or a pod's new
    container does): a new container id, a new cgroup; --match with --cgroup auto
    finds the new process and re-points the samples at its cgroup."""
    marker = f"swctr-restart-{os.getpid()}"
    pattern = f"^{re.escape(podman.python)} /w/hold.py .*{marker}"
    journal = tmp_path / "restart.journal"
    p = spawn_sample(endpoints, "--match", pattern, "--cgroup", "auto", "--journal", str(journal))
    err = Lines(p.stderr)
    try:
        err.wait_for("waiting for a process matching")
        _, first = podman.run("app", 24, marker)
        first_path = cgroup_path(first)
        assert first_path in err.wait_for(r"--cgroup auto: pid", 30)
        assert wait_until(lambda: usage(first_path) >= 24 * MiB, 30)
        time.sleep(0.5)
        podman.remove("app")
        _, second = podman.run("app", 72, marker)
        second_path = cgroup_path(second)
        assert second_path != first_path
        line = err.wait_for(r"another memory cgroup", 20)
        assert f"pid {second}" in line and second_path in line
        assert wait_until(lambda: usage(second_path) >= 72 * MiB, 30)
        time.sleep(0.5)
        stop_sampler(p)
        assert p.returncode == 0, "".join(err.lines)
    finally:
        if p.poll() is None:
            p.kill()
    s = Stream.from_journal(journal)
    paths = [h["cgroup"]["path"] for h in s.topic(protocol.HELLO) if h.get("cgroup")]
    assert paths[0] == first_path and paths[-1] == second_path, paths
    restart = s.events(protocol.EV_RESTART)
    assert restart and restart[-1]["pid"] == second and restart[-1]["old_pid"] == first
    after = s.values("cg_usage", restart[-1]["t"])
    assert after and max(after) >= 72 * MiB
