"""Run `spikewatch sample` for real and read what it wrote (sampler, faults, fuzz, console tests)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spikewatch.sampler.wire import protocol
from spikewatch.sampler.wire.client import StreamSubscriber
from spikewatch.sampler.wire.recording import iter_records

from tests.support.waiting import scaled

MiB = 1 << 20


def sample_cmd(endpoints: dict[str, str], *args: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "spikewatch",
        "sample",
        "--publish",
        endpoints["publish"],
        "--inlet",
        endpoints["inlet"],
        *args,
    ]


def write_script(tmp_path: Path, name: str, code: str) -> Path:
    p = tmp_path / name
    p.write_text(textwrap.dedent(code))
    return p


def spawn_sample(endpoints: dict[str, str], *args: str) -> subprocess.Popen[str]:
    """A sampler in the background, its stdout and stderr piped as text."""
    return subprocess.Popen(sample_cmd(endpoints, *args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def stop_sampler(p: subprocess.Popen[str]) -> tuple[str, str]:
    """SIGTERM (the sampler's clean stop), then SIGKILL if it has not ended in 15 s."""
    p.terminate()
    try:
        return p.communicate(timeout=scaled(15))
    except subprocess.TimeoutExpired:
        p.kill()
        return p.communicate(timeout=5)


def sample_attached(
    endpoints: dict[str, str], child: subprocess.Popen[str], *args: str, settle_s: float = 0.0
) -> tuple[str, str, int]:
    """Sample ``child`` by pid; once sampling has begun, send it "go" and read it to the end.

    ``child`` has its stdin and stdout piped and waits for a line before it acts, so
    everything it does falls inside the sampled span. Returns the child's stdout,
    the sampler's stderr and the sampler's exit status.
    """
    p = spawn_sample(endpoints, "--pid", str(child.pid), *args)
    try:
        assert "journal" in p.stderr.readline()  # printed when sampling starts
        time.sleep(settle_s)
        child.stdin.write("go\n")
        child.stdin.flush()
        out = child.stdout.read()
        _, err = p.communicate(timeout=scaled(30))
    finally:
        child.kill()
        child.wait()
        p.kill()
    return out, err, p.returncode


def collect_until_final(sub: StreamSubscriber, timeout: float = 20.0) -> list[tuple[str, dict]]:
    """What a subscriber receives up to the sampler's final hello (or until ``timeout`` s)."""
    out = []
    end = time.monotonic() + scaled(timeout)
    while time.monotonic() < end:
        msg = sub.recv(timeout_ms=200)
        if msg is None:
            continue
        out.append(msg)
        if msg[0] == protocol.HELLO and msg[1].get("final"):
            break
    return out


def run_sample(
    endpoints: dict[str, str], *args: str, timeout: float = 60, **kw: Any
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(sample_cmd(endpoints, *args), capture_output=True, text=True, timeout=scaled(timeout), **kw)


@dataclass
class Stream:
    """A journal (or a captured stream) split by topic."""

    records: list[tuple[str, dict[str, Any]]]
    times: list[int] = field(default_factory=list)
    series: dict[str, list[int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for topic, body in self.records:
            if topic == protocol.SAMPLES:
                self.times.extend(protocol.sample_times(body))
                for name, col in body["series"].items():
                    self.series.setdefault(name, []).extend(col)

    @classmethod
    def from_journal(cls, path: str | os.PathLike[str]) -> Stream:
        return cls(list(iter_records(path)))

    def topic(self, name: str) -> list[dict[str, Any]]:
        return [b for t, b in self.records if t == name]

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        return [b for b in self.topic(protocol.EVENT) if kind is None or b["kind"] == kind]

    def values(self, name: str, t_from: int = 0, t_to: int = 1 << 63) -> list[int]:
        return [v for t, v in zip(self.times, self.series[name]) if t_from <= t <= t_to]


def child_stamps(stdout: str) -> dict[str, list[int]]:
    """Lines ``NAME int int ...`` printed by the child scripts."""
    out: dict[str, list[int]] = {}
    for line in stdout.splitlines():
        parts = line.split()
        if len(parts) >= 2 and all(p.isdigit() for p in parts[1:]):
            out[parts[0]] = [int(p) for p in parts[1:]]
    return out
