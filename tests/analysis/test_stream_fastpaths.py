"""The streamed pass's shortcuts give the figures of the plain computations they replace."""

from __future__ import annotations

import numpy as np
from spikewatch.analysis.spikes import SpikeParams, base_at, baseline, runs
from spikewatch.analysis.spikestream import Buckets
from spikewatch.analysis.streamacc import Envelope, SeriesAcc

MiB = 1 << 20


def _series(rng: np.random.Generator, n: int, step: int) -> tuple[np.ndarray, np.ndarray]:
    t = np.cumsum(rng.integers(1, 2 * step, n)).astype(np.int64) + int(rng.integers(0, 10**12))
    t[n // 2 :] += int(rng.integers(0, 10**10))  # a sampling gap
    v = int(rng.integers(0, 1 << 32)) + np.cumsum(rng.choice([-1, 0, 0, 0, 1], n)) * 4096
    v += np.linspace(0, int(rng.integers(0, 200 * MiB)), n).astype(np.int64)  # a ramp, sometimes steep
    for _ in range(int(rng.integers(0, 5))):
        a = int(rng.integers(0, n))
        v[a : a + int(rng.integers(1, 300))] += int(rng.integers(MiB, 120 * MiB))
    return t, np.maximum(v, 0).astype(np.int64)


def test_spike_buckets_match_the_per_sample_baseline() -> None:
    rng = np.random.default_rng(7)
    p = SpikeParams()
    spiky = 0
    for trial in range(80):
        n = int(rng.integers(1, 12000))
        t, v = _series(rng, n, int(rng.choice([1_000_000, 5_000_000, 300_000_000])))
        origin = int(t[0]) - (int(rng.integers(0, 10**9)) if trial % 2 else 0)
        base = baseline(t, v, p, origin)
        want = runs(t, v, base, p)
        bk = Buckets(t, v, p, origin)
        assert bk.runs() == want
        spiky += bool(want)
        for a in [int(t[0]) - 1, int(t[0]), int(t[-1]), int(t[-1]) + 1, *rng.integers(int(t[0]), int(t[-1]) + 1, 3)]:
            assert bk.at(int(a)) == base_at(t, base, int(a))
    assert spiky > 5  # the shortcut was tried where it matters


def test_envelope_with_times_in_order_matches_the_bucket_index_path() -> None:
    rng = np.random.default_rng(8)
    for _ in range(80):
        cap = int(rng.choice([16, 64, 1024]))
        a, b = Envelope(cap, 1000), Envelope(cap, 1000)
        t0 = int(rng.integers(0, 10**12))
        for _c in range(int(rng.integers(1, 10))):
            n = int(rng.integers(1, 4000))
            t = t0 + np.cumsum(rng.integers(0, int(rng.choice([10**3, 10**6, 10**8])), n)).astype(np.int64)
            t0 = int(t[-1])
            v = rng.integers(0, 50, n).astype(np.int64) * 4096
            a.feed(t, v, True)
            b.feed(t, v, False)
        for x, y in zip(a.points(), b.points()):
            assert np.array_equal(x, y)


def test_series_figures_from_runs_match_sample_by_sample() -> None:
    rng = np.random.default_rng(9)
    for _ in range(40):
        runs_acc, each = SeriesAcc(), SeriesAcc()
        for _c in range(int(rng.integers(1, 6))):
            t, v = _series(rng, int(rng.integers(1, 5000)), 1_000_000)
            runs_acc.feed(t, v)  # few changes: the runs of equal values
            each._steps(t, None)
            each.last, each.count = int(v[-1]), each.count + len(v)
            each._feed_each(t, v)
        for k in ("count", "peak", "peak_t", "vmin", "last", "total", "diff_max"):
            assert getattr(runs_acc, k) == getattr(each, k), k
        for q in (0, 50, 99, 100):
            assert runs_acc.percentile_f(q) == each.percentile_f(q)
