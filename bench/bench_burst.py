"""What one burst of the sampler's slow work costs, and why their number matters more
than their content: on a VM, the first touch after a sleep is what costs.

1. ZeroMQ: a PUB socket sending to a subscriber in another process over loopback TCP,
   after a 20 ms sleep each time (as the sampler does between bursts): on-CPU µs per
   iteration of the sending thread and of ZeroMQ's I/O thread, for one message, two
   messages back to back (what ``Publisher.publish_all`` sends), and one message
   through ``send_multipart(copy=False)``.
2. Reads: one ``pread`` of a kept-open file right after another (warm) and after a
   10 ms sleep (cold), for the files the detail tier reads.

    .venv/bin/python bench/bench_burst.py [--iterations 300]
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import msgpack
import zmq

SUB = """
import sys, zmq
s = zmq.Context().socket(zmq.SUB); s.setsockopt(zmq.SUBSCRIBE, b""); s.connect(sys.argv[1])
while True:
    s.recv_multipart()
"""


def _thread_ns() -> dict[str, int]:
    out = {}
    for tid in os.listdir("/proc/self/task"):
        comm = Path(f"/proc/self/task/{tid}/comm").read_text().strip()
        name = "sending thread" if tid == str(os.getpid()) else comm
        out[name] = out.get(name, 0) + int(Path(f"/proc/self/task/{tid}/schedstat").read_text().split()[0])
    return out


def zmq_costs(iterations: int) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        ep = f"tcp://127.0.0.1:{s.getsockname()[1]}"
    pub = zmq.Context.instance().socket(zmq.PUB)
    pub.setsockopt(zmq.SNDHWM, 10_000)
    pub.bind(ep)
    sub = subprocess.Popen([sys.executable, "-c", SUB, ep])
    time.sleep(1.0)  # the subscriber connects
    batch = {"v": 1, "seq": 1, "t": 10**12, "dt": list(range(0, 100_000_000, 1_000_000))}
    batch["series"] = {"rss": [70_000_000 + i for i in range(100)], "cg_usage": [71_000_000 + i for i in range(100)]}
    body = msgpack.packb(batch)

    def one() -> None:
        pub.send(b"samples", zmq.NOBLOCK | zmq.SNDMORE)
        pub.send(body, zmq.NOBLOCK)

    def two() -> None:
        one()
        pub.send(b"detail", zmq.NOBLOCK | zmq.SNDMORE)
        pub.send(body, zmq.NOBLOCK)

    def multipart() -> None:
        pub.send_multipart([b"samples", body], zmq.NOBLOCK, copy=False)

    try:
        modes = (("nothing (the sleep alone)", lambda: None), ("one message", one), ("two back to back", two))
        for label, fn in (*modes, ("send_multipart(copy=False)", multipart)):
            for _ in range(20):  # warm-up
                time.sleep(0.02)
                fn()
            c0 = _thread_ns()
            for _ in range(iterations):
                time.sleep(0.02)
                fn()
            c1 = _thread_ns()
            per = {k: (v - c0.get(k, v)) / iterations / 1e3 for k, v in c1.items()}
            figures = ", ".join(f"{k} {v:.0f}" for k, v in per.items() if v >= 0.5)
            print(f"  {label:<28} µs of CPU an iteration: {figures}")
    finally:
        sub.kill()
        pub.close(0)


def _detail_files() -> list[str]:
    files = [f"/proc/{os.getpid()}/status", f"/proc/{os.getpid()}/statm", "/proc/pressure/memory"]
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        hid, ctrl, path = line.split(":", 2)
        base = Path("/sys/fs/cgroup/memory" + path) if "memory" in ctrl.split(",") else None
        if hid == "0" and base is None:
            base = Path("/sys/fs/cgroup" + path)
        if base is not None and (base / "memory.stat").exists():
            files += [str(base / "memory.stat")]
            files += [str(base / n) for n in ("memory.usage_in_bytes", "memory.current") if (base / n).exists()]
    return [f for f in files if os.path.exists(f)]


def read_costs(iterations: int) -> None:
    tn = time.thread_time_ns
    for path in _detail_files():
        fd = os.open(path, os.O_RDONLY)
        try:
            warm = cold = 0
            for _ in range(iterations):
                t0 = tn()
                os.pread(fd, 65536, 0)
                warm += tn() - t0
            for _ in range(iterations):
                time.sleep(0.01)
                t0 = tn()
                os.pread(fd, 65536, 0)
                cold += tn() - t0
            name = f"our memory cgroup's {Path(path).name}" if path.startswith("/sys/fs/cgroup") else path
            print(f"  {name:<40} warm {warm / iterations / 1e3:5.1f} µs, cold {cold / iterations / 1e3:5.1f} µs")
        finally:
            os.close(fd)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iterations", type=int, default=300)
    args = ap.parse_args()
    print(f"# {os.cpu_count()} CPUs, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print("ZeroMQ PUB to a subscriber process, a 20 ms sleep before each iteration:")
    zmq_costs(args.iterations)
    print("pread of a kept-open file (thread CPU, the call only): back to back vs after a 10 ms sleep:")
    read_costs(args.iterations)


if __name__ == "__main__":
    main()
