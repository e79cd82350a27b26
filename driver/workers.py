"""Where the engines run: in the coordinator's own loop, or in N worker processes.

Each worker process has its own uvloop loop and :class:`~spikewatch.driver.engine.Engine`; the
coordinator sends it phase commands with absolute monotonic times (CLOCK_MONOTONIC is
system-wide, so every process plays the same timeline) and receives a snapshot every
100 ms with an encoded HDR histogram to merge. Snapshots carry the index of the phase
they belong to, so a snapshot that straddles a phase change is never misattributed.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import time
from multiprocessing.connection import Connection
from typing import Any

from hdrh.histogram import HdrHistogram

from .engine import Engine
from .scenario import Scenario

TICK_NS = 100_000_000
_now = time.monotonic_ns

# A snapshot as the coordinator sees it: (phase index, counters with "hist", worker loop lag ns or None)
Snap = tuple[int, dict[str, Any], "int | None"]


class LocalBackend:
    """The engine on the coordinator's own loop (``--workers 1``, the default)."""

    workers = 1

    def __init__(self, scenario: Scenario) -> None:
        self.engine = Engine(scenario)
        self.cur = -1
        self.task: asyncio.Task | None = None
        self.pending: list[Snap] = []

    async def start(self) -> None:
        self.engine.loop = asyncio.get_running_loop()

    async def start_phase(self, index: int, phase: Any, t0: int, end: int) -> None:
        await self._stop_task()
        self.engine.prepare(phase)
        self.pending.append((self.cur, self.engine.take(), None))
        self.cur = index
        self.task = asyncio.get_running_loop().create_task(self.engine.run_phase(phase, t0, end))

    async def _stop_task(self) -> None:
        if self.task is not None and not self.task.done():
            self.task.cancel()
            try:
                await self.task
            except asyncio.CancelledError:
                pass
        elif self.task is not None and self.task.exception() is not None:
            raise self.task.exception()  # type: ignore[misc]

    def take(self, now: int) -> tuple[list[Snap], int]:
        self.engine.sweep(now)
        snaps, self.pending = self.pending, []
        snaps.append((self.cur, self.engine.take(), None))
        return snaps, self.engine.in_flight

    def in_flight_by_name(self) -> dict[str, int]:
        return self.engine.in_flight_by_name()

    async def finish(self, grace_s: float = 5.0) -> int:
        await self._stop_task()
        return await self.engine.finish(grace_s)

    def close(self) -> None:
        pass


def _encode(snap: dict[str, Any]) -> dict[str, Any]:
    out = dict(snap)
    out["hist"] = snap["hist"].encode()
    return out


async def _worker(conn: Connection, scenario: Scenario, index: int, workers: int) -> None:
    loop = asyncio.get_running_loop()
    engine = Engine(scenario, index, workers)
    engine.loop = loop
    queue: asyncio.Queue = asyncio.Queue()

    def readable() -> None:
        try:
            while conn.poll():
                queue.put_nowait(conn.recv())
        except (EOFError, OSError):
            queue.put_nowait(("finish",))
            loop.remove_reader(conn.fileno())

    loop.add_reader(conn.fileno(), readable)
    state = {"cur": -1}

    async def ticker() -> None:
        due = _now() + TICK_NS
        while True:
            await asyncio.sleep(max(0, due - _now()) / 1e9)
            now = _now()
            lag = max(0, now - due)
            engine.sweep(now)
            conn.send(("stats", state["cur"], _encode(engine.take()), lag, engine.in_flight, engine.in_flight_by))
            due += TICK_NS
            if due < now:
                due = now + TICK_NS

    tick = loop.create_task(ticker())
    task: asyncio.Task | None = None
    conn.send(("ready", index))
    while True:
        cmd = await queue.get()
        if task is not None and not task.done():
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        if cmd[0] == "phase":
            _, i, phase, t0, end = cmd
            engine.prepare(phase)
            conn.send(("stats", state["cur"], _encode(engine.take()), None, engine.in_flight, engine.in_flight_by))
            state["cur"] = i
            task = loop.create_task(engine.run_phase(phase, t0, end))
        else:
            tick.cancel()
            left = await engine.finish(cmd[1] if len(cmd) > 1 else 5.0)
            conn.send(("stats", state["cur"], _encode(engine.take()), None, 0, [0] * len(engine.names)))
            conn.send(("done", left))
            return


def worker_main(conn: Connection, scenario: Scenario, index: int, workers: int) -> None:
    import signal

    import uvloop

    # Ctrl-C reaches the whole process group: the coordinator decides when we stop (a
    # KeyboardInterrupt here would print a traceback and lose this worker's counts).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    uvloop.run(_worker(conn, scenario, index, workers))


class ProcessBackend:
    """``workers`` processes, each with its own loop; rates and concurrency split between them."""

    def __init__(self, scenario: Scenario, workers: int) -> None:
        self.workers = workers
        self.scenario = scenario
        ctx = mp.get_context("spawn")  # the coordinator holds ZeroMQ threads: never fork it
        self.pipes: list[Connection] = []
        self.procs = []
        for i in range(workers):
            parent, child = ctx.Pipe()
            p = ctx.Process(
                target=worker_main, args=(child, scenario, i, workers), daemon=True, name=f"spikewatch-driver-{i}"
            )
            self.pipes.append(parent)
            self.procs.append(p)
        self.pending: list[Snap] = []
        self.in_flight = [0] * workers
        self.names: list[str] = list(dict.fromkeys(r.name for r in scenario.requests))  # as the engines number them
        self.in_flight_by: list[list[int]] = [[0] * len(self.names) for _ in range(workers)]
        self.ready: set[int] = set()
        self.done: dict[int, int] = {}
        self._event: asyncio.Event | None = None
        self.join_s = 5.0  # how long close() waits for each worker to exit (short after a stop request)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._event = asyncio.Event()
        for p in self.procs:
            p.start()
        for i, pipe in enumerate(self.pipes):
            loop.add_reader(pipe.fileno(), self._readable, i)
        deadline = time.monotonic() + 60
        while len(self.ready) < self.workers:
            if time.monotonic() > deadline or any(not p.is_alive() for p in self.procs):
                raise RuntimeError("driver worker processes did not start")
            self._event.clear()
            try:
                await asyncio.wait_for(self._event.wait(), 1.0)
            except TimeoutError:
                pass

    def _readable(self, i: int) -> None:
        pipe = self.pipes[i]
        try:
            while pipe.poll():
                msg = pipe.recv()
                if msg[0] == "stats":
                    _, cur, snap, lag, in_flight, by_name = msg
                    snap["hist"] = HdrHistogram.decode(snap["hist"])
                    self.pending.append((cur, snap, lag))
                    self.in_flight[i] = in_flight
                    self.in_flight_by[i] = by_name
                elif msg[0] == "ready":
                    self.ready.add(i)
                elif msg[0] == "done":
                    self.done[i] = msg[1]
        except (EOFError, OSError):
            asyncio.get_running_loop().remove_reader(pipe.fileno())
            self.done.setdefault(i, 0)
        if self._event is not None:
            self._event.set()

    async def start_phase(self, index: int, phase: Any, t0: int, end: int) -> None:
        for pipe in self.pipes:
            pipe.send(("phase", index, phase, t0, end))

    def take(self, now: int) -> tuple[list[Snap], int]:
        snaps, self.pending = self.pending, []
        return snaps, sum(self.in_flight)

    def in_flight_by_name(self) -> dict[str, int]:
        return {name: sum(w[i] for w in self.in_flight_by) for i, name in enumerate(self.names)}

    async def finish(self, grace_s: float = 5.0) -> int:
        for pipe in self.pipes:
            try:
                pipe.send(("finish", grace_s))
            except OSError:
                pass
        deadline = time.monotonic() + grace_s + (10 if grace_s >= 1 else 0.3)
        while len(self.done) < self.workers and time.monotonic() < deadline:
            self._event.clear()  # type: ignore[union-attr]
            try:
                await asyncio.wait_for(self._event.wait(), 0.5)  # type: ignore[union-attr]
            except TimeoutError:
                pass
        self.in_flight = [0] * self.workers
        self.in_flight_by = [[0] * len(self.names) for _ in range(self.workers)]
        return sum(self.done.values())

    def close(self) -> None:
        loop = asyncio.get_event_loop()
        for pipe in self.pipes:
            try:
                loop.remove_reader(pipe.fileno())
            except Exception:
                pass
            pipe.close()
        for p in self.procs:
            p.join(timeout=self.join_s)
            if p.is_alive():
                p.kill()
                p.join(timeout=2)
