"""RFC 9112 message framing in the driver's HTTP client, table-driven against a loopback
server that answers with raw bytes.

Every case checks what a load driver must get right: the status, whether the response
was an error, and where the response ends. The end is checked twice: the client has
received exactly the response's bytes when it reports completion (it neither stopped
early nor swallowed more), and a kept-alive connection then parses a second, distinct
response (202) correctly. A response whose framing cannot be trusted must never leave
the connection in use.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from spikewatch.driver.httpconn import Conn

NEXT = b"HTTP/1.1 202 Accepted\r\nContent-Length: 4\r\n\r\nnext"

OK = "ok"  # completed, no error, connection kept for the next request
OK_CLOSED = "ok_closed"  # completed, no error, connection closed afterwards
PROTOCOL = "protocol"  # reported as a protocol error, connection dropped
DISCONNECT = "disconnect"  # the server closed mid-response
NOT_REUSED = "not_reused"  # either the body by Transfer-Encoding or a protocol error; never reused


@dataclass
class Case:
    id: str
    reply: bytes
    expect: str
    status: int = 200
    method: str = "GET"
    close: bool = False  # the server closes the connection after the reply
    dribble: bool = False  # the server writes the reply one byte at a time


CASES = [
    # Content-Length
    Case("content-length", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", OK),
    Case("content-length zero", b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", OK),
    Case("error status with body", b"HTTP/1.1 404 Not Found\r\nContent-Length: 4\r\n\r\nnope", OK, status=404),
    Case("header names any case", b"HTTP/1.1 200 OK\r\ncOnTeNt-LeNgTh: 2\r\n\r\nok", OK),
    # Transfer-Encoding: chunked (RFC 9112 §7.1), only when it is the final coding (§6.3)
    Case("chunked", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", OK),
    Case(
        "chunk extensions and trailers",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;name=value\r\nhello\r\n0;last\r\nX-Checksum: abc\r\nX-Other: 1\r\n\r\n",
        OK,
    ),
    Case(
        "chunk size in upper-case hex",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nA\r\n0123456789\r\n0\r\n\r\n",
        OK,
    ),
    Case(
        "chunked as last of two codings",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        OK,
    ),
    Case(
        "chunked in a second Transfer-Encoding line",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        OK,
    ),
    Case(
        "chunked not the last coding: read until close",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n3\r\nabc\r\n0\r\n\r\nmore",
        OK_CLOSED,
        close=True,
    ),
    Case(
        "'chunked' in another header is not framing",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nX-Note: chunked\r\n\r\nnot-a-chunk-size",
        OK_CLOSED,
        close=True,
    ),
    # Content-Length with Transfer-Encoding: TE overrides (§6.3 item 3) or the response is rejected
    Case(
        "Content-Length with Transfer-Encoding",
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        NOT_REUSED,
    ),
    # 1xx interim responses come before the final one (§15.2 of RFC 9110)
    Case(
        "100 Continue before the response",
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        OK,
    ),
    Case(
        "103 Early Hints with headers",
        b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"
        b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok",
        OK,
        status=201,
    ),
    # Responses that never have a body (§6.3 item 1)
    Case("204 without length", b"HTTP/1.1 204 No Content\r\n\r\n", OK, status=204),
    Case(
        "304 with the length of the full body",
        b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n",
        OK,
        status=304,
    ),
    Case("HEAD with Content-Length", b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n", OK, method="HEAD"),
    Case("HEAD with chunked", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", OK, method="HEAD"),
    # Close-delimited bodies and connection reuse
    Case(
        "no length: body until close",
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nbody until close",
        OK_CLOSED,
        close=True,
    ),
    Case("Connection: close", b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok", OK_CLOSED),
    Case("HTTP/1.0 is not kept alive", b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", OK_CLOSED),
    Case(
        "truncated Content-Length body", b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello", DISCONNECT, close=True
    ),
    Case(
        "truncated chunked body",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
        DISCONNECT,
        close=True,
    ),
    # Bad lengths and bad syntax
    Case("Content-Length not a number", b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\nhello", PROTOCOL),
    Case("Content-Length negative", b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\nhello", PROTOCOL),
    Case(
        "conflicting duplicate Content-Length",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        PROTOCOL,
    ),
    Case("conflicting Content-Length list", b"HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\nhello!", PROTOCOL),
    Case("bad chunk size", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n", PROTOCOL),
    Case("bad status code", b"HTTP/1.1 2x0 OK\r\nContent-Length: 0\r\n\r\n", PROTOCOL),
    Case("not HTTP", b"SSH-2.0-OpenSSH_9.2\r\n\r\n", PROTOCOL),
    # Split across many segments
    Case(
        "chunked with trailer, one byte per segment",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=1\r\nhello\r\n0\r\nX-T: 1\r\n\r\n",
        OK,
        dribble=True,
    ),
    Case(
        "100 Continue, one byte per segment",
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        OK,
        dribble=True,
    ),
]


class RawServer:
    """A loopback server that answers each request head with the next scripted raw reply."""

    def __init__(self, case: Case) -> None:
        self.case = case
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.requests: list[bytes] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _read_head(self, conn: socket.socket, buf: bytearray) -> bytes | None:
        while b"\r\n\r\n" not in buf:
            data = conn.recv(65536)
            if not data:
                return None
            buf += data
        i = buf.index(b"\r\n\r\n") + 4
        head = bytes(buf[:i])
        del buf[:i]
        return head

    def _serve(self) -> None:
        conn, _ = self.sock.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buf = bytearray()
        with conn:
            for reply in (self.case.reply, NEXT):
                head = self._read_head(conn, buf)
                if head is None:
                    return
                self.requests.append(head)
                if self.case.dribble and reply is self.case.reply:
                    for i in range(len(reply)):
                        conn.sendall(reply[i : i + 1])
                        threading.Event().wait(0.001)  # separate segments, not coalesced
                else:
                    conn.sendall(reply)
                if self.case.close:
                    # Late enough that a client which stopped early has already reported.
                    threading.Event().wait(0.05)
                    conn.shutdown(socket.SHUT_WR)
                    while conn.recv(65536):
                        pass
                    return
            while conn.recv(65536):
                pass

    def close(self) -> None:
        self.sock.close()
        self.thread.join(timeout=5)


@pytest.fixture
def server(request: pytest.FixtureRequest) -> Iterator[RawServer]:
    srv = RawServer(request.param)
    yield srv
    srv.close()


async def exchange(port: int, method: str) -> tuple[list[tuple[int, str | None, int]], Conn]:
    """Send `method /`, then GET / while the connection stays open; each answer as (status, error, bytes received)."""
    loop = asyncio.get_running_loop()
    answers: asyncio.Queue[tuple[int, str | None, int]] = asyncio.Queue()

    def done(conn: Conn, status: int, err: str | None) -> None:
        answers.put_nowait((status, err, conn.bytes_recv))

    _, conn = await loop.create_connection(lambda: Conn(done, lambda c, busy: None), "127.0.0.1", port)
    got = []
    for m in (method, "GET"):
        conn.send([f"{m} / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()], 0, no_body=m == "HEAD")
        got.append(await asyncio.wait_for(answers.get(), 10))
        if conn.closed:
            break
    if not conn.closed:
        conn.transport.close()  # type: ignore[union-attr]
    return got, conn


@pytest.mark.parametrize("server", CASES, ids=[c.id for c in CASES], indirect=True)
async def test_framing(server: RawServer) -> None:
    case = server.case
    got, conn = await exchange(server.port, case.method)
    status, err, nbytes = got[0]
    if case.expect == OK:
        assert (status, err) == (case.status, None)
        assert nbytes == len(case.reply), "the response ended at the wrong byte"
        assert got[1:] == [(202, None, len(NEXT))], "the kept-alive connection misparsed the next response"
    elif case.expect == OK_CLOSED:
        assert (status, err) == (case.status, None)
        assert nbytes == len(case.reply), "the response ended at the wrong byte"
        assert len(got) == 1 and conn.closed
    elif case.expect == NOT_REUSED:
        assert (status, err) in ((case.status, None), (case.status, PROTOCOL), (0, PROTOCOL))
        assert len(got) == 1 and conn.closed
    else:
        assert err == case.expect
        assert len(got) == 1 and conn.closed
