"""The tree's PSS and USS on /metrics: a real sampler on a real process that forks a child
sharing its 64 MiB heap, so summed RSS counts that heap twice and PSS once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("prometheus_client")

from spikewatch.sampler.prometheus import M_MEMORY, M_PEAK, PeakExporter
from spikewatch.sampler.wire import protocol

from tests.conftest import free_port
from tests.prometheus.prometheus_helpers import scrape_values
from tests.support.forks import sample_forker_in_process

MiB = 1 << 20
PARENT, CHILD = 64, 32  # MiB: the parent's heap (shared with the child after the fork), the child's own


def test_pss_and_uss_gauges_count_the_shared_heap_once(tmp_path: Path) -> None:
    both: list[tuple[dict[str, Any], dict[tuple[str, str], float]]] = []

    with PeakExporter(f"127.0.0.1:{free_port()}") as exporter:

        def scrape_after_sweep(topic: str, body: Any, packed: bytes | None = None) -> None:
            # Runs after the exporter saw this detail: scrape while parent and child live.
            if topic == protocol.DETAIL and body.get("pss_procs") == 2:
                both.append((dict(body), scrape_values(exporter.url)))

        assert sample_forker_in_process(tmp_path, [exporter, scrape_after_sweep], PARENT, CHILD, 0.5) == 0
        after = scrape_values(exporter.url)
    assert both, "no PSS sweep saw parent and child together"
    for detail, scrape in both:
        assert scrape[M_MEMORY, "pss"] == detail["pss"] and scrape[M_MEMORY, "uss"] == detail["uss"]
    pss_peak = max(scrape[M_PEAK, "pss"] for _, scrape in both)
    rss_peak = max(scrape[M_PEAK, "rss"] for _, scrape in both)
    assert pss_peak == max(detail["pss"] for detail, _ in both)
    assert (PARENT + CHILD) * MiB <= pss_peak <= (PARENT + CHILD + 40) * MiB
    # Summed RSS counted the shared heap in both processes; PSS did not.
    assert rss_peak - pss_peak >= PARENT * MiB * 0.8
    # (a sweep may catch the child still touching its own heap: only the largest holds it all)
    assert all(detail["uss"] <= detail["pss"] for detail, _ in both)
    assert max(detail["uss"] for detail, _ in both) >= CHILD * MiB
    # Once the tree is gone its last sweep is no longer "now".
    assert (M_MEMORY, "pss") not in after and (M_MEMORY, "uss") not in after
