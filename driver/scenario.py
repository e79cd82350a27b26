"""Scenario files (TOML, see docs/scenarios.md) parsed into typed, validated dataclasses.

Every error names the field path and what is allowed, e.g.
``phases[2].burst.every: expected a duration like "20s", got 5``, because a load
test that dies on a typo ten minutes in wastes the whole run: we check it all up front.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from spikewatch.sampler.units import format_bytes, parse_duration_ns, parse_size

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
        t = _parse_target({"url": url, **({"ready": self.target.ready} if self.target.ready else {})}, "target")
        return replace(self, target=t)


# --- parsing helpers ------------------------------------------------------------


def _fail(where: str, msg: str) -> None:
    raise ScenarioError(f"{where}: {msg}")


def _table(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        _fail(where, f"expected a table, got {value!r}")
    return value


def _keys(table: Mapping[str, Any], where: str, allowed: tuple[str, ...]) -> None:
    for key in table:
        if key not in allowed:
            _fail(f"{where}.{key}" if where else key, f"unknown field (allowed here: {', '.join(allowed)})")


def _duration(value: Any, where: str, *, positive: bool = True) -> int:
    if not isinstance(value, str):
        _fail(where, f'expected a duration like "20s", got {value!r}')
    try:
        ns = parse_duration_ns(value)
    except ValueError:
        _fail(where, f'expected a duration like "500ms", "20s", "5m", got {value!r}')
    if positive and ns <= 0:
        _fail(where, f"must be longer than zero, got {value!r}")
    return ns


def _size(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        _fail(where, f'expected a size like "200KiB" or a number of bytes, got {value!r}')
    try:
        n = parse_size(value)
    except ValueError:
        _fail(where, f'expected a size like "200KiB", "4MiB" or a number of bytes, got {value!r}')
    if n > MAX_BODY:
        _fail(where, f"{format_bytes(n)} is more than the {format_bytes(MAX_BODY)} a body may have")
    return n


def _number(value: Any, where: str, *, minimum: float = 0.0, integer: bool = False, strict: bool = False) -> float:
    ok = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok or (isinstance(value, float) and not math.isfinite(value)):
        _fail(where, f"expected {'an integer' if integer else 'a number'}, got {value!r}")
    if value < minimum or (strict and value == minimum):
        _fail(where, f"must be {'>' if strict else '>='} {minimum:g}, got {value!r}")
    return value


def _pair(value: Any, where: str, *, integer: bool) -> tuple[Any, Any]:
    if isinstance(value, list):
        if len(value) != 2:
            _fail(where, f"expected [from, to], got {value!r}")
        a = _number(value[0], f"{where}[0]", integer=integer)
        b = _number(value[1], f"{where}[1]", integer=integer)
        return a, b
    v = _number(value, where, integer=integer)
    return v, v


def _string(value: Any, where: str, choices: tuple[str, ...] | None = None) -> str:
    if not isinstance(value, str) or not value:
        _fail(where, f"expected a non-empty string, got {value!r}")
    if choices is not None and value not in choices:
        _fail(where, f"expected one of {', '.join(choices)}, got {value!r}")
    return value


def _path(value: Any, where: str) -> str:
    s = _string(value, where)
    if not s.startswith("/"):
        _fail(where, f'expected a path starting with "/", got {value!r}')
    return s


def _parse_target(raw: Any, where: str) -> Target:
    t = _table(raw, where)
    _keys(t, where, ("url", "ready"))
    if "url" not in t:
        _fail(f"{where}.url", 'missing (e.g. url = "http://127.0.0.1:8080")')
    url = _string(t["url"], f"{where}.url")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        _fail(f"{where}.url", f"expected http://HOST[:PORT][/base], got {url!r}")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        _fail(f"{where}.url", f"bad port in {url!r}")
    ready = _path(t["ready"], f"{where}.ready") if "ready" in t else None
    return Target(
        url=url,
        scheme=parts.scheme,
        host=parts.hostname or "",
        port=port,
        base_path=parts.path.rstrip("/"),
        ready=ready,
    )


def _read_sizes(path: Path, where: str) -> tuple[int, ...]:
    try:
        text = path.read_text()
    except OSError as exc:
        _fail(where, f"cannot read the sizes file {str(path)!r}: {exc.strerror or exc}")
    sizes = []
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip().split(",", 1)[0].strip()
        if not line:
            continue
        sizes.append(_size(line if not line.isdigit() else int(line), f"{where} ({path.name} line {lineno})"))
    if not sizes:
        _fail(where, f"{str(path)!r} holds no sizes (one per line, e.g. 1024 or 200KiB)")
    return tuple(sizes)


def _parse_body(raw: Any, where: str, base: Path) -> BodySpec:
    if isinstance(raw, (str, int)) and not isinstance(raw, bool):
        return BodySpec(dist="fixed", value=_size(raw, where))
    b = _table(raw, where)
    _keys(b, where, ("size", "value", "min", "max", "median", "sigma", "file", "content"))
    dist = _string(b.get("size", "fixed"), f"{where}.size", SIZE_DISTS)
    content = _string(b.get("content", "random"), f"{where}.content", CONTENTS)
    need = {
        "fixed": ("value",),
        "uniform": ("min", "max"),
        "lognormal": ("median", "sigma", "max"),
        "empirical": ("file",),
    }[dist]
    for key in need:
        if key not in b:
            _fail(f"{where}.{key}", f'missing: size = "{dist}" needs {", ".join(need)}')
    for key in ("value", "min", "max", "median", "sigma", "file"):
        if key in b and key not in need:
            _fail(f"{where}.{key}", f'not used by size = "{dist}" (it takes {", ".join(need)})')
    if dist == "fixed":
        spec = BodySpec(dist, content, value=_size(b["value"], f"{where}.value"))
    elif dist == "uniform":
        lo, hi = _size(b["min"], f"{where}.min"), _size(b["max"], f"{where}.max")
        if hi < lo:
            _fail(f"{where}.max", f"must be >= min ({format_bytes(lo)}), got {b['max']!r}")
        spec = BodySpec(dist, content, min=lo, max=hi)
    elif dist == "lognormal":
        med, hi = _size(b["median"], f"{where}.median"), _size(b["max"], f"{where}.max")
        sigma = float(_number(b["sigma"], f"{where}.sigma"))
        if med <= 0:
            _fail(f"{where}.median", "must be more than zero bytes")
        if hi < med:
            _fail(f"{where}.max", f"must be >= median ({format_bytes(med)}), got {b['max']!r}")
        spec = BodySpec(dist, content, median=med, sigma=sigma, max=hi)
    else:
        fname = _string(b["file"], f"{where}.file")
        p = Path(fname) if Path(fname).is_absolute() else base / fname
        spec = BodySpec(dist, content, sizes=_read_sizes(p, f"{where}.file"), file=str(p))
    if content == "json" and 0 < spec.largest < 16:
        _fail(f"{where}.content", "json bodies need at least 16 bytes")
    return spec


def _parse_request(raw: Any, where: str, base: Path) -> RequestSpec:
    r = _table(raw, where)
    _keys(r, where, ("name", "method", "path", "weight", "headers", "body"))
    method = _string(r.get("method", "GET"), f"{where}.method").upper()
    if method not in METHODS:
        _fail(f"{where}.method", f"expected one of {', '.join(METHODS)}, got {r['method']!r}")
    path = _path(r.get("path", "/"), f"{where}.path")
    name = _string(r.get("name", f"{method} {path}"), f"{where}.name")
    weight = float(_number(r.get("weight", 1), f"{where}.weight", strict=True))
    headers = []
    for k, v in _table(r.get("headers", {}), f"{where}.headers").items():
        if not isinstance(v, str) or "\n" in v or "\r" in v or "\n" in k or ":" in k:
            _fail(f"{where}.headers.{k}", f"expected a one-line string value, got {v!r}")
        if k.lower() in ("content-length", "host", "transfer-encoding", "connection"):
            _fail(f"{where}.headers.{k}", "is set by the driver")
        headers.append((k, v))
    body = _parse_body(r["body"], f"{where}.body", base) if "body" in r else None
    return RequestSpec(name=name, method=method, path=path, weight=weight, headers=tuple(headers), body=body)


def _parse_arrivals(raw: Any, where: str) -> Arrivals:
    if isinstance(raw, str):
        kind = _string(raw, where, ARRIVAL_KINDS)
        return Arrivals(kind=kind, cv=2.0 if kind == "gamma" else 1.0)
    a = _table(raw, where)
    _keys(a, where, ("kind", "cv"))
    kind = _string(a.get("kind", "uniform"), f"{where}.kind", ARRIVAL_KINDS)
    cv = float(_number(a.get("cv", 2.0 if kind == "gamma" else 1.0), f"{where}.cv", strict=True))
    if "cv" in a and kind != "gamma":
        _fail(f"{where}.cv", 'only used with kind = "gamma"')
    return Arrivals(kind=kind, cv=cv)


def _parse_burst(raw: Any, where: str, baseline_open: bool, duration_ns: int, single: bool) -> Burst:
    b = _table(raw, where)
    _keys(b, where, ("every", "at", "length", "rate", "concurrency", "multiplier"))
    if "length" not in b:
        _fail(f"{where}.length", 'missing (how long each burst lasts, e.g. "2s")')
    length = _duration(b["length"], f"{where}.length")
    every = _duration(b["every"], f"{where}.every") if "every" in b else None
    if single and every is not None:
        _fail(f"{where}.every", 'a "spike" phase has one burst: use kind = "burst" to repeat it')
    if every is not None and length >= every:
        _fail(f"{where}.length", f"must be shorter than every ({b['every']})")
    if "at" in b:
        at = _duration(b["at"], f"{where}.at", positive=False)
    else:
        at = every if every is not None else max(0, (duration_ns - length) // 2)
    if at + length > duration_ns:
        _fail(f"{where}.at", "the (first) burst does not fit in the phase duration")
    given = [k for k in ("rate", "concurrency", "multiplier") if k in b]
    if len(given) != 1:
        _fail(where, "give exactly one of rate, concurrency, multiplier")
    kw: dict[str, Any] = {}
    if "rate" in b:
        if not baseline_open:
            _fail(f"{where}.rate", "the phase has a concurrency baseline (closed model): use concurrency or multiplier")
        kw["rate"] = float(_number(b["rate"], f"{where}.rate"))
    elif "concurrency" in b:
        if baseline_open:
            _fail(f"{where}.concurrency", "the phase has a rate baseline (open model): use rate or multiplier")
        kw["concurrency"] = int(_number(b["concurrency"], f"{where}.concurrency", integer=True))
    else:
        kw["multiplier"] = float(_number(b["multiplier"], f"{where}.multiplier", strict=True))
    return Burst(length_ns=length, every_ns=every, at_ns=at, **kw)


def _parse_phase(raw: Any, where: str, default_arrivals: Arrivals, target: Target) -> Phase:
    p = _table(raw, where)
    kind = _string(p.get("kind"), f"{where}.kind", PHASE_KINDS) if "kind" in p else None
    if kind is None:
        _fail(f"{where}.kind", f"missing (one of {', '.join(PHASE_KINDS)})")
    common = ("name", "kind")
    allowed = {
        "startup": common + ("path", "timeout", "interval"),
        "idle": common + ("duration",),
        "ramp": common + ("duration", "rate", "concurrency", "steps", "arrivals", "requests"),
        "steady": common + ("duration", "rate", "concurrency", "arrivals", "requests"),
        "soak": common + ("duration", "rate", "concurrency", "arrivals", "requests"),
        "burst": common + ("duration", "rate", "concurrency", "burst", "arrivals", "requests"),
        "spike": common + ("duration", "rate", "concurrency", "burst", "arrivals", "requests"),
    }[str(kind)]
    _keys(p, where, allowed)
    name = _string(p.get("name", kind), f"{where}.name")
    if len(name) > 200:
        _fail(f"{where}.name", "at most 200 characters")
    if kind == "startup":
        ready = _path(p["path"], f"{where}.path") if "path" in p else target.ready
        if ready is None:
            _fail(where, 'a startup phase needs target.ready or its own path = "/health"')
        return Phase(
            name=name,
            kind=kind,
            ready_path=ready,
            timeout_ns=_duration(p.get("timeout", "60s"), f"{where}.timeout"),
            interval_ns=_duration(p.get("interval", "50ms"), f"{where}.interval"),
        )
    if "duration" not in p:
        _fail(f"{where}.duration", 'missing (e.g. duration = "30s")')
    duration = _duration(p["duration"], f"{where}.duration")
    if kind == "idle":
        return Phase(name=name, kind=kind, duration_ns=duration)
    if ("rate" in p) == ("concurrency" in p):
        _fail(where, "give exactly one of rate (open model: requests/s) or concurrency (closed model: in flight)")
    is_ramp = kind == "ramp"
    rate = conc = None
    if "rate" in p:
        rate = _pair(p["rate"], f"{where}.rate", integer=False)
        rate = (float(rate[0]), float(rate[1]))
        if not is_ramp and rate[0] != rate[1]:
            _fail(f"{where}.rate", f'a {kind} phase takes one rate; [from, to] is for kind = "ramp"')
    else:
        conc = _pair(p["concurrency"], f"{where}.concurrency", integer=True)
        if not is_ramp and conc[0] != conc[1]:
            _fail(f"{where}.concurrency", f'a {kind} phase takes one concurrency; [from, to] is for kind = "ramp"')
    if "arrivals" in p and rate is None:
        _fail(f"{where}.arrivals", "arrivals shape an open model: use rate, not concurrency")
    arrivals = _parse_arrivals(p["arrivals"], f"{where}.arrivals") if "arrivals" in p else default_arrivals
    steps = 0
    if is_ramp:
        if "steps" in p:
            steps = int(_number(p["steps"], f"{where}.steps", minimum=1, integer=True))
        elif conc is not None:
            steps = max(1, min(abs(conc[1] - conc[0]) + 1, 8))
    burst = None
    if kind in ("burst", "spike"):
        if "burst" not in p:
            _fail(f"{where}.burst", 'missing, e.g. burst = { every = "20s", length = "2s", rate = 2000 }')
        burst = _parse_burst(p["burst"], f"{where}.burst", rate is not None, duration, kind == "spike")
    only = None
    if "requests" in p:
        raw = p["requests"]
        if not isinstance(raw, list) or not raw or not all(isinstance(x, str) and x for x in raw):
            _fail(f"{where}.requests", 'expected a list of request names, e.g. requests = ["ingest"]')
        only = tuple(dict.fromkeys(raw))
    return Phase(
        name=name,
        kind=str(kind),
        duration_ns=duration,
        rate=rate,
        concurrency=conc,
        steps=steps,
        burst=burst,
        arrivals=arrivals,
        requests=only,
    )


def _parse_threshold(metric: str, raw: Any, where: str) -> Threshold:
    if not isinstance(raw, str):
        _fail(where, f'expected a condition like "<1%" or "<500ms", got {raw!r}')
    text = raw.strip()
    for op in ("<=", ">=", "<", ">"):
        if text.startswith(op):
            rest = text[len(op) :].strip()
            break
    else:
        _fail(where, f'expected a condition starting with <, <=, > or >=, like "<500ms", got {raw!r}')
    if metric == "error_rate":
        try:
            value = float(rest[:-1]) / 100 if rest.endswith("%") else float(rest)
        except ValueError:
            _fail(where, f'expected a rate like "<1%" or "<0.01", got {raw!r}')
    else:
        try:
            value = float(parse_duration_ns(rest, default_unit="ms"))
        except ValueError:
            _fail(where, f'expected a latency like "<500ms", got {raw!r}')
    return Threshold(metric=metric, op=op, value=value, text=f"{metric} {op} {rest}")


def parse_scenario(data: Mapping[str, Any], base_dir: str | Path = ".", source: str | None = None) -> Scenario:
    """Validate a decoded TOML document; raise :class:`ScenarioError` naming the bad field."""
    _keys(data, "", ("target", "requests", "phases", "thresholds", "seed", "client", "arrivals"))
    base = Path(base_dir)
    if "target" not in data:
        _fail("target", 'missing: [target] with url = "http://127.0.0.1:8080"')
    target = _parse_target(data["target"], "target")
    seed = None
    if "seed" in data:
        seed = int(_number(data["seed"], "seed", integer=True))
    c = _table(data.get("client", {}), "client")
    _keys(c, "client", ("connections", "timeout", "max_lag", "late"))
    client = ClientSettings(
        connections=int(_number(c.get("connections", 512), "client.connections", minimum=1, integer=True)),
        timeout_ns=_duration(c.get("timeout", "30s"), "client.timeout"),
        max_lag_ns=_duration(c.get("max_lag", "1s"), "client.max_lag"),
        late_ns=_duration(c.get("late", "10ms"), "client.late"),
    )
    raw_requests = data.get("requests", [{"name": "root", "path": "/"}])
    if not isinstance(raw_requests, list) or not raw_requests:
        _fail("requests", "expected one or more [[requests]] tables")
    requests = tuple(_parse_request(r, f"requests[{i}]", base) for i, r in enumerate(raw_requests))
    default_arrivals = _parse_arrivals(data["arrivals"], "arrivals") if "arrivals" in data else Arrivals()
    raw_phases = data.get("phases")
    if not isinstance(raw_phases, list) or not raw_phases:
        _fail("phases", "expected one or more [[phases]] tables")
    phases = tuple(_parse_phase(p, f"phases[{i}]", default_arrivals, target) for i, p in enumerate(raw_phases or []))
    names = [p.name for p in phases]
    for i, n in enumerate(names):
        if names.index(n) != i:
            _fail(f"phases[{i}].name", f"{n!r} is already the name of phases[{names.index(n)}]")
    request_names = [r.name for r in requests]
    for i, ph in enumerate(phases):
        for r in ph.requests or ():
            if r not in request_names:
                _fail(f"phases[{i}].requests", f"no [[requests]] named {r!r} (there are: {', '.join(request_names)})")
    th = _table(data.get("thresholds", {}), "thresholds")
    _keys(th, "thresholds", THRESHOLD_METRICS)
    thresholds = tuple(_parse_threshold(k, v, f"thresholds.{k}") for k, v in th.items())
    return Scenario(
        target=target, requests=requests, phases=phases, thresholds=thresholds, seed=seed, client=client, source=source
    )


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario file; raise :class:`ScenarioError` with the file and field."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ScenarioError(f"{p}: cannot read: {exc.strerror or exc}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ScenarioError(f"{p}: not valid TOML: {exc}") from None
    return parse_scenario(data, p.parent, source=str(p))


def bundled(name: str) -> Path:
    """Path of a scenario shipped with the package (``demo``, ``quick``)."""
    return Path(__file__).resolve().parent / "scenarios" / f"{name}.toml"
