"""Memory per endpoint: the multiple fit over ramps and bursts, and its verdicts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from spikewatch.analysis import reader, report
from spikewatch.analysis.synth import Synth

MiB = 1 << 20
TICK = 100_000_000


def _recording(
    tmp_path: Path,
    levels: list[tuple[str, str, float, list[tuple[float, float]]]],
    cost: tuple[float, float],
    noise: float = 64 * 1024,
    seed: int = 3,
) -> dict:
    """Phases of (name, kind, seconds, [(in flight of a, of b) per step]); memory =
    40 MiB + cost_a * a + cost_b * b (+ noise), telemetry every 100 ms."""
    rng = np.random.default_rng(seed)
    s = Synth()
    total = sum(p[2] for p in levels)
    t = s.times(total)
    mem = np.full(len(t), 40.0 * MiB)
    t0 = int(t[0])
    start = t0
    loads = []
    for name, kind, secs, steps in levels:
        end = start + int(secs * 1e9)
        edges = np.linspace(start, end, len(steps) + 1).astype(np.int64)
        for (a, b), lo, hi in zip(steps, edges[:-1], edges[1:]):
            m = (t >= lo) & (t < hi)
            mem[m] += cost[0] * a + cost[1] * b
            for tick in range(int(lo) + TICK, int(hi) + 1, TICK):
                loads.append((tick, a, b))
        s.phase(start, end, name, kind)
        start = end
    mem += rng.normal(0, noise, len(mem))
    s.samples(t, rss=mem.astype(np.int64))
    for tick, a, b in loads:
        s.load(
            tick,
            in_flight=int(a + b),
            endpoints={
                "a": {"in_flight": int(a), "in_flight_mean": float(a)},
                "b": {"in_flight": int(b), "in_flight_mean": float(b)},
            },
        )
    s.write(tmp_path / "e.rec")
    return report.build_report(reader.load(tmp_path / "e.rec"))


def test_staggered_ramps_recover_each_endpoints_cost(tmp_path: Path) -> None:
    rep = _recording(
        tmp_path,
        [
            ("ramp a", "ramp", 4, [(1, 0), (3, 0), (5, 0), (8, 0)]),
            ("ramp b", "ramp", 4, [(0, 1), (0, 3), (0, 5), (0, 8)]),
            ("calm", "steady", 2, [(2, 2)]),
        ],
        cost=(3 * MiB, 256 * 1024),
    )
    rows = {e["name"]: e for e in rep["endpoints"]}
    assert rep["endpoint_attribution"]["verdict"] == "separable"
    assert rep["endpoint_attribution"]["phases"] == ["ramp a", "ramp b"]  # not the steady phase
    assert abs(rows["a"]["bytes_per_inflight"] - 3 * MiB) < 0.02 * 3 * MiB
    assert abs(rows["b"]["bytes_per_inflight"] - 256 * 1024) < 0.05 * 256 * 1024
    for name, true in (("a", 3 * MiB), ("b", 256 * 1024)):
        lo, hi = rows[name]["ci95"]
        assert lo <= true <= hi and rows[name]["estimable"]


def test_endpoints_that_move_together_are_called_collinear(tmp_path: Path) -> None:
    # one mixed ramp, both endpoints always at the same count: no fit can split them
    rep = _recording(
        tmp_path, [("mixed", "ramp", 6, [(1, 1), (2, 2), (4, 4), (6, 6), (8, 8), (10, 10)])], cost=(2 * MiB, MiB)
    )
    v = rep["endpoint_attribution"]
    assert v["verdict"] == "collinear"
    assert v["pair"] == ["a", "b"] and v["max_correlation"] > 0.99
    assert "cannot be told apart" in v["reason"] and "staggered" in v["suggestion"]
    assert not any(e["estimable"] for e in rep["endpoints"])


def test_no_per_endpoint_telemetry_says_so(tmp_path: Path) -> None:
    s = Synth()
    t = s.times(3)
    s.samples(t, rss=np.full(len(t), 40 * MiB))
    s.phase(int(t[0]), int(t[-1]), "climb", "ramp")
    for i in range(1, 29):
        s.load(int(t[0]) + i * TICK, in_flight=i)
    s.write(tmp_path / "n.rec")
    rep = report.build_report(reader.load(tmp_path / "n.rec"))
    assert rep["endpoints"] == []
    assert rep["endpoint_attribution"]["verdict"] == "no data"
