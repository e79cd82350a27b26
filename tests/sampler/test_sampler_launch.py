"""Launched and attached targets, seen at the right heights and times."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

from spikewatch.sampler.wire import protocol
from spikewatch.sampler.wire.client import StreamSubscriber

from tests.support.sampler import (
    MiB,
    Stream,
    child_stamps,
    run_sample,
    sample_attached,
    sample_cmd,
    spawn_sample,
    write_script,
)

ALLOC = """
    import sys, time
    print("start", time.monotonic_ns(), flush=True)
    time.sleep(0.3)
    t0 = time.monotonic_ns(); x = b"\\x01" * (100 << 20); t1 = time.monotonic_ns()
    print("alloc", t0, t1, flush=True)
    time.sleep(0.3)
    t2 = time.monotonic_ns(); del x; t3 = time.monotonic_ns()
    print("free", t2, t3, flush=True)
    time.sleep(0.3)
    sys.exit(3)
"""


def test_launch_heights_times_and_exit_status(tmp_path, endpoints):
    script = write_script(tmp_path, "alloc.py", ALLOC)
    journal = tmp_path / "run.journal"
    res = run_sample(endpoints, "--journal", str(journal), "--", sys.executable, str(script))
    assert res.returncode == 3, res.stderr  # the launched command's status
    assert "Traceback" not in res.stderr
    assert "samples in" in res.stderr and "peak rss" in res.stderr and str(journal) in res.stderr
    stamps = child_stamps(res.stdout)
    s = Stream.from_journal(journal)

    # One seq across all topics, nothing missing in the journal.
    seqs = [b["seq"] for _, b in s.records]
    assert seqs == list(range(len(seqs)))
    hellos = s.topic(protocol.HELLO)
    assert hellos[0]["final"] is False and hellos[-1]["final"] is True
    assert hellos[-1]["counters"]["samples"] == len(s.times)
    assert hellos[0]["series"] == ["rss"] and hellos[0]["cgroup"] is None

    # Sampling began before the program's first line ran (the startup is in the samples).
    start = s.events(protocol.EV_PROC_START)[0]
    assert start["launched"] is True and start["cmdline"][-1] == str(script)
    assert s.times[0] < start["t"] < stamps["start"][0]

    t0, t1 = stamps["alloc"]
    t2, t3 = stamps["free"]
    before = s.values("rss", stamps["start"][0], t0)
    held = s.values("rss", t1 + 2_000_000, t2)
    after = s.values("rss", t3 + 20_000_000, t3 + 200_000_000)
    base = max(before)
    assert base < 60 * MiB
    assert len(held) > 20  # ~300 ms at 1 ms, fewer on a busy host (missed ticks are counted, not faked)
    assert min(held) >= base + 99 * MiB
    assert max(after) < base + 10 * MiB
    # The rise is seen within a few ms of the child's own clock.
    rise = next(t for t, v in zip(s.times, s.series["rss"]) if t >= t0 and v >= base + 99 * MiB)
    assert rise <= t1 + 5_000_000

    exits = s.events(protocol.EV_PROC_EXIT)
    assert exits[-1]["pid"] == start["pid"] and exits[-1]["code"] == 3 and exits[-1]["oom"] is False
    # Reaped at the tick after its memory went (SIGCHLD), not at the next batch, up to 100 ms later.
    gone = next(t for t, v in zip(s.times, s.series["rss"]) if t > t3 and v == 0)
    assert -2_000 <= exits[-1]["t"] - gone < 20_000_000  # the journal keeps sample times to ±1 µs
    # Tail: samples continue a little after the exit, then the run ends.
    assert s.times[-1] > exits[-1]["t"]
    assert s.times[-1] - exits[-1]["t"] < 2_000_000_000


def test_attached_pid_heights(tmp_path, endpoints):
    script = write_script(tmp_path, "alloc.py", "import sys; sys.stdin.readline()\n" + textwrap.dedent(ALLOC))
    journal = tmp_path / "att.journal"
    child = subprocess.Popen([sys.executable, str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    out, err, rc = sample_attached(endpoints, child, "--journal", str(journal), "--period", "2ms", settle_s=0.1)
    assert rc == 0, err
    assert "the target exited" in err
    stamps = child_stamps(out)
    s = Stream.from_journal(journal)
    start = s.events(protocol.EV_PROC_START)[0]
    assert start["pid"] == child.pid and start["launched"] is False
    # The process start converted from /proc ticks to the monotonic clock (10 ms resolution).
    assert start["start_t"] < s.times[0]
    t0, t1 = stamps["alloc"]
    t2, t3 = stamps["free"]
    base = max(s.values("rss", 0, t0))
    assert min(s.values("rss", t1 + 4_000_000, t2)) >= base + 99 * MiB
    assert max(s.values("rss", t3 + 20_000_000, t3 + 200_000_000)) < base + 10 * MiB
    ex = s.events(protocol.EV_PROC_EXIT)
    assert ex and ex[-1]["pid"] == child.pid


SPIKE = """
    import time
    for i in range(3):
        time.sleep(0.37)
        t0 = time.monotonic_ns()
        x = b"\\x01" * (40 << 20)
        del x
        t1 = time.monotonic_ns()
        print(f"spike{i}", t0, t1, flush=True)
    time.sleep(0.5)
"""


def test_short_spike_comes_back_as_hwm_spike(tmp_path, endpoints):
    script = write_script(tmp_path, "spike.py", SPIKE)
    journal = tmp_path / "spike.journal"
    res = run_sample(endpoints, "--period", "250ms", "--journal", str(journal), "--", sys.executable, str(script))
    assert res.returncode == 0, res.stderr
    stamps = child_stamps(res.stdout)
    s = Stream.from_journal(journal)
    spikes = [e for e in s.events(protocol.EV_HWM_SPIKE) if e["series"] == "rss"]
    base = min(s.values("rss", s.times[1]))
    found = 0
    matched: set[int] = set()
    for i in range(3):
        t0, t1 = stamps[f"spike{i}"]
        # A spike across a detail boundary shows in both intervals (rise, then top).
        near = [e for e in spikes if e["t_from"] <= t1 and t0 <= e["t_to"]]
        assert len(near) <= 2
        matched |= {e["seq"] for e in near}
        if max(s.values("rss", t0, t1), default=0) >= base + 38 * MiB:
            continue  # a 4 Hz sample happened to land on its top (~5 % chance each)
        e = max(near, key=lambda e: e["bytes"])
        # The kernel's high-water mark gives the full height the samples missed.
        assert e["bytes"] >= base + 39 * MiB
        assert e["bytes"] - e["sampled_max"] >= 1 * MiB  # a sample may have caught part of the rise
        found += 1
    assert found >= 1
    assert len(spikes) == len(matched)  # no false alarms between the spikes
    assert s.topic(protocol.HELLO)[-1]["counters"]["hwm_spikes"] == len(matched)
    assert "kernel hwm" in res.stderr


def test_sigterm_is_forwarded_and_exit_recorded(tmp_path, endpoints):
    script = write_script(
        tmp_path,
        "term.py",
        """
        import signal, sys, time
        def bye(*a):
            print("got", signal.SIGTERM.value, flush=True)
            sys.exit(7)
        signal.signal(signal.SIGTERM, bye)
        print("ready", time.monotonic_ns(), flush=True)
        time.sleep(30)
    """,
    )
    journal = tmp_path / "term.journal"
    p = spawn_sample(endpoints, "--journal", str(journal), "--", sys.executable, str(script))
    try:
        assert p.stdout.readline().startswith("ready")
        time.sleep(0.2)
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=20)
    finally:
        p.kill()
    assert p.returncode == 7, err
    assert "got 15" in out
    s = Stream.from_journal(journal)
    ex = s.events(protocol.EV_PROC_EXIT)
    assert ex[-1]["code"] == 7
    assert s.topic(protocol.HELLO)[-1]["final"] is True


def test_journal_readable_after_sampler_is_killed(tmp_path, endpoints):
    journal = tmp_path / "killed.journal"
    p = subprocess.Popen(
        sample_cmd(endpoints, "--journal", str(journal), "--", "sleep", "30"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # 2.5 s from when sampling starts, not from the spawn (a busy host can take ~1 s to start Python).
        assert any("journal" in line for line in p.stderr), "the sampler never started sampling"
        time.sleep(2.5)
        p.kill()
        p.wait(timeout=10)
    finally:
        p.kill()
    s = Stream.from_journal(journal)
    try:
        assert s.events(protocol.EV_PROC_START)[0]["pid"] > 0
        assert len(s.times) >= 1000  # all but the open block (~1 s of samples at 1 ms) reached the disk
        assert s.topic(protocol.HELLO)
        assert all(t2 > t1 for t1, t2 in zip(s.times, s.times[1:]))
    finally:
        for t, b in s.records:
            if t == "event" and b["kind"] == "proc_start":
                try:
                    os.kill(b["pid"], signal.SIGKILL)
                except ProcessLookupError:
                    pass


def test_match_waits_and_follows_restart(tmp_path, endpoints):
    token = f"swmatch{os.getpid()}x{time.monotonic_ns() % 100000}"
    script = write_script(
        tmp_path,
        "svc.py",
        """
        import sys, time
        x = b"\\x01" * (20 << 20)
        time.sleep(float(sys.argv[2]))
    """,
    )
    journal = tmp_path / "match.journal"
    # Stopped once the stream shows the second process's exit (a fixed --duration from the
    # first match left too little time for two Python starts on a busy host).
    sub = StreamSubscriber([endpoints["publish"]])
    p = spawn_sample(endpoints, "--match", token, "--journal", str(journal))
    kids = []
    try:
        err_head = ""
        for line in p.stderr:  # the kids start only once it is looking
            err_head += line
            if "waiting for a process matching" in line:
                break
        time.sleep(0.8)  # the sampler is waiting; nothing matches yet
        assert p.poll() is None
        kids.append(subprocess.Popen([sys.executable, str(script), token, "0.8"]))
        kids[-1].wait(timeout=10)
        time.sleep(0.3)
        kids.append(subprocess.Popen([sys.executable, str(script), token, "0.8"]))
        kids[-1].wait(timeout=10)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            m = sub.recv(timeout_ms=200)
            if (
                m is not None
                and m[0] == protocol.EVENT
                and m[1]["kind"] == protocol.EV_PROC_EXIT
                and m[1]["pid"] == kids[-1].pid
            ):
                break
        p.terminate()
        out, err = p.communicate(timeout=20)
        err = err_head + err
    finally:
        p.kill()
        sub.close()
        for k in kids:
            k.kill()
    assert p.returncode == 0, err
    assert "waiting for a process matching" in err
    s = Stream.from_journal(journal)
    starts = [e["pid"] for e in s.events(protocol.EV_PROC_START)]
    assert starts == [kids[0].pid, kids[1].pid]
    restarts = s.events(protocol.EV_RESTART)
    assert [(r["old_pid"], r["pid"]) for r in restarts] == [(kids[0].pid, kids[1].pid)]
    assert {e["pid"] for e in s.events(protocol.EV_PROC_EXIT)} == {kids[0].pid, kids[1].pid}
    assert max(s.series["rss"]) >= 20 * MiB


def test_sigterm_while_waiting_for_a_match_always_stops_it(tmp_path, endpoints):
    """The wait for --match used to block on an Event that the SIGTERM handler, on the
    same thread, set: now and then the handler deadlocked on the Event's own lock."""
    for i in range(4):
        p = spawn_sample(endpoints, "--match", f"never-matches-{os.getpid()}-{i}", "--no-journal")
        try:
            for line in p.stderr:
                if "waiting for a process matching" in line:
                    break
            time.sleep(0.05 * i)  # land the signal at different points of the wait
            p.send_signal(signal.SIGTERM)
            rc = p.wait(timeout=10)
            rest = p.stderr.read()
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        # Nothing was sampled: a runtime failure (3) that names the signal and the reason.
        assert rc == 3, (rc, rest)
        assert "signal SIGTERM" in rest and "no process matched" in rest, rest
