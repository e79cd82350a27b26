"""The open model's evenly spaced schedule: exact counts whatever the clock's origin."""

from __future__ import annotations

import random

import pytest
from spikewatch.driver.profile import Arrivals
from spikewatch.driver.scenario import Phase


@pytest.mark.parametrize("rate,seconds", [(300, 2), (7, 3), (1000, 1), (333, 3)])
def test_rate_times_duration_arrivals_and_not_one_more(rate: int, seconds: int) -> None:
    phase = Phase(name="flat", kind="steady", duration_ns=seconds * 10**9, rate=(rate, rate))
    rng = random.Random(1)
    for _ in range(200):
        # Monotonic clocks of hosts up for hours to weeks: large origins lose float precision.
        t0 = rng.randrange(10**12, 10**15)
        end = t0 + phase.duration_ns
        arrivals = Arrivals(phase, rng)
        t, n = float(t0), 0
        while t < end:
            n += 1
            t = arrivals.after(t, rate)
        assert n == rate * seconds, t0


def test_a_rate_change_starts_a_new_even_spacing() -> None:
    phase = Phase(name="ramp", kind="ramp", duration_ns=2 * 10**9, rate=(100, 200))
    arrivals = Arrivals(phase, random.Random(1))
    t = arrivals.after(0.0, 100)
    assert t == pytest.approx(10_000_000)
    t = arrivals.after(t, 200)
    assert t == pytest.approx(15_000_000)
    # A warped arrival (not the last one returned) anchors the spacing afresh.
    assert arrivals.after(15_500_000.0, 200) == pytest.approx(20_500_000)
