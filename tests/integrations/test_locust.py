"""``import spikewatch.locust``: a real Locust master and 2 workers against the demo service,
a real sampler and recorder; stages become phases, telemetry is counted exactly once."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from spikewatch.analysis import reader, report
from spikewatch.sampler.wire.recording import iter_records

from tests.conftest import free_port
from tests.support.sampler import spawn_sample, stop_sampler

# Only look for it: importing locust here would monkey-patch this whole test
# process with gevent (every later test then ran on gevent's hub and hung).
if importlib.util.find_spec("locust") is None:
    pytest.skip("locust is not installed (pip install 'spikewatch[locust]')", allow_module_level=True)

HERE = Path(__file__).resolve().parent
LOCUSTFILE = HERE / "locustfile_stages.py"
LOCUST = [sys.executable, "-m", "locust"]


def _wait_http(url: str, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                return json.load(r)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@pytest.fixture
def service() -> Iterator[tuple[subprocess.Popen[str], str]]:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "spikewatch.driver.demo_service",
            "--port",
            str(port),
            "--startup-peak",
            "0",
            "--hold",
            "50ms",
        ],
        stdout=subprocess.DEVNULL,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_http(f"{url}/health")
        yield proc, url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _records_until(path: Path, done, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            try:
                if done(list(iter_records(path))):
                    return
            except Exception:  # a record still being written: read again
                pass
        time.sleep(0.1)
    raise AssertionError(f"{path}: the recorder never got there")


def _csv_counts(path: Path) -> dict[str, int]:
    with path.open() as f:
        return {row["Name"]: int(row["Request Count"]) for row in csv.DictReader(f) if row["Name"] != "Aggregated"}


@pytest.mark.slow
def test_distributed_locust_stages_are_phases_and_nothing_is_double_counted(tmp_path: Path, endpoints, service) -> None:
    svc, url = service
    sampler = spawn_sample(endpoints, "--pid", str(svc.pid), "--no-journal", "--quiet", "--period", "2ms")
    rec_file = tmp_path / "rec.sw"
    recorder = subprocess.Popen(
        [sys.executable, "-m", "spikewatch", "record", endpoints["publish"], "-o", str(rec_file)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    master_port = free_port()
    procs: list[subprocess.Popen[str]] = []
    try:
        # the recorder holds samples: it is subscribed before the first marker goes out
        _records_until(rec_file, lambda recs: any(t == "samples" for t, _ in recs))
        master = subprocess.Popen(
            [
                *LOCUST,
                "-f",
                str(LOCUSTFILE),
                "--headless",
                "--master",
                "--expect-workers",
                "2",
                "--master-bind-host",
                "127.0.0.1",
                "--master-bind-port",
                str(master_port),
                "--host",
                url,
                "--csv",
                str(tmp_path / "locust"),
                "--spikewatch-inlet",
                endpoints["inlet"],
            ],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        procs.append(master)
        for _ in range(2):
            procs.append(
                subprocess.Popen(
                    [
                        *LOCUST,
                        "-f",
                        str(LOCUSTFILE),
                        "--worker",
                        "--master-host",
                        "127.0.0.1",
                        "--master-port",
                        str(master_port),
                    ],
                    cwd=tmp_path,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    text=True,
                )
            )
        out, _ = master.communicate(timeout=90)
        assert master.returncode == 0, out[-4000:]
        assert "spikewatch: markers and telemetry to" in out
        served = _wait_http(f"{url}/health")["served"]
        stop_sampler(sampler)
        _records_until(rec_file, lambda recs: any(t == "hello" and b.get("final") for t, b in recs))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        if sampler.poll() is None:
            sampler.kill()
        recorder.send_signal(signal.SIGTERM)
        recorder.communicate(timeout=30)

    locust_counts = _csv_counts(tmp_path / "locust_stats.csv")
    assert set(locust_counts) == {"ingest", "query"} and all(n > 20 for n in locust_counts.values())
    # the service's own count: Locust's, plus requests cut short when users were stopped (the
    # 12 -> 2 step and the end: at most one per user)
    assert 0 <= served - sum(locust_counts.values()) <= 12

    src = reader.load(rec_file).main
    loads = src.load_records
    assert loads and {b["workers"] for b in loads[2:]} == {2}
    summed: dict[str, int] = {}
    for b in loads:
        for name, e in b["endpoints"].items():
            summed[name] = summed.get(name, 0) + e["completed"]
    assert summed == locust_counts  # every request once: none lost, none from two senders
    assert sum(b["completed"] for b in loads) == sum(locust_counts.values())
    # an interval names only the requests it saw (none of ingest's yet in the first ones)
    ingest = [b["endpoints"]["ingest"] for b in loads if "ingest" in b["endpoints"]]
    assert max(e["in_flight"] for e in ingest) >= 2
    # the interval's mean in flight, summed over the workers: ingest holds its requests ~50 ms
    # of every ~70 ms cycle, so in the 12-user stage most of them are in flight on average
    climb = [
        b["endpoints"]["ingest"]["in_flight_mean"]
        for b in loads
        if b["phase"] == "climb" and "ingest" in b["endpoints"]
    ]
    assert 3 <= max(climb) <= 12

    rep = report.build_report(reader.load(rec_file))
    assert [(p["name"], p["kind"], p["attrs"]["users"]) for p in rep["phases"]] == [
        ("warm", "ramp", 4),
        ("climb", "ramp", 12),
        ("cool", "steady", 2),
    ]
    assert all(p["ended"] for p in rep["phases"])
    assert {e["name"]: e["completed"] for e in rep["endpoints"]} == locust_counts
    notes = [m["name"] for m in src.markers if m["kind"] == "note"]
    # markers from the master only: one start and one stop, not one per process
    assert notes.count("locust test start") == 1 and notes.count("locust test stop") == 1
    assert notes.count("locust spawning complete") == 3


@pytest.mark.slow
def test_local_locust_with_curve_keys(tmp_path: Path, endpoints, service) -> None:
    """A single-process run (no shape: one phase for the test) through a sampler that requires keys."""
    _, url = service
    keys = tmp_path / "keys"
    res = subprocess.run(
        [sys.executable, "-m", "spikewatch", "keys", str(keys)], capture_output=True, text=True, timeout=30
    )
    assert res.returncode == 0, res.stderr
    sampler = spawn_sample(
        endpoints, "--pid", str(os.getpid()), "--no-journal", "--quiet", "--keys", str(keys), "--require-keys"
    )
    locustfile = tmp_path / "plain.py"
    locustfile.write_text(
        "from locust import HttpUser, constant, task\nimport spikewatch.locust  # noqa: F401\n\n"
        "class U(HttpUser):\n    wait_time = constant(0.05)\n\n    @task\n"
        "    def q(self):\n        self.client.get('/query?key=1', name='query')\n"
    )
    sub_cmd = [
        sys.executable,
        "-m",
        "spikewatch",
        "record",
        endpoints["publish"],
        "-o",
        str(tmp_path / "r.sw"),
        "--keys",
        str(keys),
    ]
    recorder = subprocess.Popen(sub_cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _records_until(tmp_path / "r.sw", lambda recs: any(t == "samples" for t, _ in recs))
        out = subprocess.run(
            [
                *LOCUST,
                "-f",
                str(locustfile),
                "--headless",
                "-u",
                "2",
                "-r",
                "2",
                "--run-time",
                "3s",
                "--host",
                url,
                "--spikewatch-inlet",
                endpoints["inlet"],
                "--spikewatch-keys",
                str(keys),
            ],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, out.stderr[-3000:]
        _records_until(
            tmp_path / "r.sw", lambda recs: any(t == "marker" and b["name"] == "locust test stop" for t, b in recs)
        )
    finally:
        stop_sampler(sampler)
        recorder.send_signal(signal.SIGTERM)
        recorder.communicate(timeout=30)
    src = reader.load(tmp_path / "r.sw").main
    phases = [(m["kind"], m["name"], m["attrs"].get("users")) for m in src.markers if m["kind"] != "note"]
    assert phases == [("phase_start", "locust", 2), ("phase_end", "locust", None)]
    assert sum(b["endpoints"].get("query", {}).get("completed", 0) for b in src.load_records) > 10


def test_bad_keys_folder_is_one_clear_line(tmp_path: Path) -> None:
    locustfile = tmp_path / "f.py"
    locustfile.write_text(
        "from locust import HttpUser, task\nimport spikewatch.locust  # noqa: F401\n\n"
        "class U(HttpUser):\n    @task\n    def t(self):\n        pass\n"
    )
    res = subprocess.run(
        [
            *LOCUST,
            "-f",
            str(locustfile),
            "--headless",
            "-u",
            "1",
            "--run-time",
            "1s",
            "--host",
            "http://127.0.0.1:1",
            "--spikewatch-keys",
            str(tmp_path / "nokeys"),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode != 0
    assert "spikewatch: --spikewatch-keys: no keys folder" in res.stderr + res.stdout
    assert "Traceback" not in res.stderr
