"""Cost of each MemoryCgroup read (µs per call, median of 5 runs) on this host.

    .venv/bin/python bench/bench_cgroup_reads.py

The hot loop only does ``os.pread(cg.usage_fd, 64, 0)``; the rest is detail
tier (~100 ms), so what matters there is the sum per detail tick.
"""

from __future__ import annotations

import os
import statistics
import time

from spikewatch.sampler import cgroup as cgm


def per_call_us(fn, n: int = 5000) -> float:
    runs = []
    for _ in range(5):
        t0 = time.perf_counter_ns()
        for _ in range(n):
            fn()
        runs.append((time.perf_counter_ns() - t0) / n / 1000)
    return statistics.median(runs)


def main() -> None:
    cg = cgm.create_limited(256 << 20)
    try:
        p = cgm.spawn_in(cg, ["sleep", "60"])
        fd = cg.usage_fd
        rows = {
            "pread usage_fd (hot loop)": lambda: os.pread(fd, 64, 0),
            "read_usage()": cg.read_usage,
            "read_stat()": cg.read_stat,
            "read_limit()": cg.read_limit,
            "read_peak()": cg.read_peak,
            "reset_peak() (v1 owned)": cg.reset_peak,
            "read_oom()": cg.read_oom,
            "read_psi()": cg.read_psi,
            "pids()": cg.pids,
        }
        detail = 0.0
        print(f"cgroup v{cg.version} {cg.info.dir}")
        for name, fn in rows.items():
            us = per_call_us(fn, 2000 if "stat" in name else 5000)
            if not name.startswith("pread") and name != "read_usage()":
                detail += us
            print(f"{name:28s} {us:8.1f} µs")
        print(
            f"{'detail tick (all but usage)':28s} {detail:8.1f} µs  "
            f"= {detail / 100_000 * 100:.3f} % of a core at 100 ms"
        )
        p.kill()
        p.wait()
    finally:
        cgm.remove(cg)


if __name__ == "__main__":
    main()
