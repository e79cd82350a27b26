"""Multi-process targets, with real forks: membership, events, and figures that count shared pages once."""

from __future__ import annotations

import bisect
import os
import signal
import subprocess
import sys
import time

import pytest
from spikewatch.sampler import pss as pssmod
from spikewatch.sampler import smaps
from spikewatch.sampler.wire import protocol

from tests.support.cgroups import needs_cgroup, peak_resets_per_interval
from tests.support.forks import FORKER, script
from tests.support.sampler import MiB, Stream, child_stamps, run_sample, sample_cmd, spawn_sample, write_script
from tests.support.waiting import wait_until


def _pss_details(s: Stream) -> list[dict]:
    return [d for d in s.topic(protocol.DETAIL) if "pss" in d]


def _cg_at(s: Stream, t: int) -> int:
    """The cgroup's usage sampled nearest ``t`` (a PSS sweep's time: its detail comes later)."""
    i = bisect.bisect_left(s.times, t)
    return s.series["cg_usage"][min(i, len(s.times) - 1)]


def test_rollup_parse_and_period_budget():
    data = (
        b"55d0-7ffc ---p 00000000 00:00 0   [rollup]\nRss:  1752 kB\nPss:   196 kB\nPss_Anon:  112 kB\n"
        b"Shared_Clean:  1604 kB\nPrivate_Clean:  36 kB\nPrivate_Dirty:  112 kB\nSwapPss:  8 kB\n"
    )
    assert smaps.parse_rollup(data) == (1752 * 1024, 196 * 1024, 148 * 1024, 8 * 1024)
    assert smaps.parse_rollup(b"") is None  # a zombie lists nothing
    # 0.1 ms a sweep fits 1 % of a core at the detail period; 20 ms needs 2 s; never past the cap.
    assert pssmod.next_period(100_000, 0.01, 100_000_000) == 100_000_000
    assert pssmod.next_period(20_000_000, 0.01, 100_000_000) == 2_000_000_000
    assert pssmod.next_period(10**9, 0.01, 100_000_000) == pssmod.MAX_PERIOD_NS


def test_helper_sweeps_a_real_fork(tmp_path):
    """The helper process answers with sums that count the parent's pages once."""
    p = subprocess.Popen(
        [sys.executable, str(script(tmp_path, "f.py", FORKER)), "64", "16", "0", "3"], stdout=subprocess.PIPE, text=True
    )
    try:
        child = int(p.stdout.readline().split()[1])
        reader = pssmod.PssReader(min_period_ns=1, budget=1.0)
        assert reader.start()
        try:
            got = None
            for _ in range(500):  # polled as the sampler does: never waiting on the helper
                got = reader.poll(0, [p.pid, child])
                if got is not None:
                    break
                time.sleep(0.01)
        finally:
            reader.stop()
        assert got is not None and got.procs == 2
        # Both map the parent's 64 MiB: summed RSS has it twice, PSS once.
        assert got.rss - got.pss >= 60 * MiB
        assert 80 * MiB <= got.pss <= got.rss - 60 * MiB
        assert got.uss >= 16 * MiB
    finally:
        p.kill()
        p.wait()


def test_fork_without_exec_joins_with_events_and_pss_counts_shared_once(tmp_path, endpoints):
    journal = tmp_path / "fork.journal"
    f = script(tmp_path, "forker.py", FORKER)
    res = run_sample(endpoints, "--journal", str(journal), "--", sys.executable, str(f), "96", "48", "0", "2")
    assert res.returncode == 0, res.stderr
    child = child_stamps(res.stdout)["child"][0]
    s = Stream.from_journal(journal)
    starts = {e["pid"]: e for e in s.events(protocol.EV_PROC_START)}
    exits = {e["pid"]: e for e in s.events(protocol.EV_PROC_EXIT)}
    assert child in starts and starts[child]["launched"] is False
    assert child in exits and exits[child].get("code", 0) == 0
    # Summed RSS saw the child, and counted the parent's heap in both.
    assert max(s.series["rss"]) >= (2 * 96 + 48) * MiB
    both = [d for d in _pss_details(s) if d["pss_procs"] == 2]
    assert both, _pss_details(s)
    d = max(both, key=lambda d: d["pss"])
    assert d["pss_rss"] - d["pss"] >= 90 * MiB  # the double count, measured
    assert (96 + 48) * MiB <= d["pss"] <= (96 + 48 + 40) * MiB
    assert d["uss"] >= 48 * MiB
    assert d["pss_period_ns"] >= 100_000_000  # never faster than the detail tier
    assert "peak tree pss" in res.stderr


def test_pss_off_with_a_zero_budget(tmp_path, endpoints):
    journal = tmp_path / "off.journal"
    f = script(tmp_path, "forker.py", FORKER)
    res = run_sample(
        endpoints, "--pss-budget", "0", "--journal", str(journal), "--", sys.executable, str(f), "8", "8", "0", "0.5"
    )
    assert res.returncode == 0, res.stderr
    assert not _pss_details(Stream.from_journal(journal))


def test_bad_pss_budget_is_one_line(endpoints):
    res = run_sample(endpoints, "--pss-budget", "lots", "--", "true")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "--pss-budget" in res.stderr and "share of a core" in res.stderr


def test_fork_storm_is_summarised_not_flooded(tmp_path, endpoints):
    """300 forks in well under a second, each living 0.6 s: at most 50 proc_start a
    second, the rest counted in proc_churn events (at most one a second)."""
    storm = write_script(
        tmp_path,
        "storm.py",
        """
        import os, time
        time.sleep(0.3)
        kids = []
        for i in range(300):
            pid = os.fork()
            if pid == 0:
                time.sleep(0.6)
                os._exit(0)
            kids.append(pid)
        for pid in kids:
            os.waitpid(pid, 0)
        time.sleep(1.2)
    """,
    )
    journal = tmp_path / "storm.journal"
    res = run_sample(endpoints, "--journal", str(journal), "--", sys.executable, str(storm))
    assert res.returncode == 0, res.stderr
    s = Stream.from_journal(journal)
    starts = s.events(protocol.EV_PROC_START)
    churn = s.events(protocol.EV_PROC_CHURN)
    span_s = (s.times[-1] - s.times[0]) / 1e9
    assert len(starts) <= 50 * (int(span_s) + 2) + 1
    assert churn, "the storm went unmentioned"
    assert len(churn) <= int(span_s) + 2
    muted = sum(e["started"] for e in churn)
    children = len(starts) - 1 + muted
    assert children >= 200  # most of the storm was seen, with or without an event of its own
    assert sum(e["exited"] for e in churn) >= muted - 10  # their exits were counted too
    assert all(c["t_from"] <= c["t"] for c in churn)
    # Forks come ~2 ms apart and live 0.6 s: at least a third of them at once, all members.
    assert max(d["procs"] for d in s.topic(protocol.DETAIL)) >= 100


def test_threads_are_not_processes(tmp_path, endpoints):
    threaded = write_script(
        tmp_path,
        "threads.py",
        """
        import threading, time
        def work():
            x = bytearray(2 << 20)
            for i in range(0, len(x), 4096):
                x[i] = 1
            time.sleep(1.2)
        ts = [threading.Thread(target=work) for _ in range(40)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
    """,
    )
    journal = tmp_path / "threads.journal"
    res = run_sample(endpoints, "--journal", str(journal), "--", sys.executable, str(threaded))
    assert res.returncode == 0, res.stderr
    s = Stream.from_journal(journal)
    details = s.topic(protocol.DETAIL)
    assert max(d["threads"] for d in details) >= 41
    assert max(d["procs"] for d in details) == 1
    assert len(s.events(protocol.EV_PROC_START)) == 1  # the launched command only
    assert not s.events(protocol.EV_PROC_CHURN)
    both = _pss_details(s)
    assert both and all(d["pss_procs"] == 1 for d in both)
    # One process: RSS counts nothing twice within the tree (PSS only splits libraries with outsiders).
    assert max(s.series["rss"]) < 140 * MiB


@pytest.mark.cgroup
@needs_cgroup
def test_fork_under_limit_is_a_member_of_the_cgroup_tree(tmp_path, endpoints):
    """The cgroup path: a forked child (no exec) joins from cgroup.procs, with its events."""
    journal = tmp_path / "cg.journal"
    f = script(tmp_path, "forker.py", FORKER)
    res = run_sample(
        endpoints, "--limit", "1G", "--journal", str(journal), "--", sys.executable, str(f), "96", "48", "0", "2"
    )
    assert res.returncode == 0, res.stderr
    child = child_stamps(res.stdout)["child"][0]
    s = Stream.from_journal(journal)
    assert child in {e["pid"] for e in s.events(protocol.EV_PROC_START)}
    assert child in {e["pid"] for e in s.events(protocol.EV_PROC_EXIT)}
    assert max(d["procs"] for d in s.topic(protocol.DETAIL)) == 2
    assert max(s.series["rss"]) >= (2 * 96 + 48) * MiB  # the child's pages were summed
    # The cgroup charged the shared heap once; the tree's PSS agrees with it.
    peak_cg = max(s.series["cg_usage"])
    assert (96 + 48) * MiB <= peak_cg <= (96 + 48 + 40) * MiB
    d = max((d for d in _pss_details(s) if d["pss_procs"] == 2), key=lambda d: d["pss"])
    cg = _cg_at(s, d["pss_t"])
    assert abs(d["pss"] - cg) <= 0.05 * cg


@pytest.mark.cgroup
@needs_cgroup
def test_short_lived_children_are_caught_by_the_cgroup_peak(tmp_path, endpoints):
    """Children that allocate and exit at once (tens of ms on an idle host) between
    50 ms samples: often too short for the tree's membership and for the samples,
    but charged to the cgroup, whose kernel peak bounds every interval."""
    kids = write_script(
        tmp_path,
        "kids.py",
        """
        import os, time
        time.sleep(0.4)
        for i in range(6):
            pid = os.fork()
            if pid == 0:
                x = b"\\x01" * (48 << 20)
                os._exit(0)
            os.waitpid(pid, 0)
            print("child", pid, flush=True)
            time.sleep(0.25)
    """,
    )
    journal = tmp_path / "kids.journal"
    res = run_sample(
        endpoints, "--limit", "512M", "--period", "50ms", "--journal", str(journal), "--", sys.executable, str(kids)
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.count("child") == 6
    s = Stream.from_journal(journal)
    base = sorted(s.series["cg_usage"])[len(s.series["cg_usage"]) // 2]  # between children, most of the time
    details = s.topic(protocol.DETAIL)
    peaks = [d["cg_peak"] for d in details if "cg_peak" in d]
    sampled = max(s.series["cg_usage"])
    spikes = [e for e in s.events(protocol.EV_HWM_SPIKE) if e["series"] == protocol.SERIES_CG_USAGE]
    if not peak_resets_per_interval():
        # cgroup v2 before 6.12: memory.peak is the peak since the cgroup was made, so no
        # interval has a peak of its own (no cg_peak) — the stated fallback. The first
        # child raises that all-time peak; later ones of the same size do not. Still, no
        # peak is lost: the samples caught it, or the rise is an hwm_spike.
        assert peaks == []
        assert max([sampled] + [e["bytes"] for e in spikes]) >= base + 44 * MiB, (base, sampled, spikes)
        return
    assert peaks and max(peaks) >= base + 44 * MiB  # the kernel saw every child
    assert max(peaks) >= sampled - MiB
    if sampled < base + 44 * MiB:  # the samples missed them all: the watermark must say so
        assert spikes and max(e["bytes"] for e in spikes) >= base + 44 * MiB


@pytest.mark.cgroup
@needs_cgroup
def test_bgsave_pattern_child_serialises_while_parent_writes(tmp_path, endpoints):
    """Redis's BGSAVE: the child reads the whole heap out while the parent keeps
    writing to it, so every page the parent writes is copied: usage grows by what
    was written, and the tree's PSS follows the cgroup, not summed RSS."""
    bgsave = write_script(
        tmp_path,
        "bgsave.py",
        """
        import mmap, os, time
        MiB = 1 << 20
        n = 128 * MiB
        heap = mmap.mmap(-1, n, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        for i in range(0, n, 4096):
            heap[i] = 1
        time.sleep(0.3)
        # The child lives until the parent has written (as a real save outlasts the
        # writes it races): on a slow CPU the parent's writes take longer than the
        # child's read, and pages written after the child exits are not copied.
        written_r, written_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            print("child", os.getpid(), time.monotonic_ns(), flush=True)
            with open(os.devnull, "wb") as out:
                for off in range(0, n, MiB):
                    out.write(heap[off:off + MiB])
                    time.sleep(0.004)
            os.read(written_r, 1)
            time.sleep(1.2)
            os._exit(0)
        for i in range(0, 96 * MiB, 4096):  # the parent writes on: 96 MiB copied
            heap[i] = 2
        os.write(written_w, b"w")
        print("written", time.monotonic_ns(), flush=True)
        os.waitpid(pid, 0)
        time.sleep(0.2)
    """,
    )
    journal = tmp_path / "bgsave.journal"
    res = run_sample(endpoints, "--limit", "1G", "--journal", str(journal), "--", sys.executable, str(bgsave))
    assert res.returncode == 0, res.stderr
    st = child_stamps(res.stdout)
    child, written = st["child"][0], st["written"][0]
    s = Stream.from_journal(journal)
    assert child in {e["pid"] for e in s.events(protocol.EV_PROC_START)}
    assert child in {e["pid"] for e in s.events(protocol.EV_PROC_EXIT)}
    assert max(s.series["cg_usage"]) >= (128 + 90) * MiB  # the copies were charged
    # Summed RSS shows the heap twice (~256 MiB + interpreters) ...
    assert max(s.series["rss"]) >= 250 * MiB
    # ... while PSS, read once the parent had written, agrees with the cgroup.
    exited = next(e["t"] for e in s.events(protocol.EV_PROC_EXIT) if e["pid"] == child)
    after = [
        d for d in _pss_details(s) if d["pss_procs"] == 2 and written + 50_000_000 < d["pss_t"] < exited - 150_000_000
    ]
    assert after, _pss_details(s)
    for d in after:
        cg = _cg_at(s, d["pss_t"])
        assert abs(d["pss"] - cg) <= 0.05 * cg, (d, cg)


def _helpers_of(pid: int) -> list[int]:
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat", "rb") as f:
                ppid = int(f.read().rsplit(b")", 1)[1].split()[1])
            with open(f"/proc/{d}/cmdline", "rb") as f:
                argv = f.read()
        except OSError:
            continue
        if ppid == pid and b"smaps.py" in argv:
            out.append(int(d))
    return out


def test_pss_helper_ends_with_a_killed_sampler_and_ctrl_c_is_quiet(tmp_path, endpoints):
    """The helper ends when its input does: a SIGKILLed sampler leaves none behind. A
    Ctrl-C at the terminal (SIGINT to the whole process group) prints no traceback."""
    f = script(tmp_path, "forker.py", FORKER)
    p = spawn_sample(endpoints, "--no-journal", "--", sys.executable, str(f), "8", "8", "0", "30")
    try:
        assert wait_until(lambda: _helpers_of(p.pid), timeout=10)
        (helper,) = _helpers_of(p.pid)
        p.kill()
        p.wait()
        assert wait_until(lambda: not os.path.exists(f"/proc/{helper}"), timeout=10)
    finally:
        p.kill()
        p.communicate()

    p = subprocess.Popen(
        # sleep ends quietly on SIGINT (a Python workload would print its KeyboardInterrupt).
        sample_cmd(endpoints, "--no-journal", "--", "sleep", "30"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        process_group=0,
    )
    try:
        assert wait_until(lambda: _helpers_of(p.pid), timeout=10)
        os.killpg(p.pid, signal.SIGINT)
        _, err = p.communicate(timeout=30)
    finally:
        p.kill()
    assert "Traceback" not in err, err
    assert "samples in" in err  # the sampler ended cleanly, with its summary
