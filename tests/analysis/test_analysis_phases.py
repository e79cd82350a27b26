import numpy as np
import pytest
from spikewatch.analysis import reader, report, terminal
from spikewatch.analysis.synth import MiB, Synth
from spikewatch.sampler.wire import protocol

from . import scenarios


def phase(rep, name):
    return next(p for p in rep["phases"] if p["name"] == name)


def test_soak_leak_slope_and_projection(tmp_path):
    scenarios.leak(tmp_path / "leak.rec", mib_per_hour=30.0, limit=1024 * MiB)
    rep = report.build_report(reader.load(tmp_path / "leak.rec"))
    g = phase(rep, "long")["growth"]
    assert g["mib_per_hour"] == pytest.approx(30.0, rel=0.1)
    lo, hi = g["ci_mib_per_hour"]
    assert lo <= 30.0 <= hi and hi - lo < 10
    assert g["stabilized"] is False
    assert rep["checklist"]["stabilized"] is False
    # from ~211 MiB (cg_usage) growing 30 MiB/h to 1024 MiB: ~27 h
    assert g["time_to_limit_h"] == pytest.approx((1024 - 211) / 30, rel=0.05)
    assert rep["growth"]["basis"] == "soak phase"


def test_flat_soak_is_stable(tmp_path):
    scenarios.leak(tmp_path / "flat.rec", mib_per_hour=0.0)
    rep = report.build_report(reader.load(tmp_path / "flat.rec"))
    g = phase(rep, "long")["growth"]
    assert abs(g["mib_per_hour"]) < 1.0
    assert g["stabilized"] is True and rep["checklist"]["stabilized"] is True
    assert g["trend"] == "flat"
    assert g["time_to_limit_h"] is None


def test_falling_soak_is_no_leak_but_not_called_flat(tmp_path):
    scenarios.leak(tmp_path / "fall.rec", mib_per_hour=-600.0)
    rep = report.build_report(reader.load(tmp_path / "fall.rec"))
    g = phase(rep, "long")["growth"]
    assert g["mib_per_hour"] < -100
    assert g["stabilized"] is True and g["trend"] == "falling"
    assert "falling" in terminal.phase_notes(phase(rep, "long"))


def test_ramp_bytes_per_request(tmp_path):
    scenarios.ramp(tmp_path / "ramp.rec", per_request=256 * 1024, base=50 * MiB)
    rep = report.build_report(reader.load(tmp_path / "ramp.rec"), target_concurrency=200)
    p = phase(rep, "climb")
    assert p["bytes_per_request"] == pytest.approx(256 * 1024, rel=0.03)
    assert p["r2"] > 0.95
    assert p["base_bytes"] == pytest.approx(50 * MiB, rel=0.03)
    assert len(p["steps"]) == 8 and p["plateaus"] == 8
    assert [s["level"] for s in p["steps"]] == [1, 10, 19, 28, 37, 46, 55, 64]
    assert p["extrapolation"]["concurrency"] == 200
    assert p["extrapolation"]["bytes"] == pytest.approx(50 * MiB + 200 * 256 * 1024, rel=0.03)
    # the recommendation takes the extrapolation into account when a target is given
    assert rep["recommended_limit_bytes"] >= 1.25 * (50 * MiB + 200 * 256 * 1024)


@pytest.mark.parametrize("telemetry", [True, False])
def test_burst_peak_recovery_and_retention(tmp_path, telemetry):
    scenarios.bursts(tmp_path / "b.rec", tau_s=0.5, retained=8 * MiB, telemetry=telemetry)
    rep = report.build_report(reader.load(tmp_path / "b.rec"))
    p = phase(rep, "rush")
    assert p["burst_count"] == 4
    assert p["burst_basis"].startswith("load telemetry" if telemetry else "scenario schedule")
    for b in p["bursts"]:
        assert b["baseline_bytes"] == pytest.approx(100 * MiB, rel=0.1)  # first burst: flat; later ones: retained 8 MiB
        assert b["peak_bytes"] == pytest.approx(200 * MiB, rel=0.01)
        # 90 % recovered when 92 MiB * exp(-t/tau) falls to 10 MiB above baseline: tau*ln(9.2) ~ 1.1 s after the end
        assert 0.8 < b["recovery_s"] < 2.2
        # memory settles 8 MiB above where the first burst started, and stays there
        assert b["above_first_baseline_bytes"] == pytest.approx(8 * MiB, abs=1 * MiB)
    assert p["bursts"][0]["retained_bytes"] == pytest.approx(8 * MiB, abs=1 * MiB)
    assert p["bursts"][1]["retained_bytes"] == pytest.approx(0, abs=1 * MiB)
    assert p["retained_bytes"] == pytest.approx(8 * MiB, abs=1 * MiB)
    assert rep["checklist"]["burst_tested"] is True


def test_startup_phase(tmp_path):
    scenarios.startup(tmp_path / "s.rec")
    rep = report.build_report(reader.load(tmp_path / "s.rec"))
    p = phase(rep, "boot")
    assert p["startup_peak_bytes"] == pytest.approx(300 * MiB, rel=0.01)
    assert p["steady_bytes"] == pytest.approx(120 * MiB, rel=0.01)
    assert p["time_to_ready_s"] == 2.95 and p["time_to_ready_source"] == "driver"
    assert p["exec_to_ready_s"] == pytest.approx(3.0002, abs=1e-3)
    assert rep["checklist"]["startup_captured"] is True
    assert rep["checklist"]["release_build"] is True
    assert rep["checklist"]["burst_tested"] is False


def test_phase_without_end_marker_runs_to_the_next(tmp_path):
    s = Synth()
    t = s.times(10)
    s.samples(t, rss=np.full(len(t), MiB))
    s.marker(int(t[0]), protocol.PHASE_START, "a", {"kind": "steady"})
    s.marker(int(t[5000]), protocol.PHASE_START, "b", {})
    s.write(tmp_path / "p.rec")
    rep = report.build_report(reader.load(tmp_path / "p.rec"))
    assert [(p["name"], p["kind"], p["t_end"], p["ended"]) for p in rep["phases"]] == [
        ("a", "steady", 5.0, False),
        ("b", "unknown", 9.999, False),
    ]
