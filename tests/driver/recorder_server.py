"""A real aiohttp server that records every arrival, for the driver's tests.

Run: python recorder_server.py --port P [--delay-ms D] [--ready-after S]
Every request except /_arrivals and /health is recorded as
(arrival monotonic ns, method, path, body bytes, in flight after arrival, departure ns) and answered
after ``delay`` ms (``?delay=`` overrides); /status/NNN answers with that status.
/health answers 503 for ``--ready-after`` seconds counted from the first /health request
(not from the server's start, which a busy host may reach long before the driver probes).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

from aiohttp import web


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--delay-ms", type=float, default=0.0)
    ap.add_argument("--ready-after", type=float, default=0.0)
    args = ap.parse_args()
    records: list[tuple[int, str, str, int, int]] = []
    state = {"in_flight": 0, "t0": None}

    async def health(request: web.Request) -> web.Response:
        if state["t0"] is None:
            state["t0"] = time.monotonic()
        if time.monotonic() - state["t0"] < args.ready_after:
            return web.Response(status=503, text="starting")
        return web.Response(text="ok")

    async def arrivals(request: web.Request) -> web.Response:
        return web.json_response({"records": records})

    async def reset(request: web.Request) -> web.Response:
        records.clear()
        return web.Response(text="ok")

    async def anything(request: web.Request) -> web.Response:
        t = time.monotonic_ns()
        state["in_flight"] += 1
        body, seen = b"", 0
        try:
            body = await request.read()
            seen = state["in_flight"]
            delay = float(request.query.get("delay", args.delay_ms))
            if delay:
                await asyncio.sleep(delay / 1000)
            if request.path == "/chunked":  # Transfer-Encoding: chunked, 3 x 1000 bytes
                resp = web.StreamResponse()
                resp.enable_chunked_encoding()
                await resp.prepare(request)
                for _ in range(3):
                    await resp.write(b"x" * 1000)
                await resp.write_eof()
                return resp
            if request.path == "/close":  # answer, then close the connection
                resp = web.Response(text="bye")
                resp.force_close()
                return resp
            if request.path.startswith("/status/"):
                return web.Response(status=int(request.path.rsplit("/", 1)[1]), text="as asked")
            return web.Response(text="ok")
        finally:
            state["in_flight"] -= 1
            records.append((t, request.method, request.path, len(body), seen, time.monotonic_ns()))

    app = web.Application(client_max_size=64 << 20)
    app.router.add_get("/health", health)
    app.router.add_get("/_arrivals", arrivals)
    app.router.add_post("/_reset", reset)
    app.router.add_route("*", "/{tail:.*}", anything)

    async def serve() -> None:
        runner = web.AppRunner(app, access_log=None, handle_signals=True)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", args.port).start()
        print("ready", flush=True)  # only once the port accepts connections
        await asyncio.Event().wait()

    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
