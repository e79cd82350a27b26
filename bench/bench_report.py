"""Time `spikewatch report` on a 1 h recording at 1 kHz (3.6 M samples).

The recording is made through the real writer with real protocol bodies:
batches of 20 samples, a detail every 100 ms, a hello every second, phase
markers, load telemetry every 100 ms and a few events (hwm_spike, restart,
thread jumps). Then `spikewatch report` runs as a subprocess (JSON + HTML) and
its wall time and peak RSS are printed, plus the reader's own rate.

    .venv/bin/python bench/bench_report.py [--keep FILE] [--hours 1] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from spikewatch.analysis.synth import MiB, Synth
from spikewatch.sampler.wire import protocol

S = 1_000_000_000


def make(path: str, hours: float) -> int:
    s = Synth()
    seconds = hours * 3600
    t = s.times(seconds)
    rel = (t - t[0]) / 1e9
    rng = np.random.default_rng(1)
    v = 200 * MiB + (rel * (5 * MiB / 3600)).astype(np.int64) + rng.integers(-MiB // 4, MiB // 4, len(t))
    for k in range(0, int(seconds), 97):  # a 5-30 ms spike every ~97 s
        i = k * 1000 + 500
        v[i : i + 5 + k % 25] += (20 + k % 80) * MiB
    s.samples(t, rss=v)
    t0 = int(t[0])
    for k in range(int(seconds * 10)):
        tt = t0 + k * S // 10
        s.detail(tt, procs=1, threads=8 + (k // 3000) % 3 * 8, rss_anon=150 * MiB, rss_file=40 * MiB, rss_shmem=0,
                 vm_hwm=int(v[min(k * 100, len(v) - 1)]), vm_swap=0)
        s.load(tt, in_flight=4, rate=200.0, completed=20, lat_p99_ns=3_000_000)
    for k in range(0, int(seconds), 600):
        s.event(t0 + k * S + 123, protocol.EV_HWM_SPIKE, series="rss", bytes=int(v[k * 1000]) + 64 * MiB,
                t_from=t0 + k * S, t_to=t0 + k * S + 1_000_000, sampled_max=int(v[k * 1000]))
    s.event(t0 + int(seconds * 0.7) * S, protocol.EV_RESTART, pid=2, old_pid=1)
    third = int(seconds / 3) * S
    s.phase(t0, t0 + third, "warm", "steady")
    s.phase(t0 + third, t0 + 2 * third, "rush", "burst", burst={"every_s": 60.0, "length_s": 5.0, "at_s": 10.0})
    s.phase(t0 + 2 * third, int(t[-1]), "long", "soak")
    return s.write(path)


READ = """
import resource, sys, time
from spikewatch.analysis import reader
t = time.perf_counter()
rec = reader.load(sys.argv[1])
dt = time.perf_counter() - t
n = len(rec.main.series["rss"])
print(f"reader: {n:,} samples in {dt:.2f} s = {n / dt / 1e6:.2f} M samples/s, "
      f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
"""


def child(cmd: list[str]) -> tuple[float, float, str]:
    """Run one fresh child; return (wall s, its own peak RSS MiB, stdout)."""
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    out, err = proc.stdout.read(), proc.stderr.read()  # type: ignore[union-attr]
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{cmd[2:4]} failed: {err}")
    return wall, usage.ru_maxrss / 1024, out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hours", type=float, default=1.0)
    ap.add_argument("--keep", help="write the recording here and keep it")
    ap.add_argument("--make-only", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    path = args.keep or os.path.join(tempfile.mkdtemp(), "bench.rec")
    if args.make_only:
        print(f"{make(path, args.hours):,} records")
        return
    # everything heavy runs in children, so each child's peak RSS is its own (a fork
    # of a big parent would count the parent's pages too)
    wall, _, out = child([sys.executable, __file__, "--make-only", "--hours", str(args.hours), "--keep", path])
    print(f"wrote {out.strip()} ({os.path.getsize(path) / MiB:.1f} MiB) in {wall:.1f} s: {path}")
    print(child([sys.executable, "-c", READ, path])[2].strip())
    out_dir = tempfile.mkdtemp()
    j, h = os.path.join(out_dir, "r.json"), os.path.join(out_dir, "r.html")
    for label, extra in (("report --json", ["--json", j]), ("report --json --html", ["--json", j, "--html", h])):
        runs = [child([sys.executable, "-m", "spikewatch", "report", path, "-q", *extra]) for _ in range(args.runs)]
        walls = sorted(r[0] for r in runs)
        print(f"spikewatch {label}: median {walls[len(walls) // 2]:.2f} s wall (min {walls[0]:.2f}, max {walls[-1]:.2f}), "
              f"peak RSS {max(r[1] for r in runs):.0f} MiB")
    n = int(args.hours * 3600 * 1000)
    print(f"for scale: the t+v int64 columns of {n:,} samples are {n * 16 / MiB:.0f} MiB; HTML {os.path.getsize(h) / MiB:.1f} MiB")


if __name__ == "__main__":
    main()
