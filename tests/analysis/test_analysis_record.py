"""`spikewatch record` against real ZeroMQ publishers speaking the protocol."""

import subprocess
import threading
import time

import zmq

from analysis import reader
from sampler import protocol
from tests.conftest import free_port


class Publisher(threading.Thread):
    """A stand-in sampler: a real PUB socket sending hellos and sample batches; skips ``skip`` seqs."""

    def __init__(self, endpoint, session, value, skip=(), seconds=4.0):
        super().__init__(daemon=True)
        self.endpoint, self.session, self.value, self.skip, self.seconds = endpoint, session, value, set(skip), seconds
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.PUB)
        self.sock.bind(endpoint)
        self.sent_samples = 0

    def run(self):
        seq, t = 0, 1_000_000_000
        end = time.monotonic() + self.seconds
        i = 0
        while time.monotonic() < end:
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
            time.sleep(0.005)
        self.sock.close(linger=100)
        self.ctx.term()


def test_two_samplers_gaps_and_duration(tmp_path, spikewatch_cmd):
    eps = [f"tcp://127.0.0.1:{free_port()}" for _ in range(2)]
    # skip seqs well after the subscriber has joined
    pubs = [Publisher(eps[0], "sess-A", 111, skip=range(300, 305)), Publisher(eps[1], "sess-B", 222)]
    for p in pubs:
        p.start()
    out = tmp_path / "two.rec"
    res = subprocess.run([*spikewatch_cmd, "record", *eps, "-o", str(out), "--duration", "3s"],
                         capture_output=True, text=True, timeout=60)
    for p in pubs:
        p.join()
    assert res.returncode == 0, res.stderr
    assert "missed 5 message(s) in 1 gap(s)" in res.stdout
    assert "missed 5 message(s) from sess-A" in res.stderr
    rec = reader.load(out)
    assert set(rec.sources) == {"sess-A", "sess-B"}
    assert set(rec.sources["sess-A"].series["rss"].v.tolist()) == {111}
    assert set(rec.sources["sess-B"].series["rss"].v.tolist()) == {222}
    assert rec.sources["sess-A"].seq_missed == 5 and rec.sources["sess-B"].seq_missed == 0


def test_record_usage_errors(tmp_path, spikewatch_cmd):
    res = subprocess.run([*spikewatch_cmd, "record", "localhost:1", "-o", str(tmp_path / "x")], capture_output=True, text=True)
    assert res.returncode == 2 and "not a ZeroMQ endpoint" in res.stderr
    res = subprocess.run([*spikewatch_cmd, "record", "tcp://127.0.0.1:1", "-o", str(tmp_path / "no" / "x")],
                         capture_output=True, text=True)
    assert res.returncode == 2 and "does not exist" in res.stderr
    res = subprocess.run([*spikewatch_cmd, "record", "tcp://127.0.0.1:1", "-o", str(tmp_path / "x"), "--duration", "soon"],
                         capture_output=True, text=True)
    assert res.returncode == 2 and "--duration" in res.stderr
