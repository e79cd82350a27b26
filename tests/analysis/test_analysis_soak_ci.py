"""The soak slope's 95 % interval stays honest when memory wanders (serially correlated noise)."""

from __future__ import annotations

import numpy as np
import pytest
from spikewatch.analysis import reader, report
from spikewatch.analysis.stats import theil_sen
from spikewatch.analysis.synth import MiB, Synth

HOUR = 3600.0
SEEDS = range(200)


def ar1(rng: np.random.Generator, n: int, phi: float, sd: float) -> np.ndarray:
    """Stationary AR(1) noise with marginal standard deviation ``sd``."""
    e = rng.normal(0.0, sd * np.sqrt(1 - phi * phi), n)
    out = np.empty(n)
    out[0] = rng.normal(0.0, sd)
    for k in range(1, n):
        out[k] = phi * out[k - 1] + e[k]
    return out


def soak_points(seed: int, mib_per_hour: float, phi: float, n: int = 600) -> tuple[np.ndarray, np.ndarray]:
    """A 1 h soak as the fit sees it: ``n`` bucket medians, 200 MiB + a known slope + AR(1) wander."""
    rng = np.random.default_rng(seed)
    x = np.linspace(0.0, HOUR, n)
    y = 200 * MiB + x * (mib_per_hour * MiB / HOUR) + ar1(rng, n, phi, 4 * MiB)
    return x, y


def coverage(mib_per_hour: float, phi: float, autocorrelation: bool) -> float:
    slope = mib_per_hour * MiB / HOUR
    hits = 0
    for seed in SEEDS:
        fit = theil_sen(*soak_points(seed, mib_per_hour, phi), autocorrelation=autocorrelation)
        assert fit is not None and fit.n == 600
        hits += fit.low <= slope <= fit.high
    return hits / len(SEEDS)


def test_interval_covers_true_slope_under_strong_autocorrelation():
    new = coverage(0.0, 0.9, autocorrelation=True)
    old = coverage(0.0, 0.9, autocorrelation=False)
    # Sen's interval alone holds the true slope in ~40 % of seeds (measured: 0.39); corrected ~0.93
    assert new >= 0.88, (new, old)
    assert old <= 0.6, (new, old)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_leak_moves_the_fit_and_its_interval_by_exactly_its_slope(seed):
    """Theil–Sen is equivariant: adding a slope to the points adds it to every pairwise slope,
    so the line, the residuals (and their autocorrelation) and the interval all move with it.
    That is why the coverage above, measured on flat soaks, holds for leaking ones: each seed
    with a 30 MiB/h leak covers the true slope exactly when its flat twin covers zero."""
    leak = 30.0 * MiB / HOUR
    x, flat = soak_points(seed, 0.0, 0.9)
    _, leaking = soak_points(seed, 30.0, 0.9)
    assert np.allclose(leaking - flat, x * leak)  # the same noise, plus the leak
    for autocorrelation in (True, False):
        a = theil_sen(x, flat, autocorrelation=autocorrelation)
        b = theil_sen(x, leaking, autocorrelation=autocorrelation)
        assert a is not None and b is not None
        assert b.slope == pytest.approx(a.slope + leak, rel=1e-9, abs=1e-12 * leak)
        assert b.low == pytest.approx(a.low + leak, rel=1e-9, abs=1e-12 * leak)
        assert b.high == pytest.approx(a.high + leak, rel=1e-9, abs=1e-12 * leak)
        assert b.r1 == a.r1 and b.inflation == a.inflation


def test_independent_noise_keeps_sens_width():
    for seed in range(40):
        x, y = soak_points(seed, 30.0, 0.0)
        sen = theil_sen(x, y, autocorrelation=False)
        fit = theil_sen(x, y)
        assert sen is not None and fit is not None
        assert fit.slope == sen.slope
        ratio = (fit.high - fit.low) / (sen.high - sen.low)
        assert 1.0 <= ratio <= 1.15, (seed, fit.r1, ratio)
        assert fit.low > 0  # a 30 MiB/h leak stays clearly above zero


def test_negative_autocorrelation_never_narrows():
    x, y = soak_points(7, 0.0, -0.6)
    sen = theil_sen(x, y, autocorrelation=False)
    fit = theil_sen(x, y)
    assert sen is not None and fit is not None
    assert fit.r1 < -0.3 and fit.inflation == 1.0
    assert (fit.low, fit.high) == (sen.low, sen.high)


def test_random_walk_gives_a_wide_finite_interval():
    rng = np.random.default_rng(3)
    x = np.arange(600, dtype=np.float64)
    fit = theil_sen(x, np.cumsum(rng.normal(0, 1, 600)))
    assert fit is not None and fit.r1 > 0.9
    assert np.isfinite(fit.low) and np.isfinite(fit.high) and fit.low < fit.slope < fit.high


def wandering_soak(path, seed: int) -> tuple[Synth, np.ndarray, np.ndarray]:
    """120 s at 1 kHz, flat on average: a heap that wanders (AR(1), φ = 0.9 every 0.2 s) plus sample noise."""
    s = Synth()
    t = s.times(120)
    rng = np.random.default_rng(seed)
    steps = ar1(rng, len(t) // 200 + 1, 0.9, 2 * MiB)
    v = (200 * MiB + np.repeat(steps, 200)[: len(t)] + rng.integers(-MiB // 4, MiB // 4, len(t))).astype(np.int64)
    s.samples(t, rss=v)
    s.phase(int(t[0]), int(t[-1]), "long", "soak")
    s.write(path)
    return s, t, v


def test_wandering_flat_soak_is_inconclusive_not_growing(tmp_path):
    # seed 3: the wander happens to drift up over the window (+39 MiB/h); Sen's interval
    # alone (+19..+58) excludes the 1 MiB/h threshold and would report a leak that is not there
    _, t, v = wandering_soak(tmp_path / "wander.rec", seed=3)
    rep = report.build_report(reader.load(tmp_path / "wander.rec"))
    g = next(p for p in rep["phases"] if p["name"] == "long")["growth"]
    w = t >= t[0] + (t[-1] - t[0]) // 10  # growth() skips the first 10 % as warm-up
    sen = theil_sen((t[w] - t[w][0]) / 1e9, v[w].astype(np.float64), autocorrelation=False)
    assert sen is not None
    thr = g["stable_below_mib_per_hour"] * MiB / HOUR
    assert sen.low > thr, "the old interval should have called this flat soak growing"
    lo, hi = g["ci_mib_per_hour"]
    assert lo <= 0.0 <= hi
    assert g["stabilized"] is None and g["trend"] == "inconclusive"
    assert rep["checklist"]["stabilized"] is None
    # The report says why the interval is wide, in JSON and in the checklist's reason.
    assert g["residual_r1"] > 0.5 and g["ci_widened_by"] >= 1.5
    assert "wider because memory wanders" in rep["checklist_reasons"]["stabilized"]
