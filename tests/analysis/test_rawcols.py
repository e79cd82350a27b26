"""Details and load telemetry decoded a column at a time over many blocks (``RawCols``) give
the very table the value-by-value path (``Cols``) gives, for every column kind a block holds."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from spikewatch.analysis.packed import ints_many, segmented_cumsum, segmented_packs
from spikewatch.analysis.rawcols import Cols, RawCols
from spikewatch.sampler.wire import blocks

NEEDED = frozenset(("t", "rss_anon", "cg_usage"))


def _feed(groups: list[tuple[list[dict], frozenset | None]], ext: int = 1) -> tuple[dict, dict]:
    fast, slow = RawCols(), Cols()
    for bodies, only in groups:
        g = blocks.encode_group(bodies, ext=ext)
        assert len(g[1]) == 1  # one shape, as the streamed reader takes them
        keys, cols, n = g[0], g[3], len(bodies)
        fast.add(keys, cols, n, only)
        vals = blocks.group_columns(g)
        ks = [k for k in keys if only is None or k in only]
        slow.add(ks, [v for k, v in zip(keys, vals) if only is None or k in only], n)
    return fast.table(), slow.table()


def _same(a: dict, b: dict) -> None:
    assert list(a) == list(b)
    for k in a:
        assert a[k].dtype == b[k].dtype, k
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def _detail(i: int, t: int, rng: np.random.Generator, wide: bool) -> dict:
    page = 4096
    rss = 200 * 2**20 + int(rng.integers(0, 40)) * page * (1000 if wide else 1)
    return {
        "v": 1,
        "t": t,
        "pids": [4243],  # nested: not a column
        "rss_anon": rss,
        "cg_usage": rss + 30 * 2**20 + int(rng.integers(-3, 3)) * page,  # relative to rss_anon when wide
        "psi_some_avg10": round(float(rng.random()) * 3, 2),  # short decimals
        "lat": float(rng.random()),  # XORed floats
        "psi_scope": "system",  # text
        "oom": bool(i % 7 == 0),  # booleans are not a column either
        "maybe": None if i % 3 else int(rng.integers(0, 9)),
        "errors": {} if i % 4 else {"timeout": 1},  # maps: a nested group
        "seq": 1000 + i,
    }


def test_every_kind_matches_the_value_by_value_table() -> None:
    rng = np.random.default_rng(7)
    groups = []
    t, i = 10**12, 0
    for blk in range(40):
        bodies = []
        for _ in range(int(rng.integers(1, 12))):
            t += int(rng.integers(90, 110)) * 10**6
            bodies.append(_detail(i, t, rng, wide=blk % 3 == 0))
            i += 1
        groups.append((bodies, None if blk % 5 == 0 else NEEDED))  # a kept row now and then
    fast, slow = _feed(groups)
    _same(fast, slow)
    assert "pids" not in fast and "psi_scope" not in fast and "oom" not in fast
    assert not np.isnan(fast["cg_usage"]).any()


def test_a_few_whole_blocks_and_times_out_of_order() -> None:
    rng = np.random.default_rng(3)
    groups = []
    for blk in range(64):
        base = 10**12 + blk * 10**9
        ts = [base + k * 10**8 for k in range(10)]
        if blk == 20:
            ts[3], ts[4] = ts[4], ts[3]  # a detail written late
        groups.append(([_detail(blk * 10 + k, x, rng, False) for k, x in enumerate(ts)], None if blk == 9 else NEEDED))
    fast, slow = _feed(groups)
    _same(fast, slow)
    assert np.all(np.diff(fast["t"]) >= 0)
    assert np.isfinite(fast["lat"]).sum() == 10  # the one whole block's rows


_value = st.one_of(
    st.integers(-(2**62), 2**62),
    st.integers(-5, 5),
    st.floats(allow_nan=False, allow_infinity=False, width=64),
    st.sampled_from([None, "x", True, 0.25, 1.5]),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.lists(_value, min_size=1, max_size=6), st.booleans()), min_size=1, max_size=12))
def test_any_values_match(blocks_vals: list[tuple[list, bool]]) -> None:
    groups = []
    t = 10**12
    for vals, whole in blocks_vals:
        bodies = []
        for j, x in enumerate(vals):
            t += 1000
            bodies.append({"t": t, "a": x, "b": j * 4096 + (x if type(x) is int else 0), "c": x})
        groups.append((bodies, None if whole else frozenset(("t", "b"))))
    fast, slow = _feed(groups)
    _same(fast, slow)


def test_version_4_derived_and_twin_columns_match() -> None:
    rng = np.random.default_rng(11)
    groups = []
    t = 10**12
    for blk in range(30):
        bodies = []
        for _ in range(int(rng.integers(2, 11))):
            t += 10**8 + int(rng.integers(-(10**6), 10**6))
            iv, done, use = (
                10**8 + int(rng.integers(-(10**6), 10**6)),
                int(rng.integers(0, 9)),
                int(rng.integers(1, 99)),
            )
            bodies.append(
                {
                    "t": t,
                    "interval_ns": iv,
                    "completed": done,
                    "rate": done * 1e9 / iv if blk % 7 else float(done),  # derived but in every 7th block
                    "cg_usage": use << 20,
                    "cg_peak": (use << 20) + (4096 if blk % 5 == 0 else 0),  # a twin of cg_usage
                }
            )
        groups.append((bodies, None))
    kinds = {c[0] for bodies, _ in groups for c in blocks.encode_group(bodies, ext=2)[3]}
    assert {5, 7} <= kinds
    fast, slow = _feed(groups, ext=2)
    _same(fast, slow)


_small = st.integers(-100, 100)
_delta = st.one_of(_small, _small, _small, _small, st.integers(-(1 << 40), 1 << 40), st.integers(-(1 << 62), 1 << 62))


@settings(max_examples=80, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(-(1 << 62), 1 << 62), st.lists(_delta, max_size=40), st.sampled_from([1, 1, 3, 4096])),
        min_size=1,
        max_size=10,
    )
)
def test_segmented_packs_is_the_running_sum_of_the_unpacked_deltas(parts: list[tuple[int, list[int], int]]) -> None:
    # blocks packed at any width, some with escaped values wider than it, each with its step
    firsts = np.array([f for f, _d, _g in parts], dtype=np.int64)
    packs = [blocks.pack_ints(d) for _f, d, _g in parts]
    steps = [g for _f, _d, g in parts]
    m = np.array([len(d) + 1 for _f, d, _g in parts], dtype=np.int64)
    d = ints_many(packs) * np.repeat(np.array(steps, dtype=np.int64), m - 1)
    want = segmented_cumsum(firsts, d, m)
    got = segmented_packs(firsts, packs, m, steps)
    assert got.dtype == np.int64
    assert np.array_equal(got, want)


def test_segmented_packs_with_escapes_in_one_width() -> None:
    rng = np.random.default_rng(3)
    parts = [[int(x) for x in rng.integers(-100, 100, 30)] for _ in range(20)]
    for d in parts[::3]:
        d[5] = 1 << 40  # a spike: escaped, the rest of its block stays one byte wide
    for d in parts[1::3]:
        d[9] = -128  # the escape's own value, escaped too
    packs = [blocks.pack_ints(d) for d in parts]
    assert {pk[0] for pk in packs} == {1} and any(pk[2] for pk in packs)
    firsts = rng.integers(0, 1 << 40, len(parts))
    m = np.full(len(parts), 31, dtype=np.int64)
    want = segmented_cumsum(firsts, np.array([x for d in parts for x in d], dtype=np.int64) * 4096, m)
    assert np.array_equal(segmented_packs(firsts, packs, m, [4096] * len(parts)), want)


def test_segmented_moves_match_the_block_by_block_decode() -> None:
    from spikewatch.analysis.packed import segmented_moves
    from spikewatch.analysis.v2decode import sparse_deltas

    rng = np.random.default_rng(5)
    m = rng.integers(1, 60, 25).astype(np.int64)
    firsts = rng.integers(0, 1 << 40, len(m))
    entries = []
    for mj in m.tolist():
        at = np.sort(rng.choice(max(mj - 1, 1), size=int(rng.integers(0, max(mj - 1, 1) + 1)), replace=False))
        at = at[at < mj - 1]
        gaps = np.diff(np.r_[-1, at]).tolist()
        entries.append(
            ["rss", 0, 4096, blocks.pack_ints(rng.integers(-9, 9, len(at)).tolist()), -1, blocks.pack_ints(gaps)]
        )
    want = segmented_cumsum(
        firsts, np.concatenate([sparse_deltas(e, mj) for e, mj in zip(entries, m.tolist())]) * 4096, m
    )
    got = segmented_moves(firsts, [e[3] for e in entries], [e[5] for e in entries], m, [4096] * len(m))
    assert np.array_equal(got, want)
