"""A/B the load driver of this checkout against another commit, side by side.

Alternating runs (closed model) against the raw keep-alive server of bench_driver.py:
the driver's CPU time per completed request (user + sys, from psutil) and its rate.
CPU per request is the steadier of the two on a shared machine.

    .venv/bin/python bench/bench_driver_ab.py [--base main] [--rounds 8] [--seconds 6] [--connections 64]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_driver as b


def base_tree(ref: str, dest: Path) -> Path:
    """The ``spikewatch`` package of commit ``ref``, laid out as installed (folders mapped)."""
    archive = subprocess.run(
        ["git", "-C", str(b.ROOT), "archive", ref, "spikewatch", "driver", "sampler", "analysis"],
        capture_output=True,
        check=True,
    ).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(dest, filter="data")
    for name in ("driver", "sampler", "analysis"):
        shutil.move(str(dest / name), str(dest / "spikewatch" / name))
    return dest


def run(cpu: str, scenario: Path, tmp: Path, env: dict[str, str]) -> tuple[float, int, float]:
    out = tmp / "ab.json"
    p = subprocess.Popen(
        [
            "taskset",
            "-c",
            cpu,
            *b.SPIKEWATCH,
            "drive",
            str(scenario),
            "-q",
            "--json",
            str(out),
            "--inlet",
            f"tcp://127.0.0.1:{b.free_port()}",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    ps = psutil.Process(p.pid)
    used = 0.0
    while p.poll() is None:
        try:
            t = ps.cpu_times()
            used = t.user + t.system
        except psutil.Error:
            break
        time.sleep(0.05)
    ph = json.loads(out.read_text())["phases"][0]
    return used, ph["completed"], ph["rate"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", default="main", help="the commit to compare with (default main)")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--seconds", type=int, default=6)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--client-cpu", default="0")
    ap.add_argument("--server-cpu", default="1")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench_ab_"))
    base = base_tree(args.base, tmp / "base")
    port = b.free_port()
    srv = subprocess.Popen(
        ["taskset", "-c", args.server_cpu, b.PY, "-c", b.SERVER, str(port)], stdout=subprocess.PIPE, text=True
    )
    assert srv.stdout is not None and srv.stdout.readline().strip() == "ready"
    scenario = b.scenario(
        tmp, port, f'kind = "steady"\nconcurrency = {args.connections}\nduration = "{args.seconds}s"', "closed"
    )
    us: dict[str, list[float]] = {"base": [], "new": []}
    rate: dict[str, list[float]] = {"base": [], "new": []}
    try:
        for r in range(args.rounds):
            for which in ("base", "new") if r % 2 == 0 else ("new", "base"):
                env = dict(os.environ)
                if which == "base":
                    env["PYTHONPATH"] = str(base)  # a plain package on sys.path wins over the editable install
                else:
                    env.pop("PYTHONPATH", None)
                used, n, rt = run(args.client_cpu, scenario, tmp, env)
                us[which].append(used / max(1, n) * 1e6)
                rate[which].append(rt)
            print(
                f"round {r + 1}: {args.base} {us['base'][-1]:.2f} us/req ({rate['base'][-1]:.0f}/s)   "
                f"this checkout {us['new'][-1]:.2f} us/req ({rate['new'][-1]:.0f}/s)",
                flush=True,
            )
        mb, mn = statistics.median(us["base"]), statistics.median(us["new"])
        print(
            f"median CPU per request: {args.base} {mb:.2f} us, this checkout {mn:.2f} us, ratio {mn / mb:.3f}; "
            f"median rate {statistics.median(rate['base']):.0f}/s vs {statistics.median(rate['new']):.0f}/s"
        )
    finally:
        srv.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
