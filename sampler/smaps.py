"""Sweeps of /proc/PID/smaps_rollup, and the helper process that runs them.

Run as a script (``python -I -S smaps.py``, standard library only, nothing
imported from site-packages) it is the sampler's PSS helper: each line of pids
on stdin gets one line back on stdout::

    t0 t1 cpu_ns procs rss pss uss swap_pss

(``t0``/``t1``: monotonic ns at the start and end of the sweep; ``cpu_ns``: the
CPU the sweep took; then how many processes were read and their sums in bytes).
It ends at the end of its input, so it never outlives the sampler.

Why a process and not a thread: a smaps_rollup read walks the whole address
space (~10 ms of CPU per GiB resident). A thread doing it must take the GIL
back after every read, right when it has used up its share of the CPU; if the
sampling thread then wants the GIL it waits until the scheduler runs that
thread again: stalls of 3-11 ms at 1 ms ticks were measured here on a loaded
host, none with the reads in another process.
"""

from __future__ import annotations

import os
import signal
import sys
import time

_FIELDS = {b"Rss": 0, b"Pss": 1, b"Private_Clean": 2, b"Private_Dirty": 2, b"SwapPss": 3}


def parse_rollup(data: bytes) -> tuple[int, int, int, int] | None:
    """(rss, pss, uss, swap_pss) in bytes from a smaps_rollup read; None for a
    zombie or a kernel thread (no address space, nothing listed)."""
    out = [0, 0, 0, 0]
    seen = False
    for line in data.split(b"\n"):
        key, sep, rest = line.partition(b":")
        i = _FIELDS.get(key)
        if i is None or not sep:
            continue
        parts = rest.split()
        if parts:
            out[i] += int(parts[0]) * 1024
            seen = True
    return (out[0], out[1], out[2], out[3]) if seen else None


def read_rollup(pid: int | bytes) -> tuple[int, int, int, int] | None:
    """:func:`parse_rollup` of one process; None when it is gone, a zombie, or not ours to read."""
    path = b"/proc/%s/smaps_rollup" % (pid if isinstance(pid, bytes) else str(pid).encode())
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return parse_rollup(os.read(fd, 16384))
    except OSError:
        return None
    finally:
        os.close(fd)


def sweep(pids: list[bytes] | list[int]) -> bytes:
    """One answer line of the helper (see the module docstring)."""
    c0, t0 = time.thread_time_ns(), time.monotonic_ns()
    tot = [0, 0, 0, 0]
    n = 0
    for pid in pids:
        r = read_rollup(pid)
        if r is None:
            continue
        n += 1
        for i in range(4):
            tot[i] += r[i]
    t1 = time.monotonic_ns()
    return b"%d %d %d %d %d %d %d %d\n" % (t0, t1, time.thread_time_ns() - c0, n, *tot)


def main() -> None:
    # Ctrl-C at the terminal is the sampler's to handle; this helper ends when its
    # input does (the sampler closed it, or died).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    out = sys.stdout.buffer
    try:
        for line in sys.stdin.buffer:
            out.write(sweep(line.split()))
            out.flush()
    except OSError:  # the sampler closed our output first (EPIPE): nothing left to answer
        pass
    os._exit(0)  # no flush at exit into a closed pipe


if __name__ == "__main__":
    main()
