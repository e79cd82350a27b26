"""The no-TTY fallback and the command line."""

from __future__ import annotations

import io
import re
import subprocess
import threading
import time

import pytest
from spikewatch.analysis.console.options import ConsoleOptions
from spikewatch.analysis.console.plain import PlainConsole
from spikewatch.sampler.wire import protocol

from tests.conftest import free_port

from .publisher import Publisher

MiB = 1 << 20
pytestmark = pytest.mark.timeout(60)


def test_plain_prints_status_lines_and_events() -> None:
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    out = io.StringIO()
    with Publisher(endpoint, baseline=100 * MiB) as pub:
        printer = PlainConsole([endpoint], ConsoleOptions(), out=out, interval=0.5)
        thread = threading.Thread(target=printer.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 15
        while not re.search(r"\| \d+ Hz, overruns 0", out.getvalue()):  # two hellos seen
            assert time.monotonic() < deadline, out.getvalue()
            time.sleep(0.1)
        pub.spike(150 * MiB, 3_000_000)
        pub.marker(protocol.PHASE_START, "soak")
        pub.event(protocol.EV_OOM_KILL, pid=99, count=1, last_bytes=256 * MiB)
        while "OOM KILLS 1" not in out.getvalue():
            assert time.monotonic() < deadline, out.getvalue()
            time.sleep(0.1)
        printer.stop()
        thread.join(5)
    assert not thread.is_alive()
    text = out.getvalue()
    assert "!! OOM KILL pid 99" in text and "▶ phase soak" in text
    last = [line for line in text.splitlines() if "peak" in line][-1]
    # auto: under a limit the report headline's series, the cgroup's usage
    assert "cg_usage 100.0 MiB peak 150.0 MiB limit 256.0 MiB (41% headroom)" in last
    assert "phase soak" in last and "gaps 0" in last


def test_cli_without_a_tty_falls_back_to_plain_and_stops_after_duration(spikewatch_cmd) -> None:
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    with Publisher(endpoint, limit=None):
        proc = subprocess.run(
            [*spikewatch_cmd, "console", endpoint, "--duration", "4s", "--limit", "1G"],
            capture_output=True,
            text=True,
            timeout=30,
            stdin=subprocess.DEVNULL,
        )
    assert proc.returncode == 0, proc.stderr
    assert "limit 1.0 GiB" in proc.stdout and "rss 100.0 MiB" in proc.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["localhost:7781"], "is not a ZeroMQ endpoint"),
        (["--inlet", "nope", "tcp://127.0.0.1:1"], "is not a ZeroMQ endpoint"),
        (["--window", "soon"], "not a duration"),
        (["--limit", "lots"], "not a size"),
        (["tcp://127.0.0.1:port"], "is not a number from 1 to 65535"),
        (["--keys", "/nonexistent/keys", "tcp://127.0.0.1:1"], "no keys folder"),
        (
            ["--history", "tcp://127.0.0.1:1", "--history", "tcp://127.0.0.1:2", "tcp://127.0.0.1:3"],
            "2 history endpoints for 1",
        ),
    ],
)
def test_cli_bad_input_is_a_clear_error(spikewatch_cmd, args: list[str], message: str) -> None:
    proc = subprocess.run([*spikewatch_cmd, "console", *args], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr


def test_events_before_the_first_hello_wait_for_its_clock_anchor() -> None:
    """A marker that beats the first hello is printed once the hello dates it, never as --:--:--."""
    import zmq

    endpoint = f"tcp://127.0.0.1:{free_port()}"
    # XPUB: a PUB that also hears subscriptions, so the marker goes out once the console listens.
    sock = zmq.Context.instance().socket(zmq.XPUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.bind(endpoint)
    out = io.StringIO()
    printer = PlainConsole([endpoint], ConsoleOptions(), out=out, interval=0.2)
    thread = threading.Thread(target=printer.run, daemon=True)
    thread.start()
    try:
        assert sock.poll(15_000), "the console never subscribed"
        assert sock.recv()[:1] == b"\x01"  # its subscription: what we publish now reaches it
        t = time.monotonic_ns()
        marker = protocol.header(0, t) | protocol.marker_message(protocol.PHASE_START, "boot")
        sock.send_multipart(protocol.encode(protocol.MARKER, marker))
        time.sleep(0.6)  # a few status intervals pass without a hello
        assert "▶ phase boot" not in out.getvalue()  # the event line waits
        hello = protocol.header(1, t) | {
            "session": "s" * 32,
            "host": "h",
            "wall_ns": time.time_ns(),
            "period_ns": 1_000_000,
            "series": ["rss"],
            "counters": {},
        }
        sock.send_multipart(protocol.encode(protocol.HELLO, hello))
        deadline = time.monotonic() + 10
        while "▶ phase boot" not in out.getvalue():
            assert time.monotonic() < deadline, out.getvalue()
            time.sleep(0.1)
    finally:
        printer.stop()
        thread.join(5)
        sock.close()
    line = next(line for line in out.getvalue().splitlines() if "▶ phase boot" in line)
    assert re.match(r"\d\d:\d\d:\d\d\.\d{3} ", line), line
    assert "--:--:--" not in out.getvalue()
