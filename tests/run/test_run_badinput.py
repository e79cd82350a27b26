"""``spikewatch run`` on bad ground (issue 19): a full disk is one line and exit 3 with no
0-byte report, an occupied --out is refused, SIGTERM under load stops it promptly
(more on stopping in test_run_stop.py)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from spikewatch.sampler.wire import protocol
from spikewatch.sampler.wire.recording import iter_records

from tests.support.disks import fill, mounted_tmpfs
from tests.support.waiting import wait_until

from .helpers import LONG_SCENARIO, SMALL_SCENARIO, demo_service, write

RUN = [sys.executable, "-m", "spikewatch", "run"]


def test_run_on_a_full_disk_exits_3_with_one_line_and_no_empty_report(tmp_path: Path) -> None:
    scenario = write(tmp_path, "small.toml", SMALL_SCENARIO)
    gen = mounted_tmpfs(tmp_path / "full", "1M")
    full = next(gen)
    try:
        fill(full, leave=96 * 1024)
        out = full / "run"
        res = subprocess.run(
            [*RUN, str(scenario), "--no-console", "--out", str(out), "--", *demo_service()],
            capture_output=True,
            text=True,
            timeout=120,
        )
        text = res.stdout + res.stderr
        assert res.returncode == 3, text[-3000:]
        assert "Traceback" not in text
        assert "No space left on device" in text
        last = res.stdout.strip().splitlines()[-1]
        assert last.startswith("exit status 3: cannot write"), last
        assert "no report: cannot write" in res.stderr
        for name in ("report.json", "report.html", "driver.json"):
            p = out / name
            assert not p.exists() or p.stat().st_size > 0, f"{name} left empty"
        assert not [p.name for p in out.iterdir() if p.name.endswith(".part")]
    finally:
        gen.close()


def test_run_refuses_an_out_folder_that_holds_files(tmp_path: Path) -> None:
    scenario = write(tmp_path, "small.toml", SMALL_SCENARIO)
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    res = subprocess.run(
        [*RUN, str(scenario), "-o", str(out), "--", "true"], capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 2 and "already exists" in res.stderr and "Traceback" not in res.stderr


def test_sigterm_under_load_stops_the_run_promptly_and_keeps_the_report(tmp_path: Path) -> None:
    scenario = write(tmp_path, "long.toml", LONG_SCENARIO.replace("rate = 20", "rate = 400"))
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [*RUN, str(scenario), "--no-console", "--out", str(out), "--", *demo_service()],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:

        def loaded() -> bool:
            rec = out / "recording"
            return rec.exists() and any(t == protocol.LOAD and b.get("completed") for t, b in iter_records(rec))

        assert wait_until(loaded, 60, 0.2), "no load reached the recording"
        proc.send_signal(signal.SIGTERM)
        t0 = time.monotonic()
        output = proc.communicate(timeout=60)[0]
        took = time.monotonic() - t0
    finally:
        proc.kill()
    assert proc.returncode == 130, output[-3000:]
    assert "Traceback" not in output
    # the report had until 0.8 s after the stop: written whole, or said how to make (a loaded host)
    made = (out / "report.json").exists() and "wrote " in output
    assert made or f"spikewatch report {out / 'recording'}" in output, output[-3000:]
    assert not [p.name for p in out.iterdir() if p.name.endswith(".part") or p.stat().st_size == 0]
    # the driver's start line repeats the plan: it is not replayed at the end as if it had just started
    assert "driving http" not in output
    print(f"run ended {took:.2f} s after SIGTERM (report included)")
    assert took < 20
