"""What load a phase asks for at each moment, and the gaps between open-model arrivals.

Times are ns from the phase start. A worker gets its ``share`` of the load: rates are
divided evenly, concurrency split as integers so the workers add up to the exact total.
"""

from __future__ import annotations

import random

from .scenario import Phase


def _split_int(n: int, index: int, workers: int) -> int:
    return n // workers + (1 if index < n % workers else 0)


class Profile:
    def __init__(self, phase: Phase, index: int = 0, workers: int = 1) -> None:
        self.phase = phase
        self.index = index
        self.workers = workers
        self.model = phase.model

    def in_burst(self, t: int) -> bool:
        b = self.phase.burst
        if b is None or t < b.at_ns:
            return False
        if b.every_ns is None:
            return t < b.at_ns + b.length_ns
        return (t - b.at_ns) % b.every_ns < b.length_ns

    def total_level(self, t: int) -> float:
        """Rate (open) or concurrency (closed) for the whole run at ``t``."""
        p = self.phase
        pair = p.rate if p.rate is not None else p.concurrency
        if pair is None:
            return 0.0
        a, b = pair
        if p.kind == "ramp" and a != b:
            frac = min(max(t / p.duration_ns, 0.0), 1.0)
            if p.steps:
                i = min(int(frac * p.steps), p.steps - 1)
                level = b if p.steps == 1 else a + (b - a) * i / (p.steps - 1)
            else:
                level = a + (b - a) * frac
        else:
            level = a
        if p.burst is not None and self.in_burst(t):
            bu = p.burst
            if bu.multiplier is not None:
                level *= bu.multiplier
            else:
                level = bu.rate if bu.rate is not None else (bu.concurrency or 0)
        return float(level)

    def rate(self, t: int) -> float:
        return self.total_level(t) / self.workers

    def concurrency(self, t: int) -> int:
        return _split_int(int(round(self.total_level(t))), self.index, self.workers)

    def next_change(self, t: int) -> int:
        """The next time after ``t`` at which a closed-model level may change (ns)."""
        p = self.phase
        cands = [p.duration_ns]
        if p.kind == "ramp" and p.steps:
            step = p.duration_ns / p.steps
            cands.append(int((int(t / step) + 1) * step))
        b = p.burst
        if b is not None:
            if t < b.at_ns:
                cands.append(b.at_ns)
            elif b.every_ns is None:
                if t < b.at_ns + b.length_ns:
                    cands.append(b.at_ns + b.length_ns)
            else:
                k, r = divmod(t - b.at_ns, b.every_ns)
                start = b.at_ns + k * b.every_ns
                cands.append(start + b.length_ns if r < b.length_ns else start + b.every_ns)
        return min(c for c in cands if c > t) if any(c > t for c in cands) else p.duration_ns


class Arrivals:
    """Gaps between arrivals for one worker, from a seeded generator."""

    def __init__(self, phase: Phase, rng: random.Random) -> None:
        self.kind = phase.arrivals.kind
        self.rng = rng
        cv = phase.arrivals.cv
        self.shape = 1.0 / (cv * cv)
        # Evenly spaced arrivals are anchor + n * gap, not a running sum: 600 float
        # additions could land the 600th arrival of "300/s for 2 s" a nanosecond
        # before the phase end and send 601 requests.
        self._anchor = self._last = 0.0
        self._rate = 0.0
        self._n = 0

    def after(self, t: float, rate: float) -> float:
        """The arrival after the one at ``t`` (ns), at ``rate`` per second."""
        if self.kind != "uniform":
            return t + self.gap_ns(rate)
        if rate != self._rate or t != self._last:
            self._anchor, self._rate, self._n = t, rate, 0
        self._n += 1
        self._last = self._anchor + self._n * (1e9 / rate)
        return self._last

    def gap_ns(self, rate: float) -> float:
        if self.kind == "uniform":
            return 1e9 / rate
        if self.kind == "poisson":
            return self.rng.expovariate(rate) * 1e9
        return self.rng.gammavariate(self.shape, 1.0 / (rate * self.shape)) * 1e9
