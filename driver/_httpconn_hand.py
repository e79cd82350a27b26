"""A minimal HTTP/1.1 keep-alive client connection (asyncio.Protocol, callback style).

The aiohttp client spends 64-96 µs of Python per request (FACTS.md); a load
generator that is itself the bottleneck reports its own queueing as the service's
latency. This protocol does only what a load driver needs: write a prebuilt head
plus zero-copy body slices, parse the status line and framing (Content-Length,
chunked, or until close) and count bytes, with no per-request coroutine or task.
"""

from __future__ import annotations

import asyncio
import time
from typing import Callable

_monotonic_ns = time.monotonic_ns

# Callback: (conn, status or 0, error kind or None)
DoneCallback = Callable[["Conn", int, "str | None"], None]

_HEAD, _LENGTH, _CHUNKED, _UNTIL_CLOSE, _IDLE = range(5)


class Conn(asyncio.Protocol):
    __slots__ = ("transport", "on_done", "on_lost", "state", "buf", "remaining", "status", "close_after",
                 "bytes_recv", "intended_ns", "sent_ns", "closed", "no_body", "cbuf", "skip", "trailer",
                 "busy", "tag")

    def __init__(self, on_done: DoneCallback, on_lost: Callable[["Conn", bool], None]) -> None:
        self.transport: asyncio.Transport | None = None
        self.on_done = on_done
        self.on_lost = on_lost
        self.state = _IDLE
        self.buf = b""
        self.remaining = 0
        self.status = 0
        self.close_after = False
        self.bytes_recv = 0
        self.intended_ns = 0
        self.sent_ns = 0
        self.closed = False
        self.no_body = False
        self.cbuf = bytearray()
        self.skip = 0
        self.trailer = False
        self.busy = False
        self.tag = 0  # what the engine started this request for (closed lane or open send)

    # --- asyncio.Protocol -----------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        was_busy = self.busy
        self.closed = True
        if self.busy and self.state == _UNTIL_CLOSE:
            self._finish(None)
            was_busy = False
        elif self.busy:
            self.busy = False
            self.state = _IDLE
            self.on_done(self, 0, "disconnect")
        self.on_lost(self, was_busy)

    def data_received(self, data: bytes) -> None:
        self.bytes_recv += len(data)
        state = self.state
        if state == _LENGTH:
            self.remaining -= len(data)
            if self.remaining <= 0:
                self._finish(None)
            return
        if state == _HEAD:
            buf = self.buf + data if self.buf else data
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > 65536:
                    self._fail("protocol")
                    return
                self.buf = buf
                return
            self.buf = b""
            self._head(buf, end)
            return
        if state == _CHUNKED:
            self.cbuf += data
            self._chunks()
            return
        if state == _UNTIL_CLOSE:
            return
        # Data while idle: the server broke framing; drop the connection.
        if self.transport is not None:
            self.transport.close()

    # --- requests -------------------------------------------------------------

    def send(self, parts: list, intended_ns: int, no_body: bool = False) -> None:
        self.busy = True
        self.state = _HEAD
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
            self.state = _IDLE
            self.on_done(self, 0, kind)
        if self.transport is not None:
            self.transport.abort()

    def _head(self, buf: bytes, end: int) -> None:
        try:
            self.status = int(buf[9:12])
        except ValueError:
            self._fail("protocol")
            return
        head = buf[:end].lower()
        self.close_after = b"\r\nconnection: close" in head or buf.startswith(b"HTTP/1.0")
        rest = len(buf) - end - 4
        if self.no_body or self.status in (204, 304) or 100 <= self.status < 200:
            self._finish(None)
            return
        i = head.find(b"\r\ncontent-length:")
        if i >= 0:
            j = head.find(b"\r\n", i + 2)
            try:
                n = int(head[i + 17: j if j >= 0 else len(head)])
            except ValueError:
                self._fail("protocol")
                return
            self.remaining = n - rest
            if self.remaining <= 0:
                self._finish(None)
            else:
                self.state = _LENGTH
            return
        if b"\r\ntransfer-encoding:" in head and b"chunked" in head:
            self.state = _CHUNKED
            self.cbuf = bytearray(buf[end + 4:])
            self.skip = 0
            self.trailer = False
            self._chunks()
            return
        self.state = _UNTIL_CLOSE
        self.close_after = True

    def _chunks(self) -> None:
        cbuf = self.cbuf
        while True:
            if self.skip:
                n = min(self.skip, len(cbuf))
                del cbuf[:n]
                self.skip -= n
                if self.skip:
                    return
            i = cbuf.find(b"\r\n")
            if i < 0:
                if len(cbuf) > 65536:
                    self._fail("protocol")
                return
            line = bytes(cbuf[:i])
            del cbuf[:i + 2]
            if self.trailer:
                if not line:
                    self.cbuf = bytearray()
                    self._finish(None)
                    return
                continue
            try:
                size = int(line.split(b";", 1)[0], 16)
            except ValueError:
                self._fail("protocol")
                return
            if size == 0:
                self.trailer = True
            else:
                self.skip = size + 2

    def _fail(self, kind: str) -> None:
        self.closed = True
        self.busy = False
        self.state = _IDLE
        self.on_done(self, self.status, kind)
        if self.transport is not None:
            self.transport.abort()

    def _finish(self, kind: str | None) -> None:
        self.busy = False
        self.state = _IDLE
        t = self.transport
        if t is not None and not self.close_after and t.get_write_buffer_size():
            # The server answered before reading our whole body (e.g. an early 503): the
            # rest of it would be parsed as the next request, so this connection is spent.
            self.close_after = True
        if self.close_after and self.transport is not None:
            self.closed = True
            self.transport.close()
        self.on_done(self, self.status, kind)
