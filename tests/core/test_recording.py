import os
import signal
import subprocess
import sys
import textwrap

import pytest
from spikewatch.sampler.wire import protocol
from spikewatch.sampler.wire.recording import RecordingError, RecordingWriter, frame, iter_records


def test_roundtrip_and_torn_tail(tmp_path):
    path = tmp_path / "r.rec"
    with RecordingWriter(path) as w:
        for i in range(1000):
            w.write("samples", protocol.samples_body(i, [i * 10, i * 10 + 1], {"rss": [i, i + 1]}))
    whole = path.read_bytes()
    extra = frame("event", {"kind": "oom_kill"})
    path.write_bytes(whole + extra[:-3])  # a crash mid-record
    recs = list(iter_records(path))
    assert len(recs) == 1000
    assert recs[-1] == ("samples", {"v": 1, "seq": 999, "t": 9990, "dt": [0, 1], "series": {"rss": [999, 1000]}})


def test_not_a_recording(tmp_path):
    p = tmp_path / "junk"
    p.write_bytes(b"\xff\xff\xff\xffhello world")
    with pytest.raises(RecordingError, match="not a recording"):
        list(iter_records(p))


def test_readable_after_writer_is_sigkilled(tmp_path):
    path = tmp_path / "crash.rec"
    code = textwrap.dedent(f"""
        import os, sys
        from spikewatch.sampler.wire.recording import RecordingWriter
        w = RecordingWriter({str(path)!r})
        i = 0
        while True:
            w.write("note", {{"i": i, "pad": "x" * 1000}})
            if i % 7 == 0:
                w.flush()
            if i == 500:
                w.flush()  # at least 501 whole records are on disk before "ready"
                print("ready", flush=True)
            i += 1
    """)
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "ready"
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    recs = list(iter_records(path))
    assert len(recs) >= 500
    assert [b["i"] for _, b in recs] == list(range(len(recs)))


def test_writer_counts_records_a_full_disk_refused():
    w = RecordingWriter("/dev/full", max_pending=3000)
    for i in range(10):
        w.write("note", {"i": i, "pad": "x" * 200})
    with pytest.raises(OSError):
        w.flush()
    assert w.pending_records == 10 and w.records_written == 0
    for i in range(10):
        w.write("note", {"i": i, "pad": "x" * 200})  # the buffer holds ~13 of these
    assert w.pending_records + w.records_dropped == 20 and w.records_dropped > 0


def test_writer_counts_whole_records_written(tmp_path):
    with RecordingWriter(tmp_path / "ok.rec") as w:
        for i in range(5):
            w.write("note", {"i": i})
        w.flush()
        assert (w.records_written, w.pending_records) == (5, 0)
