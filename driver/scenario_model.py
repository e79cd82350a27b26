"""The scenario as the driver plays it: typed, frozen dataclasses and the limits they are
checked against. :mod:`spikewatch.driver.scenario` parses a TOML file into these
(docs/scenarios.md); import either from there."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

PHASE_KINDS = ("startup", "ramp", "steady", "burst", "spike", "soak", "idle")
LOAD_KINDS = ("ramp", "steady", "burst", "spike", "soak")
SIZE_DISTS = ("fixed", "uniform", "lognormal", "empirical")
CONTENTS = ("random", "json")
ARRIVAL_KINDS = ("uniform", "poisson", "gamma")
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
THRESHOLD_METRICS = ("error_rate", "p50", "p90", "p95", "p99", "p999", "max", "mean")
MAX_BODY = 256 * 1024 * 1024  # payloads come from one preallocated buffer: keep it sane
# What one worker process can schedule and send. bench/RESULTS.md: ~65 k/s closed model
# against a trivial server and an exact open-model schedule at 5 k/s; above this the
# schedule only queues and drops. A rate beyond it is refused up front, not played into
# a driver that falls behind (1e12/s used to wedge it: a 1 ps gap never advances the clock).
RATE_PER_WORKER = 50_000
# In-flight requests per worker (each is a connection, so a file descriptor).
CONCURRENCY_PER_WORKER = 20_000


class ScenarioError(ValueError):
    """A scenario that cannot be played; the message names the field and what is allowed."""


@dataclass(frozen=True)
class Target:
    url: str
    scheme: str
    host: str
    port: int
    base_path: str
    ready: str | None = None


@dataclass(frozen=True)
class BodySpec:
    dist: str  # one of SIZE_DISTS
    content: str = "random"
    value: int = 0  # fixed
    min: int = 0  # uniform
    max: int = 0  # uniform, lognormal (cap)
    median: int = 0  # lognormal
    sigma: float = 0.0  # lognormal
    sizes: tuple[int, ...] = ()  # empirical
    file: str | None = None

    @property
    def largest(self) -> int:
        if self.dist == "fixed":
            return self.value
        if self.dist == "empirical":
            return max(self.sizes)
        return self.max


@dataclass(frozen=True)
class RequestSpec:
    name: str
    method: str
    path: str
    weight: float = 1.0
    headers: tuple[tuple[str, str], ...] = ()
    body: BodySpec | None = None


@dataclass(frozen=True)
class Arrivals:
    kind: str = "uniform"  # evenly spaced; "poisson": exponential gaps; "gamma": gaps with this cv
    cv: float = 1.0  # coefficient of variation of the gaps for "gamma" (>1 is burstier than Poisson)


@dataclass(frozen=True)
class Burst:
    length_ns: int
    every_ns: int | None = None  # None: a single spike
    at_ns: int = 0  # start of the first burst, from the phase start
    rate: float | None = None
    concurrency: int | None = None
    multiplier: float | None = None


@dataclass(frozen=True)
class Phase:
    name: str
    kind: str
    duration_ns: int = 0
    rate: tuple[float, float] | None = None  # open model (a == b when constant)
    concurrency: tuple[int, int] | None = None  # closed model
    steps: int = 0  # ramp steps; 0: a linear open-model ramp
    burst: Burst | None = None
    arrivals: Arrivals = field(default_factory=Arrivals)
    # startup
    ready_path: str | None = None
    timeout_ns: int = 60_000_000_000
    interval_ns: int = 50_000_000
    # only these [[requests]] (by name) in this phase, weighted among themselves; None: all
    requests: tuple[str, ...] | None = None

    @property
    def peak_level(self) -> float:
        """The highest rate (open) or concurrency (closed) the phase asks for, bursts included."""
        pair = self.rate if self.rate is not None else self.concurrency
        if pair is None:
            return 0.0
        level = float(max(pair))
        b = self.burst
        if b is not None:
            if b.multiplier is not None:
                level *= b.multiplier
            else:
                level = max(level, float(b.rate if b.rate is not None else b.concurrency or 0))
        return level

    @property
    def model(self) -> str:
        """ "open", "closed" or "none" (startup, idle)."""
        if self.rate is not None:
            return "open"
        if self.concurrency is not None:
            return "closed"
        return "none"

    def params(self) -> dict[str, Any]:
        """The phase's parameters, as they ride on its markers."""
        out: dict[str, Any] = {"kind": self.kind}
        if self.duration_ns:
            out["duration_s"] = self.duration_ns / 1e9
        if self.rate is not None:
            out["rate"] = list(self.rate) if self.rate[0] != self.rate[1] else self.rate[0]
        if self.concurrency is not None:
            c = self.concurrency
            out["concurrency"] = list(c) if c[0] != c[1] else c[0]
        if self.steps:
            out["steps"] = self.steps
        if self.rate is not None and self.arrivals.kind != "uniform":
            out["arrivals"] = self.arrivals.kind
            if self.arrivals.kind == "gamma":
                out["arrivals_cv"] = self.arrivals.cv
        if self.burst is not None:
            b = self.burst
            bd: dict[str, Any] = {"length_s": b.length_ns / 1e9, "at_s": b.at_ns / 1e9}
            if b.every_ns:
                bd["every_s"] = b.every_ns / 1e9
            for k in ("rate", "concurrency", "multiplier"):
                if getattr(b, k) is not None:
                    bd[k] = getattr(b, k)
            out["burst"] = bd
        if self.requests is not None:
            out["requests"] = list(self.requests)
        if self.kind == "startup":
            out["ready"] = self.ready_path
            out["timeout_s"] = self.timeout_ns / 1e9
        return out


@dataclass(frozen=True)
class Threshold:
    metric: str
    op: str
    value: float  # a fraction for error_rate, ns for latencies
    text: str

    def check(self, observed: float) -> bool:
        return {
            "<": observed < self.value,
            "<=": observed <= self.value,
            ">": observed > self.value,
            ">=": observed >= self.value,
        }[self.op]


@dataclass(frozen=True)
class ClientSettings:
    connections: int = 512  # bound of the open-model pool per run (split across workers)
    timeout_ns: int = 30_000_000_000  # per request
    max_lag_ns: int = 1_000_000_000  # an open-model send later than this is dropped, not queued
    late_ns: int = 10_000_000  # a send this late counts as late


@dataclass(frozen=True)
class Scenario:
    target: Target
    requests: tuple[RequestSpec, ...]
    phases: tuple[Phase, ...]
    thresholds: tuple[Threshold, ...] = ()
    seed: int | None = None
    client: ClientSettings = field(default_factory=ClientSettings)
    source: str | None = None

    @property
    def duration_ns(self) -> int:
        """Planned length without startup waits."""
        return sum(p.duration_ns for p in self.phases)

    def check_capacity(self, workers: int = 1) -> None:
        """Refuse rates and concurrencies the driver cannot hold with ``workers`` processes,
        naming the achievable figure (ScenarioError)."""
        for i, p in enumerate(self.phases):
            level = p.peak_level
            if p.model == "open" and level > RATE_PER_WORKER * workers:
                can = RATE_PER_WORKER * workers
                more = (
                    f"; with --workers {min(64, math.ceil(level / RATE_PER_WORKER))}"
                    if level <= RATE_PER_WORKER * 64
                    else "; that is beyond 64 workers too"
                )
                raise ScenarioError(
                    f"phases[{i}] ({p.name}): a rate of {level:,.0f}/s is more than the driver can send: "
                    f"about {RATE_PER_WORKER:,}/s per worker, {can:,}/s with {workers} worker{'s' if workers > 1 else ''}"
                    f"{more}"
                )
            if p.model == "closed" and level > CONCURRENCY_PER_WORKER * workers:
                can = CONCURRENCY_PER_WORKER * workers
                raise ScenarioError(
                    f"phases[{i}] ({p.name}): a concurrency of {level:,.0f} is more than the driver can hold: "
                    f"at most {CONCURRENCY_PER_WORKER:,} connections per worker, {can:,} with {workers} "
                    f"worker{'s' if workers > 1 else ''}"
                )

    def with_url(self, url: str) -> Scenario:
        """The same scenario aimed at another base URL (the runner picks ports)."""
        from .scenario import _parse_target  # parsing imports the model, not the other way round

        t = _parse_target({"url": url, **({"ready": self.target.ready} if self.target.ready else {})}, "target")
        return replace(self, target=t)
