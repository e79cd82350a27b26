"""The service's own heap figure beside RSS: one gauge scraped from its Prometheus text.

``--heap-metric http://127.0.0.1:8080/metrics#app_heap_bytes`` names the page and
the metric. A thread fetches it about every detail period (a slow or hung service
never delays a sample: the detail tier only reads the last value), with the
standard library's HTTP client. The value is published as ``heap`` in ``detail``
while it is fresh.

What the allocator has handed out and RSS differ exactly when memory is retained:
the heap back at its baseline while RSS is not means the allocator kept the pages
(glibc's arenas); both high means the program still holds the memory.
"""

from __future__ import annotations

import http.client
import math
import re
import threading
import time
from urllib.parse import urlsplit

_NAME = re.compile(r"^[A-Za-z_:][A-Za-z0-9_:]*$")


class HeapMetricError(ValueError):
    """A ``--heap-metric`` that cannot work; the message says what to give."""


def parse_spec(spec: str) -> tuple[str, str]:
    """``URL#NAME`` -> (url, name); :class:`HeapMetricError` when malformed."""
    url, sep, name = spec.rpartition("#")
    if not sep or not url or not name:
        raise HeapMetricError(f"expected URL#METRIC, e.g. http://127.0.0.1:8080/metrics#app_heap_bytes; got {spec!r}")
    if not _NAME.match(name):
        raise HeapMetricError(f"{name!r} is not a Prometheus metric name")
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise HeapMetricError(f"expected an http:// URL before '#', got {url!r}")
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise HeapMetricError(f"bad port in {url!r}") from None
    return url, name


def find_value(text: str, name: str) -> float | None:
    """The first sample of ``name`` (any labels) in Prometheus text format, or None."""
    n = len(name)
    for line in text.splitlines():
        if not line.startswith(name) or len(line) <= n or line[n] not in " {\t":
            continue
        rest = line[n:]
        if rest.startswith("{"):
            close = rest.rfind("}")
            if close < 0:
                continue
            rest = rest[close + 1 :]
        fields = rest.split()
        if not fields:
            continue
        try:
            v = float(fields[0])
        except ValueError:
            continue
        if math.isfinite(v):
            return v
    return None


class HeapScraper:
    """Fetches ``url`` every ``period_ns`` in a daemon thread; :meth:`latest` never blocks."""

    def __init__(self, url: str, name: str, period_ns: int = 100_000_000, timeout_s: float = 2.0) -> None:
        self.url, self.name = url, name
        self.period_s = period_ns / 1e9
        self.timeout_s = timeout_s
        parts = urlsplit(url)
        self._host, self._port = parts.hostname or "127.0.0.1", parts.port or 80
        self._path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._value: tuple[int, int] | None = None  # (bytes, monotonic ns when it arrived)
        self.scrapes = 0
        self.failures = 0
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="spikewatch-heap-metric", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def latest(self, max_age_ns: int) -> int | None:
        """The last value, if it arrived within ``max_age_ns``."""
        v = self._value
        if v is None or time.monotonic_ns() - v[1] > max_age_ns:
            return None
        return v[0]

    def _run(self) -> None:
        conn: http.client.HTTPConnection | None = None
        while not self._stop.is_set():
            began = time.monotonic()
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(self._host, self._port, timeout=self.timeout_s)
                conn.request("GET", self._path, headers={"Accept": "text/plain"})
                resp = conn.getresponse()
                body = resp.read(8 << 20)
                if resp.status != 200:
                    raise OSError(f"HTTP {resp.status}")
                v = find_value(body.decode("utf-8", "replace"), self.name)
                if v is None:
                    raise ValueError(f"no metric {self.name} in the page")
                self._value = (int(v), time.monotonic_ns())
                self.scrapes += 1
            except (OSError, ValueError, http.client.HTTPException) as exc:
                # Before the service listens this fails by design: counted, not logged.
                self.failures += 1
                self.last_error = str(exc) or type(exc).__name__
                if conn is not None:
                    conn.close()
                    conn = None
            self._stop.wait(max(0.0, self.period_s - (time.monotonic() - began)))
        if conn is not None:
            conn.close()
