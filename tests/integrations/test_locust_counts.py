"""The Locust plugin's counting, without Locust: two workers' counts summed into one
``load`` body the inlet accepts (Locust itself runs only in subprocesses, test_locust.py)."""

from __future__ import annotations

import subprocess
import sys

from spikewatch.sampler.wire import protocol

from spikewatch.locust_counts import Counts, Totals


def test_two_workers_counts_sum_into_one_valid_load_body() -> None:
    a, b = Counts(), Counts()
    for _ in range(3):
        a.start("/x")
    a.end("/x")
    for ms in (1.0, 2.0, 50.0):
        a.done("/x", ms, None)
    b.start("/y")
    b.done("/x", 4.0, "HTTP 500")
    b.done("/y", 120.0, None)
    totals = Totals()
    totals.add("w1", a.take())
    totals.add("w2", b.take())
    msg = totals.message(interval_ns=1_000_000_000, phase="steady", workers=2)
    assert protocol.validate_load(msg) == msg
    assert msg["completed"] == 5 and msg["rate"] == 5.0 and msg["in_flight"] == 3
    assert msg["errors"] == {"HTTP 500": 1}
    assert msg["lat_max_ns"] == 120_000_000 and msg["lat_p50_ns"] == 4_000_000
    x, y = msg["endpoints"]["/x"], msg["endpoints"]["/y"]
    assert (x["completed"], x["in_flight"], x["errors"]) == (4, 2, {"HTTP 500": 1})
    assert (y["completed"], y["in_flight"]) == (1, 1)
    # Counts are consumed once; in-flight levels stay until a worker says otherwise.
    again = totals.message(interval_ns=1_000_000_000, phase="steady", workers=2)
    assert again["completed"] == 0 and again["in_flight"] == 3


def test_the_counting_module_needs_neither_locust_nor_gevent() -> None:
    code = "import sys, spikewatch.locust_counts; print(sorted({'locust', 'gevent'} & set(sys.modules)))"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and res.stdout.strip() == "[]", res.stderr
