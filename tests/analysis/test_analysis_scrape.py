import numpy as np
import pytest
from spikewatch.analysis import downsample, scrape
from spikewatch.analysis.synth import MiB

S = 1_000_000_000


def flat_with_spike(spike_s: float, length_s: float, seconds: int = 120):
    t = np.arange(seconds * 1000, dtype=np.int64) * 1_000_000
    v = np.full(len(t), 100 * MiB, dtype=np.int64)
    v[int(spike_s * 1000) : int((spike_s + length_s) * 1000)] = 300 * MiB
    return t, v


def test_spike_between_scrapes_is_missed():
    t, v = flat_with_spike(50.0, 0.2)
    sv = scrape.scrape_view(t, v, int(v.max()), 0, (15, 30, 60))
    for key in ("15s", "30s", "60s"):
        assert sv[key]["max_bytes"] == 100 * MiB
        assert sv[key]["missed_fraction"] == pytest.approx(2 / 3, abs=1e-3)
    # the share of offsets that land inside a 200 ms spike is 0.2 s / I
    assert sv["15s"]["hit_probability"] == pytest.approx(0.2 / 15, abs=0.004)
    assert sv["60s"]["hit_probability"] == pytest.approx(0.2 / 60, abs=0.004)
    assert sv["15s"]["best_bytes"] == 300 * MiB


def test_long_plateau_is_seen_by_most_offsets():
    t, v = flat_with_spike(40.0, 10.0)
    sv = scrape.scrape_view(t, v, int(v.max()), 0, (15,))
    assert sv["15s"]["hit_probability"] == pytest.approx(10 / 15, abs=0.01)
    assert sv["15s"]["max_bytes"] == 300 * MiB and sv["15s"]["missed_fraction"] == 0


def test_matches_a_naive_scraper():
    rng = np.random.default_rng(7)
    t = np.cumsum(rng.integers(500_000, 1_500_000, 20_000)).astype(np.int64)
    v = rng.integers(0, 1000, len(t)).astype(np.int64)
    interval = 2 * S
    phi, best = scrape.scraped_maxima(t, v, interval, int(t[0]), offsets=37)
    for p, b in zip(phi[::5], best[::5]):
        seen = []
        when = int(t[0]) + int(p)
        while when <= t[-1]:
            i = np.searchsorted(t, when, side="right") - 1
            seen.append(v[i])
            when += interval
        assert max(seen) == b


def test_minmax_keeps_every_spike():
    t = np.arange(3_600_000, dtype=np.int64) * 1_000_000
    v = np.zeros(len(t), dtype=np.int64)
    v[1_234_567] = 999  # a single-sample spike
    v[2_000_000] = -5
    bt, lo, hi = downsample.minmax(t, v, 2000)
    assert len(bt) == 2000 and hi.max() == 999 and lo.min() == -5
    assert np.count_nonzero(hi) == 1
    x, y = downsample.envelope_xy(t, v, 2000)
    assert len(x) == 4000 and y.max() == 999
    bt, lo, hi = downsample.minmax(t[:10], v[:10], 2000)
    assert len(bt) == 10


def test_bucket_minmax_keeps_both_ends_of_every_bucket():
    # The one core the HTML report and the live console both bucket through.
    idx = np.array([0, 0, 2, 2, 2, 7])
    v = np.array([5, 1, 3, 9, 4, -2])
    which, lo, hi = downsample.bucket_minmax(idx, v)
    assert which.tolist() == [0, 2, 7]
    assert lo.tolist() == [1, 3, -2] and hi.tolist() == [5, 9, -2]
