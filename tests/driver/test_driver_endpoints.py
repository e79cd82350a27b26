"""Memory per endpoint for real: the staggered template against the demo service's /hold."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from spikewatch.analysis import reader
from spikewatch.driver.scenario import bundled

MiB = 1 << 20


@pytest.mark.slow
def test_staggered_template_recovers_each_endpoints_bytes_per_request(tmp_path: Path) -> None:
    # /hold?bytes=4MiB and /hold?bytes=1MiB hold that much per request in flight: the
    # report must tell the two endpoints apart and give each its own cost within 20 %.
    out = tmp_path / "run"
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "spikewatch",
            "run",
            str(bundled("staggered")),
            "--out",
            str(out),
            "--no-console",
            "--period",
            "2ms",
            "--",
            sys.executable,
            "-m",
            "spikewatch.driver.demo_service",
            "--port",
            "{port}",
            "--startup-peak",
            "0",
            "--cache-size",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=150,
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    rep = json.loads((out / "report.json").read_text())
    verdict = rep["endpoint_attribution"]
    assert verdict["verdict"] == "separable", verdict
    assert verdict["phases"] == ["ramp big", "ramp small"]
    rows = {e["name"]: e for e in rep["endpoints"]}
    for name, true in (("big", 4 * MiB), ("small", 1 * MiB)):
        got = rows[name]["bytes_per_inflight"]
        assert abs(got - true) <= 0.2 * true, (name, got, true, rows[name])
    assert "memory per endpoint" in res.stdout
    assert "Memory per endpoint" in (out / "report.html").read_text()
    # each ramp sent only its own endpoint: the other's in-flight count stayed at zero
    src = reader.load(out / "recording").main
    marks = {(m["kind"], m["name"]): m["t"] for m in src.markers}
    big = [
        b["endpoints"]
        for b in src.load_records
        if marks[("phase_start", "ramp big")] + 200_000_000 < b["t"] < marks[("phase_end", "ramp big")]
    ]
    assert big and all(e["small"]["in_flight"] == 0 and e["small"]["in_flight_mean"] == 0 for e in big)
    assert max(e["big"]["in_flight"] for e in big) == 8


@pytest.mark.slow
def test_two_drivers_marking_one_sampler_make_one_set_of_phases_and_the_summed_load(tmp_path: Path, endpoints) -> None:
    """Two `spikewatch drive` processes (as on two hosts) with the same scenario, one sampler."""
    from tests.conftest import free_port
    from tests.support.sampler import spawn_sample, stop_sampler

    port = free_port()
    scenario = tmp_path / "two.toml"
    # each driver half the lanes: together the template's load, which the service keeps up with
    scenario.write_text(
        bundled("staggered")
        .read_text()
        .replace("8080", str(port))
        .replace("concurrency = [1, 8]", "concurrency = [1, 4]")
        .replace("concurrency = 8", "concurrency = 4")
    )
    svc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "spikewatch.driver.demo_service",
            "--port",
            str(port),
            "--startup-peak",
            "0",
            "--cache-size",
            "0",
        ],
        stdout=subprocess.DEVNULL,
    )
    journal = tmp_path / "j.journal"
    sampler = spawn_sample(endpoints, "--pid", str(svc.pid), "--journal", str(journal), "--period", "2ms")
    try:
        assert "journal" in sampler.stderr.readline()  # sampling has begun
        drivers = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "spikewatch",
                    "drive",
                    str(scenario),
                    "-q",
                    "--inlet",
                    endpoints["inlet"],
                    "--json",
                    str(tmp_path / f"d{i}.json"),
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            for i in range(2)
        ]
        for d in drivers:
            out, _ = d.communicate(timeout=120)
            assert d.returncode == 0, out
    finally:
        stop_sampler(sampler)
        svc.terminate()
        svc.wait(timeout=10)
    rep = json.loads(
        subprocess.run(
            [sys.executable, "-m", "spikewatch", "report", str(journal), "--json", "-"],
            capture_output=True,
            text=True,
            timeout=120,
        ).stdout
    )
    assert [p["name"] for p in rep["phases"]] == [
        "boot",
        "ramp big",
        "settle 1",
        "ramp small",
        "settle 2",
        "together",
        "rest",
    ]
    rows = {e["name"]: e for e in rep["endpoints"]}
    for name, true in (("big", 4 * MiB), ("small", 1 * MiB)):
        got = rows[name]["bytes_per_inflight"]
        assert abs(got - true) <= 0.2 * true, (name, got, true)  # interleaved, not summed: about twice
    assert max(e["in_flight_max"] for e in rows.values()) >= 7  # both drivers' 4 lanes, summed
    src = reader.load(journal).main
    sent = sum(json.loads((tmp_path / f"d{i}.json").read_text())["total"]["completed"] for i in range(2))
    assert sum(b["completed"] for b in src.load_records) == sent
