"""The Prometheus endpoint, scraped over real HTTP, fed with real protocol bodies."""

from __future__ import annotations

import subprocess
import sys
import threading
import urllib.error
import urllib.request

import pytest

prometheus_client = pytest.importorskip("prometheus_client")
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402
from spikewatch.sampler.prometheus import (  # noqa: E402
    M_MEMORY,
    M_PEAK,
    BindError,
    PeakExporter,
    PrometheusUnavailable,
    exposed_names,
    parse_bind,
)
from spikewatch.sampler.wire import protocol  # noqa: E402

MiB = 1 << 20
BASE = 40 * MiB
SPIKE = 80 * MiB
PERIOD_NS = 1_000_000  # 1 ms, as the sampler
BATCH = 20


class Feed:
    """Publishes what a 1 kHz sampler would: 20-sample batches with a running seq and clock."""

    def __init__(self, exporter: PeakExporter) -> None:
        self.exp = exporter
        self.seq = 0
        self.t = 10_000_000_000

    def run(self, values: list[int], cg_offset: int = 3 * MiB) -> None:
        for i in range(0, len(values), BATCH):
            chunk = values[i : i + BATCH]
            times = [self.t + k * PERIOD_NS for k in range(len(chunk))]
            self.t += len(chunk) * PERIOD_NS
            body = protocol.samples_body(
                self.seq,
                times,
                {
                    protocol.SERIES_RSS: chunk,
                    protocol.SERIES_CG_USAGE: [v + cg_offset for v in chunk],
                },
            )
            self.seq += 1
            self.exp.observe(protocol.SAMPLES, body)

    def send(self, topic: str, **fields: object) -> None:
        body = {**protocol.header(self.seq, self.t), **fields}
        self.seq += 1
        self.exp.observe(topic, body)


def scrape(exp: PeakExporter, scraper: str | None = None, ua: str = "test-scraper/1", accept: str | None = None) -> str:
    url = exp.url + (f"?scraper={scraper}" if scraper else "")
    headers = {"User-Agent": ua}
    if accept:
        headers["Accept"] = accept
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as resp:
        assert resp.status == 200
        return resp.read().decode()


def values(text: str) -> dict[tuple[str, str], float]:
    """{(sample name, series label or ''): value} from a text-format scrape."""
    out: dict[tuple[str, str], float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, s.labels.get("series", ""))] = s.value
    return out


@pytest.fixture
def exp():
    exporter = PeakExporter("127.0.0.1:0").start()
    yield exporter
    exporter.close()


def spike_run() -> list[int]:
    """100 ms baseline, a 50 ms spike of +80 MiB, 100 ms baseline."""
    return [BASE] * 100 + [BASE + SPIKE] * 50 + [BASE] * 100


def test_peak_gauge_keeps_a_50ms_spike_that_the_now_gauge_misses(exp: PeakExporter) -> None:
    feed = Feed(exp)
    feed.run([BASE] * 60)
    before = values(scrape(exp))
    assert before[(M_PEAK, "rss")] == BASE

    feed.run(spike_run())
    after = values(scrape(exp))
    assert after[(M_PEAK, "rss")] == BASE + SPIKE
    assert after[(M_PEAK, "cg_usage")] == BASE + SPIKE + 3 * MiB
    assert after[(M_MEMORY, "rss")] == BASE  # what a plain scrape-based gauge shows
    assert after[(M_MEMORY, "cg_usage")] == BASE + 3 * MiB

    feed.run([BASE] * 40)
    again = values(scrape(exp))
    assert again[(M_PEAK, "rss")] == BASE, "the peak belongs to the interval it happened in"


def test_two_scrapers_each_see_the_peak(exp: PeakExporter) -> None:
    feed = Feed(exp)
    feed.run([BASE] * 40)
    scrape(exp, "prom-a")
    scrape(exp, "prom-b")
    scrape(exp, ua="Prometheus/2.53.0")

    feed.run(spike_run())
    # B scrapes right after the spike; A and the unnamed scraper a little later.
    assert values(scrape(exp, "prom-b"))[(M_PEAK, "rss")] == BASE + SPIKE
    feed.run([BASE] * 200)
    assert values(scrape(exp, "prom-a"))[(M_PEAK, "rss")] == BASE + SPIKE
    assert values(scrape(exp, ua="Prometheus/2.53.0"))[(M_PEAK, "rss")] == BASE + SPIKE
    # Each one consumed only its own peak.
    assert values(scrape(exp, "prom-b"))[(M_PEAK, "rss")] == BASE
    assert values(scrape(exp, "prom-a"))[(M_PEAK, "rss")] == BASE
    # A different User-Agent from the same address is another scraper: first scrape sees all.
    assert values(scrape(exp, ua="grafana-agent/0.40"))[(M_PEAK, "rss")] == BASE + SPIKE


def test_kernel_high_water_marks_count_even_when_late(exp: PeakExporter) -> None:
    feed = Feed(exp)
    feed.run([BASE] * 40)
    scrape(exp)
    # A spike no sample saw: the sampler reports the kernel's HWM as an event...
    feed.send(
        protocol.EVENT,
        kind=protocol.EV_HWM_SPIKE,
        series="rss",
        bytes=BASE + 123 * MiB,
        t_from=feed.t - 50 * PERIOD_NS,
        t_to=feed.t,
        sampled_max=BASE,
    )
    # ...and the cgroup's own max since the previous detail.
    feed.send(
        protocol.DETAIL,
        cg_usage=BASE,
        cg_working_set=BASE - MiB,
        cg_inactive_file=MiB,
        cg_peak=BASE + 150 * MiB,
        cg_limit=512 * MiB,
        rss_anon=BASE - 2 * MiB,
    )
    got = values(scrape(exp))
    assert got[(M_PEAK, "rss")] == BASE + 123 * MiB
    assert got[(M_PEAK, "cg_usage")] == BASE + 150 * MiB
    assert got[(M_MEMORY, "cg_working_set")] == BASE - MiB
    assert got[(M_MEMORY, "rss_anon")] == BASE - 2 * MiB
    assert got[("spikewatch_memory_limit_bytes", "")] == 512 * MiB
    # cg_usage "now" comes from the samples (fresher), not the detail copy.
    assert got[(M_MEMORY, "cg_usage")] == BASE + 3 * MiB
    assert got[("spikewatch_hwm_spikes_total", "")] == 1


def test_counters_health_and_info(exp: PeakExporter) -> None:
    feed = Feed(exp)
    hello = dict(
        session="s-42",
        host="stage-3",
        sampler_version="0.1.0",
        period_ns=PERIOD_NS,
        cgroup={"version": 1, "path": "/x", "limit": 256 * MiB},
    )
    feed.send(protocol.HELLO, **hello, counters={"samples": 0, "overruns": 0, "dropped": 0})
    feed.run([BASE] * 1000)  # one second at 1 kHz
    feed.send(
        protocol.HELLO,
        **hello,
        counters={
            "samples": 1000,
            "overruns": 2,
            "dropped": 5,
            "hwm_spikes": 0,
            "ticks_missed": 7,
            "inlet_bad": 3,
            "journal_errors": 1,
        },
    )
    for kind, extra in [
        (protocol.EV_OOM_KILL, {"pid": 9, "count": 2, "last_bytes": 256 * MiB}),
        (protocol.EV_OOM_KILL, {"last_bytes": 256 * MiB}),
        (protocol.EV_RESTART, {"pid": 10, "old_pid": 9}),
        (protocol.EV_RESTART, {"pid": 11, "old_pid": 10}),
    ]:
        feed.send(protocol.EVENT, kind=kind, **extra)
    text = scrape(exp)
    got = values(text)
    assert got[("spikewatch_oom_kills_total", "")] == 3  # count=2, then one without count
    assert got[("spikewatch_restarts_total", "")] == 2
    assert got[("spikewatch_overruns_total", "")] == 2
    assert got[("spikewatch_dropped_messages_total", "")] == 5
    assert got[("spikewatch_sampler_ticks_missed_total", "")] == 7
    assert got[("spikewatch_inlet_rejected_total", "")] == 3
    assert got[("spikewatch_journal_errors_total", "")] == 1
    assert got[("spikewatch_sampler_samples_total", "")] == 1000
    assert got[("spikewatch_sampler_rate_hz", "")] == pytest.approx(1000, rel=0.01)
    assert got[("spikewatch_sampler_period_seconds", "")] == pytest.approx(0.001)
    assert got[("spikewatch_memory_limit_bytes", "")] == 256 * MiB
    info = [s for f in text_string_to_metric_families(text) for s in f.samples if s.name == "spikewatch_sampler_info"]
    assert info[0].labels == {"session": "s-42", "host": "stage-3", "version": "0.1.0"}


def test_exposition_parses_in_both_formats_and_names_match(exp: PeakExporter) -> None:
    feed = Feed(exp)
    feed.send(
        protocol.HELLO, session="s", host="h", sampler_version="0.1.0", period_ns=PERIOD_NS, counters={"samples": 0}
    )
    feed.run(spike_run())
    feed.send(protocol.DETAIL, cg_limit=1 << 30)
    text = scrape(exp)
    names = {s.name for f in text_string_to_metric_families(text) for s in f.samples}
    om = scrape(exp, accept="application/openmetrics-text; version=1.0.0; charset=utf-8")
    assert om.rstrip().endswith("# EOF")
    om_names = {s.name for f in parse_openmetrics(om) for s in f.samples}
    assert names == om_names
    # Everything a scrape can hold is declared (recipes are checked against exposed_names()).
    assert names <= exposed_names()
    assert {M_MEMORY, M_PEAK, "spikewatch_oom_kills_total", "spikewatch_sampler_info"} <= names


def test_concurrent_publishing_never_loses_the_peak(exp: PeakExporter) -> None:
    """A publisher thread at full speed, a scraper looping: some scrape must show the spike."""
    feed = Feed(exp)
    stream = [BASE] * 2000 + [BASE + SPIKE] * 50 + [BASE] * 2000
    done = threading.Event()
    seen: list[float] = []

    def scraper() -> None:
        while not done.is_set():
            seen.append(values(scrape(exp, "loop"))[(M_PEAK, "rss")] if feed.seq else 0)
        seen.append(values(scrape(exp, "loop"))[(M_PEAK, "rss")])

    th = threading.Thread(target=scraper)
    th.start()
    try:
        for _ in range(3):
            feed.run(stream)
    finally:
        done.set()
        th.join(timeout=30)
    assert seen.count(BASE + SPIKE) >= 1
    assert max(seen) == BASE + SPIKE


def test_scrapers_are_bounded() -> None:
    with PeakExporter("127.0.0.1:0", max_scrapers=2) as exp:
        Feed(exp).run([BASE] * 20)
        for name in ("a", "b", "c"):
            got = values(scrape(exp, name))
        assert got[("spikewatch_exporter_scrapers", "")] == 2


def test_bad_requests_and_bodies() -> None:
    with PeakExporter("127.0.0.1:0") as exp:
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(exp.url + "?scraper=bad%20name!", timeout=10)
        assert err.value.code == 400
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(exp.url.replace("/metrics", "/nope"), timeout=10)
        assert err.value.code == 404
        exp.observe(protocol.SAMPLES, {"v": 1, "seq": 0, "t": 0})  # no series: counted, not raised
        exp.observe(protocol.SAMPLES, {"series": {"rss": ["x", 1]}})
        # a column longer than dt: rejected by protocol.as_samples, its value never a peak
        exp.observe(protocol.SAMPLES, {"v": 1, "seq": 1, "t": 0, "dt": [0], "series": {"rss": [1, 10 * BASE]}})
        Feed(exp).run([BASE] * 20)
        got = values(scrape(exp))
        assert got[("spikewatch_exporter_observe_errors_total", "")] == 3
        assert got[(M_PEAK, "rss")] == BASE


def test_binds_loopback_only_unless_allowed() -> None:
    assert parse_bind("127.0.0.1:9464") == ("127.0.0.1", 9464)
    assert parse_bind("localhost:1") == ("localhost", 1)
    assert parse_bind("[::1]:9464") == ("::1", 9464)
    with pytest.raises(BindError, match="loopback"):
        parse_bind("0.0.0.0:9464")
    with pytest.raises(BindError, match="loopback"):
        PeakExporter("10.1.2.3:9464")
    assert parse_bind("0.0.0.0:9464", allow_remote=True) == ("0.0.0.0", 9464)
    for bad in ("9464", "host", "127.0.0.1:99999", "127.0.0.1:-1"):
        with pytest.raises(BindError):
            parse_bind(bad)


def test_port_in_use_is_a_bind_error(exp: PeakExporter) -> None:
    with pytest.raises(BindError, match="cannot serve /metrics"):
        PeakExporter(f"127.0.0.1:{exp.address[1]}").start()


def test_missing_prometheus_client_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    with pytest.raises(PrometheusUnavailable, match=r"spikewatch\[prometheus\]"):
        PeakExporter("127.0.0.1:0")


def test_module_import_does_not_load_prometheus_client() -> None:
    code = (
        "import sys, spikewatch.sampler.prometheus; print(any(m.startswith('prometheus_client') for m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_keep_alive_connection_serves_repeated_scrapes(exp: PeakExporter) -> None:
    """Prometheus keeps its connection open between scrapes; each scrape is still its own interval."""
    import http.client

    feed = Feed(exp)
    conn = http.client.HTTPConnection(*exp.address, timeout=10)
    try:
        got = []
        for values_run in ([BASE] * 20, spike_run(), [BASE] * 20):
            feed.run(values_run)
            conn.request("GET", "/metrics?scraper=keepalive")
            resp = conn.getresponse()
            assert resp.status == 200 and not resp.will_close
            got.append(values(resp.read().decode())[(M_PEAK, "rss")])
        assert got == [BASE, BASE + SPIKE, BASE]
    finally:
        conn.close()
