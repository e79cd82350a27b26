"""Synthesised runs of one service for the compare tests: startup, ramp, burst, soak, with known truth.

Memory = base + per_request × requests in flight during the ramp, a startup
peak, one burst, and a flat soak, plus independent noise; ``lead`` seconds of
sampling before the first phase and ``stretch`` on the ramp's duration make
the runs' phases start at different times, as real runs do.
"""

from __future__ import annotations

import numpy as np
from spikewatch.analysis.synth import MiB, Synth

S = 1_000_000_000
LEVELS = (2, 6, 10, 14)


def run(
    path,
    *,
    per_request: int = 512 * 1024,
    seed: int = 1,
    lead: float = 1.0,
    stretch: float = 1.0,
    base: int = 60 * MiB,
    noise: int = 512 * 1024,
    startup_peak: int = 120 * MiB,
    soak_slope_mib_h: float = 0.0,
    period_ns: int = 2_000_000,
) -> dict[str, float]:
    """Write one recording; return each phase's start (s from the first sample) for the alignment tests."""
    rng = np.random.default_rng(seed)
    s = Synth(period_ns=period_ns, session=f"synth-{seed}")
    step = 1.5 * stretch
    bounds = {"boot": (lead, lead + 2.0)}
    bounds["climb"] = (bounds["boot"][1], bounds["boot"][1] + step * len(LEVELS))
    bounds["rush"] = (bounds["climb"][1], bounds["climb"][1] + 3.0)
    bounds["soak"] = (bounds["rush"][1], bounds["rush"][1] + 8.0)
    total = bounds["soak"][1] + 0.5
    t = s.times(total)
    rel = (t - t[0]) / 1e9
    v = np.full(len(t), float(base))
    b0, b1 = bounds["boot"]
    up = (rel >= b0) & (rel < b0 + 1.0)
    v[up] = base + (startup_peak - base) * (rel[up] - b0)
    down = (rel >= b0 + 1.0) & (rel < b1)
    v[down] = startup_peak - (startup_peak - base) * (rel[down] - b0 - 1.0)
    c0, _ = bounds["climb"]
    for i, lv in enumerate(LEVELS):
        m = (rel >= c0 + i * step) & (rel < c0 + (i + 1) * step)
        v[m] = base + per_request * lv
    r0, r1 = bounds["rush"]
    hot = (rel >= r0 + 1.0) & (rel < r0 + 1.5)
    v[(rel >= r0) & (rel < r1)] = base + per_request * 2
    v[hot] = base + 40 * MiB  # the burst: +40 MiB for 0.5 s, 1 s into the phase
    k0, k1 = bounds["soak"]
    m = (rel >= k0) & (rel < k1)
    v[m] = base + per_request * 4 + (rel[m] - k0) * soak_slope_mib_h * MiB / 3600
    v[rel >= k1] = base
    v += rng.integers(-noise, noise, len(t))
    s.samples(t, rss=v.astype(np.int64))
    t0 = int(t[0])
    for tt in range(t0 + S // 10, int(t[-1]), S // 10):
        r = (tt - t0) / 1e9
        if c0 <= r < bounds["climb"][1]:
            lv = LEVELS[min(len(LEVELS) - 1, int((r - c0) // step))]
            s.load(
                tt,
                in_flight=lv,
                completed=lv * 10,
                rate=lv * 100.0,
                workers=1,
                lat_p50_ns=100_000_000,
                lat_p99_ns=150_000_000,
            )
        elif r0 <= r < k1:
            burst = r0 + 1.0 <= r < r0 + 1.5
            s.load(
                tt,
                in_flight=8 if burst else 2,
                completed=20,
                rate=200.0,
                target_rate=800.0 if burst else 200.0,
                workers=1,
                lat_p50_ns=100_000_000,
                lat_p99_ns=150_000_000,
            )
    for name, kind in (("boot", "startup"), ("climb", "ramp"), ("rush", "burst"), ("soak", "soak")):
        a, b = bounds[name]
        s.phase(t0 + int(a * S), t0 + int(b * S), name, kind)
    s.write(path)
    return {k: a for k, (a, _) in bounds.items()}
