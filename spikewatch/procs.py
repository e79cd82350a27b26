"""Child processes of ``spikewatch run``: started so they never outlive us, stopped with escalation.

Each child gets its own process group, so a Ctrl-C in the terminal reaches only
``spikewatch run``, which then stops the driver and the sampler in the right
order (phase markers first, then the service). ``PR_SET_PDEATHSIG`` makes the
kernel send SIGTERM to a child if we die without cleaning up (even SIGKILL):
the sampler then stops its service and removes its cgroup itself.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

_PR_SET_PDEATHSIG = 1


def free_ports(n: int, host: str = "127.0.0.1", avoid: tuple[int, ...] = ()) -> list[int]:
    """``n`` different TCP ports nobody listens on right now (the kernel's picks, all
    bound at once so they cannot repeat)."""
    socks: list[socket.socket] = []
    try:
        while len(socks) < n:
            s = socket.socket()
            s.bind((host, 0))
            if s.getsockname()[1] in avoid:
                s.close()
                continue
            socks.append(s)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def _die_with_parent() -> None:
    # Runs in the forked child before exec; we spawn from the main thread, before
    # any other thread exists, so this is safe despite preexec_fn's caveats.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def spawn(argv: Sequence[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start ``argv`` in its own process group with stdout+stderr going to ``log``."""
    with open(log, "ab") as out:
        return subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            process_group=0,
            preexec_fn=_die_with_parent,
        )


def send(proc: subprocess.Popen[bytes], sig: int) -> None:
    if proc.poll() is None:
        try:
            os.kill(proc.pid, sig)
        except ProcessLookupError:
            pass


def stop(proc: subprocess.Popen[bytes], sig: int, steps: Sequence[float]) -> int:
    """Send ``sig``, wait ``steps[0]`` s; send it again, wait ``steps[1]`` s; … then SIGKILL.

    Returns the exit status (negative for a signal, as subprocess does)."""
    for wait in steps:
        if proc.poll() is not None:
            break
        send(proc, sig)
        try:
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            continue
    if proc.poll() is None:
        send(proc, signal.SIGKILL)
        proc.wait()
    return int(proc.returncode)


def wait_listening(host: str, port: int, proc: subprocess.Popen[bytes], timeout: float) -> bool:
    """Until something accepts TCP connections on host:port; False if ``proc`` exits first or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def tail(path: Path, lines: int = 15) -> str:
    """The last ``lines`` lines of a log, for error messages."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.rstrip().splitlines()[-lines:])
