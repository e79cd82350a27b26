"""Load driver benchmark: closed-model req/s vs Locust FastHttpUser (and wrk), open-model
rate error at 1 k and 5 k req/s, driver RSS over a soak.

Side by side in one run, against the same local server: a raw keep-alive asyncio
server on uvloop pinned to one core, every client pinned to the other (taskset).

    .venv/bin/python bench/bench_driver.py [--seconds 10] [--connections 64] [--soak 600] [--soak-rate 2000]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
SPIKEWATCH = [PY, "-m", "spikewatch"]

SERVER = r"""
import asyncio, sys, uvloop
RESP = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"
count = 0
class P(asyncio.Protocol):
    def connection_made(self, t):
        self.t = t; self.buf = b""
    def data_received(self, data):
        global count
        buf = self.buf + data if self.buf else data
        n = buf.count(b"\r\n\r\n")
        if n:
            if b"GET /count " in buf:
                body = str(count).encode()
                self.t.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
                n -= 1
            count += n
            self.t.write(RESP * n)
            self.buf = buf[buf.rfind(b"\r\n\r\n") + 4:]
        else:
            self.buf = buf
async def main():
    loop = asyncio.get_running_loop()
    srv = await loop.create_server(P, "127.0.0.1", int(sys.argv[1]), backlog=4096)
    print("ready", flush=True)
    await asyncio.Event().wait()
uvloop.run(main())
"""

LOCUSTFILE = """
from locust import constant, task
from locust.contrib.fasthttp import FastHttpUser
class U(FastHttpUser):
    wait_time = constant(0)
    @task
    def hit(self):
        self.client.get("/x")
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_count(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/count", timeout=5) as r:
        return int(r.read())


def scenario(tmp: Path, port: int, phase: str, name: str, connections: int = 512) -> Path:
    p = tmp / f"{name}.toml"
    p.write_text(
        textwrap.dedent(f"""
        [target]
        url = "http://127.0.0.1:{port}"
        [client]
        connections = {connections}
        [[requests]]
        path = "/x"
        [[phases]]
        name = "{name}"
        {phase}
    """)
    )
    return p


def drive(
    cpu: str, sc: Path, tmp: Path, extra: list[str] | None = None, watch_rss: float = 0
) -> tuple[dict, list[tuple[float, int]]]:
    out = tmp / (sc.stem + ".json")
    cmd = [
        "taskset",
        "-c",
        cpu,
        *SPIKEWATCH,
        "drive",
        str(sc),
        "-q",
        "--json",
        str(out),
        "--inlet",
        f"tcp://127.0.0.1:{free_port()}",
        *(extra or []),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rss: list[tuple[float, int]] = []
    if watch_rss:
        ps = psutil.Process(proc.pid)
        t0 = time.monotonic()
        while proc.poll() is None:
            try:
                rss.append((time.monotonic() - t0, ps.memory_info().rss))
            except psutil.Error:
                break
            time.sleep(watch_rss)
    proc.wait()
    return json.loads(out.read_text()), rss


def run_locust(cpu: str, port: int, users: int, seconds: int, tmp: Path) -> float:
    lf = tmp / "locustfile.py"
    lf.write_text(LOCUSTFILE)
    csv = tmp / "locust"
    locust = str(Path(PY).parent / "locust")
    subprocess.run(
        [
            "taskset",
            "-c",
            cpu,
            locust,
            "-f",
            str(lf),
            "--headless",
            "-u",
            str(users),
            "-r",
            str(users),
            "-t",
            f"{seconds}s",
            "-H",
            f"http://127.0.0.1:{port}",
            "--csv",
            str(csv),
            "--only-summary",
            "--loglevel",
            "ERROR",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=seconds + 60,
    )
    rows = (tmp / "locust_stats.csv").read_text().splitlines()
    head = rows[0].split(",")
    for row in rows[1:]:
        cells = row.split(",")
        if cells[1] == "Aggregated":
            return float(cells[head.index("Requests/s")])
    raise RuntimeError("no aggregated row in locust stats")


def run_wrk(cpu: str, port: int, conns: int, seconds: int) -> float | None:
    if not shutil.which("wrk"):
        return None
    out = subprocess.run(
        ["taskset", "-c", cpu, "wrk", "-t1", f"-c{conns}", f"-d{seconds}s", f"http://127.0.0.1:{port}/x"],
        capture_output=True,
        text=True,
    ).stdout
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    return float(m.group(1)) if m else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=int, default=10, help="length of each throughput run")
    ap.add_argument("--connections", type=int, default=64, help="closed-model concurrency (all tools)")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds (medians are reported)")
    ap.add_argument("--soak", type=int, default=600, help="soak length in seconds (0: skip)")
    ap.add_argument("--soak-rate", type=int, default=2000)
    ap.add_argument("--skip-closed", action="store_true", help="only the open-model runs and the soak")
    ap.add_argument("--client-cpu", default="0")
    ap.add_argument("--server-cpu", default="1")
    args = ap.parse_args()
    if len(os.sched_getaffinity(0)) < 2:
        sys.exit("needs two CPUs (one for the server, one for the clients)")
    tmp = Path(tempfile.mkdtemp(prefix="bench_driver_"))
    port = free_port()
    srv = subprocess.Popen(
        ["taskset", "-c", args.server_cpu, PY, "-c", SERVER, str(port)], stdout=subprocess.PIPE, text=True
    )
    assert srv.stdout.readline().strip() == "ready"
    cpu, n, secs = args.client_cpu, args.connections, args.seconds
    print(
        f"server: raw asyncio on uvloop, cpu {args.server_cpu}; clients on cpu {cpu}; "
        f"{n} connections, {secs}s runs, {args.rounds} rounds"
    )
    try:
        ours, loc, wrk = [], [], []
        if args.skip_closed:
            args.rounds = 0
        closed = scenario(tmp, port, f'kind = "steady"\nconcurrency = {n}\nduration = "{secs}s"', "closed")
        for r in range(args.rounds):
            before = server_count(port)
            res, _ = drive(cpu, closed, tmp)
            served = server_count(port) - before - 0
            ph = res["phases"][0]
            ours.append(ph["rate"])
            loc.append(run_locust(cpu, port, n, secs, tmp))
            w = run_wrk(cpu, port, n, secs)
            if w:
                wrk.append(w)
            print(
                f"  round {r + 1}: spikewatch {ours[-1]:8.0f}/s (server saw {served / ph['duration_s']:.0f}/s, "
                f"p99 {ph.get('lat_p99_ns', 0) / 1e6:.2f} ms)   locust FastHttpUser {loc[-1]:8.0f}/s"
                + (f"   wrk {w:8.0f}/s" if w else "")
            )
        mo, ml = (statistics.median(ours), statistics.median(loc)) if ours else (0, 1)
        if ours:
            print(
                f"closed model, median req/s: spikewatch {mo:.0f}, Locust FastHttpUser {ml:.0f} "
                f"-> {mo / ml:.2f}x" + (f"; wrk {statistics.median(wrk):.0f}" if wrk else "")
            )

        for rate in (1000, 5000):
            sc = scenario(tmp, port, f'kind = "steady"\nrate = {rate}\nduration = "{secs}s"', f"open{rate}")
            before = server_count(port)
            res, _ = drive(cpu, sc, tmp)
            seen = server_count(port) - before
            ph = res["phases"][0]
            want = rate * secs
            err = (ph["sent"] - want) / want
            # per-second sends from the 100 ms telemetry (whole seconds only)
            sent = res["telemetry"]["fields"]["sent"]
            per_s = [sum(sent[i : i + 10]) for i in range(0, len(sent) - 10, 10)]
            worst = max(abs(x - rate) / rate for x in per_s) if per_s else float("nan")
            print(
                f"open model {rate}/s over {secs}s: sent {ph['sent']} (want {want}, error {err * 100:+.3f} %), "
                f"server saw {seen}, completed {ph['completed']}, late {ph['late_sends']}, dropped "
                f"{ph['dropped_sends']}, max schedule lag {ph['schedule_lag_max_ns'] / 1e6:.2f} ms, "
                f"p50 {ph.get('lat_p50_ns', 0) / 1e6:.2f} ms p99 {ph.get('lat_p99_ns', 0) / 1e6:.2f} ms, "
                f"loop lag max {ph['loop_lag_max_ns'] / 1e6:.1f} ms; worst 1 s window {worst * 100:.2f} % off"
            )

        if args.soak:
            sc = scenario(tmp, port, f'kind = "soak"\nrate = {args.soak_rate}\nduration = "{args.soak}s"', "soak")
            (tmp / "soak.json").unlink(missing_ok=True)
            # Without --json the driver keeps no series: measure what a plain long run costs.
            cmd = [
                "taskset",
                "-c",
                cpu,
                *SPIKEWATCH,
                "drive",
                str(sc),
                "-q",
                "--inlet",
                f"tcp://127.0.0.1:{free_port()}",
            ]
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            ps = psutil.Process(proc.pid)
            t0 = time.monotonic()
            rss = []
            while proc.poll() is None:
                try:
                    rss.append((time.monotonic() - t0, ps.memory_info().rss))
                except psutil.Error:
                    break
                time.sleep(1)
            out = proc.stdout.read()
            warm = [r for t, r in rss if 25 <= t <= 35]
            last = [r for t, r in rss if t >= rss[-1][0] - 10]
            base = statistics.median(warm) if warm else rss[0][1]
            end = statistics.median(last)
            print(
                f"soak {args.soak}s at {args.soak_rate}/s: driver RSS at 30 s {base / 2**20:.1f} MiB, "
                f"at the end {end / 2**20:.1f} MiB, growth {(end - base) / 2**20:+.2f} MiB, "
                f"max {max(r for _, r in rss) / 2**20:.1f} MiB"
            )
            total = [line for line in out.splitlines() if "│ all" in line or "| all" in line]
            if total:
                print("  " + total[0].strip())
    finally:
        srv.terminate()
        srv.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
