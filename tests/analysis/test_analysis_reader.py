import numpy as np
import pytest
from spikewatch.analysis import reader
from spikewatch.analysis.synth import MiB, Synth
from spikewatch.sampler.wire import protocol
from spikewatch.sampler.wire.recording import RecordingError, RecordingWriter, frame


def test_columns_match_what_was_written(tmp_path):
    s = Synth(series=("rss", "cg_usage"), limit=512 * MiB)
    t = s.times(3)
    rss = np.arange(len(t), dtype=np.int64) * 1000 + 10 * MiB
    s.samples(t, rss=rss, cg_usage=rss + 5)
    s.detail(int(t[10]), threads=4, rss_anon=1, cg_limit=512 * MiB)
    s.detail(int(t[500]), threads=6, rss_anon=2)  # no cg_limit: NaN in that column
    s.event(int(t[100]), protocol.EV_RESTART, pid=2, old_pid=1)
    s.marker(int(t[200]), protocol.NOTE, "hello")
    s.load(int(t[300]), in_flight=3)
    s.write(tmp_path / "r.rec")
    rec = reader.load(tmp_path / "r.rec")
    src = rec.main
    assert list(rec.sources) == ["synth-1"]
    assert np.array_equal(src.series["rss"].t, t)
    assert np.array_equal(src.series["rss"].v, rss)
    assert np.array_equal(src.series["cg_usage"].v, rss + 5)
    assert src.series["rss"].t.dtype == np.int64 and src.series["rss"].v.dtype == np.int64
    assert src.details["threads"].tolist() == [4, 6]
    assert src.details["cg_limit"][0] == 512 * MiB and np.isnan(src.details["cg_limit"][1])
    assert [e["kind"] for e in src.events] == ["restart"]
    assert src.markers[0]["name"] == "hello"
    assert src.load["in_flight"].tolist() == [3]
    assert src.t0 == t[0] and src.rel(int(t[1000])) == pytest.approx(1.0)
    assert src.limit_bytes == 512 * MiB
    assert src.period_ns == 1_000_000
    assert src.seq_missed == 0


def test_seq_gaps_are_counted(tmp_path):
    s = Synth()
    t = s.times(1)
    s.samples(t, rss=np.full(len(t), MiB))
    s.write(tmp_path / "g.rec", drop_seq={10, 11, 12, 30})
    src = reader.load(tmp_path / "g.rec").main
    assert src.seq_missed == 4
    assert src.seq_gaps == [(10, 12), (30, 30)]
    assert len(src.series["rss"]) == len(t) - 4 * 20  # four batches of 20 lost


def test_series_appearing_later_and_missing_values(tmp_path):
    path = tmp_path / "ragged.rec"
    with RecordingWriter(path) as w:
        w.write("samples", protocol.samples_body(0, [100, 101], {"rss": [1, 2]}))
        w.write("samples", protocol.samples_body(1, [102, 103], {"rss": [3, 4], "cg_usage": [30, 40]}))
        w.write("samples", protocol.samples_body(2, [104, 105], {"rss": [5, None]}))
    src = reader.load(path).main
    assert src.series["rss"].t.tolist() == [100, 101, 102, 103, 104]
    assert src.series["rss"].v.tolist() == [1, 2, 3, 4, 5]
    assert src.series["cg_usage"].t.tolist() == [102, 103]
    assert src.series["cg_usage"].v.tolist() == [30, 40]


def test_several_sources_kept_apart(tmp_path):
    path = tmp_path / "multi.rec"
    a = Synth(session="A", src="A")
    ta = a.times(1)
    a.samples(ta, rss=np.full(len(ta), 10 * MiB))
    a.write(path)
    b = Synth(session="B", src="B", t0=9_000_000_000_000)
    tb = b.times(2)
    b.samples(tb, rss=np.full(len(tb), 20 * MiB))
    with open(path, "ab") as f:  # append B's records after A's
        tmp = tmp_path / "b.rec"
        b.write(tmp)
        f.write(tmp.read_bytes())
    rec = reader.load(path)
    assert set(rec.sources) == {"A", "B"}
    assert len(rec.sources["A"].series["rss"]) == 1000 and rec.sources["A"].series["rss"].v.max() == 10 * MiB
    assert len(rec.sources["B"].series["rss"]) == 2000
    assert rec.main.src == "B" and rec.source("A").src == "A"
    assert rec.sources["B"].t0 == 9_000_000_000_000
    with pytest.raises(KeyError, match="no source"):
        rec.source("C")


def test_torn_tail_and_junk(tmp_path):
    s = Synth()
    t = s.times(1)
    s.samples(t, rss=np.full(len(t), MiB))
    s.write(tmp_path / "t.rec")
    data = (tmp_path / "t.rec").read_bytes() + frame("event", {"v": 1, "seq": 99999, "t": 1, "kind": "oom_kill"})[:-2]
    (tmp_path / "t.rec").write_bytes(data)
    assert len(reader.load(tmp_path / "t.rec").main.series["rss"]) == 1000
    (tmp_path / "junk").write_bytes(b"\xff\xff\xff\xffnot a recording at all")
    with pytest.raises(RecordingError):
        reader.load(tmp_path / "junk")
    (tmp_path / "empty").write_bytes(b"")
    with pytest.raises(RecordingError):
        reader.load(tmp_path / "empty")


def test_a_v2_recording_that_began_between_hellos_takes_its_session_from_the_first(tmp_path):
    """A recorder that joins between two hellos writes sample blocks first; the
    reader's fast path must still name the source after the hello that follows
    (it once stayed "main", and a journal and its recording no longer matched)."""
    from spikewatch.sampler.wire import blocks, protocol

    path = tmp_path / "late.rec"
    seq, t = 0, 1_000_000_000
    with blocks.BlockWriter(path) as w:
        for i in range(300):  # 6 s of samples, several blocks, a hello only after 2 s
            if i == 100:
                hello = {**protocol.header(seq, t), "session": "the-session", "period_ns": 1_000_000, "counters": {}}
                w.write(protocol.HELLO, hello)
                seq += 1
            body = protocol.samples_body(seq, [t + k * 1_000_000 for k in range(20)], {"rss": [4096 * (i % 7)] * 20})
            w.write(protocol.SAMPLES, dict(body))
            seq += 1
            t += 20_000_000
    rec = reader.load(path)
    assert list(rec.sources) == ["the-session"]
    assert len(rec.main.series["rss"].t) == 300 * 20
