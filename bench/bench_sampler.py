"""Sampler footprint and timing: CPU % of one core, RSS, tick lateness, missed ticks.

One target (a Python process holding 64 MiB) launched by ``spikewatch sample``
inside its own memory cgroup (``--limit``), so every tick reads the target's
statm and the cgroup's usage; publishing on (with a live subscriber, so the
messages really go out) and the journal on. Run::

    .venv/bin/python bench/bench_sampler.py [--seconds 10] [--periods 1ms,200us,100us]

CPU is the sampler process's utime+stime over the measured window (after a
1 s warm-up), RSS its VmRSS at the end. Lateness is each sample's time minus
the timer deadline it answered (deadlines are ``tick_origin_t + k * period``,
published in ``hello``); missed ticks are the timerfd's extra expirations.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from spikewatch.sampler.units import parse_duration_ns  # noqa: E402
from spikewatch.sampler.wire import protocol  # noqa: E402
from spikewatch.sampler.wire.client import StreamSubscriber  # noqa: E402
from spikewatch.sampler.wire.recording import iter_records  # noqa: E402

TARGET = "import time; x = b'\\x01' * (64 << 20); time.sleep(3600)"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cpu_ticks(pid: int) -> int:
    data = Path(f"/proc/{pid}/stat").read_bytes()
    fields = data[data.rindex(b")") + 2 :].split()
    return int(fields[11]) + int(fields[12])  # utime + stime (fields 14, 15)


def _thread_ticks(pid: int) -> dict[str, int]:
    """CPU ticks per thread name (the sampling thread is the process's own name)."""
    out: dict[str, int] = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            data = Path(f"/proc/{pid}/task/{tid}/stat").read_bytes()
        except OSError:
            continue
        name = data[data.index(b"(") + 1 : data.rindex(b")")].decode()
        fields = data[data.rindex(b")") + 2 :].split()
        name = "sampling" if tid == str(pid) else name
        out[name] = out.get(name, 0) + int(fields[11]) + int(fields[12])
    return out


def _status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def _pct(sorted_vals: list[int], q: float) -> int:
    if not sorted_vals:
        return 0
    return sorted_vals[min(len(sorted_vals) - 1, int(q * len(sorted_vals)))]


def run_one(period: str, seconds: float, tmp: Path, extra: tuple[str, ...] = ()) -> dict[str, float]:
    period_ns = parse_duration_ns(period)
    pub = f"tcp://127.0.0.1:{_free_port()}"
    inlet = f"tcp://127.0.0.1:{_free_port()}"
    journal = tmp / f"bench-{period}.journal"
    cmd = [
        sys.executable,
        "-m",
        "spikewatch",
        "sample",
        "--period",
        period,
        "--publish",
        pub,
        "--inlet",
        inlet,
        "--journal",
        str(journal),
        "--limit",
        "1G",
        "-q",
        *extra,
        "--",
        sys.executable,
        "-c",
        TARGET,
    ]
    received = [0]
    stop = threading.Event()

    def subscribe() -> None:
        with StreamSubscriber([pub]) as sub:
            while not stop.is_set():
                if sub.recv(timeout_ms=100) is not None:
                    received[0] += 1

    th = threading.Thread(target=subscribe, daemon=True)
    th.start()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    time.sleep(1.0)  # warm-up: imports, launch, first tree scan
    hz = os.sysconf("SC_CLK_TCK")
    c0, w0, th0 = _cpu_ticks(p.pid), time.monotonic(), _thread_ticks(p.pid)
    time.sleep(seconds)
    c1, w1, th1 = _cpu_ticks(p.pid), time.monotonic(), _thread_ticks(p.pid)
    rss_kb = _status_kb(p.pid, "VmRSS")
    hwm_kb = _status_kb(p.pid, "VmHWM")
    p.terminate()
    _, err = p.communicate(timeout=30)
    stop.set()
    th.join(timeout=2)

    hello = None
    times: list[int] = []
    for topic, body in iter_records(journal):
        if topic == protocol.HELLO:
            hello = body
        elif topic == protocol.SAMPLES:
            times.extend(protocol.sample_times(body))
    assert hello is not None, err
    origin = hello["tick_origin_t"]
    lo = times[0] + 1_000_000_000  # the measured window only
    window = [t for t in times if lo <= t <= lo + int(seconds * 1e9)]
    late = sorted((t - origin) % period_ns for t in window)
    expected = (window[-1] - window[0]) // period_ns + 1 if window else 0
    return {
        "period": period,
        "cpu_pct": 100.0 * (c1 - c0) / hz / (w1 - w0),
        "rss_mib": rss_kb / 1024,
        "hwm_mib": hwm_kb / 1024,
        "p50_us": _pct(late, 0.50) / 1e3,
        "p99_us": _pct(late, 0.99) / 1e3,
        "max_us": (late[-1] if late else 0) / 1e3,
        "samples": len(window),
        "missed_pct": max(0.0, 100.0 * (expected - len(window)) / expected) if expected else 0.0,
        "missed_total": hello["counters"]["ticks_missed"],
        "received": received[0],
        "threads": {k: 100.0 * (v - th0.get(k, 0)) / hz / (w1 - w0) for k, v in th1.items()},
        "summary": err.strip().splitlines()[-1] if err.strip() else "",
        "journal_bytes_per_sample": journal.stat().st_size / max(len(times), 1),
        "journal_format": 2 if journal.read_bytes()[:1] == b"\x89" else 1,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--periods", default="1ms,200us,100us")
    ap.add_argument("--no-realtime", action="store_true", help="sample under the normal scheduler policy")
    args = ap.parse_args()
    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]
    policy = "SCHED_OTHER (--no-realtime)" if args.no_realtime else "SCHED_FIFO when permitted (default)"
    print(f"# {os.cpu_count()} CPUs, load average {' '.join(load)} at start; {args.seconds:.0f} s per period; {policy}")
    print(
        f"{'period':>7} {'CPU %':>6} {'RSS MiB':>8} {'HWM MiB':>8} {'p50 us':>7} {'p99 us':>7} {'max us':>8} "
        f"{'samples':>8} {'missed %':>9} {'msgs':>6}"
    )
    with tempfile.TemporaryDirectory() as d:
        for period in args.periods.split(","):
            r = run_one(period.strip(), args.seconds, Path(d), ("--no-realtime",) if args.no_realtime else ())
            print(
                f"{r['period']:>7} {r['cpu_pct']:6.1f} {r['rss_mib']:8.1f} {r['hwm_mib']:8.1f} {r['p50_us']:7.0f} "
                f"{r['p99_us']:7.0f} {r['max_us']:8.0f} {r['samples']:8d} {r['missed_pct']:9.3f} {r['received']:6d}",
                flush=True,
            )
            threads = ", ".join(f"{k} {v:.1f}" for k, v in sorted(r["threads"].items(), key=lambda kv: -kv[1]) if v > 0)
            print(f"{'':>7} CPU % by thread: {threads}", flush=True)
            print(
                f"{'':>7} journal: {r['journal_bytes_per_sample']:.2f} bytes a sample (format {r['journal_format']}, "
                "everything in it over its samples)",
                flush=True,
            )


if __name__ == "__main__":
    main()
