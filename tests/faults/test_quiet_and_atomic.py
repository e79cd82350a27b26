"""Issue 19, what was left: ``console --quiet`` (only errors and the last status line, on
SIGINT as on SIGTERM) and the library's report writer going through the one atomic-write
helper (no 0-byte or half file on a full disk)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.analysis import scenarios
from tests.support.disks import fill, mounted_tmpfs
from tests.support.sampler import sample_cmd
from tests.support.waiting import wait_until

SW = [sys.executable, "-m", "spikewatch"]


@pytest.fixture
def publishing(endpoints: dict[str, str], sleeper: subprocess.Popen[bytes]) -> Iterator[str]:
    p = subprocess.Popen(sample_cmd(endpoints, "--pid", str(sleeper.pid), "--journal", "off", "-q"))
    yield endpoints["publish"]
    p.send_signal(signal.SIGTERM)
    p.wait(10)


def _catches(pid: int, sig: int) -> bool:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (sig - 1) & 1)
    return False


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_quiet_console_prints_only_the_last_status_line(publishing: str, sig: int) -> None:
    proc = subprocess.Popen(
        [*SW, "console", "--quiet", publishing], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        # quiet: no line says it is ready, but the kernel does: SIGTERM caught (its handler set)
        assert wait_until(lambda: _catches(proc.pid, signal.SIGTERM), 30, 0.05)
        time.sleep(1.5)  # a few status intervals: a non-quiet console would have printed lines by now
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=10)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert err == "", err
    lines = out.splitlines()
    assert len(lines) == 1 and " peak " in lines[0] and "Hz" in lines[0], out


def test_report_file_on_a_full_disk_leaves_no_file_under_its_name(tmp_path: Path) -> None:
    from spikewatch.analysis.report import report_file

    rec = tmp_path / "spiky.rec"
    scenarios.spiky(rec)
    gen = mounted_tmpfs(tmp_path / "full", "256k")
    full = next(gen)
    try:
        fill(full, leave=8 * 1024)
        with pytest.raises(OSError):
            report_file(rec, json_path=full / "r.json", html_path=full / "r.html")
        assert sorted(p.name for p in full.iterdir()) in (["filler"], ["filler", "r.json"])
        if (full / "r.json").exists():  # the JSON fit, the HTML did not: the JSON is whole
            assert (full / "r.json").read_text().rstrip().endswith("}")
    finally:
        gen.close()


def test_a_signal_handler_can_set_the_stop_while_the_main_thread_waits_on_it() -> None:
    from spikewatch.exits import SignalStop

    stop = SignalStop()
    old = signal.signal(signal.SIGALRM, stop.set)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        assert stop.wait(10) and stop.is_set()  # woken by the handler, no lock shared with it
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
