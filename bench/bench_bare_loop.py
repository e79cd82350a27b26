"""The floor under the sampler's CPU goal: a bare Python loop doing only what a tick must
(a timerfd wake-up on an absolute deadline, two preads, two appends), nothing published.

Run it beside ``bench_sampler.py`` in one session: the host's wake-up cost moves a lot
from day to day (another VM on the same host, CPU frequency), and the ratio of the two
says what the sampler itself adds.

    .venv/bin/python bench/bench_bare_loop.py --seconds 10 --period-us 1000
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time

from spikewatch.sampler.ticker import Ticker, set_timer_slack, try_realtime

TARGET = "import sys, time; b = bytearray(64 << 20); sys.stdout.write('ready\\n'); sys.stdout.flush(); time.sleep(3600)"


def bare_loop(pid: int, seconds: float, period_ns: int) -> tuple[float, int]:
    """CPU % of one core used by the loop, and ticks it ran."""
    statm = os.open(f"/proc/{pid}/statm", os.O_RDONLY)
    # A second file the way the sampler reads cgroup usage (kept open, pread at 0).
    other = os.open(f"/proc/{pid}/stat", os.O_RDONLY)
    times: list[int] = []
    values: list[int] = []
    ticker = Ticker(period_ns)
    ticker.start()
    end = time.monotonic_ns() + int(seconds * 1e9)
    ticks = 0
    r0 = resource.getrusage(resource.RUSAGE_THREAD)
    w0 = time.monotonic()
    try:
        while time.monotonic_ns() < end:
            ticker.wait()
            t = time.monotonic_ns()
            rss = int(os.pread(statm, 64, 0).split()[1])
            os.pread(other, 512, 0)
            times.append(t)
            values.append(rss)
            ticks += 1
    finally:
        r1 = resource.getrusage(resource.RUSAGE_THREAD)
        wall = time.monotonic() - w0
        ticker.close()
        os.close(statm)
        os.close(other)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    return 100.0 * cpu / wall, ticks


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--period-us", type=int, default=1000)
    ap.add_argument("--no-realtime", action="store_true")
    args = ap.parse_args()
    target = subprocess.Popen([sys.executable, "-c", TARGET], stdout=subprocess.PIPE, text=True)
    try:
        assert target.stdout is not None and target.stdout.readline().strip() == "ready"
        set_timer_slack(1)
        sched = "other" if args.no_realtime else ("fifo" if try_realtime() else "other")
        cpu, ticks = bare_loop(target.pid, args.seconds, args.period_us * 1000)
    finally:
        target.kill()
        target.wait()
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"# bare loop: period {args.period_us} us, {args.seconds:g} s, SCHED_{sched.upper()}, load {load}")
    print(f"bare loop CPU {cpu:.1f} % of a core, {ticks} ticks")
    return 0


if __name__ == "__main__":
    sys.exit(main())
