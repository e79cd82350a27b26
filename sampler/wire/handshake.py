"""Say why a client's ZeroMQ handshake with a sampler failed, in one sentence.

ZeroMQ hides a failed CURVE handshake: the client just receives nothing (and
libzmq 4.3 never retries one the server refused). A :class:`HandshakeWatch`
reads the socket's monitor events (pyzmq ``get_monitor_socket``) and turns a
failure into a sentence that says what to do. Client side only; it is read
where the client already polls (or in :meth:`HandshakeWatch.wait`), never by
the sampler.

What libzmq 4.3.5 reports, measured with real sockets (tests/security/
test_security_handshake.py):

* key not in the sampler's ``authorized_clients/``: ``HANDSHAKE_FAILED_AUTH``
  (ZAP status 400), then no retry;
* no keys against a CURVE sampler: ``HANDSHAKE_FAILED_NO_DETAIL`` or
  ``HANDSHAKE_FAILED_PROTOCOL`` (mechanism mismatch), retried;
* keys against a plain sampler: ``HANDSHAKE_FAILED_PROTOCOL`` (mechanism mismatch);
* a wrong ``server.key``: ``HANDSHAKE_FAILED_NO_DETAIL`` on every retry (the
  sampler cannot decrypt our hello and hangs up).

A no-detail failure says nothing of its cause, and a mechanism mismatch can end
that way too (our write fails before we read the sampler's greeting), so the
watch then asks the sampler itself: a plain TCP (or ipc) connection that sends
the first 11 bytes of a ZMTP 3 greeting gets the sampler's greeting back, which
names its mechanism (``NULL`` or ``CURVE``; ZMTP 3, rfc.zeromq.org/spec/23).
Once per endpoint, on a failure only. If that probe gets no answer, the failure
is reported once it happened twice in a row.
"""

from __future__ import annotations

import os
import struct
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import zmq

from .protocol import tcp_address

EVENTS = (
    zmq.EVENT_HANDSHAKE_SUCCEEDED
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
)
NO_DETAIL_TIMES = 2  # see the module docstring
PROBE_TIMEOUT_S = 0.5
# A ZMTP 3 greeting's signature and major version: a peer answers with its whole greeting.
_GREETING_START = b"\xff" + b"\0" * 8 + b"\x7f" + b"\x03"


def _recv_event(monitor: zmq.Socket[bytes]) -> dict[str, Any]:
    """One monitor event: what ``zmq.utils.monitor.recv_monitor_message`` returns, without
    importing that module (it pulls in zmq.asyncio and asyncio: ~9 MiB and ~60 ms for
    every client, the sampler's own processes included)."""
    frames = monitor.recv_multipart()
    event, value = struct.unpack("=HI", frames[0][:6])
    return {"event": event, "value": value, "endpoint": frames[1] if len(frames) > 1 else b""}


def peer_mechanism(endpoint: str, timeout_s: float = PROBE_TIMEOUT_S) -> str | None:
    """The security mechanism a ZeroMQ peer bound at ``endpoint`` announces in its
    greeting ("NULL", "CURVE", ...), or None when it cannot be asked (not tcp/ipc,
    no answer)."""
    import socket

    address = tcp_address(endpoint)
    try:
        if address is not None:
            conn = socket.create_connection(address, timeout=timeout_s)
        elif endpoint.startswith("ipc://"):
            conn = socket.socket(socket.AF_UNIX)
            conn.settimeout(timeout_s)
            conn.connect(endpoint[len("ipc://") :])
        else:
            return None
        with conn:
            conn.sendall(_GREETING_START)
            greeting = b""
            while len(greeting) < 32:
                chunk = conn.recv(64 - len(greeting))
                if not chunk:
                    break
                greeting += chunk
    except (OSError, ValueError):
        return None
    if len(greeting) < 32 or greeting[0] != 0xFF or greeting[10] < 3:
        return None
    return greeting[12:32].rstrip(b"\0").decode("ascii", "replace") or None


def _key_file(keys: str | os.PathLike[str] | None, public: bytes | None) -> str:
    """Which ``DIR/NAME.key`` holds our public key (for the message), or "" when unknown."""
    if keys and public:
        import zmq.auth

        for path in sorted(Path(keys).glob("*.key_secret")):
            try:
                if zmq.auth.load_certificate(path)[0] == public:
                    return str(path)[: -len("_secret")]
            except (OSError, ValueError):
                continue
    return ""


class HandshakeWatch:
    """The handshakes of one socket: which endpoints succeeded, which failed and why.

    Make it before the socket connects (events of earlier attempts are lost), then
    :meth:`poll` it (or register :attr:`monitor` in a poller) and :meth:`close` it
    before the socket."""

    def __init__(
        self,
        sock: zmq.Socket[bytes],
        socket_options: Mapping[int, Any] | None = None,
        keys: str | os.PathLike[str] | None = None,
    ) -> None:
        opts = dict(socket_options or {})
        self.curve = zmq.CURVE_SERVERKEY in opts
        self.keys = keys
        self._public = opts.get(zmq.CURVE_PUBLICKEY)
        self._sock = sock
        self.monitor: zmq.Socket[bytes] | None = sock.get_monitor_socket(EVENTS)
        self.succeeded: set[str] = set()
        self.failures: dict[str, str] = {}  # endpoint -> the latest sentence
        self._no_detail: dict[str, int] = {}
        self._mechanism: dict[str, str | None] = {}  # what the sampler announced (asked once)

    def describe(self, endpoint: str, event: int, value: int) -> str | None:
        """The sentence for one failed handshake (None: wait for more evidence)."""
        where = f"the sampler at {endpoint}"
        folder = str(self.keys) if self.keys else "DIR"
        if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
            key = _key_file(self.keys, self._public)
            ours = f"{Path(key).name} is" if key else "our public key is"
            key = key or "your NAME.key (the public half of the NAME.key_secret in --keys)"
            return (
                f"{where} refused our key ({ours} not in its authorized_clients/): copy {key} "
                f"into authorized_clients/ of its keys folder (or run `spikewatch keys DIR --name NAME` on the "
                f"sampler host and use that NAME.key_secret), then restart this command"
            )
        mismatch = event == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL and value == zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH
        curve_there = None  # does the sampler use CURVE? (None: unknown)
        if event == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL:
            if endpoint not in self._mechanism:
                self._mechanism[endpoint] = peer_mechanism(endpoint)
            mechanism = self._mechanism[endpoint]
            if mechanism is not None:
                curve_there = mechanism == "CURVE"
            else:
                self._no_detail[endpoint] = self._no_detail.get(endpoint, 0) + 1
                if self._no_detail[endpoint] < NO_DETAIL_TIMES:
                    return None
        elif mismatch:
            curve_there = not self.curve
        if not self.curve and (curve_there or (curve_there is None and event == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)):
            return f"{where} requires CURVE keys: pass --keys DIR (a folder with its server.key and your *.key_secret)"
        if self.curve and curve_there is False:
            return f"{where} does not use CURVE: drop --keys"
        if self.curve and event == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL:
            server_key = f"{self.keys}/server.key" if self.keys else "the server.key in --keys"
            return (
                f"{where} hung up during the CURVE handshake: {server_key} is "
                f"{'not' if curve_there else 'probably not'} its key; copy server.key from the sampler's keys folder"
                + ("" if curve_there else " (or, if it does not use CURVE, drop --keys)")
            )
        if event == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL:
            return f"the handshake with {endpoint} failed (it hung up): is a spikewatch sampler listening there?"
        try:
            why = _protocol_error(value)
        except ValueError:
            why = str(value)
        return f"the handshake with {endpoint} failed ({why}): check --keys {folder}"

    def _on(self, event: dict[str, Any]) -> str | None:
        endpoint = event.get("endpoint", b"")
        endpoint = endpoint.decode(errors="replace") if isinstance(endpoint, bytes) else str(endpoint)
        if event["event"] == zmq.EVENT_HANDSHAKE_SUCCEEDED:
            self.succeeded.add(endpoint)
            self.failures.pop(endpoint, None)
            self._no_detail.pop(endpoint, None)
            self._mechanism.pop(endpoint, None)
            return None
        if event["event"] != zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL:
            self._no_detail.pop(endpoint, None)
            self._mechanism.pop(endpoint, None)
        sentence = self.describe(endpoint, event["event"], event["value"])
        if sentence is None or self.failures.get(endpoint) == sentence:
            return None  # a retry that failed the same way: said already
        self.failures[endpoint] = sentence
        return sentence

    def poll(self) -> list[str]:
        """Read the events waiting; the sentences not said before. Does not wait for
        events; only a no-detail failure asks the sampler (once per endpoint, at most
        PROBE_TIMEOUT_S, a connect on loopback)."""
        out: list[str] = []
        while self.monitor is not None and self.monitor.poll(0):
            sentence = self._on(_recv_event(self.monitor))
            if sentence:
                out.append(sentence)
        return out

    def wait(self, timeout_s: float) -> str | None:
        """Block until an endpoint handshakes (None) or fails (its sentence), at most
        ``timeout_s`` (then "" : nothing answered)."""
        end = time.monotonic() + timeout_s
        while self.monitor is not None:
            left = end - time.monotonic()
            if left <= 0 or not self.monitor.poll(max(1, int(left * 1000))):
                return ""
            sentence = self._on(_recv_event(self.monitor))
            if self.succeeded:
                return None
            if sentence:
                return sentence
        return ""

    def close(self) -> None:
        if self.monitor is not None:
            try:
                self._sock.disable_monitor()
            except zmq.ZMQError:
                pass  # the socket is closed already
            self.monitor.close(0)
            self.monitor = None


def _protocol_error(value: int) -> str:
    for name in dir(zmq):
        if name.startswith("PROTOCOL_ERROR_") and getattr(zmq, name) == value:
            return name[len("PROTOCOL_ERROR_") :].lower()
    raise ValueError(value)
