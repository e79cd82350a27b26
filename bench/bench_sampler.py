"""The sampler beside the bare loop, in one run: CPU ratio, missed ticks, RSS, lateness.

One target (a Python process holding 64 MiB) launched by ``spikewatch sample``
inside its own memory cgroup (``--limit``: a v1 or v2 cgroup under ours), so every
tick reads the target's statm and the cgroup's usage; publishing on (with a live
subscriber, so the messages really go out) and the journal on. Beside it, in the same
run and alternating round by round, ``bench_bare_loop.py``: a timerfd loop doing two
preads of the same two kinds of file and nothing else. On a VM the cost of a wake-up
drifts by a third within seconds, so single rounds swing by ±0.3: take the median of
many. ``--together`` runs them all at once instead, their CPU over one window (for a
before/after with ``--compare``: the same conditions for both; but the host is no
longer idle, the bare loop's wake-ups cost ~30 % less and the ratios read higher). Run::

    .venv/bin/python bench/bench_sampler.py [--seconds 10] [--rounds 3] [--period 1ms]

CPU is measured the same way for both: the on-CPU time of every thread of the
process and of its helper processes (the target excepted), from
``/proc/PID/task/TID/schedstat`` (nanoseconds), over the same window length after
a warm-up. The ratio is sampler CPU s / bare CPU s of the same round; the medians
are the headline. Missed ticks are the timerfd's extra expirations over each whole
run (``ticks_missed`` of the sampler's final hello). The load average is printed with
every round: missed ticks depend on what else runs on the host, the ratio much less.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from spikewatch.sampler.units import parse_duration_ns  # noqa: E402
from spikewatch.sampler.wire import protocol  # noqa: E402
from spikewatch.sampler.wire.client import StreamSubscriber  # noqa: E402
from spikewatch.sampler.wire.recording import iter_records  # noqa: E402

TARGET = "import time; x = b'\\x01' * (64 << 20); time.sleep(3600)"
WARMUP_S = 1.0
# --batch-ms: the sampler with another batch period, set in its config, so that an install
# from before `sample --batch-period` existed (its batches every 20 ms) takes it too.
BATCH_RUNNER = """import dataclasses, sys
from spikewatch.sampler import state
init = state.SamplerState.__init__
def with_batch(self, config, **kw):
    init(self, dataclasses.replace(config, batch_ns={ns}), **kw)
state.SamplerState.__init__ = with_batch
from spikewatch.cli import main
sys.argv[0] = "spikewatch"
main()
"""


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _ppids() -> dict[int, int]:
    out: dict[int, int] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                data = Path(f"/proc/{name}/stat").read_bytes()
            except OSError:
                continue
            out[int(name)] = int(data[data.rindex(b")") + 2 :].split()[1])
    return out


def _helpers(pid: int, exclude: set[int]) -> list[int]:
    """``pid`` and its descendants, without ``exclude`` and their own descendants."""
    ppids = _ppids()
    found, frontier = [pid], [pid]
    while frontier:
        parent = frontier.pop()
        for p, pp in ppids.items():
            if pp == parent and p not in exclude and TARGET not in _cmdline(p):
                found.append(p)
                frontier.append(p)
    return found


def _cpu_ns(pids: list[int]) -> dict[str, int]:
    """On-CPU ns per thread name over ``pids`` (the main thread of the first is "sampling")."""
    out: dict[str, int] = {}
    for pid in pids:
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                ns = int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[0])
                comm = Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()
            except OSError:
                continue
            name = "main" if tid == str(pid) else comm
            if pid != pids[0]:
                name = f"helper {pid}"
            out[name] = out.get(name, 0) + ns
    return out


def _status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def _pct(sorted_vals: list[int], q: float) -> int:
    if not sorted_vals:
        return 0
    return sorted_vals[min(len(sorted_vals) - 1, int(q * len(sorted_vals)))]


def _window(pid: int, exclude: set[int], seconds: float) -> tuple[dict[str, int], float, list[int]]:
    """CPU ns by thread over ``seconds`` of wall time (per-thread deltas), the wall time, the pids."""
    pids = _helpers(pid, exclude)
    c0, w0 = _cpu_ns(pids), time.monotonic()
    time.sleep(seconds)
    pids = _helpers(pid, exclude)
    c1, w1 = _cpu_ns(pids), time.monotonic()
    return {k: v - c0.get(k, 0) for k, v in c1.items()}, w1 - w0, pids


def start_bare(seconds: float, period_ns: int, extra: tuple[str, ...]) -> tuple[subprocess.Popen[str], set[int]]:
    """The bare loop, looping: its process and the pids not to count (its target)."""
    cmd = [sys.executable, str(ROOT / "bench" / "bench_bare_loop.py"), "--json"]
    cmd += ["--seconds", str(seconds), "--period-us", str(period_ns // 1000), *extra]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None
    assert p.stdout.readline().strip() == "looping"
    return p, {pp for pp, parent in _ppids().items() if parent == p.pid}


def finish_bare(p: subprocess.Popen[str], cpu: dict[str, int], wall: float, load: str) -> dict[str, float | str]:
    out, _ = p.communicate(timeout=120)
    r = json.loads(out)
    total = r["ticks"] + r["missed"]
    return {
        "cpu_s": sum(cpu.values()) / 1e9,
        "cpu_pct": 100.0 * sum(cpu.values()) / 1e9 / wall,
        "missed_pct": 100.0 * r["missed"] / total if total else 0.0,
        "missed": r["missed"],
        "ticks": total,
        "load": load,
        "sched": r["sched"],
        "second_file": r["second_file"],
    }


def run_bare(seconds: float, period_ns: int, extra: tuple[str, ...]) -> dict[str, float | str]:
    p, target = start_bare(WARMUP_S + seconds + 0.5, period_ns, extra)
    time.sleep(WARMUP_S)
    load0 = _load()
    cpu, wall, _ = _window(p.pid, target, seconds)
    return finish_bare(p, cpu, wall, f"{load0} -> {_load()}")


class SamplerRun:
    """One ``spikewatch sample`` (an install's python) beside a live subscriber, until :meth:`finish`."""

    def __init__(
        self, period: str, tmp: Path, extra: tuple[str, ...], python: str = sys.executable, batch_ns: int | None = None
    ) -> None:
        self.period_ns = parse_duration_ns(period)
        pub = f"tcp://127.0.0.1:{_free_port()}"
        inlet = f"tcp://127.0.0.1:{_free_port()}"
        self.journal = tmp / f"bench-{period}-{time.monotonic_ns()}.journal"
        run = ["-m", "spikewatch"] if batch_ns is None else ["-c", BATCH_RUNNER.format(ns=batch_ns)]
        cmd = [python, *run, "sample", "--period", period, "--publish", pub]
        cmd += ["--inlet", inlet, "--journal", str(self.journal), "--limit", "1G", "-q", *extra]
        cmd += ["--", sys.executable, "-c", TARGET]
        self.received = [0]
        self.stop = threading.Event()

        def subscribe() -> None:
            with StreamSubscriber([pub]) as sub:
                while not self.stop.is_set():
                    if sub.recv(timeout_ms=100) is not None:
                        self.received[0] += 1

        self.th = threading.Thread(target=subscribe, daemon=True)
        self.th.start()
        # Not from the checkout: `-m spikewatch` must find the package `python` has installed.
        self.p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=tmp)
        self.targets: set[int] = set()
        end = time.monotonic() + 30
        while not self.targets and time.monotonic() < end:  # imports, launch, the command's exec
            time.sleep(0.05)
            self.targets = {pp for pp, parent in _ppids().items() if parent == self.p.pid and TARGET in _cmdline(pp)}
        if not self.targets:
            self.p.kill()
            raise SystemExit(f"the target did not start: {' '.join(cmd)}\n{self.p.communicate()[1]}")

    def finish(self, cpu: dict[str, int], wall: float, pids: list[int], load: str) -> dict[str, object]:
        p = self.p
        rss_kb = _status_kb(p.pid, "VmRSS")
        helpers_kb = sum(_status_kb(h, "VmRSS") for h in pids[1:])
        p.terminate()
        _, err = p.communicate(timeout=30)
        self.stop.set()
        self.th.join(timeout=2)
        hello = None
        times: list[int] = []
        short_cols = 0
        body_series: set[str] = set()
        for topic, body in iter_records(self.journal):
            if topic == protocol.HELLO:
                hello = body
            elif topic == protocol.SAMPLES:
                ts = protocol.sample_times(body)
                times.extend(ts)
                body_series = set(body["series"])
                short_cols += sum(len(col) != len(ts) for col in body["series"].values())
        assert hello is not None, err
        c = hello["counters"]
        origin = hello["tick_origin_t"]
        late = sorted((t - origin) % self.period_ns for t in times)
        total = c["samples"] + c["ticks_missed"]
        return {
            "cpu_s": sum(cpu.values()) / 1e9,
            "cpu_pct": 100.0 * sum(cpu.values()) / 1e9 / wall,
            "threads": {k: 100.0 * v / 1e9 / wall for k, v in cpu.items()},
            "rss_mib": rss_kb / 1024,
            "helpers_mib": helpers_kb / 1024,
            "p50_us": _pct(late, 0.50) / 1e3,
            "p99_us": _pct(late, 0.99) / 1e3,
            "missed_pct": 100.0 * c["ticks_missed"] / total if total else 0.0,
            "missed": c["ticks_missed"],
            "ticks": total,
            # Every tick the sampler counted is in the journal, with a value in every series.
            "recorded": len(times) == c["samples"] and not short_cols and len(body_series) == 2,
            "received": self.received[0],
            "load": load,
            "journal_bytes_per_sample": self.journal.stat().st_size / max(len(times), 1),
        }


def run_sampler(
    period: str,
    seconds: float,
    tmp: Path,
    extra: tuple[str, ...],
    python: str = sys.executable,
    batch_ns: int | None = None,
) -> dict[str, object]:
    run = SamplerRun(period, tmp, extra, python, batch_ns)
    time.sleep(WARMUP_S)  # the first tree scan, the first detail and PSS sweep
    load0 = _load()
    cpu, wall, pids = _window(run.p.pid, run.targets, seconds)
    return run.finish(cpu, wall, pids, f"{load0} -> {_load()}")


def run_together(
    period: str,
    seconds: float,
    tmp: Path,
    extra: tuple[str, ...],
    samplers: list[tuple[str, str]],
    batch_ns: int | None,
) -> tuple[dict[str, float | str], dict[str, dict[str, object]]]:
    """The bare loop and every sampler at once, their CPU over one and the same window:
    what the host's wake-up cost does in that window (it drifts by a third within
    seconds on a VM) it does to all of them."""
    period_ns = parse_duration_ns(period)
    runs = {name: SamplerRun(period, tmp, extra, python, batch_ns) for name, python in samplers}
    bare, bare_target = start_bare(WARMUP_S + seconds + 0.5, period_ns, extra)
    time.sleep(WARMUP_S)
    load0 = _load()
    watched = [(bare.pid, bare_target)] + [(r.p.pid, r.targets) for r in runs.values()]
    pids = [_helpers(pid, ex) for pid, ex in watched]
    c0, w0 = [_cpu_ns(ps) for ps in pids], time.monotonic()
    time.sleep(seconds)
    c1, w1 = [_cpu_ns(ps) for ps in pids], time.monotonic()
    load = f"{load0} -> {_load()}"
    cpu = [{k: v - a.get(k, 0) for k, v in b.items()} for a, b in zip(c0, c1)]
    out = {name: r.finish(cpu[i + 1], w1 - w0, pids[i + 1], load) for i, (name, r) in enumerate(runs.items())}
    return finish_bare(bare, cpu[0], w1 - w0, load), out


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _median_interval(xs: list[float], confidence: float = 0.95) -> str:
    """The distribution-free interval of a median from its rounds (order statistics: the
    count of rounds below the true median is binomial(n, 1/2)); empty below 6 rounds.
    Single rounds swing by ±0.3 on a VM: this says what the median of them is worth."""
    n = len(xs)
    if n < 6:
        return ""
    s = sorted(xs)
    # the widest j (from the outside in) whose two-sided binomial tail stays under 1 - confidence
    j = 0
    while 2 * sum(math.comb(n, i) for i in range(j + 1)) / 2**n <= 1 - confidence:
        j += 1
    return f" (95 % interval of the median {s[j - 1]:.3f}-{s[n - j]:.3f})" if j else ""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--period", default="1ms")
    ap.add_argument("--no-realtime", action="store_true", help="both loops under the normal scheduler policy")
    ap.add_argument(
        "--sampler-args",
        default="",
        help="more options for `spikewatch sample`, e.g. '--detail-period 1s' (where does the CPU go?)",
    )
    ap.add_argument(
        "--compare",
        metavar="PYTHON",
        help="also run the sampler of another install in every round (e.g. main's .venv/bin/python): before vs after",
    )
    ap.add_argument(
        "--batch-ms",
        type=float,
        help="publish sample batches every this many ms, in every sampler run (default: each install's own: "
        "100 now, 20 before `sample --batch-period`)",
    )
    ap.add_argument(
        "--together",
        action="store_true",
        help="the bare loop and the samplers at once, their CPU over one window: before vs after with "
        "--compare under the same host conditions (the host is then not idle: the bare loop's wake-ups "
        "cost ~30 %% less and ratios read ~0.3 higher)",
    )
    args = ap.parse_args()
    extra = ("--no-realtime",) if args.no_realtime else ()
    batch_ns = None if args.batch_ms is None else int(args.batch_ms * 1e6)
    period_ns = parse_duration_ns(args.period)
    policy = "SCHED_OTHER (--no-realtime)" if args.no_realtime else "SCHED_FIFO when permitted (default)"
    runs = [("this", sys.executable)] + ([("compare", args.compare)] if args.compare else [])
    print(
        f"# {os.cpu_count()} CPUs, load average {_load()} at start; period {args.period}; {args.rounds} rounds of "
        f"{args.seconds:g} s each ("
        + (
            f"bare loop, then {' then '.join(n for n, _ in runs)} sampler"
            if not args.together
            else "bare loop and samplers at once"
        )
        + f"); {policy}"
        + (f"; sample batches every {args.batch_ms:g} ms" if batch_ns else "")
    )
    print(
        f"{'round':>5} {'sampler':>8} {'bare CPU %':>10} {'sampler CPU %':>13} {'ratio':>6} {'bare missed %':>13} "
        f"{'sampler missed %':>16} {'RSS MiB':>8} {'p99 us':>7} {'recorded':>8}  load (start -> end)"
    )
    ratios: dict[str, list[float]] = {n: [] for n, _ in runs}
    missed: dict[str, list[float]] = {n: [] for n, _ in runs}
    rss: dict[str, list[float]] = {n: [] for n, _ in runs}
    bare_missed: list[float] = []
    with tempfile.TemporaryDirectory() as d:
        sampler_extra = (*extra, *args.sampler_args.split())
        for i in range(args.rounds):
            order = runs if i % 2 == 0 else runs[::-1]  # neither always starts first
            if not args.together:
                b = run_bare(args.seconds, period_ns, extra)
                results = (
                    (n, lambda py=py: run_sampler(args.period, args.seconds, Path(d), sampler_extra, py, batch_ns))
                    for n, py in order
                )
            else:
                b, together = run_together(args.period, args.seconds, Path(d), sampler_extra, order, batch_ns)
                results = ((n, lambda n=n, got=together: got[n]) for n, _ in order)
            bare_missed.append(float(b["missed_pct"]))
            for name, get in results:
                s = get()
                ratio = float(s["cpu_s"]) / float(b["cpu_s"])  # type: ignore[arg-type]
                ratios[name].append(ratio)
                missed[name].append(float(s["missed_pct"]))  # type: ignore[arg-type]
                rss[name].append(float(s["rss_mib"]))  # type: ignore[arg-type]
                print(
                    f"{i + 1:>5} {name:>8} {b['cpu_pct']:10.2f} {s['cpu_pct']:13.2f} {ratio:6.3f} "
                    f"{b['missed_pct']:13.3f} {s['missed_pct']:16.3f} {s['rss_mib']:8.1f} {s['p99_us']:7.0f} "
                    f"{'yes' if s['recorded'] else 'NO':>8}  bare {b['load']}, sampler {s['load']}",
                    flush=True,
                )
                threads = ", ".join(
                    f"{k} {v:.2f}"
                    for k, v in sorted(s["threads"].items(), key=lambda kv: -kv[1])  # type: ignore[attr-defined]
                    if v >= 0.005
                )
                print(
                    f"{'':>14} CPU % by thread: {threads}; helpers' RSS {s['helpers_mib']:.1f} MiB; "
                    f"{s['received']} messages received; journal {s['journal_bytes_per_sample']:.2f} bytes a sample",
                    flush=True,
                )
    for name, _ in runs:
        print(
            f"median ({name}): CPU ratio sampler/bare {statistics.median(ratios[name]):.3f}{_median_interval(ratios[name])} "
            "(goal <= 1.15); "
            f"missed ticks: bare {statistics.median(bare_missed):.3f} %, sampler {statistics.median(missed[name]):.3f} % "
            f"(goal <= 0.1 % on an idle host); sampler RSS {statistics.median(rss[name]):.1f} MiB"
        )
    print(f"load average at the end {_load()}")


if __name__ == "__main__":
    main()
