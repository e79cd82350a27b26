"""Recording format version 3 (version 2's framing, compact columns for details and
load telemetry): exact round trips of each new column kind, and version 2 files beside it."""

import math

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from spikewatch.analysis import reader
from spikewatch.sampler.wire import blocks, protocol
from spikewatch.sampler.wire.recording import RecordingError, Salvage, iter_records

INT64 = st.integers(min_value=-(1 << 63), max_value=(1 << 63) - 1)
NS = st.integers(min_value=0, max_value=1 << 62)
FLOAT = st.floats(allow_nan=True, allow_infinity=True)
DECIMAL = st.builds(lambda m, k: m / 10**k, st.integers(-(10**9), 10**9), st.integers(0, 6))
FIELD = st.sampled_from(["NS", "INT64", "FLOAT", "DECIMAL", "STR", "MAP", "NONE"])


def _same(a, b):
    """Exactly equal, float bits included (-0.0, NaN): msgpack spells them apart."""
    return msgpack.packb(a, use_bin_type=True) == msgpack.packb(b, use_bin_type=True)


@st.composite
def uniform_bodies(draw):
    """Bodies that share their keys (as a sampler's details and a driver's load
    telemetry do): the case where columns are coded relative to each other."""
    n = draw(st.integers(1, 25))
    kinds = draw(st.dictionaries(st.sampled_from(["t", "a_ns", "b_ns", "rate", "m", "s", "x"]), FIELD, max_size=6))
    strategy = {
        "NS": NS,
        "INT64": INT64,
        "FLOAT": FLOAT,
        "DECIMAL": DECIMAL,
        "STR": st.sampled_from(["steady", "ramp"]),
        "MAP": st.dictionaries(st.sampled_from(["q", "i"]), st.one_of(NS, DECIMAL), max_size=2),
        "NONE": st.none(),
    }
    cols = {k: draw(st.lists(strategy[f], min_size=n, max_size=n)) for k, f in kinds.items()}
    if "t" in cols and "a_ns" in cols and kinds["t"] == "NS" and kinds["a_ns"] == "NS":
        # a wall clock beside t: relative coding's case (kept in int64)
        off = draw(st.integers(0, 1 << 60))
        cols["a_ns"] = [t + off + draw(st.integers(-999, 999)) for t in cols["t"]]
    return [{k: cols[k][i] for k in kinds} for i in range(n)]


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(uniform_bodies())
def test_group_columns_round_trip_exactly(bodies):
    enc = blocks.encode_group(bodies, ext=True)
    assert _same(blocks.decode_group(enc), bodies)
    # what a reader meets in a file: the encoding through msgpack and back
    again = msgpack.unpackb(msgpack.packb(enc, use_bin_type=True), raw=False, strict_map_key=False)
    assert _same(blocks.decode_group(again), bodies)
    keys, _shapes, ids, values = reader._group_columns(again)
    values = [v.tolist() if hasattr(v, "tolist") else v for v in values]
    assert _same([{k: v[i] for k, v in zip(keys, values)} for i in range(len(ids))], bodies)


@settings(max_examples=60, deadline=None)
@given(st.lists(FLOAT, min_size=2, max_size=50))
def test_float_column_keeps_every_bit(xs):
    enc = blocks.encode_group([{"f": x} for x in xs], ext=True)
    assert _same([b["f"] for b in blocks.decode_group(enc)], xs)


def test_each_new_kind_is_chosen_where_it_pays():
    t = [10**12 + i * 100_000_000 + (i * 7919) % 3000 for i in range(10)]
    bodies = [
        {
            "wall_ns": x + 1_700_000_000_000_000_000 + i % 3,  # a wall clock: t plus a constant
            "mean": round(2.5 + i * 0.013, 3),
            "rate": 30.0 / (1 + i * 0.0137),
            "ep": {"ingest": {"in_flight": i % 4}},
            "phase": "ramp",
            "t": x,
        }
        for i, x in enumerate(t)
    ]
    enc = blocks.encode_group(bodies, ext=True)
    kinds = dict(zip(enc[0], (c[0] for c in enc[3])))
    assert kinds == {"wall_ns": 5, "mean": 6, "rate": 4, "ep": 3, "phase": 2, "t": 1}
    assert enc[3][0][1] == enc[0].index("t")  # wall_ns relative to t
    assert blocks.decode_group(enc) == bodies
    assert blocks.encode_group(bodies)[3][0][0] in (0, 1)  # version 2's kinds when asked


def test_lateness_that_drifts_is_stored_as_deltas_and_read_back_by_both_decoders():
    # a loaded host: lateness wanders slowly (an i.i.d. host keeps plain deviations)
    late = [50_000 + 40_000 * math.sin(i / 40) for i in range(1000)]
    times = [10**12 + i * 1_000_000 + int(x) for i, x in enumerate(late)]
    recs = [("samples", protocol.samples_body(j, times[j * 20 : j * 20 + 20], {"rss": [4096] * 20})) for j in range(50)]
    payload = blocks.encode_block(recs, quantum_ns=2000)
    block = msgpack.unpackb(payload, raw=False, strict_map_key=False)
    assert block["s"][10] == 1
    got = [protocol.sample_times(b) for _, b in blocks.decode_block(payload)]
    flat = [x for ts in got for x in ts]
    assert all(abs(a - b) <= 1000 for a, b in zip(flat, times)) and len(flat) == 1000
    _records, t, _cols, _sizes, _uniform = reader.block_columns(payload)
    assert t is not None and t.tolist() == flat
    v2 = msgpack.unpackb(blocks.encode_block(recs, 2000, version=2), raw=False, strict_map_key=False)
    assert len(v2["s"]) == 10


def _body(i):
    return {"v": 1, "seq": i, "t": 10**12 + i * 10**8, "rate": i / 7, "endpoints": {"a": {"in_flight": i}}}


def _v2_file(path, bodies):
    with open(path, "wb") as f:
        f.write(blocks.file_header({"format": 2, "quantum_ns": 2000}, version=2))
        payload = blocks.encode_block([("load", b) for b in bodies], version=2)
        f.write(blocks.frame(blocks.KIND_DATA, blocks.Compressor().compress(payload), 0, 0, 0, len(bodies)))


def test_version_2_file_reads_and_an_append_stays_version_2(tmp_path):
    p = tmp_path / "old.rec"
    _v2_file(p, [_body(i) for i in range(10)])
    with blocks.BlockWriter(p) as w:  # a second session appended to the old file
        for i in range(10, 20):
            w.write("load", _body(i))
    assert w.version == 2
    s = Salvage()
    assert [b for _, b in iter_records(p, salvage=s)] == [_body(i) for i in range(20)]
    assert not s.skipped
    with open(p, "rb") as f:
        for fr in blocks.iter_frames(f):
            if fr.kind == blocks.KIND_DATA:
                block = msgpack.unpackb(fr.payload, raw=False, strict_map_key=False)
                assert all(c[0] <= 2 for _, g in block["g"] for c in g[3])
    rec = reader.load(p)
    assert len(rec.main.events_of()) == 0 and rec.main.records == 20


def test_a_newer_version_is_one_clear_error(tmp_path):
    p = tmp_path / "v9.rec"
    p.write_bytes(blocks.file_header({"format": 9}, version=9))
    with pytest.raises(RecordingError, match="version 9"):
        list(iter_records(p))


def test_an_unknown_column_kind_is_an_undecodable_block_said(tmp_path):
    p = tmp_path / "k.rec"
    with blocks.BlockWriter(p) as w:
        for i in range(5):
            w.write("load", _body(i))
    bad = {"tp": ["load"], "o": b"\x00", "g": [[0, [["x"], [[0]], blocks.pack_ints([0]), [[99, 1]]]]]}
    payload = blocks.Compressor().compress(msgpack.packb(bad, use_bin_type=True))
    with open(p, "ab") as f:
        f.write(blocks.frame(blocks.KIND_DATA, payload, 1, 2, 0, 1))
    s = Salvage()
    assert len(list(iter_records(p, salvage=s))) == 5
    assert s.skipped[-1].get("undecodable")
