"""Phases from the real driver's markers and telemetry, on a real sampler's journal."""

import signal
import subprocess
import sys

import pytest
from spikewatch.analysis import reader, report

from tests.conftest import ROOT, free_port


@pytest.fixture(scope="module")
def demo_journal(tmp_path_factory, spikewatch_cmd):
    tmp = tmp_path_factory.mktemp("demo")
    journal = tmp / "demo.journal"
    publish, inlet, port = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}", free_port()
    sampler = subprocess.Popen(
        [
            *spikewatch_cmd,
            "sample",
            "--journal",
            str(journal),
            "--publish",
            publish,
            "--inlet",
            inlet,
            "-q",
            "--",
            sys.executable,
            "-m",
            "spikewatch.driver.demo_service",
            "--port",
            str(port),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # As `spikewatch run` does: drive once the inlet listens. A driver that finds no sampler
        # closes its inlet without linger at the end, and could drop the last phase_end marker.
        from spikewatch.procs import wait_listening

        assert wait_listening("127.0.0.1", int(inlet.rsplit(":", 1)[1]), sampler, 60), (
            f"the sampler never listened (exit {sampler.poll()})"
        )
        drive = subprocess.run(
            [
                *spikewatch_cmd,
                "drive",
                str(ROOT / "driver" / "scenarios" / "quick.toml"),
                "--inlet",
                inlet,
                "--url",
                f"http://127.0.0.1:{port}",
                "-q",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert drive.returncode == 0, drive.stdout + drive.stderr
    finally:
        sampler.send_signal(signal.SIGTERM)
        sampler.communicate(timeout=30)
    return journal


def test_every_driver_phase_is_analysed(demo_journal):
    rep = report.build_report(reader.load(demo_journal))
    phases = {p["name"]: p for p in rep["phases"]}
    assert [(p["name"], p["kind"]) for p in rep["phases"]] == [
        ("boot", "startup"),
        ("climb", "ramp"),
        ("steady", "steady"),
        ("spike", "spike"),
        ("rest", "idle"),
    ]
    assert all(p["ended"] for p in rep["phases"])
    boot = phases["boot"]
    assert boot["time_to_ready_source"] == "driver" and 0 < boot["time_to_ready_s"] < 20
    assert boot["startup_peak_bytes"] > 0 and boot["steady_bytes"] > 0
    climb = phases["climb"]
    assert len(climb["steps"]) == 2 and [s["level"] for s in climb["steps"]] == [1, 4]
    assert climb["bytes_per_request"] is not None  # in-flight telemetry lined up with memory
    spike = phases["spike"]
    assert spike["burst_count"] == 1
    # the driver's burst: 300 ms from 300 ms into the phase (from telemetry or its schedule)
    b = spike["bursts"][0]
    assert b["t_start"] - spike["t_start"] == pytest.approx(0.3, abs=0.25)
    assert rep["checklist"]["burst_tested"] is True
    assert rep["checklist"]["startup_captured"] is True
    for p in rep["phases"]:
        assert p["duration_s"] > 0 and p["peak_bytes"] > 10 * 2**20
