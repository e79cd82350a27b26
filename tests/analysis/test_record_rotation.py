"""`spikewatch record --rotate/--keep` (the journal's rotation, one implementation) and a
rotated run — its name, its folder, a glob — read as one by report, export, compare, convert."""

import json
import subprocess
import sys
import time

import zmq
from click.testing import CliRunner
from spikewatch.analysis import reader
from spikewatch.analysis.cli import convert, export, report
from spikewatch.analysis.compare_cli import compare
from spikewatch.sampler.wire import protocol
from spikewatch.sampler.wire.recording import iter_records, segments_of
from spikewatch.sampler.wire.rotation import RotatingWriter
from spikewatch.sampler.wire.stream import Publisher

from tests.conftest import free_port

S = 1_000_000_000


def _batches(seconds: float, t0: int):
    """20-sample batches at 1 kHz with a detail every 100 ms (RSS in whole pages)."""
    seq = 0
    for i in range(int(seconds * 50)):
        times = [t0 + (i * 20 + j) * 1_000_000 + 30_000 for j in range(20)]
        yield protocol.SAMPLES, protocol.samples_body(seq, times, {"rss": [(100 << 20) + 4096 * (i % 7)] * 20})
        seq += 1
        if i % 5 == 0:
            yield protocol.DETAIL, {"v": 1, "seq": seq, "t": times[0], "threads": 4, "rss_anon": 50 << 20}
            seq += 1


def _rotated(base, seconds=4.0):
    """A run written through RotatingWriter, a new segment every second of samples."""
    with RotatingWriter(base, rotate_s=1e-9, keep_bytes=10 << 20) as w:
        for topic, body in _batches(seconds, 10 * S):
            w.write(topic, body)
            if topic == protocol.SAMPLES and body["seq"] % 51 == 50:
                w.flush()  # a block sealed a second: the writer rotates after the flush
    return segments_of(base)


def test_rotating_writer_keeps_within_its_bound(tmp_path):
    base = tmp_path / "r.rec"
    with RotatingWriter(base, rotate_bytes=1, keep_bytes=1) as w:
        for topic, body in _batches(5, 10 * S):
            w.write(topic, body)
            if topic == protocol.SAMPLES and body["seq"] % 51 == 50:
                w.flush()
    segs = segments_of(base)
    assert len(segs) == 1 and w.segments_deleted >= 3  # all but the newest deleted: over 1 byte
    assert w.bytes_written > sum(s.stat().st_size for s in segs)


def test_every_command_takes_a_rotated_run_as_one(tmp_path):
    base = tmp_path / "run" / "soak.rec"
    base.parent.mkdir()
    segs = _rotated(base)
    assert len(segs) >= 3
    whole = sum(1 for s in segs for _ in iter_records(s))
    specs = [str(base), str(base.parent), str(base) + ".*"]
    counts = set()
    for spec in specs:
        rec = reader.load(spec)
        assert rec.integrity["files"] == [str(s) for s in segs]
        counts.add(rec.main.series["rss"].t.size)
    assert counts == {4000}
    r = CliRunner()
    res = r.invoke(report, [specs[2], "--json", "-"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output[res.output.index("{") :])["samples"]["count"] == 4000
    res = r.invoke(export, [specs[1], "--format", "csv", "-o", str(tmp_path / "tables"), "-q"])
    assert res.exit_code == 0, res.output
    assert len((tmp_path / "tables" / "samples.csv").read_text().splitlines()) == 4001
    res = r.invoke(compare, [specs[0], specs[2], "-q", "--json", "-"])
    assert res.exit_code == 0, res.output
    res = r.invoke(convert, [specs[2], str(tmp_path / "one.rec")])
    assert res.exit_code == 0, res.output
    assert sum(1 for _ in iter_records(tmp_path / "one.rec")) == whole


def test_record_rotate_and_keep(tmp_path):
    ep = f"tcp://127.0.0.1:{free_port()}"
    ctx = zmq.Context()
    pub = Publisher(ctx, ep)
    base = tmp_path / "rec" / "run.rec"
    base.parent.mkdir()
    p = subprocess.Popen(
        [sys.executable, "-m", "spikewatch", "record", ep, "-o", str(base), "--rotate", "1s", "--keep", "1G"]
        + ["--duration", "3.5s", "-q"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        t0 = time.monotonic_ns()
        for topic, body in _batches(5, t0):
            if p.poll() is not None:
                break
            pub.publish(topic, body)
            if topic == protocol.SAMPLES:
                time.sleep(max(0.0, (body["t"] + body["dt"][-1] - time.monotonic_ns()) / 1e9))
        out, err = p.communicate(timeout=30)
    finally:
        pub.close()
        ctx.term()
    assert p.returncode == 0, err
    assert "in segments" in out
    segs = segments_of(base)
    assert len(segs) >= 2 and not base.exists()
    rec = reader.load(str(base))
    assert rec.main.series["rss"].t.size > 1000
    res = subprocess.run(
        [sys.executable, "-m", "spikewatch", "record", ep, "-o", str(base), "--keep", "1G"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 2 and "give --rotate too" in res.stderr
