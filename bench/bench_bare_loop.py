"""The floor under the sampler's CPU goal: a bare Python loop doing only what a tick must
(a timerfd wake-up on an absolute deadline, two preads, two appends), nothing published.

It reads what the sampler reads in ``bench_sampler.py``: the target's kept-open
``/proc/PID/statm`` and the ``memory.usage_in_bytes`` of a memory cgroup made for the
target under ours (as ``--limit`` does; ``/proc/PID/stat`` where there is no writable
memory cgroup). ``bench_sampler.py`` runs it beside the sampler in one session and
prints the ratio of the two: the host's wake-up cost moves a lot from day to day
(another VM on the same host, CPU frequency), the ratio says what the sampler adds.

    .venv/bin/python bench/bench_bare_loop.py --seconds 10 --period-us 1000 [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

from spikewatch.sampler import cgroup as cgm
from spikewatch.sampler.ticker import Ticker, set_timer_slack, try_realtime

TARGET = "import sys, time; b = bytearray(64 << 20); sys.stdout.write('ready\\n'); sys.stdout.flush(); time.sleep(3600)"


def bare_loop(statm_path: str, other_path: str, seconds: float, period_ns: int) -> dict[str, float]:
    """CPU % of one core used by the loop (its own thread's rusage), ticks run, ticks missed."""
    parse = len if other_path.endswith("/stat") else int
    statm = os.open(statm_path, os.O_RDONLY)
    other = os.open(other_path, os.O_RDONLY)
    times: list[int] = []
    values: list[int] = []
    cgu: list[int] = []
    ticker = Ticker(period_ns)
    ticker.start()
    end = time.monotonic_ns() + int(seconds * 1e9)
    ticks = missed = 0
    r0 = resource.getrusage(resource.RUSAGE_THREAD)
    w0 = time.monotonic()
    try:
        while time.monotonic_ns() < end:
            missed += ticker.wait() - 1
            t = time.monotonic_ns()
            rss = int(os.pread(statm, 64, 0).split()[1])
            cgu.append(parse(os.pread(other, 512, 0)))
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
    return {"cpu_pct": 100.0 * cpu / wall, "ticks": ticks, "missed": missed}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--period-us", type=int, default=1000)
    ap.add_argument("--no-realtime", action="store_true")
    ap.add_argument("--json", action="store_true", help="one JSON line (for bench_sampler.py)")
    args = ap.parse_args()
    target = subprocess.Popen([sys.executable, "-c", TARGET], stdout=subprocess.PIPE, text=True)
    cg = None
    try:
        assert target.stdout is not None and target.stdout.readline().strip() == "ready"
        other = f"/proc/{target.pid}/stat"
        try:
            cg = cgm.create_limited(1 << 30)
            cgm.move_pid(target.pid, cg)
            other = str(cg.info.dir / "memory.usage_in_bytes")
            if not os.path.exists(other):  # v2
                other = str(cg.info.dir / "memory.current")
        except cgm.CgroupError:
            pass
        set_timer_slack(1)
        sched = "other" if args.no_realtime else ("fifo" if try_realtime() else "other")
        if args.json:
            print("looping", flush=True)  # bench_sampler.py starts its CPU window after this
        r = bare_loop(f"/proc/{target.pid}/statm", other, args.seconds, args.period_us * 1000)
    finally:
        target.kill()
        target.wait()
        if cg is not None:
            cgm.remove(cg)
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    if args.json:
        print(json.dumps({**r, "sched": sched, "load": load, "second_file": other}), flush=True)
        return 0
    print(f"# bare loop: period {args.period_us} us, {args.seconds:g} s, SCHED_{sched.upper()}, load {load}")
    print(
        f"bare loop CPU {r['cpu_pct']:.1f} % of a core, {r['ticks']} ticks, {r['missed']} missed; second file {other}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
