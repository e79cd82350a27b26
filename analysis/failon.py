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

and every other metric of :mod:`spikewatch.analysis.metrics` (``startup_peak``,
``time_to_ready`` in ``2s``/``500ms``, ``bytes_per_request``, ``soak.slope``,
``recovery``, ``hwm_spikes``, ``throughput`` in requests/s, ``latency_p99``,
``phase.NAME.rss.p99``…). ``0`` needs no unit.

Against a baseline run (``compare``, ``report --baseline``) a VALUE with a sign
is a change from the baseline: ``peak > +10%`` (relative), ``startup_peak >
+20MiB`` (absolute, in the metric's units; percentage points as ``+5pp``),
``throughput < -10%``. A VALUE without a sign is always the value of the run
being judged, as before: ``soak.slope > 0``.

Metrics that carry a 95 % interval (``soak.slope``, ``bytes_per_request``
and their per-phase forms) are judged with it, so noise alone does not fail
a build: ``soak.slope > 0`` holds when the whole interval lies above 0 (the
soak grows, with 95 % confidence), and a change such as ``bytes_per_request >
+10%`` holds when it passes 10 % and is beyond the two runs' noise too.
``growth`` keeps its meaning from before intervals were used: its point estimate.

A condition that cannot be evaluated (``headroom`` without a limit, ``growth``
on a recording too short, a change without a baseline) fails too: a CI gate
that silently passes would lie.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from spikewatch.sampler.units import parse_duration, parse_size

from . import metrics
from .metrics import COUNT, PERCENT, RATE, RPS, SECONDS, SIZE

_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
    ">": operator.gt,
    "<": operator.lt,
}
# a metric name may hold dots (soak.slope, phase.climb.rss.p99), '#' (phase.rush#2.peak) and '-'
_EXPR = re.compile(r"^\s*([A-Za-z][A-Za-z0-9_.#-]*)\s*(>=|<=|==|!=|>|<)\s*(\S.*?)\s*$")

METRICS: dict[str, str] = {name: spec[0] for name, spec in metrics.RUN_METRICS.items()}
ABSOLUTE, CHANGE, RELATIVE = None, "change", "relative"
# judged on the point estimate even though the report has an interval: what it meant before intervals were used
POINT_ESTIMATE = frozenset({"growth"})


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
    against: str | None = ABSOLUTE  # None: the run's own value; "change": new − base; "relative": new / base − 1

    @property
    def needs_baseline(self) -> bool:
        return self.against is not None


def _metric_kind(name: str) -> tuple[str, str]:
    spec = metrics.lookup(name)
    if spec is None:
        raise FailOnError(f"unknown metric {name!r}: use one of {metrics.names_help()}")
    return spec[0], metrics.scrape_interval(name) or "15s"


_UNIT_EXAMPLE = {SIZE: "400MiB", RATE: "10MiB/h", PERCENT: "20%", COUNT: "0", SECONDS: "2s", RPS: "100"}


def _value(kind: str, raw: str, name: str, op: str, text: str, delta: bool) -> float:
    """RAW in the units of KIND (a change when DELTA: then percentages are points, 'pp')."""
    if raw.strip() in ("0", "0.0"):
        return 0.0
    if kind == SIZE:
        return float(parse_size(raw))
    if kind == RATE:
        num, sep, per = raw.partition("/")
        if not sep or per.strip().lower() not in ("h", "hour", "hr"):
            raise FailOnError(f"{text!r}: {name} takes a size per hour, e.g. {name}{op}{'+' if delta else ''}10MiB/h")
        return float(parse_size(num))
    if kind == PERCENT:
        suffix = "pp" if delta else "%"
        if not raw.endswith(suffix):
            raise FailOnError(
                f"{text!r}: {name} takes a percentage, e.g. {name}{op}"
                + ("+5pp (points) or +10% (relative)" if delta else "20%")
            )
        return float(raw[: -len(suffix)]) / 100.0
    if kind == SECONDS:
        return parse_duration(raw)
    if kind == RPS:
        return float(raw.removesuffix("/s"))
    value = float(raw)
    if value != int(value):
        raise ValueError(raw)
    return value


def parse(text: str) -> Condition:
    m = _EXPR.match(text)
    if not m:
        raise FailOnError(
            f"cannot read {text!r}: write METRIC OP VALUE, e.g. peak>400MiB, growth>10MiB/h, headroom<20%, "
            "oom>0, or against a baseline peak>+10%, startup_peak>+20MiB"
        )
    name, op, raw = m.groups()
    kind, interval = _metric_kind(name)
    against = ABSOLUTE
    sign = 1.0
    body = raw
    if raw[:1] in "+-":
        sign = -1.0 if raw[0] == "-" else 1.0
        body = raw[1:].strip()
        if body.endswith("%") and not body.endswith("pp"):
            against = RELATIVE
        else:
            against = CHANGE
    try:
        if against == RELATIVE:
            value = float(body[:-1]) / 100.0
        else:
            value = _value(kind, body, name, op, text, against == CHANGE)
        if not body or not math.isfinite(value):
            raise ValueError(raw)
    except FailOnError:
        raise
    except ValueError:
        raise FailOnError(
            f"{text!r}: {raw!r} is not a valid {kind} for {name} (e.g. {name}{op}{_UNIT_EXAMPLE[kind]}"
            f" or {name}{op}+10%)"
        ) from None
    return Condition(text.strip(), name, op, sign * value, kind, interval, against)


def parse_all(exprs: Iterable[str]) -> list[Condition]:
    """Parse repeatable and/or comma-separated expressions."""
    out = []
    for e in exprs:
        for part in e.split(","):
            if part.strip():
                out.append(parse(part))
    return out


def value_of(report: dict[str, Any], cond: Condition) -> float | None:
    r = metrics.reading(report, cond.metric)
    return r.value if r is not None else None


_fmt = metrics.fmt


def relative(base: float, new: float) -> float:
    """new / base − 1; ±inf from a zero base (0 when both are zero)."""
    if base == 0:
        return 0.0 if new == 0 else (float("inf") if new > 0 else float("-inf"))
    return (new - base) / abs(base)  # a negative base (a falling slope) keeps the sign of the change


def _pct(x: float) -> str:
    return f"{x * 100:+.1f}%" if abs(x) != float("inf") else ("+inf%" if x > 0 else "-inf%")


def check(
    report: dict[str, Any], exprs: Iterable[str] | Iterable[Condition], baseline: dict[str, Any] | None = None
) -> list[str]:
    """The conditions that hold (i.e. fail the run), each as a line saying why.

    Conditions with a signed value compare ``report`` against ``baseline``;
    without a baseline they cannot be checked, and fail.
    """
    items = list(exprs)
    conds = [x for x in items if isinstance(x, Condition)]
    conds += parse_all(str(x) for x in items if not isinstance(x, Condition))
    failed = []
    for c in conds:
        rd = metrics.reading(report, c.metric)
        v = rd.value if rd is not None else None
        if c.against is ABSOLUTE:
            if rd is None:
                failed.append(f"{c.text}: cannot be checked ({c.metric} is not available in this recording)")
            elif rd.ci is not None and c.metric not in POINT_ESTIMATE and c.op in (">", ">=", "<", "<="):
                edge = rd.ci[0] if c.op[0] == ">" else rd.ci[1]  # the whole interval must be past the threshold
                if _OPS[c.op](edge, c.value):
                    failed.append(
                        f"{c.text}: {c.metric} is {_fmt(c.kind, rd.value)} (95 % interval "
                        f"{_fmt(c.kind, rd.ci[0])} .. {_fmt(c.kind, rd.ci[1])}, all of it {c.op} {_fmt(c.kind, c.value)})"
                    )
            elif _OPS[c.op](float(rd.value), c.value):
                failed.append(f"{c.text}: {c.metric} is {_fmt(c.kind, rd.value)}")
            continue
        if baseline is None:
            failed.append(f"{c.text}: cannot be checked (a change needs a baseline: compare, or report --baseline)")
            continue
        brd = metrics.reading(baseline, c.metric)
        b = brd.value if brd is not None else None
        if v is None or b is None:
            where = " and ".join(w for w, x in (("the baseline", b), ("this run", v)) if x is None)
            failed.append(f"{c.text}: cannot be checked ({c.metric} is not available in {where})")
            continue
        if c.against == RELATIVE:
            d = relative(float(b), float(v))
            shown, limit = _pct(d), _pct(c.value)
        else:
            d = float(v) - float(b)
            shown, limit = _fmt(c.kind, d, signed=True), _fmt(c.kind, c.value, signed=True)
        noise = metrics.beyond_noise(brd, rd) if (brd is not None and rd is not None) else None
        if _OPS[c.op](d, c.value) and noise is not False:
            failed.append(
                f"{c.text}: {c.metric} went from {_fmt(c.kind, b)} to {_fmt(c.kind, v)} "
                f"({shown}{', beyond noise' if noise else ''}; fails when the change is {c.op} {limit})"
            )
    return failed


def needs_baseline(conditions: Iterable[Condition]) -> list[str]:
    """The texts of the conditions that compare against a baseline."""
    return [c.text for c in conditions if c.needs_baseline]
