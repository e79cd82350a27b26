"""The command's front: --version, and a missing dependency said in one line (exit 2)."""

from __future__ import annotations

import subprocess
import sys

from spikewatch.sampler.wire import protocol, recording


def test_version_names_the_wire_protocol_and_recording_format() -> None:
    res = subprocess.run([sys.executable, "-m", "spikewatch", "--version"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert f"wire protocol {protocol.PROTOCOL_VERSION}" in res.stdout
    assert f"recording format {recording.FORMAT_VERSION}" in res.stdout


def _without(module: str, *argv: str) -> subprocess.CompletedProcess[str]:
    # ``sys.modules[name] = None`` makes every import of it fail as if it were not installed.
    code = (
        f"import sys; sys.modules[{module!r}] = None; sys.argv = ['spikewatch', *{list(argv)!r}]; "
        "from spikewatch.cli import main; main()"
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)


def test_a_missing_dependency_is_one_line_and_exit_2(tmp_path) -> None:
    (tmp_path / "empty.journal").write_bytes(b"")
    for module, argv, dist in [
        ("numpy", ["report", str(tmp_path / "empty.journal")], "numpy"),
        ("hdrh", ["drive", str(tmp_path / "x.toml")], "hdrhistogram"),
        ("numpy", ["console", "--plain", "tcp://127.0.0.1:1"], "numpy"),
    ]:
        res = _without(module, *argv)
        assert res.returncode == 2, (argv, res.stderr)
        assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr
        if dist:
            assert f"pip install {dist}" in res.stderr, res.stderr
