"""The HTTP side of the Prometheus exporter: the bind address (loopback unless allowed),
who is scraping, and the request handler serving ``/metrics``. Standard library only;
:mod:`spikewatch.sampler.prometheus` (which re-exports these names) keeps the peaks."""

from __future__ import annotations

import re
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

from . import __version__
from .wire.endpoints import is_loopback_host

DEFAULT_BIND = "127.0.0.1:9464"
# The ``spikewatch sample`` options that start an exporter (docs and recipes use them).
CLI_OPTION = "--prometheus"
CLI_ALLOW_REMOTE = "--prometheus-allow-remote"
METRICS_PATH = "/metrics"
MAX_SCRAPERS = 32
_SCRAPER_NAME_RE = re.compile(r"^[A-Za-z0-9_.:@/-]{1,64}$")
EXTRA_HINT = "pip install 'spikewatch[prometheus]'"


class ExporterError(Exception):
    """The endpoint cannot be served; the message says what to do."""


class PrometheusUnavailable(ExporterError, RuntimeError):
    """prometheus_client is not installed."""


class BindError(ExporterError, ValueError):
    """The bind address is malformed, not allowed, or in use."""


def parse_bind(bind: str, *, allow_remote: bool = False) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) → (host, port); refuse non-loopback unless allowed."""
    text = bind.strip()
    m = re.match(r"^\[([^\]]+)\]:(\d+)$", text) or re.match(r"^([^:\[\]]*):(\d+)$", text)
    if not m:
        raise BindError(f"expected HOST:PORT (e.g. 127.0.0.1:9464), got {bind!r}")
    host, port = m.group(1) or "127.0.0.1", int(m.group(2))
    if port > 65535:
        raise BindError(f"port out of range in {bind!r}")
    if not allow_remote and not is_loopback_host(host):
        raise BindError(
            f"{host} is not a loopback address: HTTP has no CURVE encryption, so the "
            f"Prometheus endpoint binds to loopback only unless allowed explicitly ({CLI_ALLOW_REMOTE}); "
            "then restrict who can reach the port with a network policy or firewall"
        )
    return host, port


class Renderer(Protocol):
    """What the handler serves: one scrape as (body, content type)."""

    def render(self, scraper: str, accept: str = "") -> tuple[bytes, str]: ...


def scraper_key(query: str, client_ip: str, user_agent: str) -> str:
    """Who is scraping: ``?scraper=NAME`` when given, else client IP + User-Agent."""
    names = parse_qs(query).get("scraper")
    if names:
        name = names[0]
        if not _SCRAPER_NAME_RE.match(name):
            raise ValueError("scraper must be 1-64 characters of A-Z a-z 0-9 _ . : @ / -")
        return "name:" + name
    return f"peer:{client_ip} {user_agent[:200]}"


def server_class(host: str) -> type[ThreadingHTTPServer]:
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET

    class Server(ThreadingHTTPServer):
        address_family = family
        daemon_threads = True

    return Server


def make_handler(exporter: Renderer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = f"spikewatch/{__version__}"
        protocol_version = "HTTP/1.1"  # keep-alive, as Prometheus scrapes
        timeout = 120  # an idle keep-alive connection (and its thread) goes after 2 min

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            if parts.path == "/":
                self._send(200, b'spikewatch sampler: see <a href="/metrics">/metrics</a>\n', "text/html")
                return
            if parts.path != METRICS_PATH:
                self._send(404, b"not found: try /metrics\n", "text/plain")
                return
            try:
                key = scraper_key(parts.query, self.client_address[0], self.headers.get("User-Agent", ""))
            except ValueError as exc:
                self._send(400, f"{exc}\n".encode(), "text/plain")
                return
            body, ctype = exporter.render(key, self.headers.get("Accept", ""))
            self._send(200, body, ctype)

        def _send(self, code: int, body: bytes, ctype: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # scrapes are not news
            pass

    return Handler
