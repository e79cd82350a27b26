"""`spikewatch record` against real ZeroMQ publishers speaking the protocol."""

import subprocess
import threading

import zmq
from spikewatch.analysis import reader
from spikewatch.sampler.wire import protocol

from tests.conftest import free_port

# The recorder calls a hole lost once it is this many messages behind the newest (SeqGaps.settle).
SETTLE = 200


class Publisher(threading.Thread):
    """A stand-in sampler: a real PUB socket sending hellos and sample batches; skips ``skip`` seqs.

    The first ``burst`` messages go out at once, the rest every 5 ms until :meth:`stop`: so
    the skipped seqs and the ``SETTLE`` messages after them that make the recorder call them
    lost reach it within its first second however slowly a busy machine runs this thread.
    """

    def __init__(self, endpoint, session, value, skip=(), burst=0):
        super().__init__(daemon=True)
        self.endpoint, self.session, self.value, self.skip, self.burst = endpoint, session, value, set(skip), burst
        self.done = threading.Event()
        self.ctx = zmq.Context()
        # XPUB: a PUB that also hears subscriptions, so the clock (and the skipped seqs)
        # start once the recorder listens, however long its process takes to start.
        self.sock = self.ctx.socket(zmq.XPUB)
        self.sock.bind(endpoint)

    def stop(self):
        self.done.set()
        self.join()

    def run(self):
        if self.sock.poll(30_000):
            self.sock.recv()  # the recorder's subscription
        seq, t = 0, 1_000_000_000
        i = 0
        while not self.done.is_set():
            if i % 50 == 0:
                body = {**protocol.header(seq, t), "session": self.session, "period_ns": 1_000_000, "counters": {}}
                topic = protocol.HELLO
            else:
                body = protocol.samples_body(seq, [t + k * 1_000_000 for k in range(20)], {"rss": [self.value] * 20})
                topic = protocol.SAMPLES
            if seq not in self.skip:
                self.sock.send_multipart(protocol.encode(topic, body))
            seq += 1
            t += 20_000_000
            i += 1
            if i >= self.burst:
                self.done.wait(0.005)
        self.sock.close(linger=100)
        self.ctx.term()


def test_two_samplers_gaps_and_duration(tmp_path, spikewatch_cmd):
    eps = [f"tcp://127.0.0.1:{free_port()}" for _ in range(2)]
    # A hole of 5 from sess-A, then enough messages for the recorder to settle it as lost.
    skip = range(100, 105)
    pubs = [
        Publisher(eps[0], "sess-A", 111, skip=skip, burst=skip.stop + SETTLE + 10),
        Publisher(eps[1], "sess-B", 222),
    ]
    for p in pubs:
        p.start()
    out = tmp_path / "two.rec"
    try:
        res = subprocess.run(
            [*spikewatch_cmd, "record", *eps, "-o", str(out), "--duration", "2s"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        for p in pubs:
            p.stop()
    # it stopped by itself after --duration, the publishers still sending
    assert res.returncode == 0, res.stderr
    assert "missed 5 message(s) in 1 gap(s)" in res.stdout
    assert "missed 5 message(s) from sess-A" in res.stderr
    rec = reader.load(out)
    assert set(rec.sources) == {"sess-A", "sess-B"}
    assert set(rec.sources["sess-A"].series["rss"].v.tolist()) == {111}
    assert set(rec.sources["sess-B"].series["rss"].v.tolist()) == {222}
    assert rec.sources["sess-A"].seq_missed == 5 and rec.sources["sess-B"].seq_missed == 0


def test_record_usage_errors(tmp_path, spikewatch_cmd):
    res = subprocess.run(
        [*spikewatch_cmd, "record", "localhost:1", "-o", str(tmp_path / "x")], capture_output=True, text=True
    )
    assert res.returncode == 2 and "not a ZeroMQ endpoint" in res.stderr
    res = subprocess.run(
        [*spikewatch_cmd, "record", "tcp://127.0.0.1:1", "-o", str(tmp_path / "no" / "x")],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 3 and "does not exist" in res.stderr  # an I/O failure (README: exit statuses)
    res = subprocess.run(
        [*spikewatch_cmd, "record", "tcp://127.0.0.1:1", "-o", str(tmp_path / "x"), "--duration", "soon"],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 2 and "--duration" in res.stderr


def test_reader_tolerates_reordered_seq(tmp_path):
    from spikewatch.sampler.wire.recording import RecordingWriter

    path = tmp_path / "r.rec"
    with RecordingWriter(path) as w:
        for seq in [0, 1, 3, 4, 2, 5, 7]:  # like a detail numbered before the events it triggered
            w.write(protocol.SAMPLES, protocol.samples_body(seq, [seq * 10], {"rss": [seq]}))
    src = reader.load(path).main
    assert src.seq_missed == 1 and src.seq_gaps == [(6, 6)]
