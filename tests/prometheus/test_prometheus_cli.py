"""`spikewatch sample --prometheus HOST:PORT` end to end: a real sampler process, real scrapes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("prometheus_client")

from spikewatch.sampler.prometheus import CLI_ALLOW_REMOTE, CLI_OPTION, M_MEMORY, M_PEAK

from tests.conftest import free_port
from tests.prometheus.prometheus_helpers import scrape_values

MiB = 1 << 20
SPIKE = 80 * MiB
TARGET = r"""
import time
time.sleep(2.0)
b = b"\x01" * (80 << 20)   # touches every page
time.sleep(0.05)
del b
time.sleep(3.0)
"""


def test_sample_has_the_prometheus_options() -> None:
    from spikewatch.sampler.cli import sample

    opts = {o for p in sample.params for o in getattr(p, "opts", [])}
    assert {CLI_OPTION, CLI_ALLOW_REMOTE} <= opts


def _sample_cmd(*args: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "spikewatch",
        "sample",
        "--no-journal",
        "--inlet",
        "off",
        "--publish",
        f"tcp://127.0.0.1:{free_port()}",
        *args,
    ]


@pytest.mark.timeout(120)
def test_scrapes_every_second_see_an_80mib_50ms_spike_at_full_height() -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    proc = subprocess.Popen(
        _sample_cmd(CLI_OPTION, f"127.0.0.1:{port}", "--", sys.executable, "-c", TARGET),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    scrapes = []
    try:
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                scrapes.append(scrape_values(url, timeout=5))
            except OSError:
                pass  # not up yet, or gone
            time.sleep(1.0)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    peaks = [s[(M_PEAK, "rss")] for s in scrapes if (M_PEAK, "rss") in s]
    now = [s[(M_MEMORY, "rss")] for s in scrapes if s.get((M_MEMORY, "rss"), 0) > 0]
    assert len(peaks) >= 3, (scrapes, err)
    baseline = min(now)
    assert baseline + SPIKE - 4 * MiB <= max(peaks) <= baseline + SPIKE + 16 * MiB, (baseline, peaks)
    high = [i for i, p in enumerate(peaks) if p > baseline + SPIKE / 2]
    assert len(high) in (1, 2) and high[-1] - high[0] <= 1, peaks


def test_non_loopback_bind_is_refused_with_advice() -> None:
    out = subprocess.run(_sample_cmd(CLI_OPTION, "0.0.0.0:9", "--", "true"), capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out
    assert "loopback" in out.stderr and CLI_ALLOW_REMOTE in out.stderr
    assert "Traceback" not in out.stderr


def test_missing_prometheus_client_names_the_extra(tmp_path: Path) -> None:
    fake = tmp_path / "prometheus_client"
    fake.mkdir()
    (fake / "__init__.py").write_text("raise ImportError('No module named prometheus_client')\n")
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    out = subprocess.run(
        _sample_cmd(CLI_OPTION, f"127.0.0.1:{free_port()}", "--", "true"),
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert out.returncode != 0
    assert "spikewatch[prometheus]" in out.stderr and "Traceback" not in out.stderr


def test_sample_without_prometheus_never_imports_it() -> None:
    cmd = [
        sys.executable,
        "-X",
        "importtime",
        "-m",
        "spikewatch",
        "sample",
        "--no-journal",
        "--inlet",
        "off",
        "--publish",
        f"tcp://127.0.0.1:{free_port()}",
        "--",
        sys.executable,
        "-c",
        "pass",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    imported = [line for line in out.stderr.splitlines() if line.startswith("import time:")]
    assert len(imported) > 50, out.stderr[-2000:]
    assert not [line for line in imported if "prometheus_client" in line]
    assert [line for line in imported if "spikewatch.sampler.daemon" in line], "the sampler really ran"
