"""Self-soak: the sampler at 1 kHz for a long time with the journal on.

Launches ``spikewatch sample --period 1ms --journal FILE -- python (64 MiB holder)``
inside a memory cgroup (``--limit``) when possible, with a live subscriber so
messages really go out, and watches the *sampler's* own RSS. Pass criteria
(issue 6): RSS growth <= 1 MiB from the end of warm-up to the end, missed ticks
<= 0.1 % of the ticks due. Run::

    .venv/bin/python bench/bench_soak.py [--seconds 600] [--warmup 30] [--history]

RSS growth is VmRSS at the end minus VmRSS after the warm-up (the journal
thread, zmq buffers and the history ring, when on, have reached steady state).
Missed ticks come from the final ``hello`` counters (timerfd extra expirations).
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from spikewatch.sampler.wire import protocol  # noqa: E402
from spikewatch.sampler.wire.client import StreamSubscriber  # noqa: E402
from spikewatch.sampler.wire.recording import iter_records  # noqa: E402

TARGET = "import time; x = b'\\x01' * (64 << 20); time.sleep(36000)"
MiB = 1 << 20


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=600)
    ap.add_argument("--warmup", type=float, default=30)
    ap.add_argument("--history", action="store_true", help="also keep the backfill ring (5 min)")
    ap.add_argument("--no-limit", action="store_true", help="do not put the target in a cgroup")
    args = ap.parse_args()

    pub = f"tcp://127.0.0.1:{_free_port()}"
    inlet = f"tcp://127.0.0.1:{_free_port()}"
    tmp = Path(tempfile.mkdtemp(prefix="spikewatch-soak-"))
    journal = tmp / "soak.journal"
    cmd = [
        sys.executable,
        "-m",
        "spikewatch",
        "sample",
        "--period",
        "1ms",
        "--publish",
        pub,
        "--inlet",
        inlet,
        "--journal",
        str(journal),
        "--duration",
        f"{args.seconds}s",
    ]
    if args.history:
        cmd += ["--history", f"tcp://127.0.0.1:{_free_port()}"]
    if not args.no_limit:
        cmd += ["--limit", "512M"]
    cmd += ["--", sys.executable, "-c", TARGET]

    sub = StreamSubscriber([pub])
    received = [0]
    stop = threading.Event()

    def drain() -> None:
        while not stop.is_set():
            if sub.recv(timeout_ms=200) is not None:
                received[0] += 1

    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    rss_trace: list[tuple[float, int]] = []
    t0 = time.monotonic()
    rss_after_warmup = None
    try:
        while proc.poll() is None:
            time.sleep(5)
            el = time.monotonic() - t0
            try:
                r = _rss(proc.pid)
            except OSError:
                break
            if r:
                rss_trace.append((el, r))
            if rss_after_warmup is None and el >= args.warmup:
                rss_after_warmup = r
        proc.wait(timeout=args.seconds + 60)
    finally:
        stop.set()
        if proc.poll() is None:
            proc.kill()
    err = proc.stderr.read() if proc.stderr else ""
    # Last RSS seen before the final flush (the final-hello write does not count).
    last = [(el, r) for el, r in rss_trace if el <= args.seconds - 2]
    rss_end = last[-1][1] if last else rss_trace[-1][1]
    hello = None
    records = 0
    for topic, body in iter_records(journal):
        records += 1
        if topic == protocol.HELLO:
            hello = body
    c = hello["counters"] if hello else {}
    samples, missed = c.get("samples", 0), c.get("ticks_missed", 0)
    due = samples + missed
    growth = rss_end - (rss_after_warmup or rss_trace[0][1])
    print(
        f"command: {' '.join(cmd[:3])} sample --period 1ms --journal ... --duration {args.seconds}s"
        + (" --history" if args.history else "")
        + ("" if args.no_limit else " --limit 512M")
        + " -- (64 MiB holder)"
    )
    print(f"exit status {proc.returncode}; last stderr line: {err.strip().splitlines()[-1] if err.strip() else ''}")
    print(
        f"samples {samples}, ticks missed {missed} ({100 * missed / max(due, 1):.4f} % of {due} due), "
        f"overruns {c.get('overruns')}, dropped {c.get('dropped')}, journal_errors {c.get('journal_errors')}"
    )
    print(
        f"sampler RSS after {args.warmup:.0f} s warm-up {rss_after_warmup / MiB if rss_after_warmup else 0:.2f} MiB, "
        f"at end {rss_end / MiB:.2f} MiB, growth {growth / MiB:+.3f} MiB; max {max(r for _, r in rss_trace) / MiB:.2f} MiB"
    )
    print(f"journal {journal.stat().st_size / MiB:.1f} MiB, {records} records; subscriber got {received[0]} messages")
    trace = ", ".join(f"{el:.0f}s:{r / MiB:.2f}" for el, r in rss_trace[:: max(1, len(rss_trace) // 12)])
    print(f"RSS trace (MiB): {trace}")
    ok = growth <= MiB and missed <= 0.001 * due
    print("PASS" if ok else "FAIL", "(RSS growth <= 1 MiB, missed ticks <= 0.1 %)")
    journal.unlink(missing_ok=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
