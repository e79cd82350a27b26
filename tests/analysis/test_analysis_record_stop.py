"""`spikewatch record` stopped by SIGTERM writes what had already arrived: a burst that
is waiting in its socket when the signal comes is read and written before it closes."""

from __future__ import annotations

import os
import signal
import subprocess

import psutil
import zmq
from spikewatch.sampler.wire import protocol
from spikewatch.sampler.wire.recording import iter_records

from tests.conftest import free_port
from tests.support.waiting import wait_until

BURST = 1500  # more than the recorder reads in one round (1000): the old stop left the rest


def _seqs(path) -> list[int]:
    return [b["seq"] for t, b in iter_records(path) if t == protocol.SAMPLES] if path.exists() else []


def test_sigterm_writes_the_burst_already_waiting(tmp_path, spikewatch_cmd):
    ep = f"tcp://127.0.0.1:{free_port()}"
    out = tmp_path / "stop.rec"
    ctx = zmq.Context()
    pub = ctx.socket(zmq.XPUB)  # hears the recorder's subscription: no slow joiner
    pub.setsockopt(zmq.SNDHWM, 0)  # the burst waits for the stopped recorder, none dropped
    pub.bind(ep)
    p = subprocess.Popen(
        [*spikewatch_cmd, "record", ep, "-o", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert pub.poll(30_000), "the recorder never subscribed"
        pub.recv()
        assert "recording" in p.stderr.readline()  # its signal handlers are in place
        hello = {**protocol.header(0, 1_000_000_000), "session": "stop", "period_ns": 1_000_000, "counters": {}}
        pub.send_multipart(protocol.encode(protocol.HELLO, hello))

        def batch(seq: int) -> protocol.Samples:
            return protocol.samples_body(
                seq, [seq * 10_000_000 + k * 1_000_000 for k in range(10)], {"rss": [seq] * 10}
            )

        pub.send_multipart(protocol.encode(protocol.SAMPLES, batch(1)))
        # Written (flushed every 0.2 s): the recorder is in its receive loop.
        assert wait_until(lambda: _seqs(out) == [1], 20), _seqs(out)

        # Held still, the burst queues up for it; the SIGTERM is then its first news.
        os.kill(p.pid, signal.SIGSTOP)
        assert wait_until(lambda: psutil.Process(p.pid).status() == psutil.STATUS_STOPPED, 10)
        for seq in range(2, 2 + BURST):
            pub.send_multipart(protocol.encode(protocol.SAMPLES, batch(seq)))
        os.kill(p.pid, signal.SIGTERM)
        os.kill(p.pid, signal.SIGCONT)
        stdout, stderr = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        pub.close(linger=0)
        ctx.term()
    assert p.returncode == 0, stderr
    seqs = _seqs(out)
    assert seqs == list(range(1, 2 + BURST)), f"{len(seqs)} of {1 + BURST} batches written"
    assert "missed 0 message(s)" in stdout, stdout
