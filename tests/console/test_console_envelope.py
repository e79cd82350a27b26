"""The chart's data path: min/max buckets, ring buffers, filled block columns."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from spikewatch.analysis.console.chart import (
    BAND,
    EIGHTHS,
    EMPTY,
    FILL,
    LIMIT_GLYPH,
    envelope_matrix,
    make_frame,
    render_lines,
)
from spikewatch.analysis.console.envelope import minmax_envelope
from spikewatch.analysis.console.state import Ring

MS = 1_000_000
MiB = 1 << 20


def test_a_2ms_spike_keeps_its_full_height_in_a_5_minute_window() -> None:
    t = np.arange(0, 300_000 * MS, MS, dtype=np.int64)  # 5 min at 1 kHz
    v = np.full(len(t), 100 * MiB, dtype=np.int64)
    v[123_456:123_458] = 180 * MiB  # 2 samples = 2 ms
    mins, maxs = minmax_envelope(t, v, 0, 300_000 * MS, 160)
    col = 123_456 * 160 // 300_000
    assert maxs[col] == 180 * MiB
    assert np.count_nonzero(maxs == 180 * MiB) == 1  # in one column, not smeared
    assert np.all(mins == 100 * MiB)
    # A mean per column (what averaging charts draw) would show under 0.3 % of it.
    assert v.reshape(160, -1).mean(axis=1).max() < 101 * MiB


def test_empty_buckets_are_nan_and_the_newest_sample_is_in_the_last_column() -> None:
    t = np.array([0, 5, 100], dtype=np.int64)
    v = np.array([5, 7, 9])
    mins, maxs = minmax_envelope(t, v, 0, 100, 10)
    assert maxs[0] == 7 and mins[0] == 5
    assert np.isnan(maxs[1:9]).all()
    assert maxs[9] == 9  # t == t_end is drawn
    assert np.isnan(minmax_envelope(t, v, 200, 300, 4)[1]).all()


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 10_000), min_size=1, max_size=300), st.integers(1, 50))
def test_envelope_matches_brute_force(values: list[int], buckets: int) -> None:
    t = np.arange(len(values), dtype=np.int64) * 7
    v = np.array(values)
    t_end = max(1, int(t[-1]))
    mins, maxs = minmax_envelope(t, v, 0, t_end, buckets)
    for b in range(buckets):
        sel = [x for tt, x in zip(t, v) if min(buckets - 1, tt * buckets // t_end) == b]
        if sel:
            assert (mins[b], maxs[b]) == (min(sel), max(sel))
        else:
            assert np.isnan(maxs[b])


def test_ring_keeps_the_newest_and_windows_across_the_wrap() -> None:
    ring = Ring(16)
    for start in range(0, 40, 5):
        ts = np.arange(start, start + 5, dtype=np.int64)
        ring.extend(ts, ts * 10)
    assert len(ring) == 16 and ring.last() == (39, 390)
    t, v = ring.window(20, 30)
    assert t.tolist() == list(range(24, 31))  # 24..39 kept; older ones overwritten
    assert (v == t * 10).all()
    big = np.arange(100, 200, dtype=np.int64)
    ring.extend(big, big)
    assert ring.window(0, 1000)[0].tolist() == list(range(184, 200))


def test_the_spike_column_is_filled_up_to_the_spike_level() -> None:
    t = np.arange(0, 10_000 * MS, MS, dtype=np.int64)
    v = np.full(len(t), 100 * MiB)
    v[4000:4002] = 180 * MiB
    frame = make_frame(t, v, "rss", 0, 10_000 * MS, columns=50, rows=8, limit=256 * MiB)
    cells = envelope_matrix(frame)[::-1]  # [eighth from the bottom, column]
    col = int(np.nanargmax(frame.maxs))
    assert frame.maxs[col] == 180 * MiB
    top, base = frame.level(180 * MiB), frame.level(100 * MiB)
    # A solid column: dark fill below the baseline, the band from it to the spike, nothing above.
    assert (cells[: base - 1, col] == FILL).all()
    assert (cells[base - 1 : top, col] == BAND).all() and (cells[top:, col] == EMPTY).all()
    # Every other column is filled to the baseline and no higher.
    others = np.delete(cells, col, axis=1)
    assert (others[:base] != EMPTY).all() and (others[base:] == EMPTY).all()
    lines = render_lines(frame)
    assert len(lines) == 8 and all(len(line.plain) == 50 for line in lines)
    # In characters: no blank cell from the bottom row up to the spike's top cell, then blanks.
    column = "".join(line.plain[col] for line in lines)[::-1]
    full = top // EIGHTHS
    assert " " not in column[:full] and column[full:].replace(LIMIT_GLYPH, " ").strip() in (
        "",
        "▁▂▃▄▅▆▇"[top % EIGHTHS - 1],
    )


def test_a_thin_band_is_never_an_empty_column() -> None:
    t = np.arange(0, 1000 * MS, MS, dtype=np.int64)
    v = np.full(len(t), 100 * MiB)
    frame = make_frame(t, v, "rss", 0, 1000 * MS, columns=40, rows=6, limit=None)
    cells = envelope_matrix(frame)
    assert ((cells == BAND).sum(axis=0) >= 1).all()


@pytest.mark.parametrize("limit", [None, 150 * MiB, 10_000 * MiB])
def test_frame_y_range_covers_data_and_a_near_limit(limit: int | None) -> None:
    t = np.arange(0, 100, dtype=np.int64)
    v = np.linspace(100 * MiB, 120 * MiB, 100)
    frame = make_frame(t, v, "rss", 0, 99, 20, 4, limit)
    assert frame.lo <= 100 * MiB and frame.hi >= 120 * MiB
    if limit == 150 * MiB:
        assert frame.hi >= limit
    if limit == 10_000 * MiB:
        assert frame.hi < limit  # a far-away limit does not flatten the data


def test_cached_envelope_equals_a_fresh_one_while_the_window_slides() -> None:
    from spikewatch.analysis.console.envelope import EnvelopeCache

    rng = np.random.default_rng(7)
    ring = Ring(50_000)
    cache = EnvelopeCache()
    width, buckets, t = 37 * MS, 64, 0
    for _ in range(60):
        n = int(rng.integers(1, 80))
        ts = t + np.cumsum(rng.integers(1, 3 * MS, n))
        ring.extend(ts, rng.integers(0, 1 << 30, n))
        t = int(ts[-1])
        k_last = t // width
        k_first = k_last - buckets + 1
        mins, maxs = cache.envelope(ring.window, ("rss", width), width, k_first, k_last, t)
        all_t, all_v = ring.window(k_first * width, (k_last + 1) * width - 1)
        want = minmax_envelope(all_t, all_v, k_first * width, (k_last + 1) * width, buckets)
        np.testing.assert_array_equal(mins, want[0])
        np.testing.assert_array_equal(maxs, want[1])


def test_overrun_events_are_coalesced_so_they_cannot_bury_markers() -> None:
    from spikewatch.analysis.console.state import SourceState
    from spikewatch.sampler.wire import protocol

    src = SourceState(key="k", endpoint="e", capacity=16)
    for i in range(50):  # 50 overruns over 10 s
        src.ingest(
            protocol.EVENT, {"v": 1, "seq": i, "t": i * 200 * MS, "kind": "overrun", "missed": 2, "late_ns": 3 * MS}, 0
        )
    listed = [e for e in src.events if e.kind == "overrun"]
    assert len(listed) == 2  # at 0 s and 5 s
    assert "+24 more overruns, 50 ticks in all" in listed[1].text


def test_samples_of_a_restarted_sampler_stay_out_of_the_old_session() -> None:
    from spikewatch.analysis.console.state import StreamState

    state = StreamState(max_window_s=1)
    hello = {"v": 1, "t": 0, "wall_ns": 0}
    state.ingest("ep", "hello", hello | {"seq": 5000, "session": "old"}, 0)

    def batch(seq: int, value: int) -> dict:
        return {"v": 1, "seq": seq, "t": seq * MS, "dt": [0], "series": {"rss": [value]}}

    state.ingest("ep", "samples", batch(5001, 111), 0)
    state.ingest("ep", "samples", batch(2, 222), 0)  # the new sampler, before its hello
    state.ingest("ep", "hello", hello | {"seq": 3, "session": "new"}, 0)
    old, new = state.sources.values()
    assert old.session == "old" and old.ended and old.peaks["rss"] == 111
    assert new.session == "new" and new.peaks["rss"] == 222 and len(state.sources) == 2


def test_hold_gaps_fills_only_short_gaps_after_data() -> None:
    from spikewatch.analysis.console.chart import hold_gaps

    nan = np.nan
    mins = np.array([nan, 1.0, nan, nan, 5.0, nan, nan, nan, nan])
    maxs = np.array([nan, 2.0, nan, nan, 6.0, nan, nan, nan, nan])
    lo, hi = hold_gaps(mins, maxs, 2)
    assert np.isnan(hi[0])  # nothing before the first value
    assert hi[2:4].tolist() == [2.0, 2.0] and lo[2:4].tolist() == [2.0, 2.0]
    assert hi[4] == 6.0 and lo[4] == 5.0  # real buckets untouched
    assert hi[5:7].tolist() == [6.0, 6.0] and np.isnan(hi[7:]).all()  # at most 2 held
