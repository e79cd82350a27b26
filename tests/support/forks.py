"""Workloads that fork, for the tests of multi-process targets (real processes, real pages).

Heaps are private anonymous mappings touched page by page: fast, and copied
on write after a fork exactly like a service's malloc arenas.
"""

from __future__ import annotations

from pathlib import Path

from tests.support.sampler import write_script

_HEAP = """
import mmap, os, sys, time
MiB = 1 << 20

def touch(m, n, v=1):
    for i in range(0, n, 4096):
        m[i] = v

def heap(mib):
    n = int(mib * MiB)
    m = mmap.mmap(-1, max(n, 4096), flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    touch(m, n)
    return m
"""

# argv: parent heap MiB, child's own MiB, MiB of the parent's heap the child writes, seconds the child holds.
FORKER = (
    _HEAP
    + """
P, C, W, HOLD = (float(x) for x in sys.argv[1:5])
parent = heap(P)
time.sleep(0.3)
pid = os.fork()
if pid == 0:
    own = heap(C)
    touch(parent, int(W * MiB), 2)
    print("child", os.getpid(), time.monotonic_ns(), flush=True)
    time.sleep(HOLD)
    os._exit(0)
os.waitpid(pid, 0)
print("parent", os.getpid(), time.monotonic_ns(), flush=True)
time.sleep(0.3)
"""
)

# argv: shared heap MiB, workers, MiB each writer copies, writers, MiB of each worker's own, seconds held.
PREFORK = (
    _HEAP
    + """
P, N, W, NW, O, HOLD = (float(x) for x in sys.argv[1:7])
parent = heap(P)
pids = []
for k in range(int(N)):
    pid = os.fork()
    if pid == 0:
        own = heap(O)
        if k < NW:
            touch(parent, int(W * MiB), 2)  # copy-on-write: these pages become the worker's own
        time.sleep(HOLD)
        os._exit(0)
    pids.append(pid)
for pid in pids:
    os.waitpid(pid, 0)
time.sleep(0.3)
"""
)


def script(tmp_path: Path, name: str, code: str) -> Path:
    return write_script(tmp_path, name, code)


# argv: parent heap MiB (shared after the fork), child's own MiB, seconds the child holds.
# No pauses around the fork (FORKER has them for the proc_start/exit stamps): short runs.
QUICK_FORKER = (
    _HEAP
    + """
P, C, HOLD = (float(x) for x in sys.argv[1:4])
parent = heap(P)
pid = os.fork()
if pid == 0:
    own = heap(C)
    time.sleep(HOLD)
    os._exit(0)
os.waitpid(pid, 0)
"""
)


def sample_forker_in_process(tmp_path: Path, listeners: list, parent: int, child: int, hold: float) -> int:
    """Sample QUICK_FORKER (``parent`` MiB shared after the fork, the child's own ``child`` MiB,
    held ``hold`` s) to its end with a real sampler in this process, ``listeners`` on its
    publish path; PSS swept at every detail period. Returns the sampler's exit status."""
    import sys

    from spikewatch.sampler import daemon

    from tests.conftest import free_port

    f = script(tmp_path, "quick_forker.py", QUICK_FORKER)
    config = daemon.SamplerConfig(
        target=daemon.Target(argv=[sys.executable, str(f), str(parent), str(child), str(hold)]),
        publish=f"tcp://127.0.0.1:{free_port()}",
        inlet=None,
        journal="",
        quiet=True,
        pss_budget=0.5,  # a sweep every detail period: several while the child lives
        log=lambda _msg: None,
    )
    sampler = daemon.Sampler(config)
    sampler.setup()
    sampler.listeners += listeners
    return sampler.run()
