"""Cost of the Prometheus exporter on the sampler's publishing path, and scrape latency.

    .venv/bin/python bench/bench_prometheus.py [--batches 20000] [--scrapes 300]

Prints µs per observe() of a 20-sample batch (rss + cg_usage, as the sampler
publishes at 1 kHz), per detail and per hello, and the latency of a real HTTP
scrape (urllib, new connection each time) with 1 and with 32 tracked scrapers.
"""

from __future__ import annotations

import argparse
import statistics
import time
import urllib.request

from spikewatch.sampler.prometheus import PeakExporter
from spikewatch.sampler.wire import protocol

MiB = 1 << 20


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def timed(fn, bodies) -> list[float]:  # type: ignore[no-untyped-def]
    out = []
    clock = time.perf_counter_ns
    for topic, body in bodies:
        t0 = clock()
        fn(topic, body)
        out.append((clock() - t0) / 1000)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", type=int, default=20000)
    ap.add_argument("--scrapes", type=int, default=300)
    args = ap.parse_args()

    exp = PeakExporter("127.0.0.1:0").start()
    t = 1_000_000_000
    batches = []
    for i in range(args.batches):
        times = [t + k * 1_000_000 for k in range(20)]
        t += 20_000_000
        rss = [100 * MiB + ((i * 20 + k) * 4096) % (8 * MiB) for k in range(20)]
        batches.append(
            (protocol.SAMPLES, protocol.samples_body(i, times, {"rss": rss, "cg_usage": [v + MiB for v in rss]}))
        )
    details = [
        (
            protocol.DETAIL,
            {
                **protocol.header(i, t),
                "rss_anon": 90 * MiB,
                "rss_file": 9 * MiB,
                "rss_shmem": 0,
                "vm_swap": 0,
                "vm_hwm": 120 * MiB,
                "sample_max": 108 * MiB,
                "cg_usage": 110 * MiB,
                "cg_anon": 95 * MiB,
                "cg_file": 14 * MiB,
                "cg_inactive_file": 6 * MiB,
                "cg_working_set": 104 * MiB,
                "cg_limit": 512 * MiB,
                "cg_peak": 111 * MiB,
            },
        )
        for i in range(args.batches // 5)
    ]
    hellos = [
        (
            protocol.HELLO,
            {
                **protocol.header(i, t + i),
                "session": "s",
                "host": "h",
                "sampler_version": "0.1.0",
                "period_ns": 1_000_000,
                "cgroup": None,
                "counters": {"samples": i * 1000, "overruns": 0, "dropped": 0, "hwm_spikes": 0},
            },
        )
        for i in range(args.batches // 50)
    ]

    def noop(topic, body):  # type: ignore[no-untyped-def]
        pass

    base = timed(noop, batches)
    s = timed(exp.observe, batches)
    d = timed(exp.observe, details)
    h = timed(exp.observe, hellos)
    print(
        f"observe(samples, 20 x 2 series): p50 {pct(s, 0.5):.2f} us  p99 {pct(s, 0.99):.2f} us  "
        f"mean {statistics.fmean(s):.2f} us   (empty call: p50 {pct(base, 0.5):.2f} us)"
    )
    print(f"observe(detail):                 p50 {pct(d, 0.5):.2f} us  p99 {pct(d, 0.99):.2f} us")
    print(f"observe(hello):                  p50 {pct(h, 0.5):.2f} us  p99 {pct(h, 0.99):.2f} us")
    per_s = statistics.fmean(s) * 50 + statistics.fmean(d) * 10 + statistics.fmean(h)
    print(
        f"publishing-path cost at 1 kHz (50 batches + 10 details + 1 hello per s): {per_s:.0f} us/s "
        f"= {per_s / 1e4:.3f} % of one core"
    )

    for n_scrapers in (1, 32):
        for k in range(n_scrapers):
            urllib.request.urlopen(f"{exp.url}?scraper=s{k}", timeout=10).read()
        lat = []
        size = 0
        for i in range(args.scrapes):
            exp.observe(*batches[i % len(batches)])
            t0 = time.perf_counter()
            with urllib.request.urlopen(f"{exp.url}?scraper=s{i % n_scrapers}", timeout=10) as r:
                size = len(r.read())
            lat.append((time.perf_counter() - t0) * 1000)
        print(
            f"scrape over HTTP, {n_scrapers:2d} tracked scraper(s): p50 {pct(lat, 0.5):.2f} ms  "
            f"p99 {pct(lat, 0.99):.2f} ms  ({size} bytes)"
        )
    exp.close()
    print(footprint())


def footprint() -> str:
    """RSS the exporter adds to a process that already has the sampler's imports."""
    import subprocess
    import sys

    code = (
        "import psutil, zmq, msgpack, click, spikewatch.sampler.wire.protocol, spikewatch.sampler.prometheus\n"
        "def rss(): return int(open('/proc/self/statm').read().split()[1]) * 4096\n"
        "a = rss()\n"
        "from spikewatch.sampler.prometheus import PeakExporter\n"
        "e = PeakExporter('127.0.0.1:0').start()\n"
        "import urllib.request; urllib.request.urlopen(e.url).read()\n"
        "print(a, rss())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    before, after = (int(x) for x in out.split())
    return (
        f"RSS: sampler imports {before / MiB:.1f} MiB, + prometheus_client and a served scrape "
        f"{after / MiB:.1f} MiB (+{(after - before) / MiB:.1f} MiB)"
    )


if __name__ == "__main__":
    main()
