"""The command's front: --version, and a missing dependency said in one line (exit 2)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from spikewatch.sampler.wire import blocks, protocol


def test_version_names_the_wire_protocol_and_recording_format() -> None:
    res = subprocess.run([sys.executable, "-m", "spikewatch", "--version"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert f"wire protocol {protocol.PROTOCOL_VERSION}" in res.stdout
    assert f"recording format {blocks.VERSION}, reads 1, 2, 3, 4" in res.stdout


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


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_a_signal_while_the_command_line_loads_is_one_line_and_130(sig):
    # A real signal, delivered at a fixed point of the real imports: when click loads.
    code = textwrap.dedent(
        f"""
        import importlib.abc, os, signal, sys
        class Kick(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path, target=None):
                if name == "click":
                    os.kill(os.getpid(), signal.{sig})
                return None
        sys.meta_path.insert(0, Kick())
        sys.argv = ["spikewatch", "--version"]
        from spikewatch.entry import main
        main()
        """
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 130 and res.stderr == "interrupted\n", (res.returncode, res.stderr)
