"""``--fail-on`` conditions: ``peak>400MiB``, ``growth>10MiB/h``, ``headroom<20%``, ``oom>0``…

Each condition is ``METRIC OP VALUE``; OP is one of ``> >= < <= == !=``.
Metrics and the units their values take:

=====================  ============================================  ==================
metric                 meaning                                       value
=====================  ============================================  ==================
peak                   true peak of the headline series              size (``400MiB``)
p99                    p99 of the headline series                    size
recommended            recommended limit                             size
growth                 trend after warm-up (soak, else whole run)    size per hour (``10MiB/h``)
headroom               share of the limit left above the peak        percent (``20%``)
oom                    OOM kills                                     count
spikes                 spikes found                                  count
gaps                   messages missing from the recording           count
scrape_missed[_30s…]   share of the peak a scrape missed (15 s)      percent
=====================  ============================================  ==================

A condition that cannot be evaluated (``headroom`` without a limit, ``growth``
on a recording too short) fails too: a CI gate that silently passes would lie.
"""

from __future__ import annotations

import operator
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from spikewatch.sampler.units import format_bytes, parse_size

_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge, "<=": operator.le, "==": operator.eq, "!=": operator.ne,
    ">": operator.gt, "<": operator.lt,
}
_EXPR = re.compile(r"^\s*([a-z][a-z0-9_]*)\s*(>=|<=|==|!=|>|<)\s*(\S.*?)\s*$")

SIZE, RATE, PERCENT, COUNT = "size", "rate", "percent", "count"
METRICS: dict[str, str] = {
    "peak": SIZE, "p99": SIZE, "recommended": SIZE, "growth": RATE, "headroom": PERCENT,
    "oom": COUNT, "spikes": COUNT, "gaps": COUNT, "scrape_missed": PERCENT,
}


class FailOnError(ValueError):
    """A malformed ``--fail-on`` expression; the message says what is accepted."""


@dataclass
class Condition:
    text: str
    metric: str
    op: str
    value: float  # bytes, bytes/hour, fraction (0..1) or count
    kind: str
    interval: str = "15s"


def _metric_kind(name: str) -> tuple[str, str]:
    if name in METRICS:
        return METRICS[name], "15s"
    m = re.fullmatch(r"scrape_missed_(\d+(?:\.\d+)?)s", name)
    if m:
        return PERCENT, f"{float(m.group(1)):g}s"
    raise FailOnError(f"unknown metric {name!r}: use one of {', '.join(METRICS)} (or scrape_missed_30s, _60s…)")


def parse(text: str) -> Condition:
    m = _EXPR.match(text)
    if not m:
        raise FailOnError(f"cannot read {text!r}: write METRIC OP VALUE, e.g. peak>400MiB, growth>10MiB/h, headroom<20%, oom>0")
    name, op, raw = m.groups()
    kind, interval = _metric_kind(name)
    try:
        if kind == SIZE:
            value = float(parse_size(raw))
        elif kind == RATE:
            num, sep, per = raw.partition("/")
            if not sep or per.strip().lower() not in ("h", "hour", "hr"):
                raise FailOnError(f"{text!r}: growth takes a size per hour, e.g. growth>10MiB/h")
            value = float(parse_size(num))
        elif kind == PERCENT:
            if not raw.endswith("%"):
                raise FailOnError(f"{text!r}: {name} takes a percentage, e.g. {name}{op}20%")
            value = float(raw[:-1]) / 100.0
        else:
            value = float(raw)
            if value != int(value):
                raise ValueError(raw)
    except FailOnError:
        raise
    except ValueError:
        raise FailOnError(f"{text!r}: {raw!r} is not a valid {kind} for {name}") from None
    return Condition(text.strip(), name, op, value, kind, interval)


def parse_all(exprs: Iterable[str]) -> list[Condition]:
    """Parse repeatable and/or comma-separated expressions."""
    out = []
    for e in exprs:
        for part in e.split(","):
            if part.strip():
                out.append(parse(part))
    return out


def value_of(report: dict[str, Any], cond: Condition) -> float | None:
    m = cond.metric
    if m == "peak":
        return report.get("peak_bytes")
    if m == "p99":
        return (report.get("series", {}).get(report.get("headline_series"), {}) or {}).get("p99_bytes")
    if m == "recommended":
        return report.get("recommended_limit_bytes")
    if m == "growth":
        g = report.get("growth")
        return g.get("bytes_per_hour") if g else None
    if m == "headroom":
        return report.get("headroom")
    if m == "oom":
        return len(report.get("oom_kills") or [])
    if m == "spikes":
        return report.get("spikes_total", len(report.get("spikes") or []))
    if m == "gaps":
        return (report.get("samples") or {}).get("gaps")
    if m.startswith("scrape_missed"):
        sv = (report.get("scrape_view") or {}).get(cond.interval) or {}
        return sv.get("missed_fraction")
    return None


def _fmt(kind: str, v: float) -> str:
    if kind == SIZE:
        return format_bytes(v)
    if kind == RATE:
        return format_bytes(v) + "/h"
    if kind == PERCENT:
        return f"{v * 100:.1f}%"
    return f"{v:g}"


def check(report: dict[str, Any], exprs: Iterable[str] | Iterable[Condition]) -> list[str]:
    """The conditions that hold (i.e. fail the run), each as a line saying why."""
    items = list(exprs)
    conds = [x for x in items if isinstance(x, Condition)]
    conds += parse_all(x for x in items if not isinstance(x, Condition))
    failed = []
    for c in conds:
        v = value_of(report, c)
        if v is None:
            failed.append(f"{c.text}: cannot be checked ({c.metric} is not available in this recording)")
        elif _OPS[c.op](float(v), c.value):
            failed.append(f"{c.text}: {c.metric} is {_fmt(c.kind, v)}")
    return failed
