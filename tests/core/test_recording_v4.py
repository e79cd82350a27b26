"""Recording format version 4 (codec 3's sections against a dictionary, derived and twin
columns, a series relative to another): exact round trips, and the older formats beside it."""

import hashlib
import json
import os
import zlib
from pathlib import Path

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from spikewatch.analysis import streamcols, v2decode
from spikewatch.sampler.wire import blocks
from spikewatch.sampler.wire.blocks import sections
from spikewatch.sampler.wire.recording import Salvage, iter_records

FORMAT3 = Path(__file__).with_name("data") / "format3.rec"  # written by the format 3 writer (main, 2026-12-04)
FORMAT3_SHA = "391e0d7a59f5a25f22c717bd5044541b91996be916330ba6f85cf81e3ad278ea"  # of its records, msgpack'd


def _same(a, b):
    """Exactly equal, float bits included (-0.0, NaN): msgpack spells them apart."""
    return msgpack.packb(a, use_bin_type=True) == msgpack.packb(b, use_bin_type=True)


@settings(max_examples=80, deadline=None)
@given(st.binary(max_size=3000), st.lists(st.tuples(st.integers(0, 3000), st.integers(0, 900)), max_size=4))
def test_sections_put_every_byte_back(data, cuts):
    sides = [data[a : a + n] for a, n in cuts] + [b"\x00" * 300]  # overlapping, repeated, absent, short
    packed = sections.compress(data, sides, 7)
    assert sections.decompress(packed, 1 << 20) == data
    assert blocks.Decompressor().decompress(blocks.CODEC_SECTIONS, packed) == data


def test_sections_refuse_damage_and_excess():
    data = bytes(range(256)) * 8
    packed = sections.compress(data, [data[100:900]], 7)
    for bad in (packed[:-3], packed + b"x", packed[:1] + b"\xff" + packed[2:]):
        try:
            out = sections.decompress(bad, 1 << 20)
        except Exception:  # any error is a refusal; what matters is no wrong bytes
            continue
        assert out != data or bad == packed
    try:
        sections.decompress(packed, 1000)
    except ValueError:
        pass
    else:
        raise AssertionError("a payload over the limit was let through")


@st.composite
def load_bodies(draw):
    """A driver's telemetry: rate = completed * 1e9 / interval (sometimes not quite), twins."""
    n = draw(st.integers(2, 12))
    out = []
    for _ in range(n):
        completed = draw(st.integers(0, 5000))
        interval = draw(st.one_of(st.integers(1, 10**10), st.integers(-5, 5)))
        usage = draw(st.integers(0, 1 << 40)) // 4096 * 4096
        rate = completed * 1e9 / interval if interval and not draw(st.integers(0, 9)) == 0 else draw(st.floats())
        out.append(
            {
                "t": draw(st.integers(0, 1 << 62)),
                "interval_ns": interval,
                "completed": completed,
                "rate": rate,
                "cg_usage": usage,
                "cg_peak": usage + draw(st.sampled_from([0, 0, 0, 4096, -(1 << 62)])),
                "lag": draw(st.integers(-(1 << 63), (1 << 63) - 1)),
            }
        )
    if draw(st.booleans()):  # two shapes: the derived and twin columns within the keys both have
        out[-1] = {k: v for k, v in out[-1].items() if k != "lag"}
    return out


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(load_bodies())
def test_derived_and_twin_columns_round_trip_exactly(bodies):
    enc = blocks.encode_group(bodies, ext=2)
    again = msgpack.unpackb(msgpack.packb(enc, use_bin_type=True), raw=False, strict_map_key=False)
    assert _same(blocks.decode_group(again), bodies)
    assert _same(blocks.decode_group(blocks.encode_group(bodies, ext=1)), bodies)  # version 3's kinds


def test_rate_is_derived_and_twins_are_relative():
    bodies = [
        {"t": 10**12 + i * 10**8, "interval_ns": 10**8 + i * 7919, "completed": i * 3, "cg_usage": (50 + i) << 20}
        for i in range(10)
    ]
    for b in bodies:
        b["rate"] = b["completed"] * 1e9 / b["interval_ns"]
        b["cg_peak"] = b["cg_usage"]
    enc = blocks.encode_group(bodies, ext=2)
    kinds = dict(zip(enc[0], (c[0] for c in enc[3])))
    assert kinds["rate"] == 7 and kinds["cg_peak"] == 5
    assert blocks.encode_group(bodies, ext=1)[3][enc[0].index("rate")][0] != 7  # never in a version 3 block
    assert _same(blocks.decode_group(enc), bodies)


def _batches(rng, n, related):
    t = 10**12
    out = []
    rss, cg = 100 << 20, 130 << 20
    for b in range(n):
        dt, rs, cs = [], [], []
        for i in range(20):
            step = int(rng.integers(-3, 4)) * 4096 if rng.random() < 0.2 else 0
            rss += step
            cg += step if related else int(rng.integers(-3, 4)) * 4096 * (rng.random() < 0.2)
            dt.append(i * 1_000_000 + int(rng.integers(0, 40_000)))
            rs.append(rss)
            cs.append(cg)
        out.append({"v": 1, "seq": b, "t": t, "dt": dt, "series": {"rss": rs, "cg_usage": cs}})
        t += 20_000_000
    return out


def test_a_series_relative_to_rss_reads_the_same_every_way():
    rng = np.random.default_rng(5)
    for related in (True, False):
        bs = _batches(rng, 50, related)
        payload = blocks.encode_block([("samples", b) for b in bs], quantum_ns=1)
        s = msgpack.unpackb(payload, raw=False, strict_map_key=False)["s"]
        assert (blocks.series_ref(s[8][1]) == 0) == related  # cg_usage stored relative to rss where that pays
        assert len(s[8][0]) == 6  # rss moves on a fifth of the ticks: stored as its moves
        assert _same([b for _, b in blocks.decode_block(payload)], bs)
        want = {k: np.concatenate([b["series"][k] for b in bs]) for k in ("rss", "cg_usage")}
        _r, _t, cols, _sizes, _u = v2decode.block_columns(payload)
        _t2, cols2, _offs, _head = streamcols.decode_samples([s, s])
        for k, v in want.items():
            np.testing.assert_array_equal(cols[k], v)
            np.testing.assert_array_equal(cols2[k], np.concatenate([v, v]))


def _records(n_blocks):
    rng = np.random.default_rng(1)
    recs = []
    for i, b in enumerate(_batches(rng, 50 * n_blocks, True)):
        recs.append(("samples", b))
        if i % 5 == 0:
            c = i % 4
            iv = 10**8 + i
            recs.append(("load", {"v": 1, "t": b["t"], "interval_ns": iv, "completed": c, "rate": c * 1e9 / iv}))
    return recs


def test_version_4_file_and_the_older_versions_beside_it(tmp_path):
    recs = _records(3)
    for version, codec in ((4, blocks.CODEC_SECTIONS), (3, blocks.CODEC_DEFLATE), (2, blocks.CODEC_DEFLATE)):
        path = tmp_path / f"v{version}.rec"
        with blocks.BlockWriter(path, version=version, quantum_ns=1) as w:
            for t, b in recs[: len(recs) // 2]:
                w.write(t, b)
        with blocks.BlockWriter(path, quantum_ns=1) as w:  # appended: the file keeps its version
            for t, b in recs[len(recs) // 2 :]:
                w.write(t, b)
        with open(path, "rb") as f:
            assert blocks.read_header(f)["format"] == version
            f.seek(0)
            frames = list(blocks.iter_frames(f))
        assert {fr.kind for fr in frames} == {blocks.KIND_DATA, blocks.KIND_INDEX}
        raw = path.read_bytes()
        assert all(raw[fr.offset + 5] == codec for fr in frames)
        assert _same(list(iter_records(path)), recs)
        idx = blocks.read_index(path)
        second = sum(len(b["dt"]) for t, b in recs[len(recs) // 2 :] if t == "samples")
        assert idx["complete"] and sum(b[3] for b in idx["blocks"]) == second  # the second writer's index


def test_a_format_3_file_written_before_reads_the_same(tmp_path):
    back = list(iter_records(FORMAT3))
    assert len(back) == 400
    assert hashlib.sha256(msgpack.packb(back, use_bin_type=True)).hexdigest() == FORMAT3_SHA
    new = tmp_path / "v4.rec"
    with blocks.BlockWriter(new) as w:
        for t, b in back:
            w.write(t, b)
    assert _same(list(iter_records(new)), back)
    assert os.path.getsize(new) < FORMAT3.stat().st_size * 0.9


def test_a_block_that_will_not_decompress_is_said_not_raised(tmp_path):
    path = tmp_path / "v4.rec"
    with blocks.BlockWriter(path, quantum_ns=1) as w:
        for t, b in _records(2):
            w.write(t, b)
    raw = bytearray(path.read_bytes())
    with open(path, "rb") as f:
        first = next(blocks.iter_frames(f))
    # a whole frame (its checksum mended) whose main section's bytes are not deflate
    body = first.offset + blocks.FRAME_BYTES
    raw[body + 13 : body + 40] = b"\xff" * 27
    n = int.from_bytes(raw[first.offset + 8 : first.offset + 12], "little")
    crc = zlib.crc32(bytes(raw[body : body + n]), zlib.crc32(bytes(raw[first.offset + 4 : body - 4])))
    raw[body - 4 : body] = crc.to_bytes(4, "little")
    path.write_bytes(bytes(raw))
    s = Salvage()
    got = list(iter_records(path, salvage=s))
    assert got and s.skipped and s.skipped[0]["undecodable"]


@pytest.mark.parametrize("streamed", [False, True])
def test_converted_to_format_4_the_report_is_the_same(tmp_path, monkeypatch, streamed):
    from click.testing import CliRunner
    from spikewatch.analysis import reader
    from spikewatch.analysis.cli import convert, report

    if streamed:  # the one-pass reader (rawcols, streamcols) whatever the size
        monkeypatch.setattr(reader, "STREAM_BYTES", 0)
    new = tmp_path / "v4.rec"
    res = CliRunner().invoke(convert, [str(FORMAT3), str(new)])
    assert res.exit_code == 0 and "(format 4)" in res.output, res.output
    out = {}
    for name, path in (("old", FORMAT3), ("new", new)):
        res = CliRunner().invoke(report, [str(path), "--json", str(tmp_path / f"{name}.json"), "-q"])
        assert res.exit_code == 0, res.output
        out[name] = json.loads((tmp_path / f"{name}.json").read_text())
        del out[name]["recording"], out[name]["integrity"]["bytes"]
    assert out["old"] == out["new"]
    assert out["new"]["samples"]["count"] > 2000 and out["new"]["phases"]


@st.composite
def related_batches(draw):
    """Batches whose second series mostly moves with the first (and at the int64 edges now and then)."""
    out = []
    t = draw(st.integers(0, 1 << 50))
    edge = st.sampled_from([-(1 << 63), (1 << 63) - 1, 0])
    for b in range(draw(st.integers(1, 6))):
        n = draw(st.integers(1, 25))
        rss = draw(st.lists(st.one_of(st.integers(0, 1 << 40), edge), min_size=n, max_size=n))
        cg = [x + draw(st.sampled_from([0, 0, 0, 4096, -(1 << 62)])) for x in rss]
        cg = [min(max(x, -(1 << 63)), (1 << 63) - 1) for x in cg]
        out.append({"v": 1, "seq": b, "t": t, "dt": list(range(0, n * 1000, 1000)), "series": {"rss": rss, "cg": cg}})
        t += n * 1000
    return out


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(related_batches())
def test_samples_round_trip_exactly_every_way(bs):
    payload = blocks.encode_block([("samples", b) for b in bs], quantum_ns=1)
    assert _same([b for _, b in blocks.decode_block(payload)], bs)
    s = msgpack.unpackb(payload, raw=False, strict_map_key=False).get("s")
    if s is None or any(abs(x) >= 1 << 62 for b in bs for v in b["series"].values() for x in v):
        return  # differences beyond int64 are stored as they are; numpy's decoders take int64 steps
    _r, _t, cols, _sizes, _u = v2decode.block_columns(payload)
    _t2, cols2, _offs, _head = streamcols.decode_samples([s])
    for k in ("rss", "cg"):
        want = [x for b in bs for x in b["series"][k]]
        assert cols[k].tolist() == want and cols2[k].tolist() == want
