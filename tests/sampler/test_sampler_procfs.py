"""spikewatch.sampler.procfs and spikewatch.sampler.ticker on real processes."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import pytest
from spikewatch.sampler import procfs
from spikewatch.sampler.ticker import Ticker
from spikewatch.sampler.tree import ProcessTree, outermost

MiB = 1 << 20


def test_last_pid_moves_with_a_fork_and_says_none_when_unreadable():
    last = procfs.LastPid()
    before = last.read()
    p = subprocess.Popen(["true"])
    p.wait()
    after = last.read()
    assert before is not None and after is not None
    assert after != before and (after >= p.pid or after < before)  # or the counter wrapped
    last.close()
    assert last.read() is None
    assert procfs.LastPid("/nonexistent/loadavg").read() is None


def test_stat_parsing_survives_odd_command_names():
    line = b"4242 (a) b (c)) S 17 4242 4242 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 123456 0 0" + b" 0" * 30 + b" 9"
    st = procfs.parse_stat(4242, line)
    assert st.comm == "a) b (c)" and st.state == "S" and st.ppid == 17 and st.starttime_ticks == 123456


def test_statm_kept_open_zombie_then_gone():
    # Holds its 30 MiB until told (a fixed 0.3 s could pass before a busy test thread looks).
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys; x = b'1' * (30 << 20); sys.stdin.read()"], stdin=subprocess.PIPE
    )
    h = procfs.ProcHandle(child.pid)
    try:
        deadline = time.monotonic() + 10
        while h.status().get("rss_anon", 0) < 30 * MiB and time.monotonic() < deadline:
            time.sleep(0.01)
        st = h.status()
        assert h.rss() >= 30 * MiB
        assert st["rss_anon"] >= 29 * MiB and st["vm_hwm"] >= st["vm_rss"] and st["threads"] >= 1
        child.stdin.close()  # now it exits
        # Exited but not reaped: a zombie reads all zeros.
        while procfs.read_stat(child.pid).state != "Z":
            time.sleep(0.02)
        assert h.rss() == 0 and "vm_rss" not in h.status()
        assert procfs.wait_status_to_exit(procfs.read_stat(child.pid).exit_code) == {"code": 0}
        child.wait()
        with pytest.raises(procfs.ProcessGone, match=f"no process {child.pid}"):
            h.rss()
    finally:
        child.kill()
        child.wait()
        h.close()


def test_start_time_on_the_monotonic_clock_and_hwm_reset():
    before = time.monotonic_ns()
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; x = b'1' * (40 << 20); del x; print(1, flush=True); sys.stdin.readline()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        child.stdout.readline()
        st = procfs.read_stat(child.pid)
        assert before - 30_000_000 <= procfs.start_time_mono_ns(st) <= time.monotonic_ns()
        h = procfs.ProcHandle(child.pid)
        hwm = h.status()["vm_hwm"]
        assert hwm >= h.rss() + 35 * MiB  # the freed spike is only in the high-water mark
        assert procfs.reset_hwm(child.pid)
        assert h.status()["vm_hwm"] < hwm - 35 * MiB
        assert h.reset_hwm() and h.reset_hwm()  # through the handle's kept-open descriptor, again
    finally:
        child.kill()
        child.wait()
    assert not procfs.reset_hwm(child.pid)  # gone: False, not an error
    assert not h.reset_hwm()  # and through the kept-open descriptor
    h.close()


def test_errors_for_missing_processes():
    p = subprocess.Popen(["true"])
    p.wait()
    with pytest.raises(procfs.ProcessGone):
        procfs.ProcHandle(p.pid)
    with pytest.raises(procfs.ProcessGone):
        procfs.read_stat(p.pid)


def test_tree_counts_a_pid_once_and_matches_outermost(tmp_path):
    token = f"swtree{os.getpid()}"
    # A shell whose command line matches, with a matching child: one tree, two pids.
    sh = subprocess.Popen(["sh", "-c", f"{sys.executable} -c 'import time; time.sleep(5)' {token} & wait", token])
    try:
        tree = ProcessTree(exclude={os.getpid()}, pattern=re.compile(token))
        deadline = time.monotonic() + 10
        members: set[int] = set()
        while len(members) < 2 and time.monotonic() < deadline:
            tree = ProcessTree(exclude={os.getpid()}, pattern=re.compile(token))
            members = tree.find_matches(time.monotonic_ns())
            time.sleep(0.05)
        assert tree.roots == {sh.pid} and len(members) == 2
        for pid in members:
            tree.add(pid)
        tree.add(sh.pid, root=True)
        assert len(tree.fds) == 2 == len(tree.procs)  # added twice, counted once
        tree.close()
    finally:
        sh.kill()
        sh.wait()
    assert outermost([3, 2], {3: 2, 2: 1}) == [2]


def test_a_fork_that_execs_seconds_later_is_still_matched():
    """A container's first process is forked by the runtime at `create` and execs the
    command only at `start`, seconds later on a busy host (in the emulated v2 lane
    podman took longer than the second a fresh pid used to be looked at): once it
    has exec'd, --match still finds it."""
    token = f"swlate{os.getpid()}"
    # Before the exec its command line holds the token split in two: no match yet.
    held = (
        "import os, sys, time; time.sleep(1.3); "
        f"os.execv(sys.executable, [sys.executable, '-c', 'import time; time.sleep(30)', 'swlate' + '{os.getpid()}'])"
    )
    p = subprocess.Popen([sys.executable, "-c", held])
    try:
        tree = ProcessTree(exclude={os.getpid()}, pattern=re.compile(token))
        deadline = time.monotonic() + 10
        found: set[int] = set()
        while not found and time.monotonic() < deadline:
            found = tree.find_matches(time.monotonic_ns())
            time.sleep(0.05)
        assert tree.roots == {p.pid}, "the late exec was never matched"
        tree.close()
    finally:
        p.kill()
        p.wait()


def test_ticker_counts_missed_periods():
    with Ticker(1_000_000) as t:
        origin = t.start()
        assert t.wait() >= 1
        time.sleep(0.02)
        missed = t.wait()
        assert missed >= 15  # ~20 periods expired while we slept: counted, not replayed
        now = time.monotonic_ns()
        assert (now - origin) // 1_000_000 >= 20


def test_parse_status_reads_what_a_line_by_line_parse_reads() -> None:
    """The regex pass finds the same fields as reading the file line by line, in bytes."""

    def by_lines(data: bytes) -> dict[str, int]:
        out = {}
        for line in data.split(b"\n"):
            key, sep, rest = line.partition(b":")
            name = procfs.STATUS_FIELDS.get(key)
            if name is not None and sep and rest.split():
                v = int(rest.split()[0])
                out[name] = v if name == "threads" else v * 1024
        return out

    live = open(f"/proc/{os.getpid()}/status", "rb").read()
    zombie = b"Name:\tx\nState:\tZ (zombie)\nThreads:\t1\nVmHWMish:\t5 kB\nSigQ:\t0/1\n"
    for data in (live, zombie):
        assert procfs.parse_status(data) == by_lines(data)
    assert procfs.parse_status(live)["vm_rss"] > 0 and procfs.parse_status(zombie) == {"threads": 1}


def test_cgroup_key_value_files_parse_fast_and_careful() -> None:
    from spikewatch.sampler.cgroups.files import _parse_kv

    assert _parse_kv(b"anon 4096\nfile 0\n") == {"anon": 4096, "file": 0}
    # a line that is not "key integer" is skipped, the rest kept
    assert _parse_kv(b"anon 4096\nnote hello\nfile 8\n") == {"anon": 4096, "file": 8}
    assert _parse_kv(b"anon 4096\nlonely\n") == {"anon": 4096}
    assert _parse_kv(b"") == {}


_V2_STAT = b"""anon 104857600
file 52428800
kernel 3145728
kernel_stack 131072
shmem 0
file_mapped 8192
inactive_anon 104857600
active_anon 0
inactive_file 41943040
active_file 10485760
unevictable 0
pgfault 12345
"""


def _host_v1_stat() -> bytes | None:
    from spikewatch.sampler import cgroup as cgm

    info = cgm.cgroup_of_pid(os.getpid())
    if info is None or info.version != 1:
        return None
    return (info.dir / "memory.stat").read_bytes()


@pytest.mark.parametrize("source", ["v1 host", "v1 flat", "v2"])
def test_the_detail_tiers_breakdown_is_read_stats(source: str) -> None:
    """parse_breakdown (one regex pass, the detail tier's) gives what read_stat's whole
    parse gives for the keys it takes: the real memory.stat of this test's v1 cgroup
    (total_* keys), one without total_* keys, and a v2 one."""
    from spikewatch.sampler.cgroups.files import _parse_kv, normalise_stat, parse_breakdown

    if source == "v1 host":
        data = _host_v1_stat()
        if data is None:
            pytest.skip("no v1 memory cgroup here")
        version = 1
    elif source == "v1 flat":
        data, version = b"cache 8192\nrss 4096\ninactive_file 4096\nhierarchical_memory_limit 1048576\n", 1
    else:
        data, version = _V2_STAT, 2
    lean, limit = parse_breakdown(data, version)
    full = normalise_stat(_parse_kv(data), version)
    assert lean == {k: full[k] for k in ("anon", "file", "inactive_file") if k in full}
    assert set(lean) == {"anon", "file", "inactive_file"}
    raw = _parse_kv(data)
    assert limit == (raw.get("hierarchical_memory_limit") if version == 1 else None)
