"""The demo service: a startup peak, buffers that scale with requests in flight, a bounded
cache, and a memory ceiling it never passes (it refuses with 503 instead)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import urllib.request

import psutil

from tests.conftest import free_port

from .conftest import make_scenario, quiet_run

MiB = 1 << 20


def _start(*args: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "spikewatch.driver.demo_service", "--port", str(port), *args],
        stdout=subprocess.PIPE,
        text=True,
    )
    return proc, f"http://127.0.0.1:{port}"


def _health(url: str) -> dict | None:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
            return json.load(r)
    except Exception:
        return None


class PeakWatcher(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.p = psutil.Process(pid)
        self.peak = 0
        self.series: list[int] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                rss = self.p.memory_info().rss
            except psutil.Error:
                return
            self.peak = max(self.peak, rss)
            self.series.append(rss)
            time.sleep(0.002)


def test_startup_peak_then_ready_and_buffers_scale_with_load() -> None:
    proc, url = _start(
        "--startup-peak",
        "48M",
        "--startup-keep",
        "0.25",
        "--startup-time",
        "0.3",
        "--cache-size",
        "4M",
        "--hold",
        "200ms",
    )
    w = PeakWatcher(proc.pid)
    w.start()
    try:
        deadline = time.monotonic() + 30
        while (h := _health(url)) is None or h.get("status") != "ok":
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)
        time.sleep(0.2)
        settled = psutil.Process(proc.pid).memory_info().rss
        assert w.peak - settled > 30 * MiB  # most of the 48 MiB structure was freed after startup
        w.peak = 0
        sc = make_scenario(
            """
            [[requests]]
            method = "POST"
            path = "/ingest"
            body = { size = "fixed", value = "1MiB", content = "json" }
            [[phases]]
            kind = "steady"
            concurrency = 12
            duration = "1200ms"
        """,
            url,
        )
        res = quiet_run(sc)
        assert res.total.error_count == 0 and res.total.completed > 20
        assert w.peak - settled > 20 * MiB  # 12 in flight x 1 MiB x copies, held 200 ms
        h = _health(url)
        assert h["cache_bytes"] <= 4 * MiB and h["in_flight"] == 0
    finally:
        w.stop.set()
        proc.terminate()
        proc.wait(timeout=10)


def test_the_ceiling_is_never_passed_and_excess_is_refused_with_503() -> None:
    ceiling = 110 * MiB
    proc, url = _start(
        "--ceiling",
        "110M",
        "--startup-peak",
        "200M",
        "--hold",
        "300ms",
        "--copies",
        "3",
        "--leak-per-request",
        "256K",
        "--leak-max",
        "8M",
    )
    w = PeakWatcher(proc.pid)
    w.start()
    try:
        sc = make_scenario(
            """
            [target]
            ready = "/health"
            [[requests]]
            method = "POST"
            path = "/ingest"
            body = { size = "fixed", value = "2MiB", content = "json" }
            [[phases]]
            kind = "startup"
            timeout = "30s"
            [[phases]]
            kind = "steady"
            concurrency = 24
            duration = "1500ms"
        """,
            url,
        )
        res = quiet_run(sc)
        assert res.phases[0].ready
        errors = res.total.errors
        assert errors.get("http_503", 0) > 0  # refused rather than grown
        assert res.total.completed - res.total.error_count >= 3  # and still served what fits
        h = _health(url)
        assert h["leak_bytes"] <= 8 * MiB and h["refused"] > 0
        assert w.peak <= ceiling, f"peak RSS {w.peak / MiB:.1f} MiB over the {ceiling / MiB:.0f} MiB ceiling"
    finally:
        w.stop.set()
        proc.terminate()
        proc.wait(timeout=10)
