"""The sampler's work beyond the hot loop, in a live sampler: ``spikewatch sample`` run in
this process with the sampling thread's slow work (``SlackWork._slack``: the detail tier,
publishing, the hello, tree refreshes) and the journal thread's (``Journal._drain``: every
record, the block's encoding, compression and write) wrapped in ``time.thread_time_ns``,
and ZeroMQ's I/O thread read from its ``schedstat``.

    .venv/bin/python bench/bench_slow_work.py sample --period 1ms --limit 1G \\
        --journal /tmp/j.journal --duration 15s -- python3 bench/spiky_target.py

Prints, at exit, each one's CPU in ms a second of the run (with a subscriber attached,
ZeroMQ's I/O thread sends what is published; without one it has nothing to do). These
figures do not drift with the host the way a whole process's CPU does (a VM's wake-ups
cost ±20 % from one minute to the next): compare two installs' pythons alternately.
"""

from __future__ import annotations

import atexit
import os
import sys
import time
from typing import Any

from spikewatch.sampler import slack
from spikewatch.sampler.wire import stream

from spikewatch.entry import main

_spent: dict[str, list[int]] = {"slow work (sampling thread)": [0, 0], "journal thread": [0, 0]}
_start = time.monotonic()


def _timed(fn: Any, name: str) -> Any:
    def timed(*args: Any) -> Any:
        t0 = time.thread_time_ns()
        try:
            return fn(*args)
        finally:
            _spent[name][0] += time.thread_time_ns() - t0
            _spent[name][1] += 1

    return timed


def _zmq_io_ns() -> int:
    total = 0
    for tid in os.listdir("/proc/self/task"):
        try:
            if open(f"/proc/self/task/{tid}/comm").read().startswith("ZMQbg/IO"):
                total += int(open(f"/proc/self/task/{tid}/schedstat").read().split()[0])
        except OSError:
            continue
    return total


def _report() -> None:
    took = time.monotonic() - _start
    lines = [
        f"{name}: {ns / 1e6 / took:.3f} ms of CPU a second ({n / took:.1f} calls a second)"
        for name, (ns, n) in _spent.items()
    ]
    lines.append(f"ZeroMQ I/O thread: {_zmq_io_ns() / 1e6 / took:.3f} ms of CPU a second")
    print(f"over {took:.1f} s:\n  " + "\n  ".join(lines), file=sys.stderr)


if __name__ == "__main__":
    slack.SlackWork._slack = _timed(slack.SlackWork._slack, "slow work (sampling thread)")  # type: ignore[method-assign]
    stream.Journal._drain = _timed(stream.Journal._drain, "journal thread")  # type: ignore[method-assign]
    atexit.register(_report)
    sys.argv = ["spikewatch", *sys.argv[1:]]
    main()
