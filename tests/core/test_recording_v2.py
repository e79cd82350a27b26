"""Recording format version 2: round trips, crashes, damage, and version 1 beside it."""

import os
import signal
import subprocess
import sys
import textwrap

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from spikewatch.sampler.wire import blocks, protocol
from spikewatch.sampler.wire.recording import (
    RecordingError,
    RecordingWriter,
    Salvage,
    file_format,
    iter_records,
    open_writer,
)

INT64 = st.integers(min_value=-(1 << 63), max_value=(1 << 63) - 1)
SCALAR = st.one_of(st.none(), st.booleans(), INT64, st.floats(allow_nan=False), st.text(max_size=8))
VALUE = st.recursive(
    SCALAR,
    lambda c: st.one_of(st.lists(c, max_size=3), st.dictionaries(st.text(max_size=4), c, max_size=3)),
    max_leaves=6,
)


@st.composite
def batches(draw):
    n = draw(st.integers(1, 30))
    t = draw(st.integers(0, 1 << 50))
    dt = draw(st.lists(st.integers(-(1 << 20), 1 << 40), min_size=n, max_size=n))
    names = draw(st.lists(st.sampled_from(["rss", "cg_usage", "pss"]), min_size=0, max_size=3, unique=True))
    series = {k: draw(st.lists(st.one_of(st.integers(0, 1 << 40), INT64), min_size=n, max_size=n)) for k in names}
    return {"v": 1, "seq": draw(st.integers(0, 1 << 40)), "t": t, "dt": dt, "series": series}


RECORD = st.one_of(
    st.tuples(st.just("samples"), batches()),
    st.tuples(st.just("samples"), st.dictionaries(st.sampled_from(["t", "dt", "series", "seq"]), VALUE, max_size=4)),
    st.tuples(
        st.sampled_from(["detail", "event", "marker", "load", "hello", "other"]),
        st.dictionaries(st.sampled_from(["t", "seq", "kind", "name", "rss_anon", "x"]), VALUE, max_size=6),
    ),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(RECORD, max_size=40))
def test_block_roundtrip_lossless(records):
    payload = blocks.encode_block(records, quantum_ns=1)
    assert blocks.decode_block(payload) == [(t, b) for t, b in records]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(batches(), min_size=1, max_size=10), st.sampled_from([10, 1000, 4096]))
def test_block_roundtrip_quantised_times(bs, q):
    out = blocks.decode_block(blocks.encode_block([("samples", b) for b in bs], quantum_ns=q))
    for b, (topic, d) in zip(bs, out):
        assert topic == "samples" and d["series"] == b["series"] and d["seq"] == b["seq"]
        for x, y in zip(protocol.sample_times(b), protocol.sample_times(d)):
            assert abs(x - y) <= q // 2
        # t and t + dt[0] are each rounded to the quantum (within q/2 apiece), so a
        # first offset under one quantum may come back as 0, or a 0 as one quantum.
        assert (d["dt"][0] == 0) == (b["dt"][0] == 0) or q > 1 and abs(b["dt"][0]) <= q


@given(st.lists(INT64, max_size=200))
def test_pack_ints(xs):
    assert blocks.unpack_ints(blocks.pack_ints(xs)) == xs


def _run(n_batches, t0=5_000_000_000, period=1_000_000, seq0=0):
    """A realistic stream: 20-sample batches, RSS moving by pages, a detail per 100 ms."""
    out = []
    seq = seq0
    for i in range(n_batches):
        times = [t0 + (i * 20 + j) * period + (j * 7919 + i) % 60_000 for j in range(20)]
        rss = [(100 << 20) + 4096 * ((i * 20 + j) // 37) for j in range(20)]
        out.append(("samples", protocol.samples_body(seq, times, {"rss": rss})))
        seq += 1
        if i % 5 == 0:
            out.append(("detail", {"v": 1, "seq": seq, "t": times[0], "threads": 8, "rss_anon": rss[0] // 2}))
            seq += 1
    return out


def _write(path, records, **kw):
    with blocks.BlockWriter(path, **kw) as w:
        for topic, body in records:
            w.write(topic, body)


def test_file_roundtrip_index_and_size(tmp_path):
    p = tmp_path / "a.rec"
    recs = _run(1000)  # 20 s
    _write(p, recs)
    assert file_format(p) == 2
    s = Salvage()
    out = list(iter_records(p, salvage=s))
    assert [t for t, _ in out] == [t for t, _ in recs]
    assert [b["series"] for t, b in out if t == "samples"] == [b["series"] for t, b in recs if t == "samples"]
    assert s.closed and not s.skipped and s.torn_tail_bytes == 0
    idx = blocks.read_index(p)
    assert idx["complete"] and 19 <= len(idx["blocks"]) <= 21
    assert sum(b[3] for b in idx["blocks"]) == 20_000
    assert os.path.getsize(p) / 20_000 < 2.0  # bytes a sample, everything included


def test_truncated_tail_is_said(tmp_path):
    p = tmp_path / "t.rec"
    _write(p, _run(500))
    data = p.read_bytes()
    idx = blocks.read_index(p)
    cut = idx["blocks"][-1][0] + 100  # inside the last data block
    p.write_bytes(data[:cut])
    s = Salvage()
    out = list(iter_records(p, salvage=s))
    assert s.torn_tail_bytes == 100 and not s.closed and not s.skipped
    n = sum(len(b["dt"]) for t, b in out if t == "samples")
    assert 10_000 - 1000 <= n < 10_000  # at most the last block (~1 s) lost


@pytest.mark.parametrize("fmt", [1, 2])
def test_garbage_mid_file_both_sides_read(tmp_path, fmt):
    p = tmp_path / "g.rec"
    recs = _run(500)
    if fmt == 1:
        with RecordingWriter(p) as w:
            for topic, body in recs:
                w.write(topic, body)
    else:
        _write(p, recs)
    data = p.read_bytes()
    mid = len(data) // 2
    p.write_bytes(data[:mid] + os.urandom(1024) + data[mid + 10 :])
    s = Salvage()
    out = list(iter_records(p, salvage=s))
    assert s.format == fmt and len(s.skipped) == 1
    gap = s.skipped[0]
    assert gap["from_byte"] <= mid and gap["to_byte"] >= mid + 1024
    assert gap["t_before"] < gap["t_after"]
    samples = [b for t, b in out if t == "samples"]
    first, last = samples[0]["t"], samples[-1]["t"]
    assert abs(first - recs[0][1]["t"]) <= 1000
    assert abs(last - recs[-2][1]["t"]) <= 1000 or abs(last - recs[-1][1]["t"]) <= 1000  # the far side is read
    lost = 10_000 - sum(len(b["dt"]) for b in samples)
    assert 0 < lost <= (2000 if fmt == 2 else 60)  # v2: at most the blocks the damage touched


def test_sigkilled_writer_loses_at_most_the_open_block(tmp_path):
    path = tmp_path / "crash.rec"
    code = textwrap.dedent(f"""
        import time
        from spikewatch.sampler.wire import protocol
        from spikewatch.sampler.wire.recording import open_writer
        w = open_writer({str(path)!r})
        t = 5_000_000_000
        i = 0
        while True:
            w.write("samples", protocol.samples_body(i, [t + j * 1_000_000 for j in range(20)], {{"rss": [i] * 20}}))
            t += 20_000_000
            i += 1
            w.flush()
            if i == 260:
                print("ready", i, flush=True)
                time.sleep(30)
    """)
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().split()[0] == "ready"
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    s = Salvage()
    out = list(iter_records(path, salvage=s))
    assert not s.closed
    n = sum(len(b["dt"]) for _, b in out)
    assert 5200 - 1000 <= n <= 5200  # 260 batches written, the open block (< 1 s of samples) lost
    assert [b["seq"] for _, b in out] == list(range(len(out)))


def test_open_writer_keeps_a_v1_file_v1(tmp_path):
    p = tmp_path / "old.rec"
    with RecordingWriter(p) as w:
        w.write("event", {"v": 1, "seq": 0, "t": 1, "kind": "x"})
    with open_writer(p) as w:
        w.write("event", {"v": 1, "seq": 1, "t": 2, "kind": "y"})
    assert file_format(p) == 1
    assert [b["kind"] for _, b in iter_records(p)] == ["x", "y"]
    q = tmp_path / "new.rec"
    with open_writer(q) as w:
        w.write("event", {"v": 1, "seq": 0, "t": 1, "kind": "x"})
    with open_writer(q) as w:  # appending a second session to a v2 file
        w.write("event", {"v": 1, "seq": 1, "t": 2, "kind": "y"})
    s = Salvage()
    assert [b["kind"] for _, b in iter_records(q, salvage=s)] == ["x", "y"]
    assert s.closed and not s.skipped


def test_v2_damaged_header_is_one_clear_error(tmp_path):
    p = tmp_path / "h.rec"
    _write(p, _run(10))
    data = bytearray(p.read_bytes())
    data[14] ^= 0xFF
    p.write_bytes(bytes(data))
    with pytest.raises(RecordingError, match="damaged recording header"):
        list(iter_records(p))


def test_v2_full_disk_counts_records():
    w = blocks.BlockWriter("/dev/full", max_pending=200_000)
    for topic, body in _run(100):
        w.write(topic, body)
    w.seal()
    with pytest.raises(OSError):
        w.flush()
    assert w.records_written == 0 and w.pending_records == 120


def _hellos(n, t0=5_000_000_000):
    return [
        (
            "hello",
            {
                "v": 1,
                "seq": i,
                "t": t0 + i * 1_000_000_000,
                "session": "s1",
                "host": "h",
                "period_ns": 1_000_000,
                "targets": [{"kind": "pid", "spec": "1", "pids": [1]}],
                "final": i == n - 1,
                "counters": {"samples": i * 1000, "overruns": 0},
            },
        )
        for i in range(n)
    ]


def test_hellos_between_keyframes_round_trip_and_degrade(tmp_path):
    p = tmp_path / "h.rec"
    recs = []
    n = blocks.KEYFRAME_BLOCKS + 5  # one keyframe after the first
    for (topic, hello), k in zip(_hellos(n), range(n)):
        recs.append((topic, hello))
        recs.extend(_run(50, t0=5_000_000_000 + k * 1_000_000_000, seq0=1000 * (k + 1)))
    _write(p, recs)
    out = [b for t, b in iter_records(p) if t == "hello"]
    assert out == [b for _, b in _hellos(n)]
    size_whole = len(blocks.encode_block(_hellos(2)[1:]))
    assert size_whole > 100
    # damage the first block: the hellos that refer to its full hello come back partial, with their counters
    data = bytearray(p.read_bytes())
    first = blocks.read_index(p)["blocks"][0][0]
    data[first + 60] ^= 0xFF
    p.write_bytes(bytes(data))
    out = [b for t, b in iter_records(p) if t == "hello"]
    assert out[0].get("partial") and out[0]["counters"]["samples"] == out[0]["seq"] * 1000 and "host" not in out[0]
    assert out[-1] == _hellos(n)[-1][1]  # a later keyframe restores whole hellos


def test_undecodable_block_is_skipped_and_said(tmp_path):
    p = tmp_path / "u.rec"
    _write(p, _run(200))
    good = blocks.frame(blocks.KIND_DATA, blocks.Compressor().compress(b"\x93\x01\x02\x03"), 1, 2, 0, 1)
    with open(p, "ab") as f:
        f.write(good)
    s = Salvage()
    out = list(iter_records(p, salvage=s))
    assert len(out) == 240 and s.skipped and s.skipped[-1].get("undecodable")


def test_zstandard_blocks_read_like_deflate(tmp_path):
    pytest.importorskip("zstandard")
    a, b = tmp_path / "d.rec", tmp_path / "z.rec"
    recs = _run(300)
    _write(a, recs)
    _write(b, recs, codec=blocks.CODEC_ZSTD)
    assert list(iter_records(a)) == list(iter_records(b))
    assert abs(os.path.getsize(a) - os.path.getsize(b)) < 0.1 * os.path.getsize(a)
