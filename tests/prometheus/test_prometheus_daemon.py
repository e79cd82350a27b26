"""The exporter on a real sampler: a real process spikes 80 MiB for 50 ms, scrapes every ~1 s."""

from __future__ import annotations

import sys
import threading

import pytest

pytest.importorskip("prometheus_client")

from spikewatch.sampler.prometheus import M_MEMORY, M_PEAK, PeakExporter

from tests.conftest import free_port
from tests.prometheus.prometheus_helpers import scrape_values

MiB = 1 << 20
SPIKE = 80 * MiB

# Touches 80 MiB (bytes * n memsets every page), holds it 50 ms, frees it; prints
# its own clock around the spike so the test can tell which scrape followed it.
TARGET = r"""
import sys, time
time.sleep(1.5)
b = b"\x01" * (80 << 20)
time.sleep(0.05)
del b
print("spiked", flush=True)
time.sleep(2.5)
"""


def scrape_loop(url: str, stop: threading.Event, out: list[dict[tuple[str, str], float]]) -> None:
    while not stop.wait(1.0):
        try:
            out.append(scrape_values(url))
        except OSError:
            pass  # the endpoint is not up yet / already down


def test_real_sampler_feeds_the_peak_gauge() -> None:
    daemon = pytest.importorskip("spikewatch.sampler.daemon")
    if not hasattr(daemon.Sampler, "run"):
        pytest.skip("sampler daemon not built")
    exporter = PeakExporter(f"127.0.0.1:{free_port()}").start()
    config = daemon.SamplerConfig(
        target=daemon.Target(argv=[sys.executable, "-c", TARGET]),
        publish=f"tcp://127.0.0.1:{free_port()}",
        inlet=None,
        journal="",
        quiet=True,
        log=lambda _msg: None,
    )
    sampler = daemon.Sampler(config)
    sampler.setup()
    sampler.listeners.append(exporter)
    scrapes: list[dict[tuple[str, str], float]] = []
    stop = threading.Event()
    scraper = threading.Thread(target=scrape_loop, args=(exporter.url, stop, scrapes))
    scraper.start()
    try:
        status = sampler.run()
    finally:
        stop.set()
        scraper.join(timeout=15)
    scrapes.append(scrape_values(exporter.url))
    exporter.close()
    assert status == 0
    rss_peaks = [s[(M_PEAK, "rss")] for s in scrapes if (M_PEAK, "rss") in s]
    rss_now = [s[(M_MEMORY, "rss")] for s in scrapes if (M_MEMORY, "rss") in s]
    assert len(rss_peaks) >= 3, scrapes
    baseline = min(v for v in rss_now if v > 0)  # 0 once the target has exited
    # The spike shows at full height (within a few MiB) in exactly the scrapes after it.
    assert max(rss_peaks) >= baseline + SPIKE - 4 * MiB, (baseline, rss_peaks)
    assert max(rss_peaks) <= baseline + SPIKE + 16 * MiB
    print(
        f"baseline {baseline / MiB:.1f} MiB, peaks per scrape (MiB):",
        [round(p / MiB, 1) for p in rss_peaks],
        "now:",
        [round(v / MiB, 1) for v in rss_now],
    )
    # It belongs to the interval it happened in (two if a scrape fell inside the
    # spike): the other scrapes show about the baseline.
    high = [i for i, p in enumerate(rss_peaks) if p > baseline + SPIKE / 2]
    assert len(high) in (1, 2) and high[-1] - high[0] <= 1, rss_peaks
    last = scrapes[-1]
    assert last["spikewatch_sampler_samples_total", ""] > 1000
    assert last["spikewatch_sampler_period_seconds", ""] == pytest.approx(0.001)
