"""A SIGKILLed sampler leaves nothing behind: its launched command ends (parent-death
signal), and the empty cgroup it made is swept by the next sampler that makes one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from spikewatch.sampler import cgroup as cgm
from spikewatch.sampler.wire import protocol

from tests.support.cgroups import needs_cgroup
from tests.support.sampler import Stream, run_sample, spawn_sample
from tests.support.waiting import wait_until

SLEEPER = "import time; time.sleep(60)  # {token}"


def _token() -> str:
    return f"sworphan{os.getpid()}x{time.monotonic_ns() % 1_000_000}"


def _gone(pid: int) -> bool:
    """No such process, or only a zombie waiting for its new parent to reap it."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _launched_target(sampler: subprocess.Popen, token: str) -> int:
    """The pid of the sampler's child once it has exec'd the command (released, running)."""
    found: list[int] = []

    def look() -> bool:
        try:
            kids = psutil.Process(sampler.pid).children()
        except psutil.NoSuchProcess:
            return False
        for k in kids:
            try:
                # The shim's argv has the token too: wait for the exec. The sampler's own
                # forked helpers (PSS reader, build probe) carry its argv, token included:
                # only `python -c ...` is the launched command.
                cmd = k.cmdline()
                if cmd[:2] == [sys.executable, "-c"] and token in cmd[-1]:
                    found.append(k.pid)
                    return True
            except psutil.NoSuchProcess:
                continue
        return False

    assert wait_until(look, 20), f"the sampler never launched the command: {sampler.poll()=}"
    return found[0]


def _kill_quietly(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _remove_dirs(dirs: list[Path]) -> None:
    for d in dirs:
        if d.is_dir():
            try:
                for pid in (d / "cgroup.procs").read_text().split():
                    _kill_quietly(int(pid))
            except OSError:
                pass
            wait_until(lambda d=d: not (d / "cgroup.procs").read_text().split() if d.is_dir() else True, 5)
            try:
                os.rmdir(d)
            except OSError:
                pass


def _dead_pid() -> int:
    """A pid that was ours a moment ago and is now reaped (so nobody has it, barring reuse)."""
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def _home() -> Path:
    """Where samplers we start put their cgroups: our own memory cgroup (v1, and the
    v2 root, which may hold processes beside children with controllers: the live v2
    lane runs these there)."""
    info = cgm.cgroup_of_pid("self")
    assert info is not None
    return info.dir


@pytest.mark.cgroup
@needs_cgroup
def test_sigkilled_sampler_with_limit_leaves_nothing(endpoints):
    """The target dies with the sampler; the next ``sample --limit`` removes the empty cgroup."""
    home, token = _home(), _token()
    p = spawn_sample(
        endpoints, "--no-journal", "--limit", "64M", "--", sys.executable, "-c", SLEEPER.format(token=token)
    )
    stale = home / f"spikewatch-{p.pid}-1"
    target = None
    try:
        target = _launched_target(p, token)
        assert (stale / "cgroup.procs").read_text().split() == [str(target)]
        p.kill()
        p.wait(timeout=10)
        assert wait_until(lambda: _gone(target)), "the launched command outlived its SIGKILLed sampler"
        assert wait_until(lambda: not (stale / "cgroup.procs").read_text().split(), 5)
        assert stale.is_dir()  # nobody was left to remove it

        res = run_sample(endpoints, "--no-journal", "--limit", "64M", "--", "true", timeout=60)
        assert res.returncode == 0, res.stderr
        assert "removed" in res.stderr and str(stale) in res.stderr
        assert not stale.exists()
        assert not list(home.glob(f"spikewatch-{p.pid}-*"))
    finally:
        p.kill()
        p.wait()
        if target is not None:
            _kill_quietly(target)
        _remove_dirs([stale])


@pytest.mark.cgroup
@needs_cgroup
def test_sweep_spares_busy_cgroups_and_live_samplers(endpoints):
    """Named like a dead sampler's but holding a process: kept, and the process unharmed.
    Empty but its pid alive: kept. Empty and its pid dead: removed."""
    home = _home()
    dead = _dead_pid()
    busy, empty, live_one = home / f"spikewatch-{dead}-1", home / f"spikewatch-{dead}-2", None
    dirs = [busy, empty]
    resident = live = None
    try:
        for d in (busy, empty):
            os.mkdir(d)  # plain mkdir: create_limited would sweep as it goes
        resident = cgm.spawn_in(cgm.CgroupInfo(1, "", busy), ["sleep", "60"])
        assert wait_until(lambda: (busy / "cgroup.procs").read_text().split() == [str(resident.pid)], 5)
        live = subprocess.Popen(["sleep", "60"])  # stands in for a sampler still running
        live_one = home / f"spikewatch-{live.pid}-1"
        dirs.append(live_one)
        os.mkdir(live_one)

        res = run_sample(endpoints, "--no-journal", "--limit", "64M", "--", "true", timeout=60)
        assert res.returncode == 0, res.stderr
        assert not empty.exists() and str(empty) in res.stderr
        assert busy.is_dir() and str(busy) not in res.stderr
        assert live_one.is_dir() and str(live_one) not in res.stderr
        assert resident.poll() is None  # never killed, still where it was
        assert (busy / "cgroup.procs").read_text().split() == [str(resident.pid)]
    finally:
        for proc in (resident, live):
            if proc is not None:
                proc.kill()
                proc.wait()
        _remove_dirs(dirs)


def _launched_logged(journal: Path) -> bool:
    """Whether the journal on disk (flushed every ~100 ms) holds the launch's proc_start yet."""
    if not journal.exists():
        return False
    return any(e.get("launched") for e in Stream.from_journal(journal).events(protocol.EV_PROC_START))


def test_sigkilled_sampler_without_limit_takes_its_target(tmp_path, endpoints):
    """No cgroup: the launched command still ends with the sampler, and the pid the
    sampler reported is that command's."""
    token, journal = _token(), tmp_path / "orphan.journal"
    p = spawn_sample(endpoints, "--journal", str(journal), "--", sys.executable, "-c", SLEEPER.format(token=token))
    target = None
    try:
        target = _launched_target(p, token)
        assert wait_until(lambda: _launched_logged(journal), 20), "the launch's proc_start never reached the journal"
        p.kill()
        p.wait(timeout=10)
        assert wait_until(lambda: _gone(target)), "the launched command outlived its SIGKILLed sampler"
        started = Stream.from_journal(journal).events(protocol.EV_PROC_START)
        assert [e["pid"] for e in started if e.get("launched")] == [target]
    finally:
        p.kill()
        p.wait()
        if target is not None:
            _kill_quietly(target)


def test_without_setpriv_the_launch_still_works(tmp_path, endpoints):
    """No setpriv on PATH: the old shim runs, the exit status is the command's, and the log says
    what is missing."""
    res = run_sample(
        endpoints,
        "--no-journal",
        "--",
        sys.executable,
        "-c",
        "raise SystemExit(4)",
        env={**os.environ, "PATH": str(tmp_path)},
        timeout=60,
    )
    assert res.returncode == 4, res.stderr
    assert "setpriv" in res.stderr and "Traceback" not in res.stderr
