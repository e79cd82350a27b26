"""Helpers for the sampler tests: run `spikewatch sample` for real and read what it wrote."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sampler import protocol
from sampler.recording import iter_records

MiB = 1 << 20


def sample_cmd(endpoints: dict[str, str], *args: str) -> list[str]:
    return [sys.executable, "-m", "spikewatch", "sample", "--publish", endpoints["publish"],
            "--inlet", endpoints["inlet"], *args]


def write_script(tmp_path: Path, name: str, code: str) -> Path:
    p = tmp_path / name
    p.write_text(textwrap.dedent(code))
    return p


def run_sample(endpoints: dict[str, str], *args: str, timeout: float = 60, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(sample_cmd(endpoints, *args), capture_output=True, text=True, timeout=timeout, **kw)


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
    def from_journal(cls, path: str | os.PathLike[str]) -> "Stream":
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
