"""A demo service whose memory behaves like a real one, every part switchable and bounded.

Run: ``python -m spikewatch.driver.demo_service --port 8080 [--ceiling 200M] [--startup-peak 60M] ...``

* startup peak: builds a large structure while initialising (``/health`` answers 503
  meanwhile), keeps a part of it and frees the rest;
* per-request buffers: ``POST /ingest`` decodes and copies the body a few times and
  holds the copies for a while, so memory scales with requests in flight;
  ``--request-memory`` adds a fixed buffer per request on top (a known cost per
  in-flight request, which ``spikewatch demo --compare`` changes between two runs);
* a cache (bounded LRU) that warms up and then stabilises;
* an optional slow leak per request, capped;
* ``GET /hold?bytes=N&ms=M``: holds N bytes (``256KiB``, ``4MiB``…) for M ms, so endpoints
  of known, different per-request memory are one query string apart;
* a ceiling: its own accounting refuses work with 503 before it could pass it.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import hashlib
import json
import os
import sys
import time

from aiohttp import web
from spikewatch.sampler.units import format_bytes, parse_duration, parse_size


def _rss() -> int:
    with open("/proc/self/statm", "rb") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _touched(n: int) -> bytearray:
    """n bytes whose pages are really resident (bytearray(n) may stay untouched zero pages)."""
    return bytearray(b"\x5a") * n


class Service:
    def __init__(self, args: argparse.Namespace) -> None:
        self.a = args
        self.ceiling = args.ceiling
        self.base = _rss()  # interpreter + aiohttp: outside our control, inside the ceiling
        self.reserved = 0  # bytes our accounting holds right now
        self.kept: list[bytearray] = []
        self.cache: collections.OrderedDict[int, bytes] = collections.OrderedDict()
        self.cache_bytes = 0
        self.leaked: list[bytearray] = []
        self.leak_bytes = 0
        self.ready = False
        self.refused = 0
        self.in_flight = 0
        self.served = 0

    # --- accounting -----------------------------------------------------------------

    def _room(self) -> int:
        # A safety margin for allocator slack and aiohttp's own buffers.
        margin = max(8 << 20, self.ceiling // 10)
        return self.ceiling - margin - self.base - self.reserved

    def try_reserve(self, n: int) -> bool:
        # Accounting alone misses what the allocator keeps after a free (and aiohttp's own
        # buffers): also check the real resident size, so the ceiling holds either way.
        margin = max(8 << 20, self.ceiling // 10)
        if n > self._room() or _rss() + n > self.ceiling - margin:
            self.refused += 1
            return False
        self.reserved += n
        return True

    def release(self, n: int) -> None:
        self.reserved -= n

    # --- startup --------------------------------------------------------------------

    async def initialise(self) -> None:
        """Build the startup structure in chunks (the peak), keep a part, free the rest."""
        peak = min(self.a.startup_peak, max(0, self._room()))
        chunk = 4 << 20
        built: list[bytearray] = []
        got = 0
        while got < peak:
            n = min(chunk, peak - got)
            if not self.try_reserve(n):
                break
            built.append(_touched(n))
            got += n
            await asyncio.sleep(0)  # still answer /health (503) while initialising
        if self.a.startup_time > 0:
            await asyncio.sleep(self.a.startup_time)
        keep = int(got * self.a.startup_keep)
        kept = 0
        while built and kept < keep:
            b = built.pop()
            kept += len(b)
            self.kept.append(b)
        freed = sum(len(b) for b in built)
        built.clear()
        self.release(freed)
        self.ready = True
        print(
            f"demo service ready: startup peak {format_bytes(got)}, kept {format_bytes(kept)}, "
            f"ceiling {format_bytes(self.ceiling)}",
            flush=True,
        )

    # --- handlers -------------------------------------------------------------------

    async def health(self, request: web.Request) -> web.Response:
        if not self.ready:
            return web.Response(status=503, text="starting")
        return web.json_response(
            {
                "status": "ok",
                "reserved": self.reserved,
                "base": self.base,
                "cache_bytes": self.cache_bytes,
                "leak_bytes": self.leak_bytes,
                "refused": self.refused,
                "in_flight": self.in_flight,
                "served": self.served,
                "rss": _rss(),
                "ceiling": self.ceiling,
            }
        )

    def _cache_put(self, key: int, value: bytes) -> None:
        if self.a.cache_size <= 0 or len(value) > self.a.cache_size:
            return
        old = self.cache.pop(key, None)
        if old is not None:
            self.cache_bytes -= len(old)
            self.release(len(old))
        while self.cache and self.cache_bytes + len(value) > self.a.cache_size:
            _, ev = self.cache.popitem(last=False)
            self.cache_bytes -= len(ev)
            self.release(len(ev))
        if self.try_reserve(len(value)):
            self.cache[key] = value
            self.cache_bytes += len(value)

    def _leak(self) -> None:
        n = self.a.leak_per_request
        if n and self.leak_bytes + n <= self.a.leak_max and self.try_reserve(n):
            self.leaked.append(_touched(n))
            self.leak_bytes += n

    async def ingest(self, request: web.Request) -> web.Response:
        if not self.ready:
            return web.Response(status=503, text="starting")
        length = request.content_length or 0
        # body chunks + joined body + decoded text + parsed document + the extra copies
        need = length * (self.a.copies + 3) + 256 * 1024 + self.a.request_memory
        if not self.try_reserve(need):
            return web.Response(status=503, text="over the memory ceiling: refused")
        self.in_flight += 1
        try:
            body = await request.read()
            copies: list[object] = []
            if self.a.copies > 0:
                try:
                    # A decoded document is bigger than its bytes, like a real parser's output.
                    copies.append(json.loads(body) if body[:1] == b"{" else bytes(body))
                except ValueError:
                    copies.append(bytes(body))
                for _ in range(self.a.copies - 1):
                    copies.append(bytearray(body))
            if self.a.request_memory > 0:
                copies.append(_touched(self.a.request_memory))
            if self.a.hold > 0:
                await asyncio.sleep(self.a.hold)
            digest = hashlib.blake2b(body[:4096], digest_size=8).digest()
            key = int.from_bytes(digest, "big") % max(1, self.a.cache_keys)
            if key not in self.cache:
                self._cache_put(key, bytes(_touched(self.a.cache_entry)))
            else:
                self.cache.move_to_end(key)
            self._leak()
            self.served += 1
            del copies, body
            return web.json_response({"ok": True, "bytes": length, "key": key})
        finally:
            self.in_flight -= 1
            self.release(need)

    async def query(self, request: web.Request) -> web.Response:
        if not self.ready:
            return web.Response(status=503, text="starting")
        try:
            key = int(request.query.get("key", "-1"))
        except ValueError:
            return web.Response(status=400, text="key must be an integer")
        if key < 0:
            key = int(time.monotonic_ns() // 1000) % max(1, self.a.cache_keys)
        hit = self.cache.get(key)
        if hit is None:
            hit = bytes(_touched(self.a.cache_entry))
            self._cache_put(key, hit)
        else:
            self.cache.move_to_end(key)
        self._leak()
        self.served += 1
        n = min(len(hit), self.a.response_size)
        return web.Response(body=hit[:n], content_type="application/octet-stream")

    async def hold(self, request: web.Request) -> web.Response:
        if not self.ready:
            return web.Response(status=503, text="starting")
        try:
            n = parse_size(request.query.get("bytes", "0"))
            ms = float(request.query.get("ms", "100"))
        except ValueError as exc:
            return web.Response(status=400, text=f"bytes=SIZE and ms=MILLISECONDS: {exc}")
        if n < 0 or not 0 <= ms <= 60_000:
            return web.Response(status=400, text="bytes must be >= 0 and ms within 0..60000")
        if not self.try_reserve(n):
            return web.Response(status=503, text="over the memory ceiling: refused")
        self.in_flight += 1
        try:
            buf = _touched(n)
            await asyncio.sleep(ms / 1000)
            self.served += 1
            del buf
            return web.json_response({"ok": True, "held": n})
        finally:
            self.in_flight -= 1
            self.release(n)


def build_app(args: argparse.Namespace) -> web.Application:
    svc = Service(args)
    app = web.Application(client_max_size=args.max_body)
    app["service"] = svc
    app.router.add_get("/health", svc.health)
    app.router.add_post("/ingest", svc.ingest)
    app.router.add_get("/query", svc.query)
    app.router.add_get("/hold", svc.hold)

    async def start(app: web.Application) -> None:
        app["init"] = asyncio.get_running_loop().create_task(svc.initialise())

    app.on_startup.append(start)
    return app


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m spikewatch.driver.demo_service", description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument(
        "--ceiling",
        type=parse_size,
        default=parse_size("200M"),
        help="never account for more than this (default 200M; includes the interpreter)",
    )
    ap.add_argument(
        "--startup-peak",
        type=parse_size,
        default=parse_size("60M"),
        help="size of the structure built while initialising (0: off)",
    )
    ap.add_argument("--startup-keep", type=float, default=0.25, help="fraction of it kept after startup")
    ap.add_argument("--startup-time", type=parse_duration, default=0.5, help="extra initialisation time")
    ap.add_argument("--copies", type=int, default=3, help="copies of each body held per request (0: off)")
    ap.add_argument(
        "--request-memory",
        type=parse_size,
        default=0,
        help="extra buffer each /ingest request holds while in flight (0: off)",
    )
    ap.add_argument("--hold", type=parse_duration, default=0.2, help="how long a request holds its buffers")
    ap.add_argument("--cache-size", type=parse_size, default=parse_size("24M"), help="LRU cache bound (0: off)")
    ap.add_argument("--cache-entry", type=parse_size, default=parse_size("64K"), help="size of a cache entry")
    ap.add_argument("--cache-keys", type=int, default=1024, help="distinct keys (the working set)")
    ap.add_argument("--response-size", type=parse_size, default=parse_size("16K"), help="bytes /query returns")
    ap.add_argument("--leak-per-request", type=parse_size, default=0, help="bytes leaked per request (0: off)")
    ap.add_argument("--leak-max", type=parse_size, default=parse_size("32M"), help="cap of the leak")
    ap.add_argument("--max-body", type=parse_size, default=parse_size("64M"), help="largest body accepted")
    args = ap.parse_args(argv)
    if not 0 <= args.startup_keep <= 1:
        ap.error("--startup-keep must be between 0 and 1")
    return args


def _fixed_mmap_threshold(nbytes: int) -> bool:
    """Serve big buffers from mmap so a free gives memory back at once (glibc only).

    glibc otherwise raises its mmap threshold after the first big free and keeps later
    bodies on the heap: RSS would stay at the burst peak and outgrow the accounting."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        M_MMAP_THRESHOLD = -3
        return bool(libc.mallopt(M_MMAP_THRESHOLD, nbytes))
    except (OSError, AttributeError):
        return False


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    _fixed_mmap_threshold(128 * 1024)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    web.run_app(build_app(args), host=args.host, port=args.port, print=None, access_log=None)
    # Stopped (SIGTERM/SIGINT) and nothing left to write: skip Python's own teardown, which
    # with aiohttp and uvloop loaded takes 0.2-0.4 s on a busy 2-core host, a third of the
    # second a stopped `spikewatch demo` may take.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
