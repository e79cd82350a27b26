"""A Prometheus ``/metrics`` endpoint that keeps the peaks a 15 s scrape misses.

:class:`PeakExporter` is a *publish listener*: the sampler calls
``exporter.observe(topic, body)`` (or ``exporter(topic, body)``) with every
message it publishes, off the hot loop. ``observe`` only keeps, per series, the
latest value and the running maximum since the previous scrape (O(batch), under
a lock). An HTTP thread serves ``/metrics`` with the official
``prometheus_client`` exposition code.

``spikewatch_memory_peak_bytes{series=...}`` is the highest value since the
*same scraper's* previous scrape, kernel high-water marks included, so a
scraper at any interval sees every spike at full height. Scrapers are told
apart by ``?scraper=NAME`` in the URL when given (set ``params: {scraper:
[NAME]}`` in the scrape config), otherwise by client IP address + User-Agent
(two Prometheus servers of an HA pair have different addresses). At most
``max_scrapers`` are remembered (least recently seen forgotten first); a
scraper seen for the first time, or forgotten, gets the peak since the exporter
started. The peak gauge never under-reports: a kernel high-water mark that
reaches the sampler after a scrape shows in the next one.

Binds to loopback by default. HTTP has no CURVE: to expose it beyond the host,
pass ``allow_remote=True`` and restrict who can reach the port (network policy,
firewall) — the metrics carry no secrets but say what the host runs.

Imports only the standard library at module level; ``prometheus_client`` (the
``spikewatch[prometheus]`` extra) is imported when an exporter is created, so
the sampler without ``--prometheus`` never loads it.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from http.server import ThreadingHTTPServer
from typing import Any

from .prometheus_http import (
    CLI_ALLOW_REMOTE as CLI_ALLOW_REMOTE,
)
from .prometheus_http import (
    CLI_OPTION as CLI_OPTION,
)
from .prometheus_http import (
    DEFAULT_BIND as DEFAULT_BIND,
)
from .prometheus_http import (
    EXTRA_HINT as EXTRA_HINT,
)
from .prometheus_http import (
    MAX_SCRAPERS as MAX_SCRAPERS,
)
from .prometheus_http import (
    METRICS_PATH as METRICS_PATH,
)
from .prometheus_http import (
    BindError as BindError,
)
from .prometheus_http import (
    ExporterError as ExporterError,
)
from .prometheus_http import (
    PrometheusUnavailable as PrometheusUnavailable,
)
from .prometheus_http import (
    make_handler as make_handler,
)
from .prometheus_http import (
    parse_bind as parse_bind,
)
from .prometheus_http import (
    scraper_key as scraper_key,
)
from .prometheus_http import (
    server_class as server_class,
)
from .wire import protocol

# Metric names (without the ``_total`` suffix the exposition adds to counters).
# Tests and docs/recipes cross-check against these; keep them in one place.
M_MEMORY = "spikewatch_memory_bytes"
M_PEAK = "spikewatch_memory_peak_bytes"
M_LIMIT = "spikewatch_memory_limit_bytes"
M_OOM_KILLS = "spikewatch_oom_kills"
M_HWM_SPIKES = "spikewatch_hwm_spikes"
M_RESTARTS = "spikewatch_restarts"
M_OVERRUNS = "spikewatch_overruns"
M_DROPPED = "spikewatch_dropped_messages"
M_SAMPLES = "spikewatch_sampler_samples"
M_TICKS_MISSED = "spikewatch_sampler_ticks_missed"
M_INLET_REJECTED = "spikewatch_inlet_rejected"
M_JOURNAL_ERRORS = "spikewatch_journal_errors"
M_RATE = "spikewatch_sampler_rate_hz"
M_PERIOD = "spikewatch_sampler_period_seconds"
M_INFO = "spikewatch_sampler"  # exposed as spikewatch_sampler_info
M_LAST = "spikewatch_sampler_last_message_age_seconds"
M_SCRAPERS = "spikewatch_exporter_scrapers"
M_OBSERVE_ERRORS = "spikewatch_exporter_observe_errors"
COUNTERS = (
    M_OOM_KILLS,
    M_HWM_SPIKES,
    M_RESTARTS,
    M_OVERRUNS,
    M_DROPPED,
    M_SAMPLES,
    M_TICKS_MISSED,
    M_INLET_REJECTED,
    M_JOURNAL_ERRORS,
    M_OBSERVE_ERRORS,
)


def exposed_names() -> set[str]:
    """Every sample name a scrape can contain (counters with ``_total``, info with ``_info``)."""
    names = {M_MEMORY, M_PEAK, M_LIMIT, M_RATE, M_PERIOD, M_LAST, M_SCRAPERS, M_INFO + "_info"}
    names.update(c + "_total" for c in COUNTERS)
    return names


# ``detail`` fields that are memory sizes in bytes: exposed as series of the
# memory gauges (their peak is at the detail rate, ~100 ms).
DETAIL_SERIES: tuple[str, ...] = (
    "rss_anon",
    "rss_file",
    "rss_shmem",
    "vm_swap",
    "cg_usage",
    "cg_anon",
    "cg_file",
    "cg_inactive_file",
    "cg_working_set",
    # the tree's PSS and USS from smaps_rollup (shared pages counted once), after each
    # sweep: every 0.1 .. 10 s as --pss-budget allows, so their peaks are at that rate
    "pss",
    "uss",
)
TREE_SWEEP_SERIES: tuple[str, ...] = ("pss", "uss")
# ``detail`` fields that are kernel maxima over the interval since the previous
# detail: folded into the peak of the series they bound. ``vm_hwm`` is left out:
# it is a sum of per-process lifetime maxima, above any instantaneous RSS of a
# tree; rss peaks the kernel saw reach us as ``hwm_spike`` events instead.
DETAIL_PEAKS: dict[str, str] = {"cg_peak": protocol.SERIES_CG_USAGE, "sample_max": protocol.SERIES_RSS}


def _load_client() -> Any:
    try:
        import prometheus_client
        import prometheus_client.exposition
        import prometheus_client.metrics_core
    except ImportError:
        raise PrometheusUnavailable(
            f"the Prometheus endpoint needs the prometheus_client package: {EXTRA_HINT}"
        ) from None
    return prometheus_client


class _PeakState:
    """Latest values and per-scraper peaks. Not thread-safe by itself (the exporter locks)."""

    def __init__(self, max_scrapers: int) -> None:
        self.max_scrapers = max_scrapers
        self.latest: dict[str, int] = {}
        self.window: dict[str, int] = {}  # max since the previous scrape by anyone
        self.since_start: dict[str, int] = {}  # max over closed windows, for new scrapers
        # scraper -> max over windows closed by *other* scrapers since its own last scrape
        self.scrapers: OrderedDict[str, dict[str, int]] = OrderedDict()
        self.sample_series: set[str] = set()

    def bump(self, series: str, value: int) -> None:
        if value > self.window.get(series, -1):
            self.window[series] = value

    def scrape(self, key: str) -> dict[str, int]:
        """Peaks since ``key``'s previous scrape; closes the current window for everyone."""
        window, self.window = self.window, {}
        acc = self.scrapers.pop(key, None)
        if acc is None:
            acc = dict(self.since_start)
        _fold(acc, window)
        _fold(acc, self.latest)  # the value at scrape time is inside the interval too
        for other in self.scrapers.values():
            _fold(other, window)
        _fold(self.since_start, window)
        self.scrapers[key] = {}
        while len(self.scrapers) > self.max_scrapers:
            self.scrapers.popitem(last=False)
        return acc


def _fold(into: dict[str, int], values: Mapping[str, int]) -> None:
    for name, v in values.items():
        if v > into.get(name, -1):
            into[name] = v


class PeakExporter:
    """Serve ``/metrics`` for the messages a sampler publishes; see the module doc.

    >>> exp = PeakExporter("127.0.0.1:0").start()   # doctest: +SKIP
    >>> publisher.listeners.append(exp)              # doctest: +SKIP
    """

    def __init__(
        self, bind: str = DEFAULT_BIND, *, allow_remote: bool = False, max_scrapers: int = MAX_SCRAPERS
    ) -> None:
        self._host, self._port = parse_bind(bind, allow_remote=allow_remote)
        self._client = _load_client()
        if max_scrapers < 1:
            raise ValueError("max_scrapers must be at least 1")
        self._lock = threading.Lock()
        self._state = _PeakState(max_scrapers)
        self._limit: int | None = None
        self._events: dict[str, int] = {}
        self._hello_counters: dict[str, int] = {}
        self._samples_seen = 0
        self._oom_kills = 0
        self._observe_errors = 0
        self._info: dict[str, str] = {}
        self._period_ns: int | None = None
        self._rate_hz: float | None = None
        self._rate_anchor: tuple[int, int] | None = None  # (t, samples) of the previous hello
        self._last_message = 0.0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- the publishing path ------------------------------------------------

    def __call__(self, topic: str, body: Mapping[str, Any], packed: bytes | None = None) -> None:
        self.observe(topic, body)

    def observe(self, topic: str, body: Mapping[str, Any], packed: bytes | None = None) -> None:
        """Take one published message. Never raises (a bad body is counted and skipped).

        Matches the sampler's publish listener signature ``(topic, body, packed)``
        (``spikewatch.sampler.wire.stream.Listener``); ``packed`` is not needed here.
        """
        try:
            # Through the wire's one door, like every other consumer: a malformed body
            # (columns not one value per dt, a detail without t) is counted, never applied.
            body = protocol.as_message(topic, body)
            with self._lock:
                self._last_message = time.monotonic()
                if topic == protocol.SAMPLES:
                    self._on_samples(body)
                elif topic == protocol.DETAIL:
                    self._on_detail(body)
                elif topic == protocol.EVENT:
                    self._on_event(body)
                elif topic == protocol.HELLO:
                    self._on_hello(body)
        except Exception:  # the sampler's publishing path must not break on us
            self._observe_errors += 1

    def _on_samples(self, body: Mapping[str, Any]) -> None:
        state = self._state
        window, latest = state.window, state.latest
        n = 0
        for name, col in body["series"].items():
            if not col:
                continue
            n = len(col)
            top = max(col)
            if top > window.get(name, -1):
                window[name] = top
            latest[name] = col[-1]
            if name not in state.sample_series:
                state.sample_series.add(name)
        self._samples_seen += n

    def _on_detail(self, body: Mapping[str, Any]) -> None:
        state = self._state
        for name in DETAIL_SERIES:
            v = body.get(name)
            if v is None:
                continue
            state.bump(name, v)
            if name not in state.sample_series:  # samples are fresher than details
                state.latest[name] = v
        if body.get("procs") == 0:  # the tree is gone: its last PSS sweep is not "now"
            for name in TREE_SWEEP_SERIES:
                if name not in body:
                    state.latest.pop(name, None)
        for field, series in DETAIL_PEAKS.items():
            v = body.get(field)
            if v is not None:
                state.bump(series, v)
        if "cg_limit" in body:
            self._limit = body["cg_limit"]

    def _on_event(self, body: Mapping[str, Any]) -> None:
        kind = body.get("kind")
        if not isinstance(kind, str):
            return
        self._events[kind] = self._events.get(kind, 0) + 1
        if kind == protocol.EV_OOM_KILL:
            # ``count``: kills the kernel counted since the previous oom_kill event.
            count = body.get("count", 1)
            self._oom_kills += count if isinstance(count, int) and count > 0 else 1
        elif kind == protocol.EV_HWM_SPIKE:
            series, value = body.get("series"), body.get("bytes")
            if isinstance(series, str) and isinstance(value, int):
                self._state.bump(series, value)
        elif kind == protocol.EV_LIMIT_CHANGE:
            self._limit = body.get("new")

    def _on_hello(self, body: Mapping[str, Any]) -> None:
        counters = body.get("counters") or {}
        self._hello_counters = dict(counters)
        self._info = {
            "session": str(body.get("session", "")),
            "host": str(body.get("host", "")),
            "version": str(body.get("sampler_version", "")),
        }
        self._period_ns = body.get("period_ns")
        cgroup = body.get("cgroup")
        if isinstance(cgroup, dict) and "limit" in cgroup and self._limit is None:
            self._limit = cgroup["limit"]
        samples, t = counters.get("samples"), body.get("t")
        if isinstance(samples, int) and isinstance(t, int):
            if self._rate_anchor is not None and t > self._rate_anchor[0]:
                self._rate_hz = (samples - self._rate_anchor[1]) * 1e9 / (t - self._rate_anchor[0])
            self._rate_anchor = (t, samples)

    # --- scraping -------------------------------------------------------------

    def collect_for(self, scraper: str) -> _Snapshot:
        """Take the scrape for ``scraper``: the metric families, peaks consumed."""
        mc = self._client.metrics_core
        with self._lock:
            peaks = self._state.scrape(scraper)
            latest = dict(self._state.latest)
            limit = self._limit
            events = dict(self._events)
            oom_kills = self._oom_kills
            hello = dict(self._hello_counters)
            samples_seen = self._samples_seen
            info = dict(self._info)
            period_ns, rate = self._period_ns, self._rate_hz
            last = self._last_message
            n_scrapers = len(self._state.scrapers)
            observe_errors = self._observe_errors

        families: list[Any] = []
        mem = mc.GaugeMetricFamily(M_MEMORY, "Latest sampled memory of the target, bytes", labels=["series"])
        for name in sorted(latest):
            mem.add_metric([name], latest[name])
        peak = mc.GaugeMetricFamily(
            M_PEAK,
            "Highest memory since this scraper's previous scrape (samples and kernel high-water marks), bytes",
            labels=["series"],
        )
        for name in sorted(peaks):
            peak.add_metric([name], peaks[name])
        families += [mem, peak]
        if limit is not None:
            families.append(mc.GaugeMetricFamily(M_LIMIT, "Memory limit of the target cgroup, bytes", value=limit))

        def counter(name: str, doc: str, value: float) -> None:
            families.append(mc.CounterMetricFamily(name, doc, value=value))

        def hello_or_events(key: str, kind: str) -> int:
            return max(int(hello.get(key, 0) or 0), events.get(kind, 0))

        counter(M_OOM_KILLS, "OOM kills in the sampled cgroup", oom_kills)
        counter(
            M_HWM_SPIKES,
            "Kernel high-water marks above every sample (peaks sampling missed)",
            hello_or_events("hwm_spikes", protocol.EV_HWM_SPIKE),
        )
        counter(M_RESTARTS, "Target process restarts", events.get(protocol.EV_RESTART, 0))
        counter(M_OVERRUNS, "Sampler overruns (ticks late or missed)", hello_or_events("overruns", protocol.EV_OVERRUN))
        counter(M_DROPPED, "Messages the sampler dropped (no room to publish)", int(hello.get("dropped", 0) or 0))
        counter(M_SAMPLES, "Samples taken by the sampler", max(int(hello.get("samples", 0) or 0), samples_seen))
        counter(
            M_TICKS_MISSED, "Sampling ticks missed (the loop woke too late)", int(hello.get("ticks_missed", 0) or 0)
        )
        counter(
            M_INLET_REJECTED, "Malformed messages refused at the sampler's inlet", int(hello.get("inlet_bad", 0) or 0)
        )
        counter(M_JOURNAL_ERRORS, "Journal write errors", int(hello.get("journal_errors", 0) or 0))
        counter(M_OBSERVE_ERRORS, "Published messages the exporter could not read", observe_errors)
        if rate is not None:
            families.append(
                mc.GaugeMetricFamily(M_RATE, "Achieved sampling rate between the last two hellos, Hz", value=rate)
            )
        if period_ns:
            families.append(
                mc.GaugeMetricFamily(M_PERIOD, "Configured sampling period, seconds", value=period_ns / 1e9)
            )
        if info:
            fam = mc.InfoMetricFamily(
                M_INFO, "The sampler session this endpoint serves", labels=["session", "host", "version"]
            )
            fam.add_metric([info["session"], info["host"], info["version"]], {})
            families.append(fam)
        if last:
            families.append(
                mc.GaugeMetricFamily(
                    M_LAST, "Seconds since the sampler last published", value=max(0.0, time.monotonic() - last)
                )
            )
        families.append(mc.GaugeMetricFamily(M_SCRAPERS, "Scrapers whose peaks are tracked", value=n_scrapers))
        return _Snapshot(families)

    def render(self, scraper: str, accept: str = "") -> tuple[bytes, str]:
        """One scrape as (body, content type), negotiated like prometheus_client's own server."""
        encoder, content_type = self._client.exposition.choose_encoder(accept)
        return encoder(self.collect_for(scraper)), content_type

    # --- the server -------------------------------------------------------

    def start(self) -> PeakExporter:
        """Bind and serve in a daemon thread; returns self. Raises :class:`BindError` if it cannot bind."""
        if self._server is not None:
            return self
        handler = make_handler(self)
        server_cls = server_class(self._host)
        try:
            self._server = server_cls((self._host, self._port), handler)
        except OSError as exc:
            raise BindError(
                f"cannot serve /metrics on {self._host}:{self._port}: {exc.strerror or exc} (pick another HOST:PORT)"
            ) from None
        self._port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.2}, name="spikewatch-prometheus", daemon=True
        )
        self._thread.start()
        return self

    @property
    def address(self) -> tuple[str, int]:
        return self._host, self._port

    @property
    def url(self) -> str:
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self._port}{METRICS_PATH}"

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> PeakExporter:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Snapshot:
    """A prometheus_client Collector over families already taken (one scrape)."""

    def __init__(self, families: Iterable[Any]) -> None:
        self._families = list(families)

    def collect(self) -> Iterator[Any]:
        return iter(self._families)
