"""cgroup v2 for real: what a Kubernetes node, a Docker or podman host or a systemd box
shows spikewatch. These run in the live v2 lane (``make test-cgroup2``: a guest on
Debian's 6.1 and 6.12 kernels) and skip, saying why, on a v1 host.

The guest's CPU is emulated and several times slower than the host's: these assert
what happens (events, values, files), never how fast.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from spikewatch.sampler import cgroup as cgm
from spikewatch.sampler.wire import protocol

from tests.support.sampler import MiB, Stream, run_sample, sample_cmd, spawn_sample, write_script
from tests.support.waiting import scaled

pytestmark = pytest.mark.cgroup2


def kernel() -> tuple[int, int]:
    major, minor = os.uname().release.split(".")[:2]
    return int(major), int("".join(c for c in minor if c.isdigit()) or 0)


# memory.peak appeared in 5.19; writing it resets the writer's own view since 6.12.
PER_FD_PEAK_RESET = kernel() >= (6, 12)


@pytest.fixture
def v2cg():
    """Make v2 cgroups of a limit (removed afterwards, with whatever runs inside)."""
    made: list[cgm.MemoryCgroup] = []

    def make(limit: int, **files: str) -> cgm.MemoryCgroup:
        cg = cgm.create_limited(limit, f"swtest-v2-{os.getpid()}-{len(made)}-{time.monotonic_ns()}")
        assert cg.version == 2
        for name, value in files.items():
            (cg.info.dir / f"memory.{name}").write_text(value)
        made.append(cg)
        return cg

    yield make
    for cg in made:
        cgm.remove(cg)


GROW = """
    import sys, time
    step, until = int(sys.argv[1]), int(sys.argv[2])
    chunks = []
    for mib in range(step, until + 1, step):
        chunks.append(b"\\x01" * (step << 20))
        print("have", mib, time.monotonic_ns(), flush=True)
    print("survived", flush=True)
"""


def test_oom_kill_is_an_event_after_every_sample_before_it(tmp_path, endpoints) -> None:
    script = write_script(tmp_path, "grow.py", GROW)
    journal = tmp_path / "oom.journal"
    res = run_sample(
        endpoints,
        "--limit",
        "64M",
        "--journal",
        str(journal),
        "--",
        sys.executable,
        str(script),
        "4",
        "200",
        timeout=180,
    )
    assert res.returncode == 128 + 9, res.stderr
    assert "survived" not in res.stdout
    s = Stream.from_journal(journal)
    hello = s.topic(protocol.HELLO)[-1]
    assert hello["cgroup"]["version"] == 2 and hello["cgroup"]["limit"] == 64 * MiB
    ooms = s.events(protocol.EV_OOM_KILL)
    assert len(ooms) == 1 and ooms[0]["count"] == 1, s.events()
    oom = ooms[0]
    # The kill is told once, after every sample taken before it (stream order), and
    # those samples went up to the limit.
    idx = s.records.index((protocol.EVENT, oom))
    before = Stream(s.records[:idx])
    # (the kernel may force-charge a few pages past memory.max around the kill: 6.12 was
    # seen 132 KiB and 232 KiB over; the bound is the one tests/cgroups/test_cgroups_live.py allows)
    assert 56 * MiB <= max(before.series["cg_usage"]) <= 64 * MiB + 2 * MiB
    assert oom["last_bytes"] >= 56 * MiB
    # Within one tick: the event's time is no later than the first detail tick after
    # the last sample near the limit (the detail tier or the exit reaper saw it).
    near = [t for t, v in zip(before.times, before.series["cg_usage"]) if v >= 56 * MiB]
    details_after = [d["t"] for d in s.topic(protocol.DETAIL) if d["t"] >= near[-1]]
    assert details_after and oom["t"] <= details_after[0]
    # The last seconds at full rate: every tick of the last second before the kill is
    # a sample or a tick counted as missed (none thinned out).
    period = hello["period_ns"]
    window = (oom["t"] - 1_000_000_000, oom["t"])
    start = max(window[0], s.times[0])
    taken = sum(1 for t in s.times if start <= t <= window[1])
    # An overrun event bears the time its first late tick was seen, the ticks missed
    # mostly just before it: count the part of each stall inside the window (the kill
    # stalls an emulated guest, and that stall's event comes after the window's end).
    missed = 0
    for e in s.events(protocol.EV_OVERRUN):
        overlap = min(e["t"], window[1]) - max(e["t"] - e["missed"] * period, start)
        missed += max(0, min(e["missed"], overlap // period))
    # (overrun events fold a burst of misses into one: allow a few percent)
    assert taken + missed >= 0.9 * (window[1] - start) / period, (taken, missed)
    # memory.events said it too: limit hits (max), the OOM and the kill.
    mev = s.events(protocol.EV_MEMORY_EVENTS)
    assert sum(e.get("oom_kill", 0) for e in mev) == 1, mev
    assert sum(e.get("oom", 0) for e in mev) >= 1 and sum(e.get("max", 0) for e in mev) >= 1
    ex = s.events(protocol.EV_PROC_EXIT)[-1]
    assert ex["signal"] == 9 and ex["oom"] is True


STEPS = """
    import sys
    held = []
    for line in sys.stdin:
        held.append(b"\\x01" * (int(line) << 20))
        print("have", sum(map(len, held)) >> 20, flush=True)
"""


def test_memory_events_high_then_max_oom_and_kill(tmp_path, endpoints, v2cg) -> None:
    # Just past memory.high ("high": reclaimed, and throttled in proportion to the
    # square of the excess, so only a little past it), then past memory.max with
    # no swap ("max", "oom", "oom_kill").
    cg = v2cg(64 * MiB)
    script = write_script(tmp_path, "steps.py", STEPS)
    journal = tmp_path / "events.journal"
    p = spawn_sample(endpoints, "--cgroup", str(cg.info.dir), "--journal", str(journal), "--duration", "600s")
    child = cgm.spawn_in(cg, [sys.executable, str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert "journal" in p.stderr.readline()

        def step(mib: int) -> str:
            child.stdin.write(f"{mib}\n")
            child.stdin.flush()
            return child.stdout.readline()

        assert step(24).startswith("have")
        (cg.info.dir / "memory.high").write_text(str(cg.read_usage() - 256 * 1024))
        assert step(1).startswith("have")
        assert cg.read_oom()["high"] > 0
        (cg.info.dir / "memory.high").write_text("max")
        time.sleep(1.0)  # a detail tick or more between the two, as in real life
        for _ in range(12):
            if not step(4):
                break
        assert child.wait(scaled(60)) == -9
        # Until the sampler has told of the kill (the cgroup is removed afterwards).
        deadline = time.monotonic() + scaled(10)
        while time.monotonic() < deadline and not Stream.from_journal(journal).events(protocol.EV_OOM_KILL):
            time.sleep(0.1)
    finally:
        child.kill()
        child.wait()
        p.terminate()
        _, err = p.communicate(timeout=scaled(30))
    assert p.returncode == 0, err
    s = Stream.from_journal(journal)
    mev = s.events(protocol.EV_MEMORY_EVENTS)
    total = {k: sum(e.get(k, 0) for e in mev) for k in ("high", "max", "oom", "oom_kill")}
    assert total["high"] >= 1 and total["max"] >= 1 and total["oom"] >= 1 and total["oom_kill"] == 1, mev
    final = cg.read_oom()
    assert mev[-1]["totals"]["oom_kill"] == final["oom_kill"] == 1
    # Each event covers (t_from, t]; the counters only rise.
    assert all(e["t_from"] <= e["t"] for e in mev)
    first_high = next(e for e in mev if e.get("high"))
    first_kill = next(e for e in mev if e.get("oom_kill"))
    assert first_high["t"] <= first_kill["t"]
    assert len(s.events(protocol.EV_OOM_KILL)) == 1
    # high and max rise by many per second at a limit: summed, not one event per detail tick.
    details = s.topic(protocol.DETAIL)
    assert len(mev) < len(details) / 2


SPIKE = """
    import sys, time
    base = b"\\x01" * (20 << 20)
    print("held", time.monotonic_ns(), flush=True)
    for n in range(2):
        sys.stdin.readline()
        t0 = time.monotonic_ns()
        y = b"\\x01" * (60 << 20)
        del y
        print("spike", n, t0, time.monotonic_ns(), flush=True)
    sys.stdin.readline()
"""
PERIOD_NS = 1_000_000_000  # the longest --period: a 60 MiB spike lasts far less


def _two_spikes(
    tmp_path: Path, endpoints: dict[str, str], cg: cgm.MemoryCgroup
) -> tuple[Stream, list[tuple[int, int]]]:
    """Two 60 MiB spikes over a 20 MiB base, each freed at once, a few periods apart,
    sampled every second: the samples seldom see them. Returns the journal and
    each spike's (start, end)."""
    script = write_script(tmp_path, "spike.py", SPIKE)
    child = cgm.spawn_in(cg, [sys.executable, str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    journal = tmp_path / "spike.journal"
    p = None
    spans = []
    try:
        assert child.stdout.readline().startswith("held")
        p = spawn_sample(endpoints, "--cgroup", str(cg.info.dir), "--period", "1s", "--journal", str(journal))
        assert "journal" in p.stderr.readline()
        for _ in range(2):
            time.sleep(3 * PERIOD_NS / 1e9)
            child.stdin.write("go\n")
            child.stdin.flush()
            _, _, t0, t1 = child.stdout.readline().split()
            spans.append((int(t0), int(t1)))
        time.sleep(3 * PERIOD_NS / 1e9)
        p.terminate()
        p.communicate(timeout=scaled(60))
    finally:
        child.kill()
        child.wait()
        if p is not None and p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 0
    return Stream.from_journal(journal), spans


def test_spike_between_samples_found_through_memory_peak(tmp_path, endpoints, v2cg) -> None:
    cg = v2cg(512 * MiB)
    with cgm.MemoryCgroup(cg.info) as watcher:
        # 6.12+: our descriptor's peak can be restarted; 6.1: the file is read-only
        # (root may open it for writing, and the write fails with EIO).
        assert watcher.peak_resettable is PER_FD_PEAK_RESET
        if not PER_FD_PEAK_RESET:
            fd = os.open(cg.info.dir / "memory.peak", os.O_RDWR)
            try:
                with pytest.raises(OSError) as exc:
                    os.write(fd, b"0\n")
                assert exc.value.errno in (errno.EIO, errno.EINVAL, errno.EACCES)
            finally:
                os.close(fd)
    s, spans = _two_spikes(tmp_path, endpoints, cg)
    base = s.values("cg_usage", 0, spans[0][0])
    assert base and 20 * MiB <= max(base) < 40 * MiB
    top = max(base) + 50 * MiB
    spikes = [e for e in s.events(protocol.EV_HWM_SPIKE) if e["series"] == "cg_usage"]
    details = s.topic(protocol.DETAIL)

    def found(t0: int, t1: int) -> bool:
        """No peak lost: a sample inside the spike saw it, or the kernel's peak did."""
        seen = s.values("cg_usage", t0, t1)
        return (bool(seen) and max(seen) >= top) or any(
            e["bytes"] >= top and e["t_from"] <= t1 and e["t_to"] >= t0 for e in spikes
        )

    assert found(*spans[0]), (spans, spikes)
    if PER_FD_PEAK_RESET:
        # Every interval has its own peak (cg_peak): the interval of each spike shows
        # it, the others the base; the second spike, no higher than the first, is found too.
        for t0, t1 in spans:
            covering = [d for d in details if d["t"] >= t1][:1]
            assert covering and covering[0]["cg_peak"] >= top, (t0, t1, covering)
            assert found(t0, t1)
        assert min(d["cg_peak"] for d in details[1:]) < max(base) + 20 * MiB
    else:
        # The stated fallback: the peak since the cgroup was made tells only of a new
        # maximum; a second spike no higher than the first shows as no rise at all.
        assert all("cg_peak" not in d for d in details)
        # Each hwm_spike there is a new all-time maximum: a second spike shows only
        # if it went higher than the first (by a page or more), never when lower.
        sizes = [e["bytes"] for e in spikes]
        assert sizes == sorted(set(sizes)), spikes
    # Nobody else's view changed: a fresh reader still gets the all-time peak.
    assert int((cg.info.dir / "memory.peak").read_text()) >= top


def test_working_set_is_usage_minus_inactive_file(tmp_path, endpoints, v2cg) -> None:
    cg = v2cg(512 * MiB)
    f = tmp_path / "cache.bin"
    hold = write_script(
        tmp_path,
        "hold.py",
        """
        import time
        x = b"\\x01" * (24 << 20)
        print("held", flush=True)
        time.sleep(60)
    """,
    )
    child = cgm.spawn_in(cg, [sys.executable, str(hold)], stdout=subprocess.PIPE, text=True)
    journal = tmp_path / "ws.journal"
    try:
        assert child.stdout.readline().strip() == "held"
        # Page cache charged to the cgroup, then left alone: inactive file pages.
        w = cgm.spawn_in(cg, ["dd", "if=/dev/zero", f"of={f}", "bs=1M", "count=32", "status=none"])
        assert w.wait(60) == 0
        res = run_sample(endpoints, "--cgroup", str(cg.info.dir), "--duration", "1s", "--journal", str(journal))
        assert res.returncode == 0, res.stderr
    finally:
        child.kill()
        child.wait()
    d = Stream.from_journal(journal).topic(protocol.DETAIL)[-1]
    assert d["cg_file"] >= 24 * MiB, d
    # The kubelet's working set: what eviction and `kubectl top` go by.
    assert d["cg_working_set"] == d["cg_usage"] - d["cg_inactive_file"]
    assert d["cg_anon"] >= 20 * MiB and d["rss_anon"] >= 20 * MiB  # beside the processes' RSS
    stat = cg.read_stat()
    if stat.get("shmem", 0) >= 24 * MiB:
        # The file lives on tmpfs (the guest's writable /tmp is an overlay on tmpfs): its
        # pages are shmem, kept on the anonymous LRU, never inactive_file; the working set
        # counts them, as the kubelet does.
        assert d["cg_working_set"] >= d["cg_anon"] + 24 * MiB
    elif _multigen_lru():
        # The multi-generation LRU (on by default in Debian's 6.12) counts fresh pages
        # as active: nothing inactive yet, so the working set is all of usage.
        assert d["cg_working_set"] <= d["cg_usage"]
    else:
        assert d["cg_inactive_file"] >= 8 * MiB and d["cg_working_set"] < d["cg_usage"] - 8 * MiB


def _multigen_lru() -> bool:
    try:
        return int(Path("/sys/kernel/mm/lru_gen/enabled").read_text(), 16) != 0
    except (OSError, ValueError):
        return False


def test_limit_creates_and_removes_its_own_cgroup(tmp_path, endpoints) -> None:
    journal = tmp_path / "limit.journal"
    parent = cgm.cgroup_of_pid(os.getpid())
    assert parent is not None
    res = run_sample(
        endpoints,
        "--limit",
        "48M",
        "--journal",
        str(journal),
        "--",
        "sh",
        "-c",
        "cat /proc/self/cgroup; cat /sys/fs/cgroup$(cut -d: -f3 /proc/self/cgroup)/memory.max",
    )
    assert res.returncode == 0, res.stderr
    lines = res.stdout.split()
    inside = lines[0].removeprefix("0::")
    assert lines[0].startswith("0::/") and Path(inside).name.startswith("spikewatch-")
    assert lines[1] == str(48 * MiB)
    hello = Stream.from_journal(journal).topic(protocol.HELLO)[-1]["cgroup"]
    assert hello == {
        **hello,
        "version": 2,
        "path": inside,
        "owned": True,
        "limit": 48 * MiB,
        "limit_own": 48 * MiB,
        "limit_kind": "max",
    }
    assert not Path("/sys/fs/cgroup" + inside).exists()  # removed at exit


def test_limit_from_a_cgroup_of_its_own_moves_into_a_leaf(tmp_path, endpoints) -> None:
    # As under systemd-run --scope -p Delegate=yes: the sampler alone in a cgroup
    # without +memory below it. cgroup v2 lets only leaves hold processes, so it moves
    # itself into spikewatch-PID-self and enables +memory for its limited sibling.
    home = Path(f"/sys/fs/cgroup/swtest-home-{os.getpid()}")
    home.mkdir()
    try:
        script = 'echo $$ > "$1/cgroup.procs" && shift && exec "$@"'
        argv = [
            *["sh", "-c", script, "join", str(home)],
            *sample_cmd(endpoints),
            "--journal",
            str(tmp_path / "j"),
            "--limit",
            "32M",
            "--",
            "cat",
            "/proc/self/cgroup",
        ]
        res = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, res.stderr
        inside = res.stdout.strip().removeprefix("0::")
        assert inside.startswith(f"/{home.name}/spikewatch-") and not inside.endswith("-self")
        assert "memory" in (home / "cgroup.subtree_control").read_text().split()
        left = sorted(p.name for p in home.iterdir() if p.is_dir())
        assert len(left) == 1 and left[0].endswith("-self"), left  # the limited one is gone
        # The leaf it moved into is empty now: the next sampler there sweeps it away.
        assert (home / left[0] / "cgroup.procs").read_text() == ""
        swept = cgm.sweep_stale(home)
        assert [p.name for p in swept] == left
    finally:
        for d in sorted(home.glob("*"), reverse=True):
            if d.is_dir():
                d.rmdir()
        home.rmdir()


def test_nested_cgroup_without_memory_says_how_to_enable_it(v2cg) -> None:
    cg = v2cg(64 * MiB)
    inner = cg.info.dir / "no-memory"
    inner.mkdir()  # the parent has no +memory in cgroup.subtree_control
    with pytest.raises(cgm.CgroupError) as exc:
        cgm.resolve(str(inner))
    msg = str(exc.value)
    assert "cgroup.subtree_control" in msg and f"echo +memory > {cg.info.dir}/cgroup.subtree_control" in msg
    (cg.info.dir / "cgroup.subtree_control").write_text("+memory")
    assert cgm.resolve(str(inner)).dir == inner


def test_the_root_cgroup_is_sampled_from_its_stat(tmp_path, endpoints) -> None:
    # The v2 root has no memory.current (nor max, peak, events): the whole machine is
    # sampled instead of being refused as "no memory cgroup".
    info = cgm.resolve("/")
    assert info.path == "/" and info.version == 2
    journal = tmp_path / "root.journal"
    res = run_sample(endpoints, "--cgroup", "/", "--duration", "0.6s", "--journal", str(journal))
    assert res.returncode == 0, res.stderr
    s = Stream.from_journal(journal)
    hello = s.topic(protocol.HELLO)[-1]
    assert hello["cgroup"]["path"] == "/" and hello["cgroup"]["limit"] is None
    usage = s.series["cg_usage"]
    assert min(usage) > 16 * MiB  # at least this interpreter and the sampler
    d = s.topic(protocol.DETAIL)[-1]
    assert d["cg_limit"] is None and d["cg_anon"] > 0
