"""Slack work in the sampling thread (A, what the sampler does) vs a second thread (B).

Same work either way: 2 preads per tick at 1 ms under SCHED_FIFO, a 20-sample
msgpack + ZeroMQ batch every 20 ms, a /proc/PID/status read every 100 ms.
Run alternately, several times (the host is noisy)::

    for m in A B A B A B; do .venv/bin/python bench/bench_sampler_threading.py $m; done
"""

import os
import queue
import resource
import sys
import threading
import time

sys.path.insert(0, "/work/main")
import zmq
from spikewatch.sampler.ticker import Ticker, set_timer_slack, try_realtime
from spikewatch.sampler.wire import protocol

mode = sys.argv[1]
set_timer_slack(1)
try_realtime()
ctx = zmq.Context.instance()
pub = ctx.socket(zmq.PUB)
pub.bind("tcp://127.0.0.1:27911")
sub = ctx.socket(zmq.SUB)
sub.connect("tcp://127.0.0.1:27911")
sub.setsockopt(zmq.SUBSCRIBE, b"")
fd1 = os.open(f"/proc/{os.getppid()}/statm", os.O_RDONLY)
fd2 = os.open(
    "/sys/fs/cgroup/memory"
    + open("/proc/self/cgroup").read().split("memory:")[1].split()[0]
    + "/memory.usage_in_bytes",
    os.O_RDONLY,
)
st = os.open(f"/proc/{os.getppid()}/status", os.O_RDONLY)
seq = [0]


def batch(ts, a, b):
    body = protocol.samples_body(seq[0], ts, {"rss": a, "cg_usage": b})
    seq[0] += 1
    pub.send(b"samples", zmq.SNDMORE)
    pub.send(protocol.pack(body))


def detail():
    os.pread(st, 16384, 0).split(b"\n")


q = queue.SimpleQueue()


def worker():
    while True:
        item = q.get()
        if item is None:
            return
        if item == "d":
            detail()
        else:
            batch(*item)


if mode == "B":
    th = threading.Thread(target=worker, daemon=True)
    th.start()
t = Ticker(1_000_000)
origin = t.start()
late = []
missed = 0
ts = []
a = []
b = []
r0 = resource.getrusage(resource.RUSAGE_SELF)
w0 = time.monotonic()
for i in range(10000):
    n = t.wait()
    now = time.monotonic_ns()
    missed += n - 1
    late.append((now - origin) % 1_000_000)
    ts.append(now)
    a.append(int(os.pread(fd1, 64, 0).split(None, 2)[1]))
    b.append(int(os.pread(fd2, 32, 0)))
    if len(ts) == 20:
        if mode == "A":
            batch(ts, a, b)
        else:
            q.put((ts, a, b))
        ts, a, b = [], [], []
    if i % 100 == 0:
        if mode == "A":
            detail()
        else:
            q.put("d")
r1 = resource.getrusage(resource.RUSAGE_SELF)
w1 = time.monotonic()
late.sort()
print(
    mode,
    f"cpu {100 * ((r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)) / (w1 - w0):.2f}%",
    f"p50 {late[len(late) // 2] / 1e3:.0f} us p99 {late[int(len(late) * 0.99)] / 1e3:.0f} us"
    f" max {late[-1] / 1e3:.0f} us missed {missed}",
)
