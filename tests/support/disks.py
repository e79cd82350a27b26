"""Real unwritable and full folders for the bad-input tests: a small tmpfs (full disk) and a
read-only tmpfs (root ignores chmod, so a read-only mount is what refuses root's writes)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


def _mount(path: Path, options: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({res.stderr.strip() or 'mount failed'}): needs root in CI")


def _umount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], capture_output=True)


def mounted_tmpfs(path: Path, size: str) -> Iterator[Path]:
    _mount(path, f"size={size}")
    try:
        yield path
    finally:
        _umount(path)


def fill(path: Path, leave: int = 0) -> None:
    """Fill the file system at ``path`` until at most ``leave`` bytes are free."""
    st = os.statvfs(path)
    free = st.f_bavail * st.f_frsize
    with open(path / "filler", "wb") as f:
        try:
            f.write(b"\0" * max(0, free - leave))
            f.flush()
        except OSError:
            pass


def readonly_tmpfs(path: Path) -> Iterator[Path]:
    _mount(path, "size=64k")
    (path / "existing").mkdir()
    subprocess.run(["mount", "-o", "remount,ro", str(path)], check=True, capture_output=True)
    try:
        yield path
    finally:
        _umount(path)
