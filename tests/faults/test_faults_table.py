"""The fault table of docs/reliability.md: one test per row that is not already
covered elsewhere (those rows cite their tests in the doc).

Every test states the outcome it checks: the sampler keeps sampling or ends
cleanly (final hello, exit status), and what was lost is stated exactly.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import zmq
from spikewatch.sampler import cgroup
from spikewatch.sampler.backfill import Backfill
from spikewatch.sampler.wire import protocol
from spikewatch.sampler.wire.client import InletClient, StreamSubscriber
from spikewatch.sampler.wire.recording import iter_records
from spikewatch.sampler.wire.seqgaps import SeqGaps

from tests.support.sampler import MiB, Stream, collect_until_final, sample_cmd, spawn_sample, write_script
from tests.support.waiting import scaled


def _wait_journal(path: Path, topic: str, timeout: float = 15, pred=lambda b: True) -> dict:
    timeout = scaled(timeout)
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if path.exists():
            for t, b in iter_records(path):
                if t == topic and pred(b):
                    return b
        time.sleep(0.1)
    raise AssertionError(f"no {topic} in {path} within {timeout} s")


def _final(s: Stream) -> dict:
    hello = s.topic(protocol.HELLO)[-1]
    assert hello["final"] is True, "ended cleanly: the last record is the final hello"
    assert s.records[-1] == (protocol.HELLO, hello)
    return hello


# --- target SIGKILLed ------------------------------------------------------


def test_target_sigkilled_launched(tmp_path, endpoints):
    """Outcome: proc_exit {signal: 9, oom: false}; the sampler ends cleanly with 128+9."""
    journal = tmp_path / "k.journal"
    p = spawn_sample(endpoints, "--journal", str(journal), "--", "sleep", "60")
    try:
        start = _wait_journal(journal, protocol.EVENT, pred=lambda b: b["kind"] == protocol.EV_PROC_START)
        time.sleep(0.3)
        os.kill(start["pid"], signal.SIGKILL)
        p.wait(timeout=30)
    finally:
        p.kill()
    assert p.returncode == 128 + 9, p.stderr.read()
    s = Stream.from_journal(journal)
    ex = s.events(protocol.EV_PROC_EXIT)
    assert [(e["pid"], e.get("signal"), e["oom"]) for e in ex] == [(start["pid"], 9, False)]
    _final(s)
    assert s.times[-1] >= ex[0]["t"]  # sampled up to the exit (and the tail after it)


def test_target_sigkilled_attached(tmp_path, endpoints):
    """Outcome: an attached --pid target killed -> proc_exit, 'the target exited', exit 0."""
    victim = subprocess.Popen(["sleep", "60"])
    journal = tmp_path / "a.journal"
    p = spawn_sample(endpoints, "--journal", str(journal), "--pid", str(victim.pid))
    try:
        _wait_journal(journal, protocol.SAMPLES)
        victim.kill()
        victim.wait()  # reaped by us: the sampler sees the pid vanish mid-read
        p.wait(timeout=30)
    finally:
        p.kill()
        victim.kill()
    err = p.stderr.read()
    assert p.returncode == 0, err
    assert "the target exited" in err and "Traceback" not in err
    s = Stream.from_journal(journal)
    assert [e["pid"] for e in s.events(protocol.EV_PROC_EXIT)] == [victim.pid]
    _final(s)


# --- cgroup removed under the sampler --------------------------------------


@pytest.mark.cgroup
def test_cgroup_removed_under_the_sampler(tmp_path, endpoints):
    """Outcome: the sampler says the cgroup was removed and ends cleanly (exit 0, final
    hello); the process exit is an event; no traceback."""
    cg = cgroup.create_limited(128 * MiB, f"swtest-faults-{time.monotonic_ns()}")
    child = cgroup.spawn_in(cg, ["sleep", "60"])
    journal = tmp_path / "cg.journal"
    p = spawn_sample(endpoints, "--journal", str(journal), "--cgroup", str(cg.info.dir))
    try:
        _wait_journal(journal, protocol.DETAIL)
        child.kill()
        child.wait()
        cgroup.remove(cg)  # rmdir while the sampler holds its files open
        p.wait(timeout=30)
    finally:
        p.kill()
        child.kill()
        try:
            cgroup.remove(cg)
        except cgroup.CgroupError:
            pass
    err = p.stderr.read()
    assert p.returncode == 0, err
    assert "was removed" in err and "Traceback" not in err
    s = Stream.from_journal(journal)
    hello = _final(s)
    assert hello["counters"]["samples"] == len(s.times)
    assert child.pid in [e["pid"] for e in s.events(protocol.EV_PROC_EXIT)]


# --- /proc entries vanishing mid-read --------------------------------------


def test_proc_entries_vanishing_mid_read(tmp_path, endpoints):
    """Short-lived children churn in the tree (hundreds a second, most gone before the
    sampler can read them). Outcome: sampling goes on at rate, no internal error; the
    churn is summarised (proc events capped at 50/s), the run ends cleanly."""
    churn = write_script(
        tmp_path,
        "churn.sh",
        """
        end=$(( $(date +%s) + 4 ))
        while [ $(date +%s) -lt $end ]; do /bin/true & /bin/true; wait; done
    """,
    )
    journal = tmp_path / "churn.journal"
    p = spawn_sample(endpoints, "--journal", str(journal), "--", "sh", str(churn))
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    assert "internal error" not in err and "Traceback" not in err
    s = Stream.from_journal(journal)
    hello = _final(s)
    span_s = (s.times[-1] - s.times[0]) / 1e9
    c = hello["counters"]
    assert c["samples"] == len(s.times)
    # Loosely at rate (noisy shared host): what was not sampled is counted as missed ticks.
    assert c["samples"] >= 0.5 * span_s * 1000
    assert c["samples"] + c["ticks_missed"] >= 0.97 * span_s * 1000
    starts = s.events(protocol.EV_PROC_START)
    per_s = Counter(e["t"] // 1_000_000_000 for e in starts if not e.get("launched"))
    assert max(per_s.values(), default=0) <= 50 + 1


# --- slow subscriber --------------------------------------------------------


def test_slow_subscriber_never_blocks_the_sampler(endpoints):
    """A subscriber that reads 10 messages a second with tiny queues. Outcome: the sampler
    keeps its rate; a fast subscriber at the same time gets every message; the slow one's
    losses show as seq gaps, and received + gaps == every message published."""
    from spikewatch.sampler.daemon import Sampler, SamplerConfig, Target

    victim = subprocess.Popen(["sleep", "60"])
    ctx = zmq.Context()
    opts = {zmq.SNDHWM: 20, zmq.SNDBUF: 4096}  # small queues: drops come in seconds, not minutes
    config = SamplerConfig(
        Target(pid=victim.pid),
        publish=endpoints["publish"],
        inlet=None,
        journal="",
        duration_ns=4_000_000_000,
        quiet=True,
        socket_options=opts,
        realtime=False,
        batch_ns=20_000_000,  # ~60 messages a second against the slow one's 10
    )
    sampler = Sampler(config, context=ctx)
    slow = StreamSubscriber([endpoints["publish"]], context=ctx, hwm=5, socket_options={zmq.RCVBUF: 4096})
    fast = StreamSubscriber([endpoints["publish"]], context=ctx)
    published: list[int] = []
    sampler.listeners.append(lambda topic, body, packed: published.append(body["seq"]))
    sampler.setup()
    # Both subscriptions in place before the first message (slow joiner): probe on the
    # sampler's own socket until each subscriber hears one. A probe does not decode, so it
    # only raises bad_messages; none is left queued when sampling starts.
    deadline = time.monotonic() + 30
    while not (slow.bad_messages and fast.bad_messages) and time.monotonic() < deadline:
        sampler.publisher.sock.send_multipart([b"probe", b""])
        for sub in (slow, fast):
            assert sub.recv(timeout_ms=20) is None
    assert slow.bad_messages and fast.bad_messages, "the subscribers never joined"
    for sub in (slow, fast):
        assert sub.recv(timeout_ms=200) is None  # drains the probes still on their way
    th = threading.Thread(target=sampler.run)
    th.start()
    slow_seqs: list[int] = []
    fast_seqs: list[int] = []

    def drain_fast() -> None:
        while True:
            m = fast.recv(timeout_ms=1500)
            if m is None:
                return
            fast_seqs.append(m[1]["seq"])
            if m[0] == protocol.HELLO and m[1].get("final"):
                return

    ft = threading.Thread(target=drain_fast)
    ft.start()
    try:
        while th.is_alive() or slow.sock.poll(1000):  # slow while it runs, then what is left
            m = slow.recv(timeout_ms=200)
            if m is not None:
                slow_seqs.append(m[1]["seq"])
                if m[0] == protocol.HELLO and m[1].get("final"):
                    break
            if th.is_alive():
                time.sleep(0.1)  # slow while the sampler runs; then take what is left
        th.join(timeout=30)
        ft.join(timeout=30)
    finally:
        victim.kill()
        victim.wait()
        slow.close()
        fast.close()
        ctx.term()
    assert not th.is_alive()
    expected = 4000
    assert sampler.samples + sampler.ticks_missed >= 0.97 * expected and sampler.samples >= 0.5 * expected
    assert fast_seqs == published, "the fast subscriber lost nothing"
    tracker = SeqGaps()
    for seq in slow_seqs:
        tracker.see(seq)
    assert tracker.missed > 0, "the slow subscriber lost messages..."
    first, last = slow_seqs[0], slow_seqs[-1]
    assert len(slow_seqs) + tracker.missed == last - first + 1, "...and every one shows as a gap"


# --- subscriber gone and back -----------------------------------------------


def test_subscriber_gone_and_back_fills_the_gap_from_history(endpoints, tmp_path):
    """Outcome: while away the subscriber misses N messages; on return, backfill from the
    history ring gives exactly those (no duplicates, no holes); without history the gap
    would be counted by seq."""
    victim = subprocess.Popen(["sleep", "60"])
    p = subprocess.Popen(
        sample_cmd(
            endpoints, "--no-journal", "--pid", str(victim.pid), "--duration", "6s", "--history", endpoints["history"]
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    ctx = zmq.Context()
    try:
        sub = StreamSubscriber([endpoints["publish"]], context=ctx)
        first: list[int] = []
        end = time.monotonic() + 10
        while len(first) < 50 and time.monotonic() < end:
            m = sub.recv(timeout_ms=500)
            if m is not None:
                first.append(m[1]["seq"])
        sub.close()  # gone
        time.sleep(1.5)
        sub = StreamSubscriber([endpoints["publish"]], context=ctx)  # back
        merge = Backfill(endpoints["history"], context=ctx)
        second = [b["seq"] for t, b in merge.attach(sub.sock)]
        end = time.monotonic() + 3
        while time.monotonic() < end:
            m = sub.recv(timeout_ms=200)
            if m is not None and merge.keep(m[1]):
                second.append(m[1]["seq"])
        sub.close()
        p.wait(timeout=30)
    finally:
        p.kill()
        victim.kill()
        victim.wait()
        ctx.term()
    assert p.returncode == 0
    assert len(second) == len(set(second)), "no duplicates"
    got = sorted(set(first) | set(second))
    assert got == list(range(got[0], got[-1] + 1)), "no holes across the absence"
    assert merge.history_count > 0 and max(first) + 1 in second


# --- journal disk full ------------------------------------------------------


@pytest.fixture
def tiny_tmpfs(tmp_path):
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _same(sent: tuple[str, dict], kept: tuple[str, dict]) -> bool:
    """The journal keeps every field exactly but sample times, which it keeps within ±1 µs (format 2)."""
    (ts, a), (tk, b) = sent, kept
    if ts != tk:
        return False
    if ts != protocol.SAMPLES:
        return a == b
    rest = ("t", "dt")
    return {k: v for k, v in a.items() if k not in rest} == {k: v for k, v in b.items() if k not in rest} and all(
        abs(x - y) <= 1000 for x, y in zip(protocol.sample_times(a), protocol.sample_times(b))
    )


def test_journal_disk_full(endpoints, tiny_tmpfs):
    """A 256 KiB tmpfs, mostly filled. Outcome: one journal_error event (ENOSPC) on the
    stream and journal_errors in the counters; sampling and publishing go on to the end;
    the journal is an exact prefix of the stream, whole records only; a subscriber
    received every message (what the journal lacks is exactly the stream's tail)."""
    # Leave the journal one page. An idle target's 5 s journal is only ~4-5 KB in
    # format 4 (it once fit in the page); a target whose RSS moves every few ms
    # makes ~7 KB, so the disk fills mid-run.
    (tiny_tmpfs / "ballast").write_bytes(b"\0" * (252 << 10))
    journal = tiny_tmpfs / "full.journal"
    sub = StreamSubscriber([endpoints["publish"]])
    time.sleep(0.3)
    noisy = write_script(
        tiny_tmpfs.parent,
        "noisy.py",
        """
        import random, time
        held = []
        end = time.monotonic() + 60
        while time.monotonic() < end:
            if len(held) < 40 and random.random() < 0.5:
                held.append(b"\\1" * (random.randint(32, 96) * 4096))  # mmap'd and written
            elif held:
                held.pop(random.randrange(len(held)))
            time.sleep(0.001)
        """,
    )
    victim = subprocess.Popen([sys.executable, str(noisy)])
    p = spawn_sample(endpoints, "--journal", str(journal), "--pid", str(victim.pid), "--duration", "5s")
    try:
        got = collect_until_final(sub, timeout=30)
        p.wait(timeout=30)
    finally:
        p.kill()
        victim.kill()
        victim.wait()
        sub.close()
    err = p.stderr.read()
    assert p.returncode == 0, err
    assert "cannot write the journal" in err and "Traceback" not in err
    final = got[-1][1]
    assert final["final"] and final["counters"]["journal_errors"] >= 1
    errs = [b for t, b in got if t == protocol.EVENT and b["kind"] == protocol.EV_JOURNAL_ERROR]
    assert len(errs) == 1 and "space" in errs[0]["error"].lower()
    seqs = [b["seq"] for _, b in got]
    assert seqs == list(range(seqs[0], seqs[-1] + 1)), "the stream lost nothing"
    assert final["counters"]["samples"] >= 0.5 * 5000
    records = list(iter_records(journal))  # whole records only: a torn tail is ignored
    assert 0 < len(records) < len(got)
    by_seq = {b["seq"]: (t, b) for t, b in got}
    assert [b["seq"] for _, b in records] == list(range(len(records))), "a prefix of the stream"
    both = [(t, b) for t, b in records if b["seq"] in by_seq]  # the subscriber may join a few messages late
    assert len(both) > len(records) // 2 and all(_same(by_seq[b["seq"]], (t, b)) for t, b in both)
    assert errs[0]["t"] >= records[-1][1]["t"] - 200_000_000
    # ...and the loss is stated exactly: everything published before the final
    # hello that is not in the file.
    assert final["counters"]["journal_lost"] == final["seq"] - len(records)


# --- SIGTERM during a burst ------------------------------------------------


def test_sigterm_during_a_burst(tmp_path, endpoints):
    """The target allocates and frees 50 MiB in a tight loop while markers flood the inlet;
    the sampler gets SIGTERM mid-burst. Outcome: the target gets SIGTERM and its exit is an
    event; the run ends cleanly (final hello last); every marker the inlet accepted was
    published (markers == inlet_ok), the rest counted in inlet_bad."""
    burst = write_script(
        tmp_path,
        "burst.py",
        """
        import signal, sys, time
        signal.signal(signal.SIGTERM, lambda *a: sys.exit(3))
        print("bursting", flush=True)
        while True:
            x = bytearray(50 << 20)
            for i in range(0, len(x), 4096): x[i] = 1
            del x
    """,
    )
    journal = tmp_path / "burst.journal"
    p = subprocess.Popen(
        sample_cmd(endpoints, "--journal", str(journal), "--", sys.executable, str(burst)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    sent = 0
    try:
        assert p.stdout.readline().startswith("bursting")
        with InletClient(endpoints["inlet"], linger_ms=0) as inlet:
            end = time.monotonic() + 1.0
            while time.monotonic() < end:
                inlet.note(f"m{sent}")
                sent += 1
                if sent % 200 == 0:
                    time.sleep(0.02)
            p.send_signal(signal.SIGTERM)
            for _ in range(200):  # still flooding while it shuts down
                inlet.note("late")
        out, err = p.communicate(timeout=30)
    finally:
        p.kill()
    assert p.returncode == 3, err
    s = Stream.from_journal(journal)
    hello = _final(s)
    c = hello["counters"]
    assert s.events(protocol.EV_PROC_EXIT)[-1]["code"] == 3
    assert len(s.topic(protocol.MARKER)) == c["inlet_ok"] > 0
    assert c["inlet_ok"] + c["inlet_bad"] <= sent + 200
    assert max(s.series["rss"]) >= 40 * MiB  # the burst was sampled
