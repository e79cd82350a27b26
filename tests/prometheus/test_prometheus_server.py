"""A real Prometheus server scrapes the exporter with the recipe's scrape job and rules.

Needs the ``prometheus`` binary (Debian: ``apt-get install prometheus``); skipped
without it. Prometheus scrapes every second; a 50 ms spike from 300 MiB to
470 MiB under a 500 MiB limit is fed between two scrapes. Prometheus must store
the peak at full height while its "now" series never sees it, and the recipe's
alert must fire.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

pytest.importorskip("prometheus_client")
from spikewatch.sampler.prometheus import PeakExporter
from spikewatch.sampler.wire import protocol

from tests.conftest import ROOT, free_port

PROMETHEUS = shutil.which("prometheus")
RECIPES = ROOT / "docs" / "recipes" / "prometheus"
MiB = 1 << 20
BASE, PEAK, LIMIT = 300 * MiB, 470 * MiB, 500 * MiB

pytestmark = pytest.mark.skipif(PROMETHEUS is None, reason="no prometheus binary (apt-get install prometheus)")


def api(base: str, query: str) -> list[dict]:
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": query})
    with urllib.request.urlopen(url, timeout=10) as resp:
        data = json.load(resp)
    assert data["status"] == "success", data
    return data["data"]["result"]


def wait_for(fn, timeout: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = fn()
            if value:
                return value
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.25)


def config_from_recipe(tmp: Path, target: str) -> Path:
    """The recipe's prometheus.yml with its spikewatch job pointed at our exporter, scraping every 1 s."""
    cfg = yaml.safe_load((RECIPES / "prometheus.yml").read_text())
    cfg["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    job = next(j for j in cfg["scrape_configs"] if j["job_name"] == "spikewatch")
    job["scrape_timeout"] = "1s"
    job["static_configs"] = [{"targets": [target], "labels": {"env": "test"}}]
    cfg["scrape_configs"] = [job]
    shutil.copy(RECIPES / "spikewatch-rules.yml", tmp / "spikewatch-rules.yml")
    path = tmp / "prometheus.yml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_prometheus_stores_the_spike_and_fires_the_alert(tmp_path: Path) -> None:
    exporter = PeakExporter(f"127.0.0.1:{free_port()}").start()
    seq = 0
    t = 1_000_000_000

    def feed(values: list[int]) -> None:
        nonlocal seq, t
        times = [t + k * 1_000_000 for k in range(len(values))]
        t += len(values) * 1_000_000
        exporter.observe(protocol.SAMPLES, protocol.samples_body(seq, times, {"cg_usage": values}))
        seq += 1

    exporter.observe(protocol.DETAIL, {**protocol.header(0, t), "cg_limit": LIMIT, "cg_usage": BASE})
    feed([BASE] * 20)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    cfg = config_from_recipe(tmp_path, f"127.0.0.1:{exporter.address[1]}")
    proc = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={cfg}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: api(base, 'up{job="spikewatch"} == 1'), 40, "Prometheus to scrape the exporter")
        # The spike: 50 ms at 470 MiB then back to 300 MiB, published as one batch,
        # so no scrape can catch it in the "now" gauge.
        feed([BASE] * 5 + [PEAK] * 50 + [BASE] * 5)
        peak = wait_for(
            lambda: api(base, 'max_over_time(spikewatch_memory_peak_bytes{series="cg_usage"}[5m]) > 400e6'),
            20,
            "the peak in Prometheus",
        )
        assert float(peak[0]["value"][1]) == PEAK
        assert peak[0]["metric"]["env"] == "test"
        now = api(base, 'max_over_time(spikewatch_memory_bytes{series="cg_usage"}[5m])')
        assert float(now[0]["value"][1]) == BASE, "a plain gauge never shows the spike"
        alerts = wait_for(lambda: api(base, 'ALERTS{alertname="SpikewatchPeakNearLimit"}'), 20, "the alert")
        assert alerts[0]["metric"]["severity"] == "warning"
        blind = api(base, "max_over_time(spikewatch:scrape_blind_spot_bytes[5m])")
        assert float(blind[0]["value"][1]) == PEAK - BASE
        # Prometheus identified itself with the recipe's ?scraper= param: one tracked scraper.
        scrapers = api(base, "spikewatch_exporter_scrapers")
        assert float(scrapers[0]["value"][1]) == 1
    finally:
        proc.terminate()
        try:
            _, err = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
        exporter.close()
    assert "level=error" not in (err or ""), err
