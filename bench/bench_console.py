"""Can the live console keep up with 4 samplers at 1 kHz? Lag from sample time to draw.

Four publisher processes send the real stream (a ``hello`` a second, a
``samples`` batch of ~20 samples every 20 ms, a 2 ms spike every 2 s) on real
PUB sockets. The console app runs headless (Textual's ``run_test``) with the
four panels on screen, drawing at its normal refresh rate. For each source it
records, at every chart draw, the lag between the newest drawn sample's time
(sampler clock mapped to wall time through ``hello.wall_ns``) and the wall
clock at draw; also the lag at receipt, stream gaps, samples received vs sent,
and the console process's CPU.

    .venv/bin/python bench/bench_console.py                 # 30 s window, 20 s
    .venv/bin/python bench/bench_console.py --window 300 --prefill 300
    .venv/bin/python bench/bench_console.py --real   # 4 real `spikewatch sample` processes instead
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MiB = 1 << 20


def publish(endpoint: str, seconds: float, prefill_s: float, out: mp.Queue) -> None:
    from tests.console.publisher import Publisher

    pub = Publisher(endpoint, baseline=100 * MiB, prefill_ns=int(prefill_s * 1e9)).start()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pub.spike(180 * MiB, 2_000_000)
        time.sleep(2.0)
    pub.stop()
    out.put((endpoint, pub.samples_sent))


# What each real sampler launches: 80 MiB held for 5 ms every 2 s.
SPIKER = """
import time
while True:
    time.sleep(2)
    b = b"x" * (80 << 20)
    time.sleep(0.005)
    del b
"""


def start_real_samplers(endpoints: list[str], seconds: float) -> list[subprocess.Popen]:
    from tests.conftest import free_port

    return [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "spikewatch",
                "sample",
                "--publish",
                ep,
                "--inlet",
                f"tcp://127.0.0.1:{free_port()}",
                "--no-journal",
                "--quiet",
                "--duration",
                f"{seconds:.0f}s",
                "--",
                sys.executable,
                "-c",
                SPIKER,
            ]
        )
        for ep in endpoints
    ]


async def measure(
    endpoints: list[str], window_s: float, fps: float, warmup: float, duration: float, size: tuple[int, int]
) -> dict:
    import numpy as np
    from spikewatch.analysis.console.app import ConsoleApp
    from spikewatch.analysis.console.options import ConsoleOptions
    from spikewatch.analysis.console.state import LagStats

    app = ConsoleApp(endpoints, ConsoleOptions(window_s=window_s, fps=fps))
    async with app.run_test(size=size) as pilot:
        deadline = time.monotonic() + 30
        while not (len(app.panels) == len(endpoints) and all(p.src.anchor for p in app.panels.values())):
            if time.monotonic() > deadline:
                raise SystemExit("the publishers did not all show up within 30 s")
            await pilot.pause(0.1)
        await pilot.pause(warmup)
        with app.stream.lock:
            for p in app.panels.values():
                p.src.draw_lag, p.src.receive_lag = LagStats(), LagStats()
                p.src.seq.lost = 0
            received0 = {p.src.key: p.src.samples for p in app.panels.values()}
        draws0 = {k: p.chart.draws for k, p in app.panels.items()}
        updates0 = app.updates
        cpu0, t0 = time.process_time(), time.monotonic()
        await pilot.pause(duration)
        cpu, elapsed = time.process_time() - cpu0, time.monotonic() - t0
        with app.stream.lock:
            sources = [
                {
                    "source": p.src.label,
                    "draw_lag_ms": p.src.draw_lag.summary(),
                    "receive_lag_ms": p.src.receive_lag.summary(),
                    "draws_per_s": (p.chart.draws - draws0[k]) / elapsed,
                    "samples_per_s": (p.src.samples - received0[p.src.key]) / elapsed,
                    "gaps": p.src.gaps,
                    # share of the chart's columns that had samples (does history fill the window?)
                    "window_filled": float((~np.isnan(p.chart.frame.maxs)).mean()) if p.chart.frame else 0.0,
                }
                for k, p in app.panels.items()
            ]
    rss_now = int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / MiB
    return {
        "elapsed_s": elapsed,
        "cpu_fraction": cpu / elapsed,
        "rss_end_mib": rss_now,
        "ui_updates_per_s": (app.updates - updates0) / elapsed,
        "sources": sources,
        "max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sources", type=int, default=4)
    ap.add_argument("--window", type=float, default=30.0, help="chart window, s")
    ap.add_argument("--prefill", type=float, default=0.0, help="history each publisher sends first, s")
    ap.add_argument("--duration", type=float, default=20.0, help="measured seconds")
    ap.add_argument("--warmup", type=float, default=3.0)
    ap.add_argument("--fps", type=float, default=15.0)
    ap.add_argument("--size", default="200x60", help="terminal COLSxROWS")
    ap.add_argument("--real", action="store_true", help="real samplers (spikewatch sample) instead of publishers")
    args = ap.parse_args()

    from tests.conftest import free_port

    endpoints = [f"tcp://127.0.0.1:{free_port()}" for _ in range(args.sources)]
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    total = args.warmup + args.duration + args.prefill / 50 + 15
    if args.real:
        samplers = start_real_samplers(endpoints, total)
        procs = []
    else:
        samplers = []
        procs = [ctx.Process(target=publish, args=(ep, total, args.prefill, out), daemon=True) for ep in endpoints]
    for p in procs:
        p.start()
    cols, rows = (int(x) for x in args.size.split("x"))
    try:
        result = asyncio.run(measure(endpoints, args.window, args.fps, args.warmup, args.duration, (cols, rows)))
    finally:
        for p in procs:
            p.terminate()
        for s in samplers:
            s.terminate()
            s.wait(15)
    result["config"] = {
        "real_samplers": args.real,
        "sources": args.sources,
        "window_s": args.window,
        "prefill_s": args.prefill,
        "fps": args.fps,
        "size": args.size,
        "cpus": os.cpu_count(),
    }
    worst = {k: max(s["draw_lag_ms"][k] for s in result["sources"]) for k in ("p50_ms", "p99_ms", "max_ms")}
    recv = {k: max(s["receive_lag_ms"][k] for s in result["sources"]) for k in ("p50_ms", "p99_ms", "max_ms")}
    print(json.dumps(result, indent=1, default=float))
    print(
        f"\n{args.sources} {'real samplers' if args.real else 'publishers'} x 1 kHz, window {args.window:g}s, {args.fps:g} fps: draw lag (worst source) "
        f"p50 {worst['p50_ms']:.1f} ms, p99 {worst['p99_ms']:.1f} ms, max {worst['max_ms']:.1f} ms; "
        f"receive lag p50 {recv['p50_ms']:.1f} / p99 {recv['p99_ms']:.1f} / max {recv['max_ms']:.1f} ms; "
        f"gaps {sum(s['gaps'] for s in result['sources'])}; "
        f"samples/s per source {min(s['samples_per_s'] for s in result['sources']):.0f}; "
        f"draws/s per source {min(s['draws_per_s'] for s in result['sources']):.1f}; "
        f"window filled {min(s['window_filled'] for s in result['sources']) * 100:.0f} %; "
        f"console CPU {result['cpu_fraction'] * 100:.0f} % of a core; RSS {result['rss_end_mib']:.0f} MiB "
        f"(max {result['max_rss_mib']:.0f}); load average {os.getloadavg()[0]:.1f}"
    )


if __name__ == "__main__":
    main()
