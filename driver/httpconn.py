"""A minimal HTTP/1.1 keep-alive client connection (asyncio.Protocol, callback style).

The aiohttp client spends 64-96 µs of Python per request (bench/RESULTS.md, "driver");
a load generator that is itself the bottleneck reports its own queueing as the
service's latency. This protocol does only what a load driver needs: write a
prebuilt head plus zero-copy body slices, count bytes, and find where each response
ends, with no per-request coroutine or task.

Response framing (RFC 9112 §6.3: 1xx, 204 and 304 and answers to HEAD have no body;
Transfer-Encoding with chunked last wins over Content-Length; otherwise the body runs
until the server closes) is llhttp's, through httptools, the parser uvicorn uses.
Only the framing fields reach Python: one callback per header, two per response.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from httptools import HttpParserError, HttpResponseParser

_monotonic_ns = time.monotonic_ns

# Callback: (conn, status or 0, error kind or None)
DoneCallback = Callable[["Conn", int, "str | None"], None]


class _HeadDone(Exception):
    """Raised from a callback to stop llhttp at the end of a HEAD response's head."""


class Conn(asyncio.Protocol):
    __slots__ = (
        "transport",
        "on_done",
        "on_lost",
        "parser",
        "status",
        "close_after",
        "bytes_recv",
        "intended_ns",
        "sent_ns",
        "closed",
        "no_body",
        "busy",
        "tag",
        "headed",
        "framed",
        "req",
    )

    def __init__(self, on_done: DoneCallback, on_lost: Callable[[Conn, bool], None]) -> None:
        self.transport: asyncio.Transport | None = None
        self.on_done = on_done
        self.on_lost = on_lost
        self.parser = HttpResponseParser(self)
        self.status = 0
        self.close_after = False
        self.bytes_recv = 0
        self.intended_ns = 0
        self.sent_ns = 0
        self.closed = False
        self.no_body = False
        self.busy = False
        self.headed = False  # the final response's head is parsed
        self.framed = False  # its body has a length or chunks (else it runs until close)
        self.tag = 0  # what the engine started this request for (closed lane or open send)
        self.req = 0  # which request name it is sending (the engine's per-name in-flight counts)

    # --- asyncio.Protocol -----------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        was_busy = self.busy
        self.closed = True
        if self.busy and self.headed and not self.framed:
            # llhttp has no end-of-input call in httptools: a close-delimited body ends here.
            self._finish()
            was_busy = False
        elif self.busy:
            self.busy = False
            self.on_done(self, 0, "disconnect")
        self.on_lost(self, was_busy)

    def data_received(self, data: bytes) -> None:
        self.bytes_recv += len(data)
        if not self.busy:
            # Data while idle: the server broke framing; drop the connection.
            self._fail("protocol")
            return
        try:
            self.parser.feed_data(data)
        except HttpParserError as exc:
            if isinstance(exc.__context__, _HeadDone):
                # A fresh parser: the old one is in its error state.
                self.parser = HttpResponseParser(self)
                self._finish()
            elif self.busy:
                self._fail("protocol")
            else:
                # Bytes after a complete response (nothing was asked for): framing is lost.
                self._fail("protocol")

    # --- llhttp callbacks -----------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        n = name.lower()
        if n == b"content-length":
            self.framed = True
        elif n == b"transfer-encoding":
            # Chunked only when it is the last coding; otherwise the body runs until close.
            self.framed = value.rsplit(b",", 1)[-1].strip().lower() == b"chunked"

    def on_headers_complete(self) -> None:
        if not self.busy:
            raise ValueError("response without a request")
        status = self.parser.get_status_code()
        self.status = status
        if status < 200:
            if status == 101:
                raise ValueError("upgrade not asked for")
            self.framed = False  # an interim response; its own headers say nothing of the final one
            return
        self.headed = True
        self.close_after = not self.parser.should_keep_alive()
        if self.no_body:
            raise _HeadDone

    def on_message_complete(self) -> None:
        if self.status >= 200:
            self._finish()

    # --- requests -------------------------------------------------------------

    def send(self, parts: list[bytes | memoryview], intended_ns: int, no_body: bool = False) -> None:
        self.busy = True
        self.headed = False
        self.framed = False
        self.status = 0
        self.no_body = no_body
        self.intended_ns = intended_ns
        self.bytes_recv = 0
        self.sent_ns = _monotonic_ns()
        self.transport.writelines(parts)  # type: ignore[union-attr]

    def abort(self, kind: str) -> None:
        """Give up on the request in flight (timeout): report it and drop the connection."""
        self.closed = True
        if self.busy:
            self.busy = False
            self.on_done(self, 0, kind)
        if self.transport is not None:
            self.transport.abort()

    def _fail(self, kind: str) -> None:
        self.closed = True
        if self.busy:
            self.busy = False
            self.on_done(self, self.status, kind)
        if self.transport is not None:
            self.transport.abort()

    def _finish(self) -> None:
        self.busy = False
        t = self.transport
        if t is not None and not self.close_after and t.get_write_buffer_size():
            # The server answered before reading our whole body (e.g. an early 503): the
            # rest of it would be parsed as the next request, so this connection is spent.
            self.close_after = True
        if self.close_after and t is not None:
            self.closed = True
            t.close()
        self.on_done(self, self.status, None)
