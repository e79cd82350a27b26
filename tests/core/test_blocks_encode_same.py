"""The block encoder made cheaper (issue 18) writes the very bytes it wrote before:
compared with a frozen copy of the old encoder (blocks_reference.py) on real journal
blocks and on generated ones, for versions 2, 3 and 4."""

import random
from itertools import accumulate
from pathlib import Path

import msgpack
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from spikewatch.sampler.wire import blocks
from spikewatch.sampler.wire.blocks import codec, columns, ints, samples

from tests.core import blocks_reference as ref
from tests.core.journal_blocks import jittered_blocks

DATA = Path(__file__).with_name("data")
# three 1 kHz journals of `spikewatch sample --limit 1G`: a 64 MiB idle target, bursts
# held 5-200 ms, bursts every few ms (three blocks each); and format3.rec (load, markers)
JOURNALS = [DATA / "journal_1khz.rec", DATA / "format3.rec"]
I64 = (-(1 << 63), (1 << 63) - 1)


def _outcome(fn, *args, **kw):
    """What fn makes, as msgpack bytes (NaN compared bit for bit), or its error's name."""
    try:
        return msgpack.packb(fn(*args, **kw), use_bin_type=True)
    except Exception as e:  # the same failure counts as the same output
        return type(e).__name__


def _both_encode(recs, q=blocks.QUANTUM_NS):
    for version in (2, 3, 4):
        new_sides, old_sides = [], []
        new = _outcome(blocks.encode_block, recs, q, version=version, sides=new_sides)
        old = _outcome(ref.encode_block, recs, q, version=version, sides=old_sides)
        assert new == old, f"version {version}, quantum {q}"
        assert new_sides == old_sides


def _real_blocks():
    rng = random.Random(18)
    for path in JOURNALS:
        yield from jittered_blocks(path, blocks, rng)


def test_real_journal_blocks_encode_the_same():
    n = 0
    for recs in _real_blocks():
        _both_encode(recs)
        _both_encode(recs, 1)
        n += 1
    assert n >= 13  # nine blocks, and format3.rec's four


def _ints():
    edges = st.sampled_from([0, -1, 127, -127, -128, 128, 32767, -32768, 1 << 31, -(1 << 31), *I64, I64[0] + 1])
    return st.one_of(st.integers(-140, 140), st.integers(-70000, 70000), st.integers(*I64), edges)


@settings(max_examples=300, deadline=None)
@example([0] * 19 + [1000])  # 5 % escaped: still a byte wide
@example([0] * 18 + [1000, -129])
@example([0] * 18 + [-128, 200])  # the escape itself among the escaped
@example([300] * 19 + [-32768])  # two bytes, -32768 escaped as itself
@example([300] * 18 + [-32768, -32768])  # too many: four bytes
@given(st.one_of(st.lists(_ints(), max_size=50), st.lists(st.integers(-300, 300), max_size=200)))
def test_pack_ints_the_same(xs):
    assert _outcome(ints.pack_ints, xs) == _outcome(ref.pack_ints, xs)


@st.composite
def sample_block(draw):
    """Sample batches as the sampler sends them and as nothing should: jittered and late
    ticks, gaps, times going back, series coming and going, pages and odd steps, values
    at the int64 edges, and now and then a batch the columns cannot hold."""
    q = draw(st.sampled_from([1, 2, 3, 1000, 2000, 2000, 7919, 1 << 40, 0, -2000]))
    period = draw(st.sampled_from([1_000_000, 1_000_000, 100_000, 1, 3]))
    t = draw(st.one_of(st.integers(0, 1 << 50), st.integers(*I64), st.sampled_from([I64[1] - 10**6, I64[0]])))
    recs = []
    level = {"rss": draw(st.integers(0, 1 << 40)), "cg_usage": draw(st.integers(0, 1 << 40)), "pss": 0}
    for seq in range(draw(st.integers(1, 6))):
        n = draw(st.integers(1, 30))
        ticks = draw(st.lists(st.sampled_from([1, 1, 1, 1, 2, 0, -1, 40]), min_size=n, max_size=n))
        late = draw(st.lists(st.one_of(st.integers(0, 60_000), st.integers(-(10**7), 10**7)), min_size=n, max_size=n))
        dt = [k * period + x for k, x in zip(accumulate(ticks), late)]
        names = draw(st.sampled_from([["rss", "cg_usage"], ["rss", "cg_usage"], ["rss"], ["cg_usage", "rss", "pss"]]))
        series = {}
        for name in names:
            steps = st.sampled_from([0, 0, 0, 0, 4096, -4096, 3 << 20, -(5 << 20), 1, None])
            col = []
            for step in draw(st.lists(steps, min_size=n, max_size=n)):
                level[name] = draw(_ints()) if step is None else level[name] + step
                col.append(level[name])
            if name == "cg_usage" and draw(st.booleans()):  # moves with rss
                col = [x + 12288 for x in series.get("rss", col)]
            series[name] = col
        body = {"v": 1, "seq": seq, "t": t, "dt": dt, "series": series}
        if draw(st.integers(0, 9)) == 0:
            body[draw(st.sampled_from(["dt", "t", "extra"]))] = draw(st.sampled_from([True, 1.5, [], None, [True]]))
        recs.append(("samples", body))
        if draw(st.booleans()):
            recs.append(("detail", {"seq": seq, "t": t + 5, "rss_anon": level["rss"] // 2, "cg_peak": level["rss"]}))
        t += draw(st.sampled_from([20_000_000, 100_000_000, 0, -5000]))
    return recs, q


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(sample_block())
def test_generated_sample_blocks_encode_the_same(block):
    recs, q = block
    _both_encode(recs, q)
    for topic, body in recs:
        assert samples.clean_batch(body) == ref.clean_batch(body) or topic != "samples"


_VALUES = st.one_of(
    _ints(),
    st.floats(),
    st.sampled_from([0.25, 1.5, 3.125, -0.0]),
    st.text(max_size=3),
    st.booleans(),
    st.none(),
    st.dictionaries(st.sampled_from(["a", "b"]), st.integers(-5, 5), max_size=2),
)


@st.composite
def detail_bodies(draw):
    """A detail's or a driver's bodies: counters, pages, twins, a wall clock beside t,
    a rate derived from completions, keys present in some bodies only."""
    n = draw(st.integers(1, 12))
    t = draw(st.integers(0, 1 << 50))
    usage = draw(st.integers(0, 1 << 40))
    out = []
    for i in range(n):
        t += draw(st.sampled_from([100_000_000, 100_000_000, 99_999_000, 7]))
        usage += draw(st.sampled_from([0, 4096, -8192, 1 << 30]))
        completed = draw(st.integers(0, 5000))
        interval = draw(st.sampled_from([100_000_000, 102_611_438, 0, -3]))
        b = {"seq": i, "t": t, "wall": t + 1_796_419_361_620_191_464, "cg_usage": usage, "cg_peak": usage}
        b["vm_hwm"] = draw(st.sampled_from([usage, usage + 4096, draw(_ints())]))
        b["completed"], b["interval_ns"] = completed, interval
        b["rate"] = completed * 1e9 / interval if interval and draw(st.integers(0, 5)) else draw(st.floats())
        for k in draw(st.lists(st.sampled_from(["pss", "lag", "phase", "errors", "x"]), max_size=3)):
            b[k] = draw(_VALUES)
        out.append(b)
    return out


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(detail_bodies())
def test_groups_encode_the_same(bodies):
    for ext in (0, 1, 2):
        assert _outcome(columns.encode_group, bodies, ext) == _outcome(ref.encode_group, bodies, ext)


class _Int(int):
    pass


# and around clean_batch's reading of marshal's bytes: ints at the edges of int32, a bool
# or an int subclass beside them, a long value where a short one would be
ODD = [[True, 1], [1, 2.0], [1 << 63, 0], [I64[0], I64[1]], [5], [], [3, 3, 3], [0, True], [_Int(3), 4]]
ODD += [[-(1 << 31), (1 << 31) - 1], [1 << 31, 0], [0, -(1 << 31) - 1], [True, 1 << 40, 7], [False] * 5 + [1 << 80]]
# and a float column the same throughout (judged as one value): zeros of either sign, NaN, wide
NAN = float("nan")
ODD += [[0.0] * 5, [0.0, -0.0, 0.0], [-0.0] * 3, [NAN] * 3, [0.1] * 4, [9.99e14] * 3, [1e300] * 3, [2.5] * 2]


@pytest.mark.parametrize("col", ODD)
def test_odd_columns_the_same(col):
    assert columns.all_int64(col) == ref.all_int64(col)
    for ext in (0, 1, 2):
        bodies = [{"k": v, "t": i} for i, v in enumerate(col)]
        assert _outcome(columns.encode_group, bodies, ext) == _outcome(ref.encode_group, bodies, ext)
    body = {"t": 0, "dt": list(range(len(col))), "series": {"rss": col}}
    assert samples.clean_batch(body) == ref.clean_batch(body)


def test_pauses_come_after_enough_work(monkeypatch):
    """The journal thread's pause (time.sleep(0), ~20 µs of CPU) only once PAUSE_NS of
    work has passed since the last: none when that is never, one a step when it is 0."""
    recs = next(_real_blocks())
    calls = []
    monkeypatch.setattr(codec, "PAUSE_NS", 1 << 62)
    blocks.encode_block(recs, pause=lambda: calls.append(1))
    assert calls == []
    monkeypatch.setattr(codec, "PAUSE_NS", 0)
    blocks.encode_block(recs, pause=lambda: calls.append(1))
    assert len(calls) >= 6  # the batches, the grid, the deviations, each series, each group
