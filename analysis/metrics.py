"""Named figures of a report, with their confidence interval where the report has one.

One catalogue for ``--fail-on`` and ``compare``: a metric is a name
(``peak``, ``soak.slope``, ``phase.climb.rss.p99``…), a kind (which units its
values take) and the direction in which a change is a regression. Per-phase
metrics are named ``phase.<phase name>.<figure>``; a phase name that occurs
twice gets ``#2`` on its second occurrence (``phase.rush#2.peak``).

Intervals: the report carries 95 % intervals for a soak's slope
(``ci_mib_per_hour``) and a ramp's bytes per in-flight request
(``bytes_per_request_ci``); every other figure is one measurement of one run
and has none.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from spikewatch.sampler.units import format_bytes

SIZE, RATE, PERCENT, COUNT, SECONDS, RPS = "size", "rate", "percent", "count", "seconds", "rps"
MiB = 1 << 20
UP, DOWN = "up", "down"  # the direction in which a change is a regression


@dataclass(frozen=True)
class Reading:
    value: float
    ci: tuple[float, float] | None = None  # 95 % interval, same unit as value


@dataclass(frozen=True)
class Metric:
    name: str
    kind: str
    label: str
    worse: str = UP
    group: str = "run"  # "run" or the phase key it belongs to


Getter = Callable[[dict[str, Any]], Reading | None]


def _num(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else None


def _r(x: Any, ci: Any = None, scale: float = 1.0) -> Reading | None:
    v = _num(x)
    if v is None:
        return None
    c = None
    if isinstance(ci, (list, tuple)) and len(ci) == 2 and all(_num(e) is not None for e in ci):
        c = (float(ci[0]) * scale, float(ci[1]) * scale)
    return Reading(v * scale, c)


def _first(report: dict[str, Any], kinds: tuple[str, ...], key: str) -> dict[str, Any] | None:
    for p in report.get("phases") or []:
        if p.get("kind") in kinds and p.get(key) is not None:
            phase: dict[str, Any] = p
            return phase
    return None


def _growth(g: dict[str, Any] | None) -> Reading | None:
    if not g or _num(g.get("bytes_per_hour")) is None:
        return None
    ci = g.get("ci_mib_per_hour")
    return Reading(float(g["bytes_per_hour"]), (ci[0] * MiB, ci[1] * MiB) if ci else None)


def _soak(report: dict[str, Any]) -> Reading | None:
    for p in report.get("phases") or []:
        if p.get("kind") == "soak" and p.get("growth"):
            return _growth(p["growth"])
    return None


def _head_series(report: dict[str, Any]) -> dict[str, Any]:
    return (report.get("series") or {}).get(report.get("headline_series")) or {}


def _loaded(report: dict[str, Any]) -> list[dict[str, Any]]:
    return [p["load"] for p in report.get("phases") or [] if (p.get("load") or {}).get("completed")]


def _throughput(report: dict[str, Any]) -> Reading | None:
    rows = [
        (p["load"]["completed"], p.get("duration_s") or 0)
        for p in report.get("phases") or []
        if (p.get("load") or {}).get("completed")
    ]
    span = sum(d for _, d in rows)
    return Reading(sum(c for c, _ in rows) / span) if span > 0 else None


def _latency(key: str) -> Getter:
    def get(report: dict[str, Any]) -> Reading | None:
        rows = [(ld["completed"], ld[key]) for ld in _loaded(report) if ld.get(key) is not None]
        n = sum(c for c, _ in rows)
        return Reading(sum(c * v for c, v in rows) / n / 1e3) if n else None

    return get


def _error_rate(report: dict[str, Any]) -> Reading | None:
    rows = _loaded(report)
    done = sum(ld["completed"] for ld in rows)
    return Reading(sum(ld.get("errors") or 0 for ld in rows) / done) if done else None


def _recovery(report: dict[str, Any]) -> Reading | None:
    vals = [
        p["max_recovery_s"]
        for p in report.get("phases") or []
        if p.get("kind") in ("burst", "spike") and p.get("max_recovery_s") is not None
    ]
    return Reading(max(vals)) if vals else None


def _per_request(p: dict[str, Any] | None) -> Reading | None:
    return _r(p.get("bytes_per_request"), p.get("bytes_per_request_ci")) if p else None


def _scrape(interval: str) -> Getter:
    return lambda r: _r(((r.get("scrape_view") or {}).get(interval) or {}).get("missed_fraction"))


# name -> (kind, label, worse, getter), in the order tables show them
RUN_METRICS: dict[str, tuple[str, str, str, Getter]] = {
    "peak": (SIZE, "true peak", UP, lambda r: _r(r.get("peak_bytes"))),
    "p99": (SIZE, "p99", UP, lambda r: _r(_head_series(r).get("p99_bytes"))),
    "startup_peak": (
        SIZE,
        "startup peak",
        UP,
        lambda r: _r((_first(r, ("startup",), "startup_peak_bytes") or {}).get("startup_peak_bytes")),
    ),
    "time_to_ready": (
        SECONDS,
        "time to ready",
        UP,
        lambda r: _r((_first(r, ("startup",), "time_to_ready_s") or {}).get("time_to_ready_s")),
    ),
    "bytes_per_request": (
        SIZE,
        "bytes per in-flight request",
        UP,
        lambda r: _per_request(_first(r, ("ramp",), "bytes_per_request")),
    ),
    "soak.slope": (RATE, "soak slope", UP, _soak),
    "growth": (RATE, "growth after warm-up", UP, lambda r: _growth(r.get("growth"))),
    "recovery": (SECONDS, "recovery after bursts (longest)", UP, _recovery),
    "scrape_missed": (PERCENT, "missed by a 15s scrape", UP, _scrape("15s")),
    "oom": (COUNT, "OOM kills", UP, lambda r: Reading(float(len(r.get("oom_kills") or [])))),
    "hwm_spikes": (
        COUNT,
        "hwm_spike events",
        UP,
        lambda r: Reading(float((r.get("events") or {}).get("hwm_spike", 0))),
    ),
    "spikes": (COUNT, "spikes", UP, lambda r: _r(r.get("spikes_total", len(r.get("spikes") or [])))),
    "throughput": (RPS, "driver throughput", DOWN, _throughput),
    "latency_p50": (SECONDS, "driver latency p50", UP, _latency("latency_p50_ms")),
    "latency_p99": (SECONDS, "driver latency p99", UP, _latency("latency_p99_ms")),
    "error_rate": (PERCENT, "driver error rate", UP, _error_rate),
    "recommended": (SIZE, "recommended limit", UP, lambda r: _r(r.get("recommended_limit_bytes"))),
    "headroom": (PERCENT, "headroom", DOWN, lambda r: _r(r.get("headroom"))),
    "gaps": (COUNT, "messages missing", UP, lambda r: _r((r.get("samples") or {}).get("gaps"))),
}

# per-phase figure -> (kind, label, worse, getter on the phase row)
_SERIES_LABEL = {"rss": "rss", "cg_usage": "cgroup usage", "cg_working_set": "working set"}
_SERIES_KEY = {"rss": "rss", "cg_usage": "cg_usage", "cg_working_set": "working_set"}
PHASE_METRICS: dict[str, tuple[str, str, str, Getter]] = {
    "peak": (SIZE, "peak", UP, lambda p: _r(p.get("peak_bytes"))),
}


def _phase_series(series: str, q: str) -> Getter:
    return lambda p: _r(((p.get("series") or {}).get(series) or {}).get(f"{q}_bytes"))


for _s, _k in _SERIES_KEY.items():
    for _q in ("p50", "p99", "max"):
        PHASE_METRICS[f"{_k}.{_q}"] = (SIZE, f"{_SERIES_LABEL[_s]} {_q}", UP, _phase_series(_s, _q))
PHASE_METRICS.update(
    {
        "startup_peak": (SIZE, "startup peak", UP, lambda p: _r(p.get("startup_peak_bytes"))),
        "time_to_ready": (SECONDS, "time to ready", UP, lambda p: _r(p.get("time_to_ready_s"))),
        "bytes_per_request": (
            SIZE,
            "bytes per in-flight request",
            UP,
            lambda p: _r(p.get("bytes_per_request"), p.get("bytes_per_request_ci")),
        ),
        "recovery": (SECONDS, "recovery (longest)", UP, lambda p: _r(p.get("max_recovery_s"))),
        "retained": (SIZE, "retained after bursts", UP, lambda p: _r(p.get("retained_bytes"))),
        "slope": (RATE, "soak slope", UP, lambda p: _growth(p.get("growth"))),
        "throughput": (RPS, "throughput", DOWN, lambda p: _r((p.get("load") or {}).get("throughput_rps"))),
        "latency_p50": (
            SECONDS,
            "latency p50",
            UP,
            lambda p: _r((p.get("load") or {}).get("latency_p50_ms"), None, 1e-3),
        ),
        "latency_p99": (
            SECONDS,
            "latency p99",
            UP,
            lambda p: _r((p.get("load") or {}).get("latency_p99_ms"), None, 1e-3),
        ),
    }
)


def beyond_noise(base: Reading, new: Reading) -> bool | None:
    """Is the change from BASE to NEW larger than their 95 % intervals combined? None without both intervals.

    ``|new − base| > sqrt(h_base² + h_new²)``, h being each interval's half on
    the side facing the other value: a z-test on the difference of two
    independent estimates, which keeps Theil–Sen's asymmetric intervals honest.
    """
    if base.ci is None or new.ci is None:
        return None
    b, n = base.value, new.value
    if n >= b:
        hb, hn = base.ci[1] - b, n - new.ci[0]
    else:
        hb, hn = b - base.ci[0], new.ci[1] - n
    return abs(n - b) > math.hypot(max(hb, 0.0), max(hn, 0.0))


def phase_keys(report: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(key, phase row) in order; the key is the name, with #N from its second occurrence on."""
    seen: dict[str, int] = {}
    out = []
    for p in report.get("phases") or []:
        name = str(p.get("name"))
        seen[name] = seen.get(name, 0) + 1
        out.append((name if seen[name] == 1 else f"{name}#{seen[name]}", p))
    return out


def scrape_interval(name: str) -> str | None:
    """'15s' for scrape_missed, '30s' for scrape_missed_30s; None for other names."""
    if name == "scrape_missed":
        return "15s"
    if name.startswith("scrape_missed_") and name.endswith("s"):
        try:
            return f"{float(name[len('scrape_missed_') : -1]):g}s"
        except ValueError:
            return None
    return None


def lookup(name: str) -> tuple[str, str, str] | None:
    """(kind, label, worse) of a metric name, whether or not a report has it; None if unknown."""
    if name in RUN_METRICS:
        k, label, worse, _ = RUN_METRICS[name]
        return k, label, worse
    if scrape_interval(name):
        return PERCENT, f"missed by a {scrape_interval(name)} scrape", UP
    if name.startswith("phase."):
        for fig, (k, label, worse, _) in PHASE_METRICS.items():
            if name.endswith("." + fig) and len(name) > len("phase.") + len(fig) + 1:
                return k, label, worse
    return None


def reading(report: dict[str, Any], name: str) -> Reading | None:
    """The value (and interval) of a metric in a report; None when the report cannot say."""
    if name in RUN_METRICS:
        return RUN_METRICS[name][3](report)
    iv = scrape_interval(name)
    if iv:
        return _scrape(iv)(report)
    if name.startswith("phase."):
        rest = name[len("phase.") :]
        for key, p in phase_keys(report):
            if rest.startswith(key + ".") and rest[len(key) + 1 :] in PHASE_METRICS:
                return PHASE_METRICS[rest[len(key) + 1 :]][3](p)
    return None


def catalogue(report: dict[str, Any]) -> list[Metric]:
    """Every metric this report has a value for: the run's first, then each phase's."""
    out = [Metric(n, k, label, worse) for n, (k, label, worse, get) in RUN_METRICS.items() if get(report) is not None]
    for key, p in phase_keys(report):
        for fig, (k, label, worse, get) in PHASE_METRICS.items():
            if get(p) is not None:
                out.append(Metric(f"phase.{key}.{fig}", k, label, worse, group=key))
    return out


def fmt(kind: str, v: float, signed: bool = False) -> str:
    """A value of KIND for people; SIGNED for a change (percent kinds then in points, pp)."""
    sign = ("+" if v >= 0 else "-") if signed else ""
    a = abs(v) if signed else v
    if kind == SIZE:
        return sign + format_bytes(a)
    if kind == RATE:
        return sign + format_bytes(a) + "/h"
    if kind == PERCENT:
        return f"{sign}{a * 100:.1f}" + ("pp" if signed else "%")
    if kind == SECONDS:
        return f"{sign}{a * 1e3:.0f} ms" if a < 1 else f"{sign}{a:.3f} s"
    if kind == RPS:
        return f"{sign}{a:.1f}/s"
    return f"{sign}{a:g}"


def names_help() -> str:
    """The metric names for error messages and --help."""
    return ", ".join(RUN_METRICS) + ", scrape_missed_30s…, phase.NAME." + "|".join(PHASE_METRICS)
