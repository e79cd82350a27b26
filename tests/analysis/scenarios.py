"""Synthesised recordings with known truth, shared by the analysis tests."""

from __future__ import annotations

import numpy as np
from spikewatch.analysis.synth import MiB, Synth
from spikewatch.sampler.wire import protocol

S = 1_000_000_000


def noise(n: int, seed: int = 1, amp: int = 256 * 1024) -> np.ndarray:
    return np.random.default_rng(seed).integers(-amp, amp, n)


def leak(path, mib_per_hour: float = 30.0, seconds: float = 120.0, limit: int | None = None) -> Synth:
    """A soak that leaks at a known rate, with noise and a few spikes."""
    s = Synth(limit=limit, series=("rss", "cg_usage") if limit else ("rss",))
    t = s.times(seconds)
    v = 200 * MiB + ((t - t[0]) * (mib_per_hour * MiB / 3600e9)).astype(np.int64) + noise(len(t))
    for k in (30, 60, 90):
        v[k * 1000 : k * 1000 + 30] += 80 * MiB
    cols = {"rss": v}
    if limit:
        cols["cg_usage"] = v + 10 * MiB
    s.samples(t, **cols)
    s.phase(int(t[0]), int(t[-1]), "long", "soak")
    s.write(path)
    return s


def ramp(path, per_request: int = 256 * 1024, base: int = 50 * MiB) -> Synth:
    """A closed-model ramp 1..64 in 8 steps of 5 s; memory = base + per_request x in flight."""
    s = Synth()
    t = s.times(40)
    levels = np.linspace(1, 64, 8).round().astype(int)
    step = ((t - t[0]) // (5 * S)).clip(0, 7)
    inflight = levels[step]
    v = base + per_request * inflight + noise(len(t), 2, 64 * 1024)
    s.samples(t, rss=v)
    for tt in range(int(t[0]) + S // 10, int(t[-1]), S // 10):
        k = min(7, (tt - int(t[0])) // (5 * S))
        s.load(tt, in_flight=int(levels[k]), workers=1, rate=100.0 * levels[k])
    s.phase(int(t[0]), int(t[-1]), "climb", "ramp", concurrency=[1, 64], steps=8)
    s.write(path)
    return s


def bursts(path, tau_s: float = 0.5, retained: int = 8 * MiB, telemetry: bool = True) -> Synth:
    """Every 10 s a 2 s burst lifts memory 100 MiB; it decays with tau back to baseline + retained."""
    s = Synth()
    t = s.times(44)  # the schedule's 5th burst would start at 45 s
    rel = (t - t[0]) / 1e9
    v = np.full(len(t), 100 * MiB, dtype=np.float64)
    for b0 in (5, 15, 25, 35):
        inb = (rel >= b0) & (rel < b0 + 2)
        v[inb] = 100 * MiB + 100 * MiB * np.minimum(1, (rel[inb] - b0) / 0.2)
        after = rel >= b0 + 2  # later bursts overwrite what follows them
        v[after] = 100 * MiB + retained + (100 * MiB - retained) * np.exp(-(rel[after] - b0 - 2) / tau_s)
    s.samples(t, rss=v.astype(np.int64))
    for tt in range(int(t[0]) + S // 10, int(t[-1]), S // 10 if telemetry else 10**12):
        r = (tt - int(t[0])) / 1e9
        hot = any(b0 < r <= b0 + 2 for b0 in (5, 15, 25, 35))
        s.load(tt, target_rate=2000.0 if hot else 100.0, rate=2000.0 if hot else 100.0, in_flight=40 if hot else 2)
    s.phase(int(t[0]), int(t[-1]), "rush", "burst", burst={"length_s": 2.0, "at_s": 5.0, "every_s": 10.0, "rate": 2000})
    s.write(path)
    return s


def startup(path) -> Synth:
    """Startup climbs to 300 MiB then settles at 120 MiB; ready after 3 s; steady after."""
    s = Synth()
    t = s.times(20)
    rel = (t - t[0]) / 1e9
    v = np.where(rel < 2, 300 * MiB * rel / 2, np.where(rel < 3, 300 * MiB - 180 * MiB * (rel - 2), 120 * MiB))
    s.samples(t, rss=v.astype(np.int64) + 1)
    s.event(
        int(t[0]) - 200_000,
        protocol.EV_PROC_START,
        pid=4242,
        ppid=1,
        exe="/srv/app/target/release/app",
        cmdline=["/srv/app/target/release/app"],
        start_t=int(t[0]) - 200_000,
        launched=True,
    )
    s.marker(int(t[0]), protocol.PHASE_START, "boot", {"kind": "startup"})
    s.marker(int(t[0]) + 3 * S, protocol.PHASE_END, "boot", {"kind": "startup", "time_to_ready_s": 2.95})
    s.marker(int(t[0]) + 3 * S, protocol.PHASE_START, "steady", {"kind": "steady"})
    s.marker(int(t[-1]), protocol.PHASE_END, "steady", {"kind": "steady"})
    s.write(path)
    return s


def spiky(path) -> tuple[Synth, list[tuple[float, int, float]]]:
    """Known spikes (start s, height bytes, length s) on a noisy baseline with a step up at 30 s."""
    s = Synth()
    t = s.times(60)
    rel = (t - t[0]) / 1e9
    v = 100 * MiB + noise(len(t), 3) + np.where(rel >= 30, 50 * MiB, 0)
    truth = [
        (5.0, 40 * MiB, 0.005),
        (12.0, 100 * MiB, 0.2),
        (20.0, 20 * MiB, 1.0),
        (40.0, 60 * MiB, 0.05),
        (50.0, 200 * MiB, 0.002),
    ]
    for st, h, ln in truth:
        v[(rel >= st) & (rel < st + ln)] += h
    s.samples(t, rss=v)
    t0 = int(t[0])
    s.marker(t0 + 12 * S - 100_000_000, protocol.NOTE, "cache warmed")
    for k in range(600):
        th = 8 if k < 399 else 24  # a thread jump at 39.9 s, just before the 40 s spike
        s.detail(t0 + k * S // 10, threads=th, rss_anon=90 * MiB, rss_file=10 * MiB, rss_shmem=0)
    s.phase(t0, t0 + 30 * S, "first", "steady")
    s.phase(t0 + 30 * S, int(t[-1]), "second", "steady")
    s.write(path)
    return s, truth
