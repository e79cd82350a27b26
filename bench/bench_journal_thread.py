"""The journal thread's CPU in a live sampler: ``spikewatch sample`` run in this process
with ``Journal._drain`` (the thread's whole work: every record, the block's encoding,
compression and write) wrapped in ``time.thread_time_ns``.

    .venv/bin/python bench/bench_journal_thread.py sample --period 1ms --limit 1G \\
        --journal /tmp/j.journal --duration 10s -- python3 bench/spiky_target.py

Prints, at exit, the thread's CPU in µs a second of the run. Run two installs'
pythons alternately to compare them (the host's load moves it by ±20 %).
"""

from __future__ import annotations

import atexit
import sys
import time
from typing import Any

from spikewatch.sampler.wire import stream

from spikewatch.entry import main

_spent = [0, 0]
_start = time.monotonic()
_drain = stream.Journal._drain


def _timed_drain(self: Any) -> None:
    t0 = time.thread_time_ns()
    try:
        _drain(self)
    finally:
        _spent[0] += time.thread_time_ns() - t0
        _spent[1] += 1


def _report() -> None:
    took = time.monotonic() - _start
    print(
        f"journal thread: {_spent[0] / 1e6:.1f} ms of CPU in {_spent[1]} drains over {took:.1f} s:"
        f" {_spent[0] / 1e3 / took:.0f} µs a second",
        file=sys.stderr,
    )


if __name__ == "__main__":
    stream.Journal._drain = _timed_drain  # type: ignore[method-assign]
    atexit.register(_report)
    sys.argv = ["spikewatch", *sys.argv[1:]]
    main()
