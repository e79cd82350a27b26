"""The systemd units: verified by systemd-analyze where it exists, and parsed
for the hardening the sampler's threat model needs."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNITS = Path(__file__).resolve().parents[2] / "systemd"
NAMES = ("spikewatch-sampler.service", "spikewatch-sampler@.service")
INSTALLED = "/usr/local/bin/spikewatch"


def parse_unit(path: Path) -> dict[str, list[tuple[str, str]]]:
    """Sections -> (key, value) in order; systemd allows repeated keys."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        key, sep, value = line.partition("=")
        assert sep and current is not None, f"{path.name}: not key=value: {raw!r}"
        current.append((key.strip(), value.strip()))
    return sections


def values(unit: dict, section: str, key: str) -> list[str]:
    return [v for k, v in unit.get(section, []) if k == key]


def one(unit: dict, section: str, key: str) -> str:
    found = values(unit, section, key)
    assert len(found) == 1, f"{key}= in [{section}]: {found}"
    return found[0]


@pytest.mark.parametrize("name", NAMES)
def test_unit_is_hardened(name: str) -> None:
    unit = parse_unit(UNITS / name)
    svc = "Service"
    assert one(unit, svc, "NoNewPrivileges") == "yes"
    assert one(unit, svc, "ProtectSystem") == "strict"
    assert one(unit, svc, "ProtectHome") == "yes"
    assert one(unit, svc, "PrivateTmp") == "yes"
    assert one(unit, svc, "StateDirectory") == "spikewatch"  # the journal folder, writable
    caps = {"CAP_SYS_PTRACE", "CAP_DAC_READ_SEARCH"}
    assert set(one(unit, svc, "CapabilityBoundingSet").split()) == caps
    assert set(one(unit, svc, "AmbientCapabilities").split()) == caps
    assert "-/etc/spikewatch/keys" in values(unit, svc, "ReadOnlyPaths")
    assert "SPIKEWATCH_KEYS_DIR=/etc/spikewatch/keys" in values(unit, svc, "Environment")
    # The ptrace() syscall stays out even though the capability is kept.
    assert any("@debug" in v and v.startswith("~") for v in values(unit, svc, "SystemCallFilter"))
    # These would make /sys/fs/cgroup read-only and end the v2 peak reset.
    assert values(unit, svc, "ProtectControlGroups") in ([], ["no"])
    assert values(unit, svc, "ProtectKernelTunables") in ([], ["no"])
    start = one(unit, svc, "ExecStart").split()
    assert start[:2] == [INSTALLED, "sample"]
    assert "$SPIKEWATCH_ARGS" in start and "--journal" in start
    assert one(unit, "Install", "WantedBy") == "multi-user.target"


def test_service_reads_its_environment_file() -> None:
    unit = parse_unit(UNITS / "spikewatch-sampler.service")
    assert values(unit, "Service", "EnvironmentFile") == ["/etc/spikewatch/sampler.env"]


def test_template_samples_the_unit_named_by_its_instance() -> None:
    unit = parse_unit(UNITS / "spikewatch-sampler@.service")
    start = one(unit, "Service", "ExecStart").split()
    assert start[start.index("--unit") + 1] == "%i"
    assert "-/etc/spikewatch/sampler.env" in values(unit, "Service", "EnvironmentFile")
    assert "%i.service" in one(unit, "Unit", "After").split()
    assert one(unit, "Unit", "PartOf") == "%i.service"
    assert one(unit, "Service", "Restart") == "always"


def _spikewatch_exe() -> str:
    exe = Path(sys.executable).parent / "spikewatch"
    return str(exe) if exe.exists() else (shutil.which("spikewatch") or "")


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_analyze_verify(tmp_path) -> None:
    """verify wants ExecStart to exist: point the copies at this venv's spikewatch."""
    exe = _spikewatch_exe()
    assert exe, "spikewatch is not installed in this environment (pip install -e .)"
    for name in NAMES:
        (tmp_path / name).write_text((UNITS / name).read_text().replace(INSTALLED, exe))
    proc = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", "spikewatch-sampler.service", "spikewatch-sampler@myapp.service"],
        env={"SYSTEMD_UNIT_PATH": f"{tmp_path}:", "PATH": "/usr/bin:/bin", "SYSTEMD_LOG_COLOR": "0"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    # verify returns 0 on unknown keys and bad values and only warns: any
    # output about our units is a failure.
    ours = [line for line in (proc.stdout + proc.stderr).splitlines() if "spikewatch" in line]
    assert proc.returncode == 0 and not ours, proc.stdout + proc.stderr


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_verify_catches_a_broken_unit(tmp_path) -> None:
    """The check above can fail: a typo in a hardening key is reported."""
    exe = _spikewatch_exe()
    text = (UNITS / NAMES[0]).read_text().replace(INSTALLED, exe)
    (tmp_path / NAMES[0]).write_text(text.replace("ProtectSystem=strict", "ProtectSytem=strict"))
    proc = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", NAMES[0]],
        env={"SYSTEMD_UNIT_PATH": f"{tmp_path}:", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "ProtectSytem" in proc.stdout + proc.stderr


@pytest.mark.parametrize("name", NAMES)
def test_exec_start_options_exist_in_the_real_command(name: str) -> None:
    """Every option the unit passes is one `spikewatch sample` accepts."""
    from spikewatch.sampler.cli import sample

    known = {opt for p in sample.params for opt in p.opts}
    start = one(parse_unit(UNITS / name), "Service", "ExecStart").split()
    used = [w for w in start if w.startswith("--")]
    assert used and set(used) <= known, set(used) - known
