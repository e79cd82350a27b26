"""CURVE on the sampler's endpoints, with real sockets: who gets the stream, whose markers count."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import zmq
from spikewatch.sampler.backfill import BackfillError, fetch_history
from spikewatch.sampler.wire import protocol
from spikewatch.sampler.wire.client import InletClient, StreamSubscriber
from spikewatch.sampler.wire.recording import iter_records
from spikewatch.sampler.wire.security import client_options, create_keys, is_loopback


def spikewatch(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "spikewatch", *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    d = tmp_path_factory.mktemp("keys")
    res = spikewatch("keys", str(d))
    assert res.returncode == 0, res.stderr
    # A second, *unauthorized* client: right server key, own pair, not in authorized_clients.
    rogue = tmp_path_factory.mktemp("rogue")
    create_keys(rogue, "rogue")
    (rogue / "server.key").write_bytes((d / "server.key").read_bytes())
    return d, rogue


def test_keys_command_layout_and_modes(keys):
    d, _ = keys
    assert {p.name for p in d.iterdir()} >= {
        "server.key",
        "server.key_secret",
        "client.key",
        "client.key_secret",
        "authorized_clients",
    }
    assert [p.name for p in (d / "authorized_clients").iterdir()] == ["client.key"]
    assert (d / "server.key_secret").stat().st_mode & 0o077 == 0
    assert (d / "client.key_secret").stat().st_mode & 0o077 == 0
    res = spikewatch("keys", str(d), "--name", "ci")  # adds a client, keeps the server pair
    assert res.returncode == 0 and (d / "authorized_clients" / "ci.key").exists()
    res = spikewatch("keys", str(d), "--name", "ci")
    assert res.returncode != 0 and "exists already" in res.stderr and "Traceback" not in res.stderr
    (d / "authorized_clients" / "ci.key").unlink()
    (d / "ci.key").unlink()
    (d / "ci.key_secret").unlink()


@pytest.mark.parametrize(
    "ep, loop",
    [
        ("tcp://127.0.0.1:1", True),
        ("tcp://127.3.4.5:1", True),
        ("tcp://localhost:1", True),
        ("tcp://[::1]:1", True),
        ("ipc:///run/x.sock", True),
        ("inproc://x", True),
        ("tcp://0.0.0.0:1", False),
        ("tcp://*:1", False),
        ("tcp://10.1.2.3:1", False),
        ("tcp://eth0:1", False),
        ("tcp://[::]:1", False),
    ],
)
def test_is_loopback(ep, loop):
    assert is_loopback(ep) is loop


@pytest.mark.parametrize("flag", ["--publish", "--inlet", "--history"])
def test_non_loopback_bind_without_keys_is_refused(endpoints, flag):
    """Nothing is launched or bound: the check comes first (and we never serve on 0.0.0.0 here)."""
    args = [
        "sample",
        "--publish",
        endpoints["publish"],
        "--inlet",
        endpoints["inlet"],
        "--no-journal",
        "--duration",
        "1s",
        "--pid",
        "1",
    ]
    args += [flag, "tcp://0.0.0.0:1"]  # port 1: even a bug could not serve anything there
    res = spikewatch(*args)
    assert res.returncode != 0 and "Traceback" not in res.stderr
    assert "tcp://0.0.0.0:1" in res.stderr and "spikewatch keys DIR" in res.stderr, res.stderr


def test_require_keys_without_keys_and_missing_folder(endpoints, tmp_path):
    res = spikewatch("sample", "--publish", endpoints["publish"], "--require-keys", "--pid", "1", "--no-journal")
    assert res.returncode != 0 and "spikewatch keys DIR" in res.stderr
    res = spikewatch(
        "sample", "--publish", endpoints["publish"], "--keys", str(tmp_path / "none"), "--pid", "1", "--no-journal"
    )
    assert res.returncode != 0 and "no keys folder" in res.stderr and "Traceback" not in res.stderr
    res = spikewatch("mark", "hi", "--inlet", endpoints["inlet"], "--keys", str(tmp_path / "none"))
    assert res.returncode != 0 and "no keys folder" in res.stderr and "Traceback" not in res.stderr


def _collect(sub: StreamSubscriber, seconds: float) -> list[tuple[str, dict]]:
    out, end = [], time.monotonic() + seconds
    while time.monotonic() < end:
        m = sub.recv(timeout_ms=100)
        if m is not None:
            out.append(m)
    return out


def test_curve_stream_inlet_and_history(endpoints, keys, tmp_path):
    d, rogue = keys
    journal = tmp_path / "curve.journal"
    ctx = zmq.Context()
    good = client_options(d)
    bad = client_options(rogue)
    # Subscribers first, so each would see everything from the start.
    plain = StreamSubscriber([endpoints["publish"]], context=ctx)
    wrong = StreamSubscriber([endpoints["publish"]], context=ctx, socket_options=bad)
    ok = StreamSubscriber([endpoints["publish"]], context=ctx, socket_options=good)
    sleeper = subprocess.Popen(["sleep", "60"])
    p = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "spikewatch",
            "sample",
            "--keys",
            str(d),
            "--require-keys",
            "--publish",
            endpoints["publish"],
            "--inlet",
            endpoints["inlet"],
            "--history",
            endpoints["history"],
            "--journal",
            str(journal),
            "--pid",
            str(sleeper.pid),
            "--duration",
            "6s",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        first = ok.recv(timeout_ms=15_000)
        assert first is not None, "an authorized subscriber gets the stream"
        with (
            InletClient(endpoints["inlet"], context=ctx, linger_ms=2000) as plain_in,
            InletClient(endpoints["inlet"], context=ctx, linger_ms=2000, socket_options=bad) as rogue_in,
            InletClient(endpoints["inlet"], context=ctx, linger_ms=2000, socket_options=good) as good_in,
        ):
            for _ in range(3):
                plain_in.note("plain intruder")
                rogue_in.note("rogue intruder")
            good_in.note("authorized note")
            time.sleep(1.0)
        meta, hist = fetch_history(endpoints["history"], context=ctx, socket_options=good)
        assert hist and meta["session"] and {t for t, _ in hist} >= {protocol.HELLO, protocol.SAMPLES}
        with pytest.raises(BackfillError):
            fetch_history(endpoints["history"], context=ctx, timeout_ms=1500)
        with pytest.raises(BackfillError):
            fetch_history(endpoints["history"], context=ctx, timeout_ms=1500, socket_options=bad)
        got_ok = _collect(ok, 1.0)
        assert _collect(plain, 0.5) == [] and _collect(wrong, 0.5) == []
        p.wait(timeout=30)
    finally:
        p.kill()
        sleeper.kill()
        sleeper.wait()
        for s in (plain, wrong, ok):
            s.close()
        ctx.term()
    assert p.returncode == 0, p.stderr.read()
    assert got_ok
    recs = list(iter_records(journal))
    markers = [b["name"] for t, b in recs if t == protocol.MARKER]
    assert markers == ["authorized note"]  # intruders' markers never reached the stream
    counters = [b for t, b in recs if t == protocol.HELLO][-1]["counters"]
    assert counters["inlet_ok"] == 1 and counters["samples"] > 1000


def test_mark_and_drive_with_keys(endpoints, keys, tmp_path):
    """The command-line senders: `mark --keys` and `drive --keys` reach a CURVE inlet."""
    d, _ = keys
    scenario = tmp_path / "idle.toml"
    scenario.write_text(
        '[target]\nurl = "http://127.0.0.1:9"\n\n[[requests]]\nname = "x"\npath = "/"\n\n'
        '[[phases]]\nname = "quiet"\nkind = "idle"\nduration = "0.5s"\n'
    )
    journal = tmp_path / "senders.journal"
    sleeper = subprocess.Popen(["sleep", "60"])
    p = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "spikewatch",
            "sample",
            "--keys",
            str(d),
            "--publish",
            endpoints["publish"],
            "--inlet",
            endpoints["inlet"],
            "--journal",
            str(journal),
            "--pid",
            str(sleeper.pid),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert "journal" in p.stderr.readline()
        res = spikewatch("mark", "with keys", "--inlet", endpoints["inlet"], "--keys", str(d))
        assert res.returncode == 0, res.stderr
        res = spikewatch("mark", "without keys", "--inlet", endpoints["inlet"])
        # the handshake says the sampler refused us (spikewatch.sampler.wire.handshake): exit 3, nothing sent
        assert res.returncode == 3 and "requires CURVE keys: pass --keys DIR" in res.stderr, res.stderr
        res = spikewatch("drive", str(scenario), "--inlet", endpoints["inlet"], "--keys", str(d), "-q")
        assert res.returncode == 0, res.stderr
        time.sleep(1.0)
        p.terminate()
        p.wait(timeout=30)
    finally:
        p.kill()
        sleeper.kill()
        sleeper.wait()
    markers = [(b["kind"], b["name"]) for t, b in iter_records(journal) if t == protocol.MARKER]
    assert (
        ("note", "with keys") in markers and ("phase_start", "quiet") in markers and ("phase_end", "quiet") in markers
    )
    assert ("note", "without keys") not in markers


def test_run_with_keys_end_to_end(keys, tmp_path):
    """`spikewatch run --keys`: the sampler binds with CURVE, the driver's markers and
    the console's stream go through it, the report is written."""
    from spikewatch.driver import bundled

    d, _ = keys
    out = tmp_path / "run"
    res = spikewatch(
        "run",
        str(bundled("quick")),
        "--keys",
        str(d),
        "--no-console",
        "--out",
        str(out),
        "--",
        sys.executable,
        "-m",
        "spikewatch.driver.demo_service",
        "--port",
        "{port}",
        timeout=120,
    )
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    recs = list(iter_records(out / "recording"))
    phases = [b["name"] for t, b in recs if t == protocol.MARKER and b["kind"] == protocol.PHASE_START]
    assert len(phases) >= 3 and any(t == protocol.LOAD for t, _ in recs)
    assert (out / "report.json").exists()
    res = spikewatch(
        "run",
        str(bundled("quick")),
        "--keys",
        str(tmp_path / "none"),
        "--no-console",
        "--",
        sys.executable,
        "-m",
        "spikewatch.driver.demo_service",
        "--port",
        "{port}",
    )
    assert res.returncode != 0 and "no keys folder" in res.stderr and "Traceback" not in res.stderr


def test_keys_from_the_units_environment(endpoints, keys, tmp_path):
    """The systemd units set SPIKEWATCH_KEYS_DIR: an existing folder turns CURVE on; a
    folder that was never made leaves a loopback-only sampler running; a non-loopback
    bind still needs real keys."""
    import os

    d, _ = keys
    base = ["sample", "--publish", endpoints["publish"], "--inlet", endpoints["inlet"], "--no-journal", "--pid", "1"]

    def sample_env(keys_dir, *extra, seconds="1.5s"):
        env = {**os.environ, "SPIKEWATCH_KEYS_DIR": str(keys_dir)}
        return subprocess.Popen(
            [sys.executable, "-m", "spikewatch", *base, "--duration", seconds, *extra],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    ctx = zmq.Context()
    try:
        (tmp_path / "empty").mkdir()  # the install steps make the folder before any keys
        for keys_dir, opts, expect in (
            (d, {}, False),
            (d, client_options(d), True),
            (tmp_path / "never-made", {}, True),
            (tmp_path / "empty", {}, True),
        ):
            sub = StreamSubscriber([endpoints["publish"]], context=ctx, socket_options=opts)
            p = sample_env(keys_dir)
            # Anything over the sampler's whole run (not within 2.5 s of the spawn, which a
            # busy host can spend starting Python before the 1.5 s run even begins).
            got, deadline = False, time.monotonic() + 30
            while not got and time.monotonic() < deadline:
                ended = p.poll() is not None
                got = sub.recv(timeout_ms=500 if ended else 100) is not None
                if ended:
                    break
            p.wait(timeout=30)
            sub.close()
            assert p.returncode == 0, p.stderr.read()
            assert got is expect, (keys_dir, bool(opts))
        p = sample_env(tmp_path / "never-made", "--inlet", "tcp://0.0.0.0:1")
        p.wait(timeout=30)
        assert p.returncode != 0 and "spikewatch keys DIR" in p.stderr.read()
    finally:
        ctx.term()
