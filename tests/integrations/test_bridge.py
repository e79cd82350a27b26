"""``spikewatch bridge``: HTTP markers reach a real sampler and land in the report."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from spikewatch.analysis import reader, report
from spikewatch.sampler.wire.recording import iter_records

from tests.conftest import free_port
from tests.support.sampler import spawn_sample, stop_sampler


class Bridge:
    def __init__(self, *args: str) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "spikewatch", "bridge", "--http", f"127.0.0.1:{self.port}", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        line = self.proc.stderr.readline()  # type: ignore[union-attr]
        assert line.startswith("bridge listening on"), line + self.proc.stderr.read()  # type: ignore[union-attr]
        self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)

    def request(self, method: str, path: str, body: Any = None, raw: bytes | None = None) -> tuple[int, dict]:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        self.conn.request(method, path, body=data, headers={"Content-Type": "application/json"})
        r = self.conn.getresponse()
        return r.status, json.loads(r.read())

    def stop(self) -> tuple[int, str]:
        self.conn.close()
        self.proc.send_signal(signal.SIGTERM)
        _, err = self.proc.communicate(timeout=10)
        return self.proc.returncode, err


@pytest.fixture
def bridge(endpoints) -> Iterator[Bridge]:
    b = Bridge("--inlet", endpoints["inlet"])
    yield b
    if b.proc.poll() is None:
        b.proc.kill()
        b.proc.wait()


def _wait_records(path: Path, done, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and done(list(iter_records(path))):
            return
        time.sleep(0.1)
    raise AssertionError(f"{path}: never got there")


def test_markers_posted_to_the_bridge_appear_in_the_report(tmp_path: Path, endpoints, bridge: Bridge) -> None:
    sampler = spawn_sample(endpoints, "--pid", str(os.getpid()), "--no-journal", "--quiet", "--period", "5ms")
    out = tmp_path / "rec.sw"
    recorder = subprocess.Popen(
        [sys.executable, "-m", "spikewatch", "record", endpoints["publish"], "-o", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_records(out, lambda recs: any(t == "samples" for t, _ in recs))
        assert bridge.request(
            "POST", "/mark", {"kind": "phase_start", "name": "k6 ramp", "attributes": {"kind": "ramp", "vus": 20}}
        ) == (202, {"ok": True, "sent": "marker"})
        status, _ = bridge.request(
            "POST",
            "/load",
            {
                "interval_ns": 1_000_000_000,
                "rate": 50.0,
                "in_flight": 3,
                "endpoints": {"search": {"in_flight": 3, "completed": 50}},
            },
        )
        assert status == 202
        time.sleep(0.3)
        assert bridge.request("POST", "/mark", {"kind": "phase_end", "name": "k6 ramp"})[0] == 202
        assert bridge.request("POST", "/mark", {"name": "cache warmed"})[0] == 202  # kind defaults to note
        _wait_records(out, lambda recs: any(t == "marker" and b["name"] == "cache warmed" for t, b in recs))
        health = bridge.request("GET", "/health")
        assert health[0] == 200 and health[1]["sent"] == 4 and health[1]["dropped"] == 0
    finally:
        stop_sampler(sampler)
        _wait_records(out, lambda recs: any(t == "hello" and b.get("final") for t, b in recs))
        recorder.send_signal(signal.SIGTERM)
        recorder.communicate(timeout=30)
    rep = report.build_report(reader.load(out))
    ph = [(p["name"], p["kind"], p["attrs"].get("vus"), p["ended"]) for p in rep["phases"]]
    assert ph == [("k6 ramp", "ramp", 20, True)]
    assert [(m["kind"], m["name"]) for m in rep["markers"]][-1] == ("note", "cache warmed")
    assert [e["name"] for e in rep["endpoints"]] == ["search"] and rep["endpoints"][0]["completed"] == 50
    code, err = bridge.stop()
    assert code == 0 and "4 message(s) forwarded" in err


def test_bad_requests_get_clear_json_errors(bridge: Bridge) -> None:
    status, doc = bridge.request("POST", "/mark", raw=b"{not json")
    assert status == 400 and doc["error"].startswith("body is not JSON")
    status, doc = bridge.request("POST", "/mark", raw=b"[1, 2]")
    assert status == 400 and "JSON object" in doc["error"]
    status, doc = bridge.request("POST", "/mark", {"kind": "phase_start"})
    assert status == 422 and "name" in doc["error"]
    status, doc = bridge.request("POST", "/mark", {"kind": "begin", "name": "x"})
    assert status == 422 and "phase_start" in doc["error"]
    status, doc = bridge.request("POST", "/mark", {"name": "x", "colour": "red"})
    assert status == 422 and "colour" in doc["error"]
    status, doc = bridge.request("POST", "/load", {"rate": 3})
    assert status == 422 and "interval_ns" in doc["error"]
    status, doc = bridge.request("POST", "/load", {"interval_ns": 1, "rate": "fast"})
    assert status == 422 and "load.rate" in doc["error"]
    status, doc = bridge.request("GET", "/mark")
    assert status == 405 and "POST" in doc["error"]
    status, doc = bridge.request("POST", "/nowhere", {"name": "x"})
    assert status == 404
    # the connection still works after every refusal (bodies are read, keep-alive holds)
    assert bridge.request("POST", "/mark", {"name": "still here"})[0] == 202
    status, doc = bridge.request("POST", "/mark", raw=b"x" * 70_000)
    assert status == 413
    assert bridge.proc.poll() is None


def test_listening_beyond_loopback_needs_an_explicit_opt_in() -> None:
    res = subprocess.run(
        [sys.executable, "-m", "spikewatch", "bridge", "--http", f"0.0.0.0:{free_port()}"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert res.returncode == 2
    assert "not a loopback address" in res.stderr and "--allow-remote" in res.stderr
    assert "Traceback" not in res.stderr
    res = subprocess.run(
        [sys.executable, "-m", "spikewatch", "bridge", "--http", "nonsense"], capture_output=True, text=True, timeout=30
    )
    assert res.returncode == 2 and "expected HOST:PORT" in res.stderr


def test_sigint_stops_it(bridge: Bridge) -> None:
    bridge.proc.send_signal(signal.SIGINT)
    _, err = bridge.proc.communicate(timeout=10)
    assert bridge.proc.returncode == 0 and "bridge stopped: 0 message(s) forwarded" in err


def test_a_bad_inlet_or_a_taken_port_is_one_line() -> None:
    res = subprocess.run(
        [sys.executable, "-m", "spikewatch", "bridge", "--inlet", "tcp://nowhere"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert res.returncode == 2 and "--inlet" in res.stderr and "Traceback" not in res.stderr
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        res = subprocess.run(
            [sys.executable, "-m", "spikewatch", "bridge", "--http", f"127.0.0.1:{port}"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert res.returncode == 3 and f"cannot listen on 127.0.0.1:{port}" in res.stderr
