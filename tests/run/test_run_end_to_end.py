"""``spikewatch run`` end to end: real sampler, real service in a real memory cgroup,
real driver, then the report; cleanup after Ctrl-C and after an OOM kill."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from click.testing import CliRunner
from spikewatch.sampler.wire import protocol
from spikewatch.sampler.wire.recording import iter_records

from spikewatch.cli import main
from tests.support.cgroups import needs_cgroup

from .helpers import GROWER, LONG_SCENARIO, SMALL_SCENARIO, alive, demo_service, leftover_cgroups, tree, write

MiB = 1 << 20


class Watched:
    """``spikewatch run`` as a child, with every process it ever had under it remembered."""

    def __init__(self, args: list[str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "spikewatch", "run", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.seen: dict[int, psutil.Process] = {}
        self.cmd: dict[int, str] = {}
        self.output = ""

    def look(self) -> None:
        for p in tree(self.proc.pid)[1:]:
            self.seen.setdefault(p.pid, p)
            # Re-read every time: a child seen between fork and exec still shows its
            # parent's command line (CI once caught the sampler that way).
            # A zombie's command line reads empty: keep the last one it had
            # (a driver that just ended was once only ever seen that way).
            try:
                argv = p.cmdline()
            except psutil.Error:
                argv = []
            if argv:
                self.cmd[p.pid] = " ".join(argv)
            else:
                self.cmd.setdefault(p.pid, "?")

    def cmdlines(self) -> list[str]:
        return list(self.cmd.values())

    def wait(self, timeout: float, *others: Watched) -> int:
        """Wait for this run (watching ``others`` too, which run at the same time)."""
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            for w in (self, *others):
                if w.proc.poll() is None:
                    w.look()
            time.sleep(0.05)
        if self.proc.poll() is None:
            self.proc.kill()
            self.output = self.proc.communicate()[0]
            pytest.fail(f"spikewatch run did not end within {timeout} s:\n{self.output[-3000:]}")
        self.output = self.proc.communicate()[0]
        return self.proc.returncode

    def assert_clean(self) -> None:
        time.sleep(0.2)
        assert not alive(list(self.seen.values())), f"left running: {alive(list(self.seen.values()))}"
        assert not leftover_cgroups(list(self.seen)), f"left cgroups: {leftover_cgroups(list(self.seen))}"


def _report(out: Path) -> dict:
    return json.loads((out / "report.json").read_text())


@pytest.fixture(scope="module")
def small_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Watched, Path, int]]:
    """The small scenario twice at once, each with its own service and cgroup: as it is, and
    with gates it must fail (one run's time for both)."""
    from tests.support.cgroups import require_memory_cgroup

    require_memory_cgroup()
    tmp = tmp_path_factory.mktemp("small")
    scenario = write(tmp, "small.toml", SMALL_SCENARIO)
    gates = ["--fail-on", "peak>1MiB", "--fail-on", "oom>0"]
    runs = {}
    for name, extra in (("plain", []), ("gated", gates)):
        out = tmp / name
        runs[name] = (
            Watched([str(scenario), "--limit", "256M", "--out", str(out), *extra, "--", *demo_service()]),
            out,
        )
    plain, gated = runs["plain"][0], runs["gated"][0]
    codes = {"plain": plain.wait(90, gated), "gated": gated.wait(90, plain)}
    return {name: (w, out, codes[name]) for name, (w, out) in runs.items()}


@needs_cgroup
def test_run_writes_recording_and_reports_with_phases(small_runs) -> None:
    run, out, rc = small_runs["plain"]
    assert rc == 0, run.output[-3000:]
    for name in ("recording", "report.json", "report.html"):
        assert (out / name).stat().st_size > 0, name
    rep = _report(out)
    assert [p["name"] for p in rep["phases"]] == ["boot", "climb", "rush", "rest"]
    assert [p["kind"] for p in rep["phases"]] == ["startup", "ramp", "burst", "idle"]
    assert rep["limit_bytes"] == 256 * MiB
    assert rep["samples"]["count"] > 1000
    assert rep["checklist"]["startup_captured"] is True
    assert rep["run"]["exit_status"] == 0 and rep["run"]["service_died"] is False
    assert rep["run"]["thresholds"] == []
    html = (out / "report.html").read_text()
    assert "rush" in html and "<script" in html
    assert "true peak" in run.output and "exit status 0: passed" in run.output
    assert any(" sample " in c for c in run.cmdlines()) and any(" drive " in c for c in run.cmdlines())
    run.assert_clean()


@needs_cgroup
def test_run_fail_on_exits_1_and_still_writes_the_report(small_runs) -> None:
    run, out, rc = small_runs["gated"]
    assert rc == 1, run.output[-3000:]
    assert "FAIL --fail-on peak>1MiB" in run.output
    assert "oom>0" not in run.output.split("FAIL --fail-on peak>1MiB")[1].split("exit status")[0]
    rep = _report(out)
    assert rep["run"]["exit_status"] == 1
    assert any("peak>1MiB" in f for f in rep["run"]["failures"])
    assert (out / "report.html").exists()
    run.assert_clean()


@needs_cgroup
def test_sigint_mid_run_stops_everything_and_reports(tmp_path: Path) -> None:
    scenario = write(tmp_path, "long.toml", LONG_SCENARIO)
    out = tmp_path / "out"
    run = Watched([str(scenario), "--limit", "256M", "--out", str(out), "--", *demo_service()])
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline and run.proc.poll() is None:
        run.look()
        if (
            (out / "sampler.log").exists()
            and "demo service ready" in (out / "sampler.log").read_text()
            and len(run.seen) >= 3
        ):
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"the service never became ready: {run.proc.poll()}")

    # Into the steady phase: its start marker is on the recording (the driver may still be
    # starting its Python when the service is ready, so no fixed delay is enough).
    def steady_started() -> bool:
        rec = out / "recording"
        return rec.exists() and any(
            t == protocol.MARKER and b["kind"] == protocol.PHASE_START and b["name"] == "long"
            for t, b in iter_records(rec)
        )

    deadline = time.monotonic() + 40
    while time.monotonic() < deadline and run.proc.poll() is None and not steady_started():
        run.look()
        time.sleep(0.1)
    run.look()
    assert len(run.seen) >= 3, run.cmdlines()  # sampler, service, driver
    run.proc.send_signal(signal.SIGINT)
    rc = run.wait(40)
    assert rc == 130, run.output[-3000:]
    if (out / "report.json").exists():
        rep = _report(out)
        assert rep["run"]["interrupted"] is True
    else:  # the report missed the second a stop may take (a loaded host): said, and makeable
        assert f"spikewatch report {out / 'recording'}" in run.output, run.output[-3000:]
        from spikewatch.analysis.reader import load
        from spikewatch.analysis.report import build_report

        rep = build_report(load(out / "recording"))
    assert [p["name"] for p in rep["phases"]] == ["boot", "long"]
    assert "exit status 130: interrupted" in run.output
    run.assert_clean()


@needs_cgroup
def test_service_oom_killed_mid_run_is_a_result(tmp_path: Path) -> None:
    scenario = write(tmp_path, "long.toml", LONG_SCENARIO)
    service = write(tmp_path, "grower.py", GROWER)
    out = tmp_path / "out"
    t0 = time.monotonic()
    run = Watched([str(scenario), "--limit", "64M", "--out", str(out), "--", sys.executable, str(service)])
    rc = run.wait(60)
    took = time.monotonic() - t0
    assert rc == 1, run.output[-3000:]
    assert took < 40, "the driver should stop early when the service dies"
    assert "service OOM-killed at" in run.output and "(limit 64.0 MiB" in run.output, run.output[-2000:]
    assert "Traceback" not in run.output
    rep = _report(out)
    assert len(rep["oom_kills"]) == 1
    assert rep["run"]["service_died"] is True and rep["run"]["exit_status"] == 1
    assert rep["run"]["service"].startswith("OOM-killed at")
    assert (out / "report.html").exists()
    run.assert_clean()


def test_run_needs_a_command_and_a_valid_scenario(tmp_path: Path) -> None:
    scenario = write(tmp_path, "small.toml", SMALL_SCENARIO)
    r = CliRunner().invoke(main, ["run", str(scenario)])
    assert r.exit_code == 2 and "say which service to launch after --" in r.output
    bad = write(tmp_path, "bad.toml", "[target]\nurl = 'ftp://x'\n")
    r = CliRunner().invoke(main, ["run", str(bad), "--", "true"])
    assert r.exit_code == 2 and "target.url" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(main, ["run", str(scenario), "--fail-on", "peak>>3", "--", "true"])
    assert r.exit_code == 2 and "--fail-on" in r.output
    r = CliRunner().invoke(main, ["run", str(scenario), "--limit", "lots", "--", "true"])
    assert r.exit_code == 2 and "--limit" in r.output
    assert not list(tmp_path.glob("spikewatch-runs"))  # nothing started, nothing written


def test_a_command_that_cannot_start_is_reported_not_run(tmp_path: Path) -> None:
    scenario = write(tmp_path, "small.toml", SMALL_SCENARIO)
    out = tmp_path / "out"
    r = subprocess.run(
        [sys.executable, "-m", "spikewatch", "run", str(scenario), "--out", str(out), "--", "/nonexistent/service"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 3, r.stdout + r.stderr
    assert "command not found" in r.stderr and "Traceback" not in r.stderr


def _unshare_works() -> str | None:
    from spikewatch.sampler import cgroup as cgm

    hier = cgm.memory_hierarchy()
    if hier is None:
        return "no memory cgroup controller"
    r = subprocess.run(["unshare", "-m", "sh", "-c", f"mount -o remount,bind,ro {hier[1]}"], capture_output=True)
    return None if r.returncode == 0 else f"cannot make a private read-only cgroup mount: {r.stderr.decode()[:200]}"


def test_without_a_usable_cgroup_it_runs_without_a_limit_and_says_why(tmp_path: Path) -> None:
    from spikewatch.sampler import cgroup as cgm

    reason = _unshare_works()
    if reason is not None:
        pytest.skip(reason)
    scenario = write(tmp_path, "small.toml", SMALL_SCENARIO)
    out = tmp_path / "out"
    mount = cgm.memory_hierarchy()[1]  # type: ignore[index]
    inner = " ".join(
        [
            "exec",
            sys.executable,
            "-m",
            "spikewatch",
            "run",
            str(scenario),
            "--limit",
            "64M",
            "--out",
            str(out),
            "--",
            *[f"'{a}'" for a in demo_service()],
        ]
    )
    # A private mount namespace where the memory hierarchy is read-only: like a container
    # without cgroup delegation, for this process tree only.
    r = subprocess.run(
        ["unshare", "-m", "sh", "-c", f"mount -o remount,bind,ro {mount} && {inner}"],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert "running WITHOUT a memory limit, because" in r.stdout and "read-only" in r.stdout
    assert "NOTE: ran WITHOUT a memory limit" in r.stdout
    rep = _report(out)
    assert rep["limit_bytes"] is None and rep["run"]["limit"] is None
    assert "read-only" in rep["run"]["no_limit_reason"]
    assert rep["checklist"]["limited"] is False


@needs_cgroup
def test_demo_quick_runs_the_bundled_service_and_scenario(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    r = subprocess.run(
        [sys.executable, "-m", "spikewatch", "demo", "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    rep = _report(out)
    assert [p["kind"] for p in rep["phases"]][0] == "startup"
    assert rep["limit_bytes"] == 256 * MiB
    assert rep["checklist"]["startup_captured"] is True and rep["checklist"]["burst_tested"] is True
    assert rep["spikes"], "the demo service's startup peak is a spike"
    assert "spikewatch.driver.demo_service" in " ".join(rep["run"]["command"])
    assert (out / "report.html").exists()


def test_a_sampler_killed_mid_run_leaves_no_service_behind(tmp_path: Path) -> None:
    scenario = write(tmp_path, "long.toml", LONG_SCENARIO)
    out = tmp_path / "out"
    run = Watched([str(scenario), "--out", str(out), "--", *demo_service()])
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline and run.proc.poll() is None:
        run.look()
        if (out / "sampler.log").exists() and "demo service ready" in (out / "sampler.log").read_text():
            break
        time.sleep(0.1)
    time.sleep(1.0)
    run.look()
    # Read now, among run's own children: a child the sampler forks for a moment (its
    # `setpriv --help` probe), seen between fork and exec, kept the sampler's command
    # line in run.cmd after it was gone.
    samplers = []
    for child in psutil.Process(run.proc.pid).children():
        try:
            if " sample " in " ".join(child.cmdline()):
                samplers.append(child.pid)
        except psutil.NoSuchProcess:
            pass
    assert len(samplers) == 1, run.cmdlines()
    psutil.Process(samplers[0]).kill()  # no chance to stop its service
    rc = run.wait(60)
    assert rc == 1, run.output[-3000:]
    assert "the sampler ended early" in run.output
    run.assert_clean()  # the demo service was the sampler's child: gone too


NEVER_READY = """\
[target]
url = "http://127.0.0.1:9"
ready = "/health"

[[phases]]
name = "boot"
kind = "startup"
timeout = "2s"

[[phases]]
name = "after"
kind = "steady"
rate = 5
duration = "2s"
"""


def test_a_service_that_never_gets_ready_is_not_evaluated(tmp_path: Path) -> None:
    scenario = write(tmp_path, "never.toml", NEVER_READY)
    out = tmp_path / "out"
    # http.server answers 404 for /health: up, but never ready.
    run = Watched(
        [str(scenario), "--out", str(out), "--", sys.executable, "-m", "http.server", "{port}", "--bind", "127.0.0.1"]
    )
    rc = run.wait(60)
    assert rc == 3, run.output[-3000:]
    assert "the driver gave up" in run.output and "did not answer 2xx within 2s" in run.output
    assert _report(out)["run"]["exit_status"] == 3
    run.assert_clean()
