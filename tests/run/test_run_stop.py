"""Stopping ``spikewatch run`` / ``demo`` (issue 19): Ctrl-C or SIGTERM ends the run at once
(driver and sampler side by side, a report given until 0.8 s after the stop), with the
recording whole, the driver's last phase_end in it, and no half-written output; --quiet
prints nothing but errors and the verdict line. The timing figures are bench/bench_stop.py's
(docs/reliability.md): these tests assert what the stop keeps and says, not how long it took."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from spikewatch.sampler.wire import protocol
from spikewatch.sampler.wire.recording import iter_records

from tests.analysis import scenarios
from tests.support.waiting import wait_until

from .helpers import alive, tree

SW = [sys.executable, "-m", "spikewatch"]


def _loaded(rec: Path) -> bool:
    return rec.exists() and any(t == protocol.LOAD and b.get("completed") for t, b in iter_records(rec))


def test_sigint_to_a_quiet_demo_keeps_a_whole_recording_and_says_only_the_verdict(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [*SW, "demo", "--quick", "--quiet", "--no-console", "--limit", "off", "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert wait_until(lambda: _loaded(out / "recording"), 60, 0.2), "no load reached the recording"
        family = tree(proc.pid)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 130, (stdout, stderr[-2000:])
    assert stdout.splitlines() == ["exit status 130: interrupted"], stdout
    assert "Traceback" not in stderr
    # the driver was told first: its closing marker reached the sampler before the service went
    ends = [b for t, b in iter_records(out / "recording") if t == protocol.MARKER and b.get("kind") == "phase_end"]
    assert ends and ends[-1].get("attrs", {}).get("interrupted") is True, ends[-1:]
    # the report is whole, or not there and the error says how to make it; never half
    for name in ("report.json", "report.html"):
        p = out / name
        assert (p.exists() and p.stat().st_size > 0) or f"spikewatch report {out / 'recording'}" in stderr, name
    assert not [p.name for p in out.iterdir() if p.name.endswith(".part") or p.stat().st_size == 0]
    time.sleep(0.2)  # reaped children vanish from /proc a moment after their parent exits
    assert not alive(family[1:]), "processes outlived the run"


def test_a_report_that_misses_the_stop_deadline_says_how_to_make_it(tmp_path: Path) -> None:
    from spikewatch.runner import _report
    from spikewatch.session import Plan

    out = tmp_path / "out"
    out.mkdir()
    scenarios.spiky(out / "recording")
    plan = Plan(
        scenario=tmp_path / "s.toml",
        command=["true"],
        url="http://127.0.0.1:9",
        port=9,
        out_dir=out,
        publish="",
        inlet="",
    )
    src, report, problem = _report(plan, by=time.monotonic())  # the second after the stop is already over
    assert problem is not None and "did not fit" in problem, problem
    assert f"spikewatch report {out / 'recording'}" in problem and "--html" in problem
    if report is None:
        assert "--json" in problem
    src, report, problem = _report(plan, by=time.monotonic() + 60)
    assert problem is None and report is not None and (out / "report.html").stat().st_size > 0


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_while_the_run_is_starting_is_an_interrupt_not_a_silent_death(tmp_path: Path, sig: int) -> None:
    from .helpers import SMALL_SCENARIO, demo_service, write

    scenario = write(tmp_path, "small.toml", SMALL_SCENARIO)
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [*SW, "run", str(scenario), "--no-console", "--out", str(out), "--", *demo_service()],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # the plan is printed: the sampler is starting, the driver not yet
            if line.lstrip().startswith("output"):
                break
        proc.send_signal(sig)
        output = proc.communicate(timeout=30)[0]
    finally:
        proc.kill()
    assert proc.returncode == 130, output[-2000:]
    assert "Traceback" not in output and "KeyboardInterrupt" not in output, output[-2000:]
    assert "interrupted before the load started" in output or "exit status 130: interrupted" in output


def test_a_service_that_cannot_start_is_one_line_and_an_out_file_is_bad_usage(tmp_path: Path) -> None:
    from .helpers import SMALL_SCENARIO, write

    scenario = write(tmp_path, "small.toml", SMALL_SCENARIO)
    res = subprocess.run(
        [*SW, "run", str(scenario), "-o", str(tmp_path / "d"), "--", "no-such-binary-xyz"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    errors = [line for line in res.stderr.splitlines() if line.startswith("Error:")]
    assert res.returncode == 3 and len(errors) == 1, res.stderr
    assert "the sampler did not start: command not found" in errors[0] and "no-such-binary-xyz" in errors[0]
    (tmp_path / "afile").write_text("mine")
    res = subprocess.run(
        [*SW, "run", str(scenario), "-o", str(tmp_path / "afile"), "--", "true"], capture_output=True, text=True
    )
    assert res.returncode == 2 and "is a file; give a folder" in res.stderr, res.stderr
    assert (tmp_path / "afile").read_text() == "mine"
