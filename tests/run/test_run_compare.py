"""compare on real runs: the demo service under `spikewatch run`, with a known per-request difference.

Each run is ~7 s: a fast boot, a closed-model ramp 2 → 7 → 12 requests in flight
in 1 s steps, a short rest. The service holds ``--request-memory`` per request for
``--hold 1s``, so memory per in-flight request differs between the runs by
exactly the difference of the two sizes.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from spikewatch.analysis import compare_align
from spikewatch.analysis.compare import BEYOND, load_run
from spikewatch.analysis.reader import load

MiB = 1 << 20

SCENARIO = """\
seed = 7
[target]
url = "http://127.0.0.1:9"
ready = "/health"

[[requests]]
name = "ingest"
method = "POST"
path = "/ingest"
body = { size = "fixed", value = "1KiB", content = "json" }

[[phases]]
name = "boot"
kind = "startup"
timeout = "20s"

[[phases]]
name = "climb"
kind = "ramp"
concurrency = [2, 12]
steps = 3
duration = "3s"

[[phases]]
name = "rest"
kind = "idle"
duration = "300ms"
"""


def _start(tmp: Path, name: str, request_memory: str) -> tuple[Path, subprocess.Popen[str]]:
    out = tmp / name
    scenario = tmp / "scenario.toml"
    scenario.write_text(SCENARIO)
    cmd = [
        sys.executable,
        "-m",
        "spikewatch",
        "run",
        str(scenario),
        "--no-console",
        "--limit",
        "256M",
        "--out",
        str(out),
        "--",
        sys.executable,
        "-m",
        "spikewatch.driver.demo_service",
        "--port",
        "{port}",
        "--startup-peak",
        "8M",
        "--startup-time",
        "0",
        "--hold",
        "1s",
        "--request-memory",
        request_memory,
    ]
    return out, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(started: tuple[Path, subprocess.Popen[str]]) -> Path:
    out, p = started
    try:
        stdout, stderr = p.communicate(timeout=120)
    finally:
        p.kill()
    assert p.returncode == 0, stdout[-3000:] + stderr[-2000:]
    return out


def _compare(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "spikewatch", "compare", *args], capture_output=True, text=True, timeout=120
    )


@pytest.fixture(scope="module")
def three_runs(tmp_path_factory):
    """base and again: the same service twice; new: 3 MiB more per request. The three run at
    once (each is mostly waiting on its 1 s holds, each in its own cgroup), in the time of one."""
    tmp = tmp_path_factory.mktemp("real")
    started = [_start(tmp, "base", "1MiB"), _start(tmp, "new", "4MiB"), _start(tmp, "again", "1MiB")]
    return tuple(_finish(s) for s in started)


@pytest.fixture(scope="module")
def two_runs(three_runs):
    return three_runs[:2]


def test_real_runs_show_the_known_per_request_difference_beyond_noise(two_runs):
    base, new = two_runs
    res = _compare(str(base), str(new), "--json", "-")
    assert res.returncode == 0, res.stderr
    rows = {r["metric"]: r for r in json.loads(res.stdout)["comparisons"][0]["rows"]}
    row = rows["bytes_per_request"]
    assert row["change"] == pytest.approx(3 * MiB, rel=0.05), row
    assert row["verdict"] == BEYOND and row["direction"] == "worse"
    # the gates: the change is ~+250 %; +100 % is crossed, +1000 % is not
    res = _compare(str(base / "report.json"), str(new / "report.json"), "-q", "--fail-on", "bytes_per_request>+100%")
    assert res.returncode == 1 and "bytes_per_request went from" in res.stderr
    res = _compare(str(base / "report.json"), str(new / "report.json"), "-q", "--fail-on", "bytes_per_request>+1000%")
    assert res.returncode == 0, res.stderr


def test_real_runs_overlay_on_phase_starts(two_runs, tmp_path):
    base, new = two_runs
    runs = [load_run(d / "report.json") for d in two_runs]
    ov = compare_align.align([(r.label, load(r.recording).source(r.report["source"]), r.report) for r in runs])
    assert len(ov.traces) == 2
    for key in ("boot", "climb", "rest"):
        seg = ov.segment(key)
        for tr in ov.traces:
            inside = tr.x[(tr.x >= seg.x0 - 1e-9) & (tr.x < seg.x0 + seg.width)]
            assert inside.min() == pytest.approx(seg.x0, abs=0.01)
    res = _compare(str(base), str(new), "--html", str(tmp_path / "c.html"), "-q")
    assert res.returncode == 0 and "phase climb (ramp)" in (tmp_path / "c.html").read_text()


@pytest.mark.slow
def test_real_runs_of_the_same_service_are_within_noise(three_runs):
    base, _, again = three_runs
    res = _compare(str(base), str(again), "--json", "-")
    data = json.loads(res.stdout)["comparisons"][0]
    assert data["beyond_noise"] == [], data["beyond_noise"]


def test_run_refuses_relative_gates_and_demo_checks_its_size(tmp_path):
    from click.testing import CliRunner

    from spikewatch.cli import main

    (tmp_path / "s.toml").write_text(SCENARIO)
    r = CliRunner().invoke(main, ["run", str(tmp_path / "s.toml"), "--fail-on", "peak>+10%", "--", "true"])
    assert r.exit_code == 2 and "spikewatch compare" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(main, ["demo", "--compare", "--request-memory", "lots", "--out", str(tmp_path / "d")])
    assert r.exit_code == 2 and "--request-memory" in r.output


@pytest.mark.slow
def test_demo_compare_finds_the_difference_it_made(tmp_path):
    out = tmp_path / "demo"
    res = subprocess.run(
        [sys.executable, "-m", "spikewatch", "demo", "--compare", "--quick", "--no-console", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    data = json.loads((out / "compare.json").read_text())
    row = next(r for r in data["comparisons"][0]["rows"] if r["metric"] == "bytes_per_request")
    # The known 2 MiB must lie within what the tool itself states as its uncertainty
    # (the two runs' 95 % half-widths combined, the rule behind the verdict): a busy host
    # widens the intervals rather than moving the truth out of them.
    half = sum((ci[1] - ci[0]) / 2 for ci in (row["base_ci"], row["new_ci"]))
    assert abs(row["change"] - 2 * MiB) <= half, (row["change"] / MiB, half / MiB)
    assert row["verdict"] == BEYOND
    assert (out / "compare.md").read_text().startswith("## spikewatch compare")
    assert "known difference 2.0 MiB per in-flight request" in res.stdout
