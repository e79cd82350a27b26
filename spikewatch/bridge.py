"""``spikewatch bridge``: markers and load telemetry over HTTP, for tools that cannot speak ZeroMQ.

k6, Gatling, JMeter or a shell script POST JSON; the bridge forwards it to a sampler's inlet,
where the sampler stamps it on its own clock like any marker:

* ``POST /mark`` ``{"kind": "phase_start" | "phase_end" | "note" (default), "name": "...",
  "attributes": {...}}`` (``attrs`` also accepted);
* ``POST /load`` a ``load`` body (``interval_ns`` plus the fields of the wire protocol);
* ``GET /health`` what was sent and dropped.

Answers are JSON: 202 when queued for the sampler, 400 for a body that is not a JSON object,
422 for one whose fields the protocol refuses (the message says which), 413 for a body
over the inlet's frame limit, 404/405 for other paths and methods, 503 when the inlet queue
is full. It listens on loopback unless ``--allow-remote``: anyone who reaches it can put
markers on the sampler's stream.
"""

from __future__ import annotations

import json
import signal
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import click

from spikewatch import options as opt
from spikewatch.exits import SignalStop
from spikewatch.sampler.wire import protocol
from spikewatch.sampler.wire.client import InletClient
from spikewatch.sampler.wire.endpoints import is_loopback_host

LINGER_MS = 300  # at exit, wait at most this long for queued markers: the bridge stops within a second
ROUTES = {"/mark": "POST", "/load": "POST", "/health": "GET"}


class Bridge:
    """The inlet client, shared by the HTTP threads (a ZeroMQ socket is not thread-safe: one lock)."""

    def __init__(self, client: InletClient) -> None:
        self.client = client
        self.lock = threading.Lock()
        self.accepted = 0
        self.refused = 0

    def send(self, topic: str, body: dict[str, Any]) -> bool:
        with self.lock:
            return self.client.send(topic, body)


def _marker(doc: dict[str, Any]) -> dict[str, Any]:
    unknown = set(doc) - {"kind", "name", "attributes", "attrs", "origin_wall_ns"}
    if unknown:
        raise protocol.ProtocolError(
            f"unknown field(s) {', '.join(sorted(unknown))}: a marker has kind, name, attributes"
        )
    if "attributes" in doc and "attrs" in doc:
        raise protocol.ProtocolError("give attributes or attrs, not both")
    attrs = doc.get("attributes", doc.get("attrs", {}))
    if attrs is None:
        attrs = {}
    if not isinstance(attrs, dict):
        raise protocol.ProtocolError("attributes must be a JSON object")
    origin = doc.get("origin_wall_ns")
    return protocol.marker_message(
        doc.get("kind", protocol.NOTE),
        doc.get("name"),  # type: ignore[arg-type]
        attrs,
        origin if isinstance(origin, int) and not isinstance(origin, bool) else None,
    )


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: load tools reuse their connections
    server_version = "spikewatch-bridge"
    bridge: Bridge  # set on the subclass made per server

    def _reply(self, status: int, doc: dict[str, Any], allow: str | None = None) -> None:
        data = json.dumps(doc).encode() + b"\n"
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if allow:
            self.send_header("Allow", allow)
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, text: str, allow: str | None = None) -> None:
        self.bridge.refused += 1
        self._reply(status, {"ok": False, "error": text}, allow)

    def _route(self, method: str) -> bool:
        path = self.path.split("?", 1)[0]
        want = ROUTES.get(path)
        if want is None:
            self._drain()
            self._error(404, f"no such path {path[:100]!r}: POST /mark, POST /load, GET /health")
            return False
        if want != method:
            self._drain()
            self._error(405, f"{path} takes {want}, not {method}", allow=want)
            return False
        return True

    def _drain(self) -> None:
        """Read a body we will not use, so the connection can carry the next request."""
        n = self._length()
        if n and n <= protocol.MAX_INLET_FRAME:
            self.rfile.read(n)
        elif n:
            self.close_connection = True

    def _length(self) -> int | None:
        raw = self.headers.get("Content-Length")
        try:
            return int(raw) if raw is not None else None
        except ValueError:
            return -1

    def do_GET(self) -> None:
        if self._route("GET"):
            c = self.bridge.client
            self._reply(
                200,
                {"ok": True, "inlet": c.endpoint, "sent": c.sent, "dropped": c.dropped, "refused": self.bridge.refused},
            )

    def do_POST(self) -> None:
        if not self._route("POST"):
            return
        n = self._length()
        if n is None or n < 0:
            self.close_connection = True
            self._error(411, "a Content-Length header is required")
            return
        if n > protocol.MAX_INLET_FRAME:
            self.close_connection = True
            self._error(413, f"body of {n} bytes: the inlet takes at most {protocol.MAX_INLET_FRAME}")
            return
        raw = self.rfile.read(n)
        try:
            doc = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            self._error(400, f"body is not JSON: {exc}")
            return
        if not isinstance(doc, dict):
            self._error(400, f"body must be a JSON object, not {type(doc).__name__}")
            return
        path = self.path.split("?", 1)[0]
        try:
            if path == "/mark":
                topic, body = protocol.MARKER, _marker(doc)
            else:
                topic, body = protocol.LOAD, protocol.validate_load(doc)
        except protocol.ProtocolError as exc:
            self._error(422, str(exc))
            return
        if not self.bridge.send(topic, body):
            self._error(503, "the inlet queue is full (is the sampler running?): not sent")
            return
        self.bridge.accepted += 1
        self._reply(202, {"ok": True, "sent": topic})

    def do_PUT(self) -> None:
        self._route("PUT")

    do_DELETE = do_PATCH = do_PUT

    def log_message(self, format: str, *args: Any) -> None:
        pass  # one line per marker would drown the terminal; /health has the counts


def _address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise click.BadParameter(f"expected HOST:PORT such as 127.0.0.1:7790, got {text!r}", param_hint="--http")
    return host, int(port)


def _listening(endpoint: str) -> bool:
    """Whether anything accepts connections at a tcp:// inlet (else queued messages go nowhere)."""
    address = protocol.tcp_address(endpoint)
    if address is None:
        return True
    try:
        with socket.create_connection(address, timeout=0.2):
            return True
    except OSError:
        return False


@click.command()
@click.option(
    "--http",
    "http_addr",
    default="127.0.0.1:7790",
    show_default=True,
    metavar="HOST:PORT",
    help="Where to listen for POST /mark and POST /load (port 0: any free one).",
)
@opt.inlet
@click.option(
    "--allow-remote",
    is_flag=True,
    help="Listen on an address other than loopback: anyone who reaches it can write markers.",
)
@opt.client_keys
@opt.quiet
def bridge(
    http_addr: str, inlet: str, allow_remote: bool, keys: str | None, client_key: str | None, quiet: bool
) -> None:
    """Forward markers and load telemetry from HTTP to a sampler's inlet (for k6, shell, JMeter…).

    \b
      spikewatch bridge --http 127.0.0.1:7790 --inlet tcp://127.0.0.1:7782
      curl -d '{"kind": "phase_start", "name": "ramp", "attributes": {"vus": 50}}' 127.0.0.1:7790/mark
    """
    from spikewatch.exits import RuntimeFailure
    from spikewatch.options import endpoint

    inlet = endpoint(inlet, "--inlet")
    host, port = _address(http_addr)
    if not is_loopback_host(host) and not allow_remote:
        raise click.UsageError(
            f"--http {http_addr} is not a loopback address: anyone who reaches it could write "
            "markers to the sampler; pass --allow-remote to listen there anyway"
        )
    options = opt.client_socket_options(keys, client_key)
    import zmq

    ctx = zmq.Context()
    client = InletClient(
        inlet, context=ctx, linger_ms=LINGER_MS, socket_options=options, watch_handshakes=True, keys=keys
    )
    shared = Bridge(client)
    handler = type("BoundHandler", (Handler,), {"bridge": shared})
    try:
        server = ThreadingHTTPServer((host, port), handler)
    except OSError as exc:
        ctx.destroy(linger=0)
        raise RuntimeFailure(f"cannot listen on {http_addr}: {exc.strerror or exc}") from None
    server.daemon_threads = True  # a client that never finishes its request must not hold up the exit
    stop = SignalStop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, stop.set)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, name="http", daemon=True)
    thread.start()
    bound_host, bound_port = str(server.server_address[0]), int(server.server_address[1])
    if not quiet:
        click.echo(
            f"bridge listening on http://{bound_host}:{bound_port} (POST /mark, POST /load) -> {inlet}", err=True
        )
    try:
        while not stop.wait(0.1):
            if client.handshake is not None:
                for sentence in client.handshake.poll():
                    click.echo(f"{sentence}: markers go nowhere", err=True)
    finally:
        server.shutdown()
        server.server_close()
        with shared.lock:
            sent, dropped = client.sent, client.dropped
            ctx.destroy(linger=LINGER_MS if _listening(inlet) else 0)
    if not quiet:
        click.echo(f"bridge stopped: {sent} message(s) forwarded, {dropped} dropped", err=True)
