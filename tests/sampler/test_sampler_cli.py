"""Command-line errors, import hygiene, the inlet and journal failures."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time

import pytest
import zmq
from spikewatch.sampler.wire import protocol
from spikewatch.sampler.wire.client import InletClient, StreamSubscriber

from tests.support.privileges import AS_NOBODY, why_nobody_cannot_run
from tests.support.sampler import Stream, collect_until_final, run_sample, sample_cmd, spawn_sample


def _gone_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


@pytest.mark.parametrize(
    "args, message",
    [
        (["--pid", "GONE"], r"no process \d+"),
        (["--cgroup", "/no/such/cgroup/here"], r"no memory cgroup at"),
        (["--period", "10us", "--pid", "1"], r"outside 100us"),
        (["--period", "fast", "--pid", "1"], r"not a duration"),
        (["--batch-period", "2s", "--pid", "1"], r"--batch-period.*over 1s"),
        (["--limit", "64M", "--pid", "1"], r"--limit applies to a launched command"),
        (["--limit", "lots", "--", "true"], r"not a size"),
        (["--match", "(unclosed"], r"not a regular expression"),
        (["--", "no-such-command-swtest"], r"command not found"),
        (["--unit", "no-such-unit-swtest.service"], r"systemd|systemctl"),
        ([], r"say what to sample"),
    ],
)
def test_cli_errors_are_clear(endpoints, tmp_path, args, message):
    args = [str(_gone_pid()) if a == "GONE" else a for a in args]
    res = run_sample(endpoints, "--journal", str(tmp_path / "j"), *args, timeout=30)
    assert res.returncode != 0
    assert "Traceback" not in res.stderr
    assert re.search(message, res.stderr), res.stderr


def test_endpoint_in_use(endpoints, sleeper):
    ctx = zmq.Context.instance()
    blocker = ctx.socket(zmq.PUB)
    blocker.bind(endpoints["publish"])
    try:
        res = run_sample(endpoints, "--pid", str(sleeper.pid), "--duration", "1s", timeout=30)
    finally:
        blocker.close(0)
    assert res.returncode != 0 and "Traceback" not in res.stderr
    assert "already in use" in res.stderr and "--publish" in res.stderr


def test_sample_imports_no_heavy_modules(endpoints, sleeper):
    cmd = sample_cmd(endpoints, "--pid", str(sleeper.pid), "--duration", "0.3s")
    res = subprocess.run([cmd[0], "-X", "importtime", *cmd[1:]], capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr[-2000:]
    names = {line.split("|")[-1].strip() for line in res.stderr.splitlines() if line.startswith("import time:")}
    top = {n.split(".")[0] for n in names}
    assert "spikewatch.sampler.daemon" in names and "zmq" in top
    assert not top & {"aiohttp", "numpy", "textual", "rich", "plotly", "uvloop", "pyarrow"}
    assert not {n for n in names if n.startswith(("spikewatch.analysis", "spikewatch.driver"))}


def test_inlet_stamps_markers_and_drops_garbage(endpoints, sleeper, tmp_path):
    journal = tmp_path / "inlet.journal"
    sub = StreamSubscriber([endpoints["publish"]])
    p = spawn_sample(endpoints, "--pid", str(sleeper.pid), "--duration", "2.5s", "--journal", str(journal))
    try:
        assert sub.recv(timeout_ms=10_000) is not None  # the sampler is up
        push = zmq.Context.instance().socket(zmq.PUSH)
        push.setsockopt(zmq.LINGER, 1000)
        push.connect(endpoints["inlet"])
        bad = [
            [b"marker", b"\xc1"],  # not msgpack
            [b"marker"],  # one frame
            [b"bogus", protocol.pack({"kind": "note", "name": "x"})],  # wrong topic
            [b"marker", protocol.pack({"kind": "nope", "name": "x"})],  # wrong kind
            [b"marker", protocol.pack({"kind": "note", "name": "x" * 70_000})],  # oversize
            [b"load", protocol.pack({"rate": 3})],  # no interval_ns
        ]
        for frames in bad:
            push.send_multipart(frames)
        push.close()
        time.sleep(0.2)
        t_before = time.monotonic_ns()
        with InletClient(endpoints["inlet"], linger_ms=1000) as client:
            client.note("cache warmed", {"k": 1})
            client.load({"interval_ns": 1_000_000_000, "rate": 12.5, "in_flight": 3})
        t_after = time.monotonic_ns()
        msgs = collect_until_final(sub)
        p.wait(timeout=20)
    finally:
        p.kill()
        sub.close()
    assert p.returncode == 0
    markers = [b for t, b in msgs if t == protocol.MARKER]
    assert len(markers) == 1
    m = markers[0]
    assert m["name"] == "cache warmed" and m["attrs"] == {"k": 1} and m["kind"] == "note"
    assert t_before <= m["t"] <= t_after + 50_000_000  # stamped on receipt with the sampler clock
    loads = [b for t, b in msgs if t == protocol.LOAD]
    assert loads and loads[0]["rate"] == 12.5
    final = msgs[-1][1]
    assert final["final"] and final["counters"]["inlet_bad"] >= 5 and final["counters"]["inlet_ok"] == 2
    # Sampling went on after the garbage; the journal has the marker too.
    s = Stream.from_journal(journal)
    assert s.times[-1] > m["t"] + 1_000_000_000
    assert [b["name"] for b in s.topic(protocol.MARKER)] == ["cache warmed"]


def test_journal_write_error_is_reported_once(endpoints, sleeper):
    """In-process: a listener sees every published message from the first one."""
    from spikewatch.sampler.daemon import Sampler, SamplerConfig, Target

    logged: list[str] = []
    config = SamplerConfig(
        Target(pid=sleeper.pid),
        publish=endpoints["publish"],
        inlet=endpoints["inlet"],
        journal="/dev/full",
        duration_ns=1_500_000_000,
        log=logged.append,
    )
    sampler = Sampler(config)
    msgs: list[tuple[str, dict]] = []
    sampler.listeners.append(lambda topic, body, packed: msgs.append((topic, body)))
    status = sampler.run()  # not the main thread's signal handlers: fine from a test too
    assert status == 0
    errs = [b for t, b in msgs if t == protocol.EVENT and b["kind"] == protocol.EV_JOURNAL_ERROR]
    assert len(errs) == 1 and "space" in errs[0]["error"].lower() and errs[0]["path"] == "/dev/full"
    s = Stream(msgs)
    assert s.times and s.times[-1] > errs[0]["t"] + 500_000_000  # sampling went on
    final = msgs[-1][1]
    assert msgs[-1][0] == protocol.HELLO and final["final"] and final["counters"]["journal_errors"] >= 1
    assert any("journal" in line and "space" in line.lower() for line in logged)
    assert any("samples in" in line for line in logged)


def test_in_process_listener_errors_do_not_stop_sampling(endpoints, sleeper, capfd):
    from spikewatch.sampler.daemon import Sampler, SamplerConfig, Target

    config = SamplerConfig(
        Target(pid=sleeper.pid),
        publish=endpoints["publish"],
        inlet=None,
        journal="",
        duration_ns=600_000_000,
        quiet=True,
    )
    sampler = Sampler(config)
    seen: list[str] = []

    def bad(topic, body, packed):
        seen.append(topic)
        raise RuntimeError("listener bug")

    sampler.listeners.append(bad)
    assert sampler.run() == 0
    assert sampler.samples >= 300 and seen.count(protocol.SAMPLES) >= 4  # a batch every 100 ms
    assert seen[-1] == protocol.HELLO  # called to the end, final hello included
    assert "listener bug" in capfd.readouterr().err


def test_ipc_endpoints(tmp_path, sleeper):
    pub, inlet = f"ipc://{tmp_path}/pub.sock", f"ipc://{tmp_path}/inlet.sock"
    sub = StreamSubscriber([pub])
    p = spawn_sample({"publish": pub, "inlet": inlet}, "--no-journal", "--pid", str(sleeper.pid), "--duration", "1.5s")
    try:
        assert sub.recv(timeout_ms=10_000) is not None
        with InletClient(inlet, linger_ms=1000) as client:
            client.note("over ipc")
        msgs = collect_until_final(sub)
        p.wait(timeout=20)
    finally:
        p.kill()
        sub.close()
    assert p.returncode == 0
    assert [b["name"] for t, b in msgs if t == protocol.MARKER] == ["over ipc"]
    assert msgs[-1][1]["final"] and not list(tmp_path.glob("*.sock"))  # socket files removed


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv to drop to nobody"
)
@pytest.mark.parametrize(
    "args, message",
    [
        (["--limit", "64M", "--no-journal", "--", "true"], r"no permission to create a memory cgroup .* run as root"),
        (
            ["--pid", "1", "--journal", "/proc/1/nope.journal", "--duration", "0.2s"],
            r"cannot open the journal .*--journal FILE",
        ),
    ],
)
def test_permission_errors_say_what_to_do(endpoints, args, message):
    if (why := why_nobody_cannot_run()) is not None:
        pytest.skip(why)
    cmd = [*AS_NOBODY, *sample_cmd(endpoints, *args)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd="/")
    assert res.returncode != 0 and "Traceback" not in res.stderr
    assert re.search(message, res.stderr), res.stderr


def test_inlet_flood_is_capped_and_counted(endpoints, sleeper, tmp_path):
    journal = tmp_path / "flood.journal"
    p = spawn_sample(endpoints, "--pid", str(sleeper.pid), "--duration", "2.5s", "--journal", str(journal))
    try:
        assert "journal" in p.stderr.readline()
        with InletClient(endpoints["inlet"], linger_ms=3000, hwm=20_000) as client:
            for i in range(6000):
                client.note(f"n{i}")
        p.wait(timeout=30)
    finally:
        p.kill()
    assert p.returncode == 0
    s = Stream.from_journal(journal)
    c = s.topic(protocol.HELLO)[-1]["counters"]
    assert c["inlet_ok"] + c["inlet_bad"] == 6000  # every message accounted for
    assert c["inlet_bad"] > 0 and c["inlet_ok"] <= 3 * 2000
    assert len(s.topic(protocol.MARKER)) == c["inlet_ok"]
    assert s.times[-1] - s.times[0] > 2_000_000_000  # sampling went on to the end
