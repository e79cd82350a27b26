"""Scenario files (TOML, see docs/scenarios.md) parsed into the typed, validated
dataclasses of :mod:`spikewatch.driver.scenario_model` (re-exported here, the import path
everyone uses).

Every error names the field path and what is allowed, e.g.
``phases[2].burst.every: expected a duration like "20s", got 5``, because a load
test that dies on a typo ten minutes in wastes the whole run: we check it all up front.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from spikewatch.sampler.units import format_bytes, parse_duration_ns, parse_size

from .scenario_model import (
    ARRIVAL_KINDS as ARRIVAL_KINDS,
)
from .scenario_model import (
    CONCURRENCY_PER_WORKER as CONCURRENCY_PER_WORKER,
)
from .scenario_model import (
    CONTENTS as CONTENTS,
)
from .scenario_model import (
    LOAD_KINDS as LOAD_KINDS,
)
from .scenario_model import (
    MAX_BODY as MAX_BODY,
)
from .scenario_model import (
    METHODS as METHODS,
)
from .scenario_model import (
    PHASE_KINDS as PHASE_KINDS,
)
from .scenario_model import (
    RATE_PER_WORKER as RATE_PER_WORKER,
)
from .scenario_model import (
    SIZE_DISTS as SIZE_DISTS,
)
from .scenario_model import (
    THRESHOLD_METRICS as THRESHOLD_METRICS,
)
from .scenario_model import (
    Arrivals as Arrivals,
)
from .scenario_model import (
    BodySpec as BodySpec,
)
from .scenario_model import (
    Burst as Burst,
)
from .scenario_model import (
    ClientSettings as ClientSettings,
)
from .scenario_model import (
    Phase as Phase,
)
from .scenario_model import (
    RequestSpec as RequestSpec,
)
from .scenario_model import (
    Scenario as Scenario,
)
from .scenario_model import (
    ScenarioError as ScenarioError,
)
from .scenario_model import (
    Target as Target,
)
from .scenario_model import (
    Threshold as Threshold,
)

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
