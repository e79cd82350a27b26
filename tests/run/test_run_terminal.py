"""``spikewatch run`` on a real terminal (a pseudo-terminal): the embedded live console
shows, and its q key stops the run cleanly with the report written."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import struct
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path

from tests.support.cgroups import needs_cgroup

from .helpers import LONG_SCENARIO, demo_service, write


class Terminal:
    def __init__(self, argv: list[str], cols: int = 140, rows: int = 40) -> None:
        self.master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": str(cols), "LINES": str(rows)}
        self.proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True)
        os.close(slave)
        self.buf = bytearray()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self.master, 65536)
            except OSError:
                return
            if not data:
                return
            self.buf += data

    def text(self) -> str:
        return self.buf.decode(errors="replace")

    def wait_for(self, needle: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            if needle in self.text():
                return True
            time.sleep(0.1)
        return needle in self.text()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        os.close(self.master)


@needs_cgroup
def test_console_on_a_terminal_and_q_stops_the_run(tmp_path: Path) -> None:
    scenario = write(tmp_path, "long.toml", LONG_SCENARIO)
    out = tmp_path / "out"
    term = Terminal(
        [
            sys.executable,
            "-m",
            "spikewatch",
            "run",
            str(scenario),
            "--limit",
            "256M",
            "--out",
            str(out),
            "--",
            *demo_service(),
        ]
    )
    try:
        # The console's title bar and its phase events: the full-screen view is up.
        assert term.wait_for("spikewatch run long.toml", 40), term.text()[-2000:]
        assert term.wait_for("phase long", 40), term.text()[-2000:]
        # The startup marker went out before the console subscribed: it came from history.
        assert "phase boot" in term.text(), term.text()[-2000:]
        time.sleep(1.0)
        os.write(term.master, b"q")
        term.proc.wait(60)
        deadline = time.monotonic() + 5
        while "exit status" not in term.text() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert term.proc.returncode == 130, term.text()[-3000:]
        assert "exit status 130: interrupted" in term.text()
        rep = json.loads((out / "report.json").read_text())
        assert rep["run"]["interrupted"] is True
        assert [p["name"] for p in rep["phases"]] == ["boot", "long"]
        assert (out / "report.html").exists()
    finally:
        term.close()
