"""The streaming reader (long v2 runs) against the in-memory one on the same small recording.

A long run is read in one pass over its blocks; the report's exact figures (true peak and
its time, mean, p99, the scrape view, spikes, sampling gaps, per-phase peak, mean and
percentiles, integrity) must be the ones the in-memory path computes from every sample.
Small caps and chunks make a two-minute recording cross every boundary a day-long one does:
many sample chunks, spike cores, envelope halvings, thinned details and merged telemetry.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from spikewatch.analysis import reader, spikestream, stream
from spikewatch.analysis.report import build_report
from spikewatch.analysis.synth import MiB, Synth
from spikewatch.sampler.wire import protocol

S = 1_000_000_000


def _soak(path, seconds: int) -> None:
    s = Synth(limit=512 * MiB, series=("rss", "cg_usage"))
    t = s.times(seconds)
    rng = np.random.default_rng(7)
    rss = 200 * MiB + np.cumsum(rng.choice([-1, 0, 0, 0, 0, 0, 0, 0, 0, 1], len(t))) * 4096
    t0 = int(t[0])
    for k in range(5, seconds, 13):  # a 20 ms spike every 13 s, of a height that varies
        rss[k * 1000 : k * 1000 + 20] += (40 + k % 7 * 10) * MiB
    cg = rss + 30 * MiB + np.cumsum(rng.choice([-1, 0, 0, 0, 1], len(t))) * 4096
    s.samples(t, rss=rss, cg_usage=cg)
    third = seconds // 3
    # phase edges between two samples (a stretch is [start, end): a sample stamped exactly
    # at a marker's nanosecond would count in the phase that ends there in memory only)
    s.phase(t0 + S // 2 + 500, t0 + third * S + 500, "warm", "steady")
    s.phase(t0 + third * S + 1500, t0 + 2 * third * S + 500, "rush", "burst")
    s.phase(t0 + 2 * third * S + 1500, int(t[-1]) - 500, "long", "soak")
    for k in range(seconds * 10):
        i = k * 100
        s.detail(
            t0 + i * 1_000_000 + 40_000,
            threads=8 if k < seconds * 4 else 16,
            rss_anon=int(rss[i]) - 40 * MiB,
            cg_working_set=int(cg[i]) - 8 * MiB + (k % 9) * 4096,
            cg_limit=512 * MiB,
        )
        s.load(t0 + i * 1_000_000 + 1_000_000, rate=100.0 + k % 5, in_flight=4 + k % 3, completed=10, sent=10)
    at = seconds // 3 + 7
    s.event(
        t0 + at * S,
        protocol.EV_HWM_SPIKE,
        series="cg_usage",
        bytes=int(cg.max()) + 8 * MiB,
        t_from=t0 + at * S,
        t_to=t0 + at * S + 1_000_000,
        sampled_max=int(cg[at * 1000]),
    )
    s.write(path)


@pytest.fixture
def small_caps(monkeypatch):
    monkeypatch.setattr(stream, "FEED_SAMPLES", 5000)
    monkeypatch.setattr(stream, "ENVELOPE_BUCKETS", 256)
    monkeypatch.setattr(stream, "DETAIL_ROWS", 64)
    monkeypatch.setattr(stream, "LOAD_ROWS", 32)
    monkeypatch.setattr(spikestream, "CORE_S", 15.0)


def _keys(x, p=""):
    """Every key path of a JSON document (list items by their first element's shape)."""
    if isinstance(x, dict):
        return {p} | {k for key, v in x.items() for k in _keys(v, f"{p}.{key}")}
    if isinstance(x, list) and x:
        return {p} | _keys(x[0], p + "[]")
    return {p}


def test_streamed_report_has_the_exact_figures_of_the_in_memory_one(tmp_path, small_caps):
    path = tmp_path / "soak.rec"
    _soak(path, 60)
    mem = json.loads(json.dumps(build_report(reader.load(path, stream=False)), default=str))
    rec = reader.load(path, stream=True)
    assert rec.main.stream is not None
    st = json.loads(json.dumps(build_report(rec), default=str))

    assert _keys(st) == _keys(mem)
    for key in (
        "headline_series",
        "peak_bytes",
        "peak_t",
        "peak_source",
        "samples",
        "scrape_view",
        "spikes_total",
        "spikes",
        "limit_bytes",
        "oom_kills",
        "events",
        "markers",
        "integrity",
    ):
        assert st[key] == mem[key], key
    assert mem["spikes_total"] >= 4 and mem["scrape_view"]["15s"]["missed_fraction"] > 0.1
    assert mem["peak_source"] == "hwm"  # the kernel's peak beat every sample
    for name, s in mem["series"].items():
        for k in ("peak_bytes", "peak_t", "mean_bytes", "p99_bytes", "min_bytes", "last_bytes", "count"):
            assert st["series"][name][k] == s[k], (name, k)
    # other scrape intervals (report --scrape): taken on the same pass
    ten = build_report(reader.load(path, stream=True, scrape_intervals=(10.0, 45.0)), intervals_s=[10.0, 45.0])
    assert ten["scrape_view"] == build_report(reader.load(path, stream=False), intervals_s=[10.0, 45.0])["scrape_view"]
    assert len(st["phases"]) == len(mem["phases"]) == 3
    for a, b in zip(st["phases"], mem["phases"]):
        for k in ("name", "t_start", "t_end", "peak_bytes", "peak_t", "mean_bytes", "series"):
            assert a[k] == b[k], (a["name"], k)


def test_what_a_stream_holds_does_not_grow_with_the_run(tmp_path, small_caps):
    held = []
    for seconds in (20, 80):
        path = tmp_path / f"soak{seconds}.rec"
        _soak(path, seconds)
        src = reader.load(path, stream=True).main
        fig = src.stream
        assert fig.stats["rss"].count == seconds * 1000
        held.append(
            {
                "envelope": max(len(s) for s in src.series.values()),
                "details": len(src.details["t"]),
                "load": len(src.load_records),
                "hellos": len(src.hellos),
                "spike buffer": max(sum(len(x) for x in acc.ts) for acc in fig.spikes.values()),
            }
        )
    short, long = held
    # four times the run, the same bounds: what is held is set by the caps, not the length
    assert long["envelope"] <= 2 * 256 + 2 and long["details"] <= 64 + 1 and long["load"] <= 32
    assert long["hellos"] == short["hellos"] == 2 * stream.HELLOS_KEPT
    assert long["spike buffer"] == 0


def test_series_figures_chunk_by_chunk_are_numpys_over_the_whole():
    from spikewatch.analysis.streamacc import SeriesAcc

    rng = np.random.default_rng(3)
    n = 200_000
    # ticks 1 ms apart, with 40 000 stalls of 3-12 ms (enough to compact the gap lengths)
    d = np.full(n, 1_000_000, dtype=np.int64)
    d[rng.choice(n, 40_000, replace=False)] = rng.integers(3_000_000, 12_000_000, 40_000)
    t = 5_000_000_000 + np.cumsum(d)
    v = 100 * MiB + np.cumsum(rng.choice([-1, 0, 0, 0, 1], n)) * 4096
    v[rng.choice(n, 50)] += 300 * MiB  # a few far-off values: not one bincount
    acc = SeriesAcc()
    cuts = np.sort(rng.choice(np.arange(1, n), 40, replace=False))
    for a, b in zip([0, *cuts], [*cuts, n]):
        acc.feed(t[a:b], v[a:b])
    i = int(np.argmax(v))
    assert (acc.peak, acc.peak_t, acc.vmin, acc.last, acc.count) == (int(v[i]), int(t[i]), int(v.min()), int(v[-1]), n)
    assert acc.total == int(v.sum())
    for q in (50, 99, 99.9):
        assert acc.percentile_f(q) == pytest.approx(float(np.percentile(v, q)), abs=1e-6)
    gaps = np.diff(t)
    assert acc.diff_max == int(gaps.max())
    assert acc.long_gaps(1_000_000) == int(np.count_nonzero(gaps > 5_000_000))
