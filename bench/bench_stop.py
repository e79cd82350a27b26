"""How long ``spikewatch run`` / ``demo`` take to stop after SIGTERM or SIGINT under load.

    .venv/bin/python bench/bench_stop.py [--signal TERM|INT] [--rate 400] [--repeat 3] [--demo]

Starts a run at RATE req/s against the demo service (or ``spikewatch demo --quick``),
waits until load reaches the recording, sends the signal to the run's process and
prints, for each attempt, when each output line appeared (seconds after the signal)
and when the process exited. No assertions: the figures go in docs/reliability.md.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.run.helpers import LONG_SCENARIO  # noqa: E402  (the run tests' 120 s steady scenario)

SERVICE = [sys.executable, "-m", "spikewatch.driver.demo_service", "--port", "{port}"]


def one(sig: int, rate: int, demo: bool, quiet: bool) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        scenario = Path(tmp) / "s.toml"
        scenario.write_text(LONG_SCENARIO.replace("rate = 20", f"rate = {rate}"))
        out = Path(tmp) / "out"
        if demo:
            argv = [sys.executable, "-m", "spikewatch", "demo", "--no-console", "--out", str(out)]
        else:
            argv = [sys.executable, "-m", "spikewatch", "run", str(scenario), "--no-console", "--out", str(out)]
            argv += ["--", *SERVICE]
        if quiet:
            argv.insert(4, "--quiet")
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        lines: list[tuple[float, str]] = []
        sent = [0.0]
        ready = threading.Event()

        def read() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.append((time.monotonic(), line.rstrip()))
                # the first status line means sampler, driver and console are all going
                if "req/s" in line or "rps" in line or " in flight" in line:
                    ready.set()

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        if not ready.wait(60):
            time.sleep(5)
        time.sleep(2)
        sent[0] = time.monotonic()
        os.kill(proc.pid, sig)
        proc.wait(60)
        took = time.monotonic() - sent[0]
        reader.join(5)
        for t, line in lines:
            if t >= sent[0] - 0.05:
                print(f"  {t - sent[0]:6.2f} s  {line[:110]}")
        print(f"exit status {proc.returncode}, {took:.2f} s after the signal")
        return took


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--signal", default="TERM", choices=["TERM", "INT"])
    ap.add_argument("--rate", type=int, default=400)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--demo", action="store_true")
    ap.add_argument("--quiet", action="store_true")
    a = ap.parse_args()
    sig = signal.SIGTERM if a.signal == "TERM" else signal.SIGINT
    times = [one(sig, a.rate, a.demo, a.quiet) for _ in range(a.repeat)]
    times.sort()
    print(
        f"SIG{a.signal} at {a.rate} req/s{' (demo)' if a.demo else ''}: exit after {times[len(times) // 2]:.2f} s (median of {len(times)}; max {times[-1]:.2f} s); load average {os.getloadavg()[0]:.1f}"
    )


if __name__ == "__main__":
    main()
