"""The Rust example under spikewatch: debug against release, the build profile read
from the binary, the service's heap beside RSS. The slow lane (`make test-rust`,
~3 min here): each build runs the example's ~60 s scenario once.

Skipped, saying why, when the example is not built (`make rust-example`)."""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
import threading
import time
import urllib.request

import pytest
from spikewatch.analysis import heap, reader

from tests.conftest import ROOT, free_port

EXAMPLE = ROOT / "examples" / "rust-service"
SCENARIO = EXAMPLE / "scenario.toml"
BUILDS = {name: EXAMPLE / "target" / name / "rust-service" for name in ("debug", "release")}
HEAP = "http://127.0.0.1:{port}/metrics#app_heap_bytes"
MiB = 1 << 20

pytestmark = [
    pytest.mark.rust,
    pytest.mark.slow,
    pytest.mark.timeout(600),  # the first test waits for both ~60 s runs
    pytest.mark.skipif(
        not all(p.is_file() for p in BUILDS.values()),
        reason="the Rust example is not built: `make test-rust` builds it and runs these tests",
    ),
]


def spikewatch(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "spikewatch", *args], capture_output=True, text=True, timeout=timeout, check=False
    )


class OwnScrapes:
    """The service's heap gauge, read by the test itself every 100 ms (monotonic ns, bytes)."""

    def __init__(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}/metrics"
        self.points: list[tuple[int, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            try:
                with urllib.request.urlopen(self.url, timeout=2) as r:
                    text = r.read().decode()
            except OSError:
                continue  # not listening yet, or gone
            t = time.monotonic_ns()
            for line in text.splitlines():
                if line.startswith("app_heap_bytes "):
                    self.points.append((t, int(line.split()[1])))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def median(self, a: int, b: int) -> float | None:
        vals = [v for t, v in self.points if a <= t <= b]
        return statistics.median(vals) if vals else None


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, dict]:
    """Both builds through the scenario (one after the other: they must not share the CPU)."""
    out = {}
    for name, exe in BUILDS.items():
        d = tmp_path_factory.mktemp(name)
        port = free_port()
        own = OwnScrapes(port)
        try:
            res = spikewatch(
                "run",
                str(SCENARIO),
                "--no-console",
                "--port",
                str(port),
                "--out",
                str(d / "run"),
                "--heap-metric",
                HEAP,
                "--",
                str(exe),
            )
        finally:
            own.stop()
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
        rep = json.loads((d / "run" / "report.json").read_text())
        out[name] = {
            "report": rep,
            "stdout": res.stdout,
            "own": own,
            "t0": reader.load(d / "run" / "recording").main.t0,
        }
    return out


def phase(rep: dict, kind: str) -> dict:
    return next(p for p in rep["phases"] if p["kind"] == kind)


def test_release_and_debug_answers_from_the_binaries(runs):
    rel, dbg = runs["release"]["report"], runs["debug"]["report"]
    assert rel["checklist"]["release_build"] is True
    assert "is a release build" in rel["checklist_reasons"]["release_build"]
    assert dbg["checklist"]["release_build"] is False
    assert "overflow-check panic messages" in dbg["checklist_reasons"]["release_build"]


def test_debug_differs_from_release(runs):
    rel, dbg = runs["release"]["report"], runs["debug"]["report"]
    # Building the startup table unoptimised takes several times longer.
    assert phase(dbg, "startup")["time_to_ready_s"] > phase(rel, "startup")["time_to_ready_s"]
    for rep in (rel, dbg):
        boot = phase(rep, "startup")
        assert boot["startup_peak_bytes"] > 64 * MiB  # the 64 MiB table, seen before it was dropped
        assert phase(rep, "ramp")["bytes_per_request"] > 0


def test_heap_verdict_numbers_match_the_services_own_figure(runs):
    r = runs["release"]
    rep, own, t0 = r["report"], r["own"], r["t0"]
    h = rep["heap"]
    assert h["metric"] == "app_heap_bytes" and h["samples"] > 300
    rush = phase(rep, "burst")
    assert len(h["bursts"]) == rush["burst_count"] >= 2

    def ns(x: float) -> int:
        return t0 + round(x * 1e9)

    starts = [b["t_start"] for b in h["bursts"]] + [rush["t_end"]]
    for k, b in enumerate(h["bursts"]):
        e, nxt = ns(b["t_end"]), ns(starts[k + 1])
        tail = max((nxt - e) // 4, 1)
        mine = own.median(nxt - tail, nxt)
        assert mine is not None
        # Two readers of one gauge at slightly different moments: close, not equal.
        assert abs(b["heap_after_bytes"] - mine) <= max(2 * MiB, 0.15 * mine), (b, mine)
        assert b["verdict"] in (heap.RETENTION, heap.FINE, heap.HELD, heap.NO_RISE, heap.HEAP_ONLY)
        assert b["heap_peak_bytes"] > b["heap_baseline_bytes"] + 8 * MiB  # bursts of big bodies
    assert "heap (app_heap_bytes): peak" in r["stdout"]
    assert any(line.strip().startswith("after burst 1") for line in r["stdout"].splitlines())


@pytest.mark.parametrize("build, answer", [("release", True), ("debug", False)])
def test_a_copy_at_a_neutral_path_answers_from_evidence(tmp_path, build, answer):
    app = tmp_path / "usr" / "local" / "bin" / "app"
    app.parent.mkdir(parents=True)
    shutil.copy2(BUILDS[build], app)
    if build == "release":
        subprocess.run(["strip", str(app)], check=True)  # as container images ship it
    journal = tmp_path / "j"
    res = spikewatch(
        "sample",
        "--publish",
        f"tcp://127.0.0.1:{free_port()}",
        "--inlet",
        "off",
        "--journal",
        str(journal),
        "--duration",
        "1s",
        "--",
        str(app),
        timeout=60,
    )
    assert res.returncode in (0, 143), res.stderr  # the service ends on the duration's SIGTERM
    rep = spikewatch("report", str(journal), "--json", str(tmp_path / "r.json"), timeout=120)
    assert rep.returncode in (0, 1), rep.stderr
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["checklist"]["release_build"] is answer, r["checklist_reasons"]
    assert str(app) in r["checklist_reasons"]["release_build"]
