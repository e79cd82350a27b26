"""Inlet fuzzing at scale: N malformed messages against a real sampler, figures printed.

Uses the corpus and harness of tests/fuzz (random bytes, wrong types, bad
markers/loads, oversize, deep nesting, wrong frame counts, bad topics,
truncated and exotic msgpack). ``--pace R`` sends at R messages/s (at or below
the inlet's 2000/s cap every message goes through the decoder); without it, as
fast as the socket takes them (most are then counted by the cap, unread).

    .venv/bin/python bench/bench_fuzz.py --n 100000 [--pace 1900]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conftest import free_port  # noqa: E402
from tests.fuzz.test_fuzz_inlet import run_fuzz  # noqa: E402

MiB = 1 << 20


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--pace", type=float, default=None, help="messages per second (default: as fast as possible)")
    args = ap.parse_args()
    eps = {k: f"tcp://127.0.0.1:{free_port()}" for k in ("publish", "inlet", "history")}
    r = run_fuzz(eps, Path(tempfile.mkdtemp(prefix="spikewatch-fuzz-")), args.n, args.pace)
    c = r["counters"]
    counted = c["inlet_ok"] + c["inlet_bad"] == r["sent"] + 10
    print(
        f"sent {r['sent']} malformed (+10 valid) in {r['send_s']:.1f} s "
        f"({r['sent'] / max(r['send_s'], 1e-9):.0f}/s{', paced' if args.pace else ''})"
    )
    print(
        f"counted: inlet_bad {c['inlet_bad']}, inlet_ok {c['inlet_ok']} -> every message counted: {counted}; "
        f"valid markers published {len(r['markers'])}/10"
    )
    due = r["due"]
    print(
        f"sampling: {c['samples']} samples of {due} ticks due ({100 * c['samples'] / due:.2f} %), "
        f"ticks_missed {c['ticks_missed']} ({100 * c['ticks_missed'] / due:.2f} %), overruns {c['overruns']}"
    )
    print(
        f"sampler RSS before {r['rss0'] / MiB:.1f} MiB, after {r['rss1'] / MiB:.1f} MiB "
        f"({(r['rss1'] - r['rss0']) / MiB:+.1f} MiB); exit status {r['returncode']}"
    )
    return 0 if counted and r["returncode"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
