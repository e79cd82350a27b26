"""``--cgroup auto``: sample the memory cgroup the --pid / --match target lives in.

Real processes moved into (or started in) fresh child memory cgroups of ours,
real samplers, their journals read back. The sidecar case (the target in
another mount and cgroup namespace) is in tests/recipes/test_recipes_sidecar.py.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from spikewatch.sampler import cgroup as cgm
from spikewatch.sampler.cli import sample
from spikewatch.sampler.wire import protocol

from tests.support.cgroups import needs_cgroup
from tests.support.sampler import MiB, Stream, run_sample, spawn_sample, stop_sampler, write_script
from tests.support.waiting import scaled

pytestmark = pytest.mark.cgroup

HOLD = """
    import sys, time
    size = int(sys.argv[1])
    if sys.argv[2] == "wait":
        sys.stdin.readline()
    b = bytearray(size << 20)
    for i in range(0, len(b), 4096):
        b[i] = 1
    # CLOCK_MONOTONIC ns, the sampler's clock: when the whole allocation was charged
    print("have", size, time.monotonic_ns(), flush=True)
    time.sleep(60)
"""


class Lines:
    """A sampler's stderr, read by a thread, so a test can wait for a line."""

    def __init__(self, stream) -> None:  # type: ignore[no-untyped-def]
        self.lines: list[str] = []
        self._t = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._t.start()

    def _read(self, stream) -> None:  # type: ignore[no-untyped-def]
        for line in stream:
            self.lines.append(line)

    def wait_for(self, pattern: str, timeout: float = 20.0) -> str:
        end = time.monotonic() + scaled(timeout)
        while time.monotonic() < end:
            for line in list(self.lines):
                if re.search(pattern, line):
                    return line
            time.sleep(0.02)
        raise AssertionError(f"no line matching {pattern!r} in {self.lines}")

    def text(self) -> str:
        self._t.join(timeout=5)
        return "".join(self.lines)


def _child_cgroup(tag: str) -> cgm.MemoryCgroup:
    return cgm.create_limited(256 * MiB, f"swauto-{tag}-{os.getpid()}-{time.monotonic_ns()}")


def _kill(p: subprocess.Popen) -> None:
    p.kill()
    p.wait()


@needs_cgroup
def test_pid_auto_samples_the_cgroup_the_process_was_moved_into(tmp_path: Path, endpoints) -> None:
    script = write_script(tmp_path, "hold.py", HOLD)
    cg = _child_cgroup("pid")
    app = subprocess.Popen(
        [sys.executable, str(script), "48", "wait"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    p = None
    try:
        cgm.move_pid(app.pid, cg)
        # On a plain host the sampler's own mounts show it: the same directory as cgroup_of_pid.
        assert cgm.cgroup_seen_by(app.pid) == cgm.cgroup_of_pid(app.pid)
        assert cgm.cgroup_seen_by(app.pid).dir == cg.info.dir
        journal = tmp_path / "pid.journal"
        p = spawn_sample(endpoints, "--pid", str(app.pid), "--cgroup", "auto", "--journal", str(journal))
        err = Lines(p.stderr)
        line = err.wait_for(r"--cgroup auto: pid")
        assert str(cg.info.dir) in line
        err.wait_for(r"journal")
        time.sleep(0.3)  # samples before the allocation
        app.stdin.write("go\n")
        app.stdin.flush()
        assert app.stdout.readline().startswith("have 48")
        time.sleep(0.4)
        stop_sampler(p)
        assert p.returncode == 0, err.text()
    finally:
        if p is not None and p.poll() is None:
            p.kill()
        _kill(app)
        cgm.remove(cg)
    s = Stream.from_journal(journal)
    hello = s.topic(protocol.HELLO)[-1]
    assert hello["series"] == ["rss", "cg_usage"]
    assert hello["cgroup"]["path"] == cg.info.path and hello["cgroup"]["owned"] is False
    assert hello["cgroup"]["limit"] == 256 * MiB
    usage = s.series["cg_usage"]
    # Only what was charged after the move counts: the 48 MiB allocated in the cgroup.
    assert min(usage) < 16 * MiB, min(usage)
    assert 48 * MiB <= max(usage) < 80 * MiB, max(usage)
    assert any(d.get("cg_limit") == 256 * MiB and d.get("cg_working_set") for d in s.topic(protocol.DETAIL))


@needs_cgroup
def test_match_auto_finds_the_cgroup_at_the_first_match_and_follows_a_restart_into_another(
    tmp_path: Path, endpoints
) -> None:
    script = write_script(tmp_path, "hold.py", HOLD)
    marker = f"swauto-app-{os.getpid()}-{time.monotonic_ns()}"
    # The python command line only: the joining shell (/bin/sh -c ...) must not match.
    pattern = f"^{re.escape(sys.executable)} .*{marker}"
    cg_a, cg_b = _child_cgroup("a"), _child_cgroup("b")
    journal = tmp_path / "match.journal"
    p = spawn_sample(endpoints, "--match", pattern, "--cgroup", "auto", "--journal", str(journal))
    err = Lines(p.stderr)
    apps: list[subprocess.Popen] = []
    try:
        err.wait_for("waiting for a process matching")
        apps.append(
            cgm.spawn_in(cg_a, [sys.executable, str(script), "24", "now", marker], stdout=subprocess.PIPE, text=True)
        )
        assert apps[0].stdout.readline().startswith("have 24")
        assert str(cg_a.info.dir) in err.wait_for(r"--cgroup auto: pid")
        time.sleep(0.4)
        _kill(apps[0])  # the "container" dies; its restart comes up in a new cgroup
        apps.append(
            cgm.spawn_in(cg_b, [sys.executable, str(script), "72", "now", marker], stdout=subprocess.PIPE, text=True)
        )
        have = apps[1].stdout.readline()
        assert have.startswith("have 72")
        t_allocated = int(have.split()[2])
        line = err.wait_for(r"another memory cgroup")
        # The line is said after the hot loop's descriptor was re-pointed at cg_b: every
        # sample taken from now on reads cg_b (same CLOCK_MONOTONIC as the sampler's).
        t_followed = time.monotonic_ns()
        assert f"pid {apps[1].pid}" in line and str(cg_b.info.dir) in line
        time.sleep(0.5)
        stop_sampler(p)
        assert p.returncode == 0, err.text()
    finally:
        if p.poll() is None:
            p.kill()
        for a in apps:
            _kill(a)
        cgm.remove(cg_a)
        cgm.remove(cg_b)
    s = Stream.from_journal(journal)
    paths = [h["cgroup"]["path"] for h in s.topic(protocol.HELLO) if h.get("cgroup")]
    assert paths[0] == cg_a.info.path and paths[-1] == cg_b.info.path, paths
    restart = s.events(protocol.EV_RESTART)
    assert restart and restart[-1]["pid"] == apps[1].pid and restart[-1]["old_pid"] == apps[0].pid
    t_restart = restart[-1]["t"]
    before = s.values("cg_usage", 0, t_restart - 50_000_000)
    # From when the restart had allocated its 72 MiB and the sampler read its cgroup.
    after = s.values("cg_usage", max(t_allocated, t_followed))
    assert before and 24 * MiB <= max(before) < 48 * MiB, max(before, default=None)
    assert after and min(after) >= 72 * MiB and max(after) < 100 * MiB, (
        min(after, default=None),
        max(after, default=None),
    )
    # The new cgroup's OOM counter and peak are a fresh baseline, not news.
    assert not s.events(protocol.EV_OOM_KILL)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--cgroup", "auto"], r"say which process with\s+--pid N or --match REGEX"),
        (["--cgroup", "auto", "--unit", "x.service"], r"--cgroup auto and --unit both name"),
        (["--cgroup", "auto", "--", "sleep", "1"], r"a launched command runs in the\s+sampler's cgroup"),
    ],
)
def test_auto_without_a_process_target_is_a_usage_error(args: list[str], message: str) -> None:
    res = CliRunner().invoke(sample, ["--inlet", "off", "--no-journal", *args])
    assert res.exit_code == 2, res.output
    assert re.search(message, res.output), res.output
    assert "Traceback" not in res.output


def test_auto_for_a_pid_that_does_not_exist(endpoints, tmp_path: Path) -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()
    with pytest.raises(cgm.CgroupError, match=rf"no process {gone.pid}"):
        cgm.cgroup_seen_by(gone.pid)
    res = run_sample(endpoints, "--pid", str(gone.pid), "--cgroup", "auto", "--no-journal", timeout=30)
    assert res.returncode == 3 and "Traceback" not in res.stderr
    assert re.search(rf"no process {gone.pid}", res.stderr), res.stderr
