"""Time `spikewatch report` on a 1 h recording at 1 kHz (3.6 M samples), or --hours H.

The recording is made through the real writer with real protocol bodies and
realistic values (see :func:`_chunk`): batches of 20 samples of rss and
cg_usage, a detail and load telemetry every 100 ms, a hello every second, phase
markers and a few events (hwm_spike, restart). Then `spikewatch report` runs as
a subprocess (JSON, then JSON + HTML) and its wall time, CPU time and peak RSS
are printed, plus the reader's own rate.

    .venv/bin/python bench/bench_report.py [--keep FILE] [--hours 1] [--runs 3] [--format 1|2]
    .venv/bin/python bench/bench_report.py --make-only --hours 24 --keep /tmp/soak24.rec   # size, writer CPU
    .venv/bin/python bench/bench_report.py --reuse --keep /tmp/soak24.rec --runs 1         # time a kept file
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
from spikewatch.analysis.synth import MiB
from spikewatch.sampler.wire import protocol

S = 1_000_000_000
last_cpu = 0.0


# What a real 1 kHz journal looks like (measured on this machine: a demo run, a spiky
# target in a cgroup): tick lateness behind the timer grid ~25-40 µs median, ~100-165 µs
# p99, a missed tick now and then; RSS and cgroup usage move in whole pages and change on
# only 6-11 % of ticks. A fresh random byte-level value on every sample (this bench until
# now) is something no kernel produces and no encoder can compress.
PAGE = 4096


def _chunk(
    rng: np.random.Generator, k0: int, n: int, t0: int, rss0: int, cg0: int, hours: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, int]:
    """``n`` ticks from grid index ``k0``: times (ns), rss, cg_usage (bytes), next rss/cg base."""
    k = k0 + np.arange(n, dtype=np.int64)
    k = k[rng.random(n) > 1e-4]  # a missed tick every ~10 000
    late = rng.gamma(2.0, 15_000.0, len(k)).astype(np.int64) + 5_000
    t = t0 + k * 1_000_000 + late
    steps = np.where(rng.random(len(k)) < 0.09, rng.choice([-2, -1, 1, 1, 2, 3], len(k)), 0)
    walk = rss0 + np.cumsum(steps) * PAGE
    drift = (k * (5 * MiB / 3_600_000)).astype(np.int64) // PAGE * PAGE  # +5 MiB an hour
    rss = walk + drift - int(k0 * (5 * MiB / 3_600_000)) // PAGE * PAGE
    cache = np.cumsum(np.where(rng.random(len(k)) < 0.04, rng.choice([-1, 1], len(k)), 0)) * PAGE
    cg = cg0 + (rss - rss0) + cache
    # pull the walk back towards its base so a day does not wander off
    back = (200 * MiB - int(walk[-1])) // 2 // PAGE * PAGE if len(k) else 0
    return t, rss, cg, int(rss[-1]) + back if len(k) else rss0, int(cg[-1]) + back if len(k) else cg0


def make(path: str, hours: float, fmt: int = 2) -> int:
    """Write the synthetic soak through the real writer, a minute at a time (bounded memory)."""
    from spikewatch.sampler.wire.recording import open_writer

    rng = np.random.default_rng(1)
    seconds = int(hours * 3600)
    t0 = 5 * S
    seq = 0
    n_samples = 0
    records = 0
    rss0, cg0 = 200 * MiB, 230 * MiB
    third = seconds // 3
    phases = {
        0: ("phase_start", "warm", "steady"),
        third: ("phase_end", "warm", "steady"),
        third + 1: ("phase_start", "rush", "burst"),
        2 * third: ("phase_end", "rush", "burst"),
        2 * third + 1: ("phase_start", "long", "soak"),
        seconds - 1: ("phase_end", "long", "soak"),
    }
    if os.path.exists(path):
        os.unlink(path)
    w = open_writer(path, format=fmt)

    def put(topic: str, body: dict) -> None:
        nonlocal seq, records
        body["seq"] = seq
        seq += 1
        records += 1
        w.write(topic, body)

    session = "bench-soak-1"
    for m0 in range(0, seconds, 60):
        span = min(60, seconds - m0)
        t, rss, cg, rss0, cg0 = _chunk(rng, m0 * 1000, span * 1000, t0, rss0, cg0, hours)
        for k in range(m0, m0 + span, 97):  # a 5-30 ms spike every ~97 s
            i = np.searchsorted(t, t0 + k * S + 500 * 1_000_000)
            rss[i : i + 5 + k % 25] += (20 + k % 80) * MiB
            cg[i : i + 5 + k % 25] += (20 + k % 80) * MiB
        tl, rl, cl = t.tolist(), rss.tolist(), cg.tolist()
        sec_start = np.searchsorted(t, t0 + np.arange(m0, m0 + span + 1, dtype=np.int64) * S).tolist()
        for si in range(span):
            sec = m0 + si
            ts = t0 + sec * S
            put(
                protocol.HELLO,
                {
                    "v": 1,
                    "t": ts,
                    "session": session,
                    "host": "bench",
                    "sampler_version": "bench",
                    "pid": 4242,
                    "wall_ns": 1_700_000_000_000_000_000 + ts,
                    "period_ns": 1_000_000,
                    "detail_period_ns": 100_000_000,
                    "series": ["rss", "cg_usage"],
                    "targets": [{"kind": "launch", "spec": "service --port 8080", "pids": [4243]}],
                    "cgroup": {"version": 1, "path": "/spikewatch-4242-1", "limit": 1 << 30, "owned": True},
                    "started_t": t0,
                    "tick_origin_t": t0,
                    "sched": "fifo",
                    "journal": path,
                    "final": False,
                    "counters": {
                        "samples": n_samples,
                        "ticks_missed": 0,
                        "overruns": 0,
                        "published": seq,
                        "dropped": 0,
                        "inlet_ok": sec * 10,
                        "inlet_bad": 0,
                        "journal_errors": 0,
                        "journal_lost": 0,
                        "hwm_spikes": sec // 600,
                    },
                },
            )
            if sec in phases:
                kind, name, pk = phases[sec]
                put(
                    protocol.MARKER,
                    {
                        "v": 1,
                        "t": ts + 7,
                        "kind": kind,
                        "name": name,
                        "attrs": {"kind": pk},
                        "origin_wall_ns": 1_700_000_000_000_000_000 + ts,
                    },
                )
            a, b = sec_start[si], sec_start[si + 1]
            for j in range(a, b, 20):
                e = min(j + 20, b)
                put(
                    protocol.SAMPLES,
                    {
                        "v": 1,
                        "t": tl[j],
                        "dt": [x - tl[j] for x in tl[j:e]],
                        "series": {"rss": rl[j:e], "cg_usage": cl[j:e]},
                    },
                )
                n_samples += e - j
                if (j - a) % 100 == 80:  # a detail and the driver's telemetry every 100 ms
                    r = rl[e - 1]
                    td = tl[e - 1] + 40_000
                    put(
                        protocol.DETAIL,
                        {
                            "v": 1,
                            "t": td,
                            "procs": 1,
                            "pids": [4243],
                            "threads": 8 + (sec // 300) % 3 * 8,
                            "rss_anon": r - 40 * MiB,
                            "rss_file": 40 * MiB,
                            "rss_shmem": 0,
                            "vm_hwm": r + 64 * MiB,
                            "vm_swap": 0,
                            "sample_max": max(rl[a:e]),
                            "cg_usage": cl[e - 1],
                            "cg_anon": r - 40 * MiB,
                            "cg_file": cl[e - 1] - r + 40 * MiB,
                            "cg_inactive_file": 8 * MiB,
                            "cg_working_set": cl[e - 1] - 8 * MiB,
                            "cg_limit": 1 << 30,
                            "cg_peak": cl[e - 1] + 64 * MiB,
                            "cg_oom_kill": 0,
                            "cg_oom": 0,
                            "cg_failcnt": 0,
                            "psi_some_avg10": 0.0,
                            "psi_full_avg10": 0.0,
                            "psi_some_total_us": 84_430 + sec * 3,
                            "psi_scope": "system",
                        },
                    )
                    put(
                        protocol.LOAD,
                        {
                            "v": 1,
                            "t": td + 1_000_000,
                            "interval_ns": 100_000_000,
                            "rate": 200.0 + (sec % 7),
                            "target_rate": 200.0,
                            "in_flight": 4 + sec % 3,
                            "completed": 20 + (j // 100) % 3,
                            "sent": 20,
                            "errors": {},
                            "lat_p50_ns": 1_000_000 + (sec % 13) * 1000,
                            "lat_p99_ns": 3_000_000 + (sec % 17) * 10_000,
                            "lat_max_ns": 5_000_000 + (sec % 19) * 10_000,
                        },
                    )
            if sec % 600 == 0:
                put(
                    protocol.EVENT,
                    {
                        "v": 1,
                        "t": ts + 123,
                        "kind": protocol.EV_HWM_SPIKE,
                        "series": "rss",
                        "bytes": rl[a] + 64 * MiB,
                        "t_from": ts,
                        "t_to": ts + 1_000_000,
                        "sampled_max": rl[a],
                    },
                )
            if sec == int(seconds * 0.7):
                put(protocol.EVENT, {"v": 1, "t": ts + 321, "kind": protocol.EV_RESTART, "pid": 2, "old_pid": 1})
            w.flush()  # the writers buffer at most 16 MiB; what does not fit is dropped
    put(
        protocol.HELLO,
        {"v": 1, "t": t0 + seconds * S, "session": session, "final": True, "counters": {"samples": n_samples}},
    )
    w.close()
    if w.records_dropped:
        sys.exit(f"the writer dropped {w.records_dropped} records")
    return n_samples


READ = """
import resource, sys, time
from spikewatch.analysis import reader
t, c = time.perf_counter(), time.process_time()
rec = reader.load(sys.argv[1])
dt, dc = time.perf_counter() - t, time.process_time() - c
fig = rec.main.stream  # a long v2 run is read in one pass: the envelope is kept, the count is exact
n = fig.stats["rss"].count if fig is not None else len(rec.main.series["rss"])
print("integrity:", rec.integrity.get("notes") or "complete")
print(f"reader: {n:,} samples in {dt:.2f} s = {n / dt / 1e6:.2f} M samples/s ({n / dc / 1e6:.2f} M a CPU second), "
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
    global last_cpu
    last_cpu = usage.ru_utime + usage.ru_stime  # CPU time: the host is shared, wall time swings with its load
    return wall, usage.ru_maxrss / 1024, out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hours", type=float, default=1.0)
    ap.add_argument("--keep", help="write the recording here and keep it")
    ap.add_argument("--make-only", action="store_true", help="only write the recording (with --keep), do not time it")
    ap.add_argument("--format", type=int, choices=(1, 2), default=2, help="recording format to write (1: the old one)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--reuse", action="store_true", help="time the --keep FILE already there instead of writing it")
    args = ap.parse_args()
    path = args.keep or os.path.join(tempfile.mkdtemp(), "bench.rec")
    if args.make_only:
        t = time.process_time()
        n = make(path, args.hours, args.format)
        cpu = time.process_time() - t
        size = os.path.getsize(path)
        fmt = args.format
        if fmt != 1:  # the version the writer chose (the newest)
            from spikewatch.sampler.wire import blocks

            with open(path, "rb") as f:
                fmt = blocks.read_header(f)["format"]
        print(
            f"{n:,} samples, {size:,} bytes = {size / n:.3f} bytes a sample (format {fmt}); "
            f"writer CPU {cpu:.1f} s ({cpu / n * 1e6:.2f} µs a sample)"
        )
        return
    # everything heavy runs in children, so each child's peak RSS is its own (a fork
    # of a big parent would count the parent's pages too)
    if args.reuse and os.path.exists(path):
        print(f"reusing {path} ({os.path.getsize(path) / MiB:.1f} MiB)")
    else:
        wall, _, out = child(
            [
                sys.executable,
                __file__,
                "--make-only",
                "--hours",
                str(args.hours),
                "--keep",
                path,
                "--format",
                str(args.format),
            ]
        )
        print(f"wrote {out.strip()} ({os.path.getsize(path) / MiB:.1f} MiB) in {wall:.1f} s: {path}")
    print(child([sys.executable, "-c", READ, path])[2].strip() + f" (CPU {last_cpu:.2f} s)")
    out_dir = tempfile.mkdtemp()
    j, h = os.path.join(out_dir, "r.json"), os.path.join(out_dir, "r.html")
    for label, extra in (("report --json", ["--json", j]), ("report --json --html", ["--json", j, "--html", h])):
        runs, cpus = [], []
        for _ in range(args.runs):
            runs.append(child([sys.executable, "-m", "spikewatch", "report", path, "-q", *extra]))
            cpus.append(last_cpu)
        walls = sorted(r[0] for r in runs)
        print(
            f"spikewatch {label}: median {walls[len(walls) // 2]:.2f} s wall (min {walls[0]:.2f}, max {walls[-1]:.2f}), "
            f"CPU {sorted(cpus)[len(cpus) // 2]:.2f} s, peak RSS {max(r[1] for r in runs):.0f} MiB"
        )
    n = int(args.hours * 3600 * 1000)
    print(
        f"for scale: the t+v int64 columns of {n:,} samples are {n * 16 / MiB:.0f} MiB; HTML {os.path.getsize(h) / MiB:.1f} MiB"
    )


if __name__ == "__main__":
    main()
