"""The journal thread stores the body the publisher hands it (no second unpack): the file
must hold exactly what storing the packed bytes would."""

from __future__ import annotations

from pathlib import Path

from spikewatch.sampler.wire import protocol
from spikewatch.sampler.wire.recording import iter_records
from spikewatch.sampler.wire.stream import Journal


def _messages() -> list[tuple[str, dict[str, object]]]:
    t0 = 5_000_000_000_000
    out: list[tuple[str, dict[str, object]]] = []
    seq = 0
    for b in range(12):
        times = [t0 + (b * 20 + i) * 1_000_000 + 37_000 + 1_000 * (i % 3) for i in range(20)]
        rss = [70 << 20 if (b * 20 + i) % 7 else (80 << 20) + 4096 * i for i in range(20)]
        out.append((protocol.SAMPLES, dict(protocol.samples_body(seq, times, {"rss": rss, "cg_usage": rss[::-1]}))))
        seq += 1
        if b % 5 == 4:
            t = times[-1]
            detail = {**protocol.header(seq, t), "procs": 1, "pids": [4242], "vm_hwm": 81 << 20, "cg_limit": None}
            out.append((protocol.DETAIL, detail))
            seq += 1
            fields = protocol.ProcStart(kind=protocol.EV_PROC_START, pid=4242, ppid=1, exe="/bin/x", cmdline=["x"])
            out.append((protocol.EVENT, dict(protocol.event_body(seq, t, fields))))
            seq += 1
            hello = {**protocol.header(seq, t), "session": "s1", "period_ns": 1_000_000, "counters": {"samples": b}}
            out.append((protocol.HELLO, hello))
            seq += 1
    return out


def test_journal_keeps_the_handed_body_as_the_packed_bytes_say(tmp_path: Path) -> None:
    msgs = _messages()
    for name, hand_body in (("packed", False), ("body", True)):
        j = Journal(tmp_path / f"{name}.journal")
        for topic, body in msgs:
            j.put(topic, protocol.pack(body), body if hand_body else None)
        j.close()
    from_packed = list(iter_records(tmp_path / "packed.journal"))
    from_body = list(iter_records(tmp_path / "body.journal"))
    assert len(from_packed) == len(msgs)
    assert from_body == from_packed
    assert (tmp_path / "body.journal").read_bytes()[:1] == b"\x89"  # format 2: the path under test


def _second_of_batches(seq: int, t0: int) -> list[tuple[str, dict[str, object]]]:
    """Ten batches of 100 samples at 1 kHz from ``t0``: one block's worth."""
    out: list[tuple[str, dict[str, object]]] = []
    for b in range(10):
        times = [t0 + (b * 100 + i) * 1_000_000 for i in range(100)]
        out.append((protocol.SAMPLES, dict(protocol.samples_body(seq + b, times, {"rss": [70 << 20] * 100}))))
    return out


def _size_past(path: Path, size: int) -> int:
    """The file's size once it is no longer ``size`` (or after 10 s)."""
    import time

    deadline = time.monotonic() + 10
    while path.stat().st_size == size and time.monotonic() < deadline:
        time.sleep(0.01)
    return path.stat().st_size


def test_a_whole_block_is_written_when_its_samples_are_queued_not_on_a_timer(tmp_path: Path) -> None:
    """The thread wakes for a completed block (its timer is set to a minute here): the
    block is in the file at once, and the next second's samples are not until they
    too make a block. What a crash would lose is the samples since the last block."""
    import time

    path = tmp_path / "j.journal"
    j = Journal(path, flush_s=60.0)
    t0 = 9_000_000_000_000
    try:
        _size_past(path, 0)  # the header, written as the thread starts
        first = _second_of_batches(0, t0)
        for topic, body in first[:9]:
            j.put(topic, protocol.pack(body), body)
        size0 = path.stat().st_size
        time.sleep(0.3)
        assert path.stat().st_size == size0  # nine tenths of a block: nothing written yet
        # the tenth batch ends 999 ms after the first: the first of the next second completes it
        second = _second_of_batches(10, t0 + 1_000_000_000)
        for topic, body in [first[9], second[0]]:
            j.put(topic, protocol.pack(body), body)
        assert _size_past(path, size0) > size0
    finally:
        j.close()
    recs = [b for topic, b in iter_records(path) if topic == protocol.SAMPLES]
    assert len(recs) == 11 and sum(len(b["dt"]) for b in recs) == 1100  # type: ignore[arg-type]


def test_a_deferred_wake_waits_for_the_kick(tmp_path: Path) -> None:
    """With defer_wake (the sampler's), a completed block is written only once kicked:
    after the burst that completed it, not in its midst."""
    import time

    path = tmp_path / "j.journal"
    j = Journal(path, flush_s=60.0)
    j.defer_wake = True
    t0 = 9_000_000_000_000
    try:
        _size_past(path, 0)
        batches = _second_of_batches(0, t0) + _second_of_batches(10, t0 + 1_000_000_000)[:1]
        for topic, body in batches:
            j.put(topic, protocol.pack(body), body)
        assert j.wake_due
        size0 = path.stat().st_size
        time.sleep(0.3)
        assert path.stat().st_size == size0  # a whole block, but no kick yet
        j.kick()
        assert not j.wake_due
        assert _size_past(path, size0) > size0
    finally:
        j.close()


def test_between_ticks_sleeps_only_near_a_tick() -> None:
    """The journal's pause in the sampler: past a tick when one is near, else nothing.
    (A 1 s period here, so that "near" and "not near" are far apart.)"""
    import time

    from spikewatch.sampler.ticker import between_ticks

    assert between_ticks(0, 500_000) is None  # under 1 ms: no room between ticks
    period, near = 1_000_000_000, 200_000_000
    now = time.monotonic_ns()
    mid = between_ticks(now - period // 2, period, before_ns=near, after_ns=near)
    assert mid is not None
    t = time.monotonic()
    mid()
    assert time.monotonic() - t < 0.15  # half a period from any tick: no sleep
    soon = between_ticks(time.monotonic_ns() - (period - 50_000_000), period, before_ns=near, after_ns=near)
    assert soon is not None
    t = time.monotonic()
    soon()
    assert time.monotonic() - t >= 0.2  # slept past the tick (50 ms away) and 200 ms beyond
