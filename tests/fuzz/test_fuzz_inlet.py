"""Fuzzing the inlet: 100 k malformed messages against a real sampler.

Outcome checked: every message sent is counted (inlet_ok + inlet_bad == sent,
inlet_ok == the valid markers we added, all of them published); the sampler
keeps its rate (samples vs ticks due, loosely: the fuzzer shares the 2 cores);
its RSS stays bounded; valid markers still get through after the flood.

The inlet caps itself at 2000 messages/s and counts the excess as bad without
decoding it: at full speed most of the flood takes that path, so the decoding
path is fuzzed separately, in-process, by hypothesis (and at a paced rate in
bench/bench_fuzz.py). Messages above libzmq's MAXMSGSIZE (4 x 64 KiB) never
reach the sampler (libzmq drops the sender's connection): one test shows the
sampler shrugs that off too.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

import msgpack
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from spikewatch.sampler.wire import protocol
from spikewatch.sampler.wire.client import InletClient, StreamSubscriber

from tests.fuzz.fuzz_corpus import corpus, rss_bytes
from tests.support.sampler import Stream, collect_until_final, spawn_sample

N = int(os.environ.get("SPIKEWATCH_FUZZ_N", "100000"))


def _send_all(sock: zmq.Socket, messages, n: int, pace_per_s: float | None = None) -> int:
    sent = 0
    t0 = time.monotonic()
    while sent < n:
        for frames in messages:
            if sent >= n:
                break
            sock.send_multipart(frames)  # blocking: nothing is lost in transit
            sent += 1
            if pace_per_s and sent % 100 == 0:
                ahead = sent / pace_per_s - (time.monotonic() - t0)
                if ahead > 0:
                    time.sleep(ahead)
    return sent


def _wait_counted(sub: StreamSubscriber, total: int, timeout: float) -> dict:
    end = time.monotonic() + timeout
    c: dict = {}
    while time.monotonic() < end:
        m = sub.recv(timeout_ms=500)
        if m and m[0] == protocol.HELLO:
            c = m[1]["counters"]
            if c["inlet_ok"] + c["inlet_bad"] >= total:
                return c
    return c


def run_fuzz(endpoints, tmp_path, n: int, pace_per_s: float | None = None) -> dict:
    """Start a sampler, flood its inlet with ``n`` malformed messages; return figures."""
    victim = subprocess.Popen(["sleep", "600"])
    journal = tmp_path / "fuzz.journal"
    p = spawn_sample(endpoints, "--journal", str(journal), "--pid", str(victim.pid))
    ctx = zmq.Context()
    sub = StreamSubscriber([endpoints["publish"]], context=ctx, topics=[protocol.HELLO])
    push = ctx.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 5000)
    push.connect(endpoints["inlet"])
    messages = corpus(4000)
    try:
        assert sub.recv(timeout_ms=15_000) is not None
        time.sleep(1.1)  # the hello seen; start the valid markers in a fresh second
        with InletClient(endpoints["inlet"], context=ctx, linger_ms=2000) as good:
            for i in range(5):
                good.note(f"before {i}")
        time.sleep(0.5)
        rss0 = rss_bytes(p.pid)
        t0 = time.monotonic()
        sent = _send_all(push, messages, n, pace_per_s)
        send_s = time.monotonic() - t0
        # The flood still queued (libzmq and socket buffers) is read after the send returns:
        # once every message is counted, a fresh second's cap lets the next ones through.
        _wait_counted(sub, sent + 5, timeout=60)
        time.sleep(1.1)
        with InletClient(endpoints["inlet"], context=ctx, linger_ms=2000) as good:
            for i in range(5):
                good.note(f"after {i}")
        counters = _wait_counted(sub, sent + 10, timeout=60)
        rss1 = rss_bytes(p.pid)
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=30)
    finally:
        p.kill()
        victim.kill()
        victim.wait()
        push.close()
        sub.close()
        ctx.term()
    s = Stream.from_journal(journal)
    final = s.topic(protocol.HELLO)[-1]
    c = final["counters"]
    span_ns = s.times[-1] - s.times[0]
    due = span_ns // 1_000_000 + 1
    return {
        "sent": sent,
        "send_s": send_s,
        "returncode": p.returncode,
        "stderr": err,
        "final": final,
        "counters": c,
        "markers": [b["name"] for b in s.topic(protocol.MARKER)],
        "rss0": rss0,
        "rss1": rss1,
        "due": due,
        "seen_counters": counters,
    }


def test_inlet_survives_100k_malformed_messages(endpoints, tmp_path):
    r = run_fuzz(endpoints, tmp_path, N)
    c = r["counters"]
    assert r["returncode"] == 0, r["stderr"]
    assert "Traceback" not in r["stderr"] and "internal error" not in r["stderr"]
    assert r["sent"] == N >= 100_000 or os.environ.get("SPIKEWATCH_FUZZ_N")
    assert c["inlet_ok"] + c["inlet_bad"] == r["sent"] + 10, "every message counted"
    assert c["inlet_bad"] == r["sent"] and c["inlet_ok"] == 10
    assert r["markers"] == [f"before {i}" for i in range(5)] + [f"after {i}" for i in range(5)]
    # Rate, loosely: the fuzzer and the sampler share two cores with other test runs.
    assert c["samples"] >= 0.8 * r["due"], (c, r["due"])
    assert c["samples"] + c["ticks_missed"] >= 0.97 * r["due"]
    # Bounded, not flat: libzmq queues up to RCVHWM (10 k) messages while the inlet thread
    # catches up, and the allocator keeps what it used. Measured +29..35 MiB whether
    # 100 k or 300 k messages are sent (bench/RESULTS.md, ## fuzz): a plateau, not a leak.
    assert r["rss1"] - r["rss0"] < 64 << 20, (r["rss0"], r["rss1"])


def test_frames_beyond_maxmsgsize_cost_the_sender_its_connection_only(endpoints):
    """A 1 MiB frame: libzmq drops that sender's connection before the sampler reads it;
    the sampler keeps sampling and a well-behaved sender still gets through."""
    victim = subprocess.Popen(["sleep", "60"])
    p = spawn_sample(endpoints, "--no-journal", "--pid", str(victim.pid), "--duration", "3s")
    ctx = zmq.Context()
    sub = StreamSubscriber([endpoints["publish"]], context=ctx)
    try:
        assert sub.recv(timeout_ms=15_000) is not None
        push = ctx.socket(zmq.PUSH)
        push.setsockopt(zmq.LINGER, 1000)
        push.connect(endpoints["inlet"])
        for _ in range(3):
            push.send_multipart([b"marker", b"\x00" * (1 << 20)])
        with InletClient(endpoints["inlet"], context=ctx, linger_ms=2000) as good:
            time.sleep(0.3)
            good.note("still here")
        msgs = collect_until_final(sub, timeout=30)
        push.close()
        p.wait(timeout=30)
    finally:
        p.kill()
        victim.kill()
        victim.wait()
        sub.close()
        ctx.term()
    assert p.returncode == 0
    assert [b["name"] for t, b in msgs if t == protocol.MARKER] == ["still here"]
    assert msgs[-1][1]["counters"]["samples"] >= 1500


# --- the decoding path, in-process ----------------------------------------

_scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(1 << 63), max_value=(1 << 64) - 1),
    st.floats(),
    st.text(max_size=50),
    st.binary(max_size=50),
)
_values = st.recursive(
    _scalar,
    lambda inner: st.one_of(
        st.lists(inner, max_size=8),
        st.dictionaries(st.one_of(st.text(max_size=10), st.integers(-1000, 1000)), inner, max_size=8),
    ),
    max_leaves=40,
)
_bodies = st.one_of(
    st.binary(max_size=400).map(lambda b: b),
    _values.map(lambda v: msgpack.packb(v, use_bin_type=True)),
    st.fixed_dictionaries(
        {"kind": _values, "name": _values}, optional={"attrs": _values, "origin_wall_ns": _values}
    ).map(lambda v: msgpack.packb(v, use_bin_type=True)),
    st.fixed_dictionaries({"interval_ns": _values}, optional={"rate": _values, "errors": _values, "zzz": _values}).map(
        lambda v: msgpack.packb(v, use_bin_type=True)
    ),
)
_frames = st.one_of(
    st.tuples(st.sampled_from([b"marker", b"load", b"", b"\xff", b"hello"]), _bodies).map(list),
    st.lists(st.binary(max_size=64), max_size=6),
)


@settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(_frames)
def test_validate_inlet_only_accepts_or_says_why(frames):
    """Whatever arrives, validation returns a clean message or raises ProtocolError."""
    try:
        topic, body = protocol.validate_inlet(frames)
    except protocol.ProtocolError:
        return
    assert topic in (protocol.MARKER, protocol.LOAD)
    protocol.pack(body)  # what is accepted can be republished as is
