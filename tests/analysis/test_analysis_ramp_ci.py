"""The ramp's bytes-per-request interval counts a step as one observation.

The points of one step share what that step happened to allocate besides its
requests (on the demo service, 256 KiB taken at one step in one run and at the
next in another); their residuals are a few pages, so an interval from the
points alone called two runs of the same service different."""

from __future__ import annotations

import math

import numpy as np
import pytest
from spikewatch.analysis.metrics import Reading, beyond_noise
from spikewatch.analysis.stats import ols_slope_interval, t_quantile

KiB, MiB = 1 << 10, 1 << 20
LEVELS = (2.0, 7.0, 12.0)
PER_STEP = 30
SEEDS = range(300)


def ramp(seed: int, slope: float = 1.0 * MiB) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Three steps of 30 settled points: a shared offset per step (sd 128 KiB), a few pages of noise per point."""
    rng = np.random.default_rng(seed)
    x = np.repeat(LEVELS, PER_STEP)
    groups = np.repeat(np.arange(len(LEVELS)), PER_STEP)
    offsets = rng.normal(0.0, 128 * KiB, len(LEVELS))[groups]
    pages = rng.integers(-2, 3, len(x)) * 4 * KiB
    return x, 30 * MiB + slope * x + offsets + pages, groups


def reading(seed: int, grouped: bool) -> Reading:
    x, y, g = ramp(seed)
    ci = ols_slope_interval(x, y, groups=g if grouped else None)
    assert ci is not None
    return Reading(float(np.polyfit(x, y, 1)[0]), ci)


def test_t_quantile_is_exact_where_few_steps_put_it() -> None:
    assert t_quantile(0.95, 1) == pytest.approx(12.706, abs=1e-3)
    assert t_quantile(0.95, 2) == pytest.approx(4.303, abs=1e-3)
    assert t_quantile(0.95, 10) == pytest.approx(2.228, rel=0.01)


def test_grouped_interval_covers_the_true_slope() -> None:
    cis = [reading(s, grouped=True).ci for s in SEEDS]
    hits = sum(ci is not None and ci[0] <= MiB <= ci[1] for ci in cis)
    assert hits / len(SEEDS) >= 0.9


def test_same_service_twice_is_within_noise_only_when_steps_are_the_unit() -> None:
    def false_alarms(grouped: bool) -> float:
        pairs = [(reading(2 * s, grouped), reading(2 * s + 1, grouped)) for s in range(150)]
        return sum(bool(beyond_noise(a, b)) for a, b in pairs) / len(pairs)

    assert false_alarms(grouped=True) <= 0.1
    # the points-only interval (even widened for autocorrelation) cries wolf on a third of pairs
    assert false_alarms(grouped=False) >= 0.25


def test_a_real_difference_stays_beyond_noise() -> None:
    x, y, g = ramp(1)
    x2, y2, g2 = ramp(2, slope=2.0 * MiB)
    a = ols_slope_interval(x, y, groups=g)
    b = ols_slope_interval(x2, y2, groups=g2)
    assert a and b
    assert beyond_noise(Reading(float(np.polyfit(x, y, 1)[0]), a), Reading(float(np.polyfit(x2, y2, 1)[0]), b))


def test_two_groups_keep_the_points_interval() -> None:
    x, y, _ = ramp(3)
    keep = x != LEVELS[1]
    two = ols_slope_interval(x[keep], y[keep], groups=x[keep])
    alone = ols_slope_interval(x[keep], y[keep])
    assert two == alone and not math.isinf(two[1] - two[0])  # type: ignore[index]
