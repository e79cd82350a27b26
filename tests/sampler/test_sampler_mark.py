"""`spikewatch mark` delivers its note even to a sampler whose inlet comes up a moment
after the command started (it waits up to its 1 s linger before exiting)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import zmq
from spikewatch.sampler.wire import protocol


def _zmq_thread(pid: int) -> bool:
    try:
        return any(c.read_text().startswith("ZMQbg/IO") for c in Path(f"/proc/{pid}/task").glob("*/comm"))
    except OSError:
        return False


def test_mark_waits_for_a_late_inlet(endpoints, spikewatch_cmd) -> None:
    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    pull.setsockopt(zmq.LINGER, 0)
    try:
        proc = subprocess.Popen(
            [*spikewatch_cmd, "mark", "late inlet", "--inlet", endpoints["inlet"]],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        # Bind once the command has its ZeroMQ I/O thread (it queues the note a moment
        # later, then waits out its linger): its PUSH is retrying to connect by then.
        deadline = time.monotonic() + 30
        while proc.poll() is None and time.monotonic() < deadline and not _zmq_thread(proc.pid):
            time.sleep(0.002)
        assert proc.poll() is None, proc.communicate()[0]
        time.sleep(0.05)  # the note is queued within a millisecond of that thread
        pull.bind(endpoints["inlet"])
        assert pull.poll(5000), "the note never arrived"
        topic, body = protocol.decode(pull.recv_multipart())
        assert topic == protocol.MARKER and body["name"] == "late inlet"
        assert proc.wait(10) == 0
    finally:
        pull.close()
        ctx.term()
