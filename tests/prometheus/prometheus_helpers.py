"""Scraping a real exporter the way Prometheus does (shared by the prometheus tests)."""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families


def scrape_values(url: str, timeout: float = 10) -> dict[tuple[str, str], float]:
    """One scrape as Prometheus sends it: ``{(sample name, series label): value}``."""
    req = urllib.request.Request(url, headers={"User-Agent": "Prometheus/2.42.0"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        text = resp.read().decode()
    return {
        (s.name, s.labels.get("series", "")): s.value for f in text_string_to_metric_families(text) for s in f.samples
    }
