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
        [sys.executable, "-m", "spikewatch", "run", str(bundled("staggered")), "--out", str(out), "--no-console",
         "--period", "2ms", "--", sys.executable, "-m", "spikewatch.driver.demo_service", "--port", "{port}",
         "--startup-peak", "0", "--cache-size", "0"],
        capture_output=True, text=True, timeout=150)
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
    big = [b["endpoints"] for b in src.load_records
           if marks[("phase_start", "ramp big")] + 200_000_000 < b["t"] < marks[("phase_end", "ramp big")]]
    assert big and all(e["small"]["in_flight"] == 0 and e["small"]["in_flight_mean"] == 0 for e in big)
    assert max(e["big"]["in_flight"] for e in big) == 8
