"""The service's heap beside RSS: parsing the gauge, the sampler scraping it, the verdicts."""

from __future__ import annotations

import http.server
import threading

import numpy as np
import pytest
from spikewatch.analysis import heap, reader, report
from spikewatch.analysis.synth import MiB, Synth
from spikewatch.analysis.terminal import heap_lines
from spikewatch.sampler.heapmetric import HeapMetricError, find_value, parse_spec
from spikewatch.sampler.wire import protocol

from tests.support.sampler import Stream, run_sample

PAGE = """# HELP app_heap_bytes Bytes handed out.
# TYPE app_heap_bytes gauge
app_heap_bytes_total 5
app_heap_bytes{arena="main"} 12345
app_heap_bytes 99
"""


def test_find_value_takes_the_named_metric_only():
    assert find_value(PAGE, "app_heap_bytes") == 12345  # the first sample, labels or not
    assert find_value("app_heap_bytes 1.5e6\n", "app_heap_bytes") == 1.5e6
    assert find_value("app_heap_bytes NaN\nother 3\n", "app_heap_bytes") is None
    assert find_value("app_heap_bytes_total 5\n", "app_heap_bytes") is None


@pytest.mark.parametrize(
    "spec, says",
    [
        ("http://127.0.0.1:8080/metrics", "expected URL#METRIC"),
        ("http://127.0.0.1:8080/metrics#9bad", "not a Prometheus metric name"),
        ("ftp://h/metrics#app_heap_bytes", "expected an http:// URL"),
        ("http://h:99999/metrics#app_heap_bytes", "bad port"),
    ],
)
def test_bad_heap_metric_specs_say_what_is_wrong(spec, says):
    with pytest.raises(HeapMetricError, match=says):
        parse_spec(spec)


def test_bad_heap_metric_is_a_one_line_error(endpoints):
    res = run_sample(endpoints, "--heap-metric", "localhost/metrics", "--", "true")
    assert res.returncode == 2 and "expected URL#METRIC" in res.stderr and "Traceback" not in res.stderr


class _Gauge(http.server.BaseHTTPRequestHandler):
    value = 0

    def do_GET(self):
        body = f"# TYPE app_heap_bytes gauge\napp_heap_bytes {type(self).value}\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_the_sampler_puts_the_scraped_heap_in_detail(tmp_path, endpoints):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Gauge)
    _Gauge.value = 42 * MiB
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        spec = f"http://127.0.0.1:{server.server_address[1]}/metrics#app_heap_bytes"
        res = run_sample(endpoints, "--journal", str(tmp_path / "j"), "--heap-metric", spec, "--", "sleep", "1")
    finally:
        server.shutdown()
    assert res.returncode == 0, res.stderr
    s = Stream.from_journal(tmp_path / "j")
    heaps = [d["heap"] for d in s.topic(protocol.DETAIL) if "heap" in d]
    assert len(heaps) >= 5 and set(heaps) == {42 * MiB}
    meta = s.topic(protocol.HELLO)[-1]["heap_metric"]
    assert meta["name"] == "app_heap_bytes" and meta["scrapes"] >= 5


def _burst_recording(path, heap_after: int, rss_after: int) -> None:
    """Baseline 100 MiB RSS / 10 MiB heap, one burst to 200 / 80 MiB, then the given levels."""
    s = Synth()
    t = s.times(12)
    a, b = int(t[0]), int(t[-1])
    burst_s, burst_e = a + 4_000_000_000, a + 5_000_000_000
    rss = np.where(t < burst_s, 100 * MiB, np.where(t <= burst_e, 200 * MiB, rss_after))
    s.samples(t, rss=rss.astype(np.int64))
    for td in range(a, b, 100_000_000):
        h = 10 * MiB if td < burst_s else (80 * MiB if td <= burst_e else heap_after)
        s.detail(td, heap=h)
    s.phase(a, b, "rush", "burst", rate=10, burst={"at_s": 4.0, "length_s": 1.0})
    s.write(path)


@pytest.mark.parametrize(
    "heap_after, rss_after, verdict",
    [
        (10 * MiB, 200 * MiB, heap.RETENTION),
        (80 * MiB, 200 * MiB, heap.HELD),
        (10 * MiB, 100 * MiB, heap.FINE),
    ],
)
def test_retention_verdict_after_a_burst(tmp_path, heap_after, rss_after, verdict):
    _burst_recording(tmp_path / "r.rec", heap_after, rss_after)
    rep = report.build_report(reader.load(tmp_path / "r.rec"))
    h = rep["heap"]
    (b,) = h["bursts"]
    assert b["verdict"] == verdict
    assert (
        b["heap_baseline_bytes"] == 10 * MiB
        and b["heap_peak_bytes"] == 80 * MiB
        and b["heap_after_bytes"] == heap_after
    )
    assert b["rss_baseline_bytes"] == 100 * MiB and b["rss_after_bytes"] == rss_after
    assert h["after_bursts"]["verdict"] == verdict
    lines = heap_lines(rep)
    assert "heap 10.0 MiB → 80.0 MiB" in lines[1] and verdict in lines[1]


def test_no_heap_metric_no_heap_key(tmp_path):
    s = Synth()
    t = s.times(2)
    s.samples(t, rss=np.full(len(t), MiB))
    s.write(tmp_path / "n.rec")
    rep = report.build_report(reader.load(tmp_path / "n.rec"))
    assert "heap" not in rep and heap_lines(rep) == []


def test_the_console_shows_a_heap_line():
    from spikewatch.analysis.console.plain import status_line
    from spikewatch.analysis.console.state import SourceState
    from spikewatch.analysis.console.widgets import headroom_text

    src = SourceState(key="k", endpoint="e", capacity=16)
    src.ingest(protocol.SAMPLES, {"v": 1, "seq": 0, "t": 1000, "dt": [0], "series": {"rss": [150 * MiB]}}, None)
    for seq, h in ((1, 40 * MiB), (2, 12 * MiB)):
        src.ingest(protocol.DETAIL, {"v": 1, "seq": seq, "t": 1000 + seq, "heap": h}, None)
    assert "rss 150.0 MiB peak 150.0 MiB heap 12.0 MiB peak 40.0 MiB" in status_line(src, "rss", 0)
    assert "heap 12.0 MiB (peak 40.0 MiB)" in headroom_text(src, "rss", 120).plain
