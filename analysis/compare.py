"""Run against run: every metric of two reports side by side, with a noise verdict.

``compare_reports(base, new)`` gives one :class:`Row` per metric that either
report has (:mod:`spikewatch.analysis.metrics`: the run's figures, then each
phase's, phases matched by name), with the absolute and relative change and a
verdict:

* ``beyond noise`` / ``within noise``: both runs carry a 95 % interval for the
  metric (a soak's slope, a ramp's bytes per in-flight request) and the change
  is larger / not larger than the two intervals combined
  (:func:`spikewatch.analysis.metrics.beyond_noise`);
* ``no interval``: one measurement per run (a peak, a count…): spikewatch cannot
  tell a change from run-to-run noise and says so rather than guess;
* ``same``: both values are exactly equal; ``missing``: one run has no value.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import failon, metrics
from .metrics import Metric, Reading

BEYOND, WITHIN, NO_INTERVAL, SAME, MISSING = "beyond noise", "within noise", "no interval", "same", "missing"


class CompareError(ValueError):
    """An input that cannot be compared; the message says which and why."""


@dataclass
class Run:
    label: str
    path: str
    report: dict[str, Any]
    recording: str | None = None  # where the samples are, for the overlay (None: report JSON only)


@dataclass
class Row:
    metric: str
    label: str
    group: str  # "run" or the phase key
    kind: str
    worse: str  # "up" or "down": the direction of a regression
    base: float | None
    new: float | None
    base_ci: tuple[float, float] | None
    new_ci: tuple[float, float] | None
    change: float | None
    relative: float | None
    verdict: str
    direction: str | None = None  # "worse"/"better" when beyond noise, else None


@dataclass
class Pair:
    new: Run
    rows: list[Row]
    failures: list[str] = field(default_factory=list)  # --fail-on lines that hold


@dataclass
class Comparison:
    base: Run
    pairs: list[Pair]
    conditions: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return any(p.failures for p in self.pairs)

    def to_dict(self) -> dict[str, Any]:
        def run(r: Run) -> dict[str, Any]:
            return {
                "label": r.label,
                "path": r.path,
                "recording": r.recording,
                "source": r.report.get("source"),
                "headline_series": r.report.get("headline_series"),
            }

        return {
            "version": 1,
            "base": run(self.base),
            "fail_on": self.conditions,
            "failed": self.failed,
            "comparisons": [
                {
                    "new": run(p.new),
                    "failures": p.failures,
                    "beyond_noise": [r.metric for r in p.rows if r.verdict == BEYOND],
                    "rows": [_row_dict(r) for r in p.rows],
                }
                for p in self.pairs
            ],
        }


def _row_dict(r: Row) -> dict[str, Any]:
    d = asdict(r)
    for k in ("base_ci", "new_ci"):
        d[k] = list(d[k]) if d[k] else None
    if d["relative"] is not None and math.isinf(d["relative"]):
        d["relative"] = "inf" if d["relative"] > 0 else "-inf"  # JSON has no infinity
    return d


def verdict(base: Reading | None, new: Reading | None) -> str:
    if base is None or new is None:
        return MISSING
    beyond = metrics.beyond_noise(base, new)
    if beyond is None:
        return SAME if base.value == new.value else NO_INTERVAL
    return BEYOND if beyond else WITHIN


def _ordered(base: dict[str, Any], new: dict[str, Any]) -> list[Metric]:
    seen: dict[str, Metric] = {}
    for m in metrics.catalogue(base) + metrics.catalogue(new):
        seen.setdefault(m.name, m)
    known = list(metrics.RUN_METRICS)
    run = sorted(
        (m for m in seen.values() if m.group == "run"),
        key=lambda m: known.index(m.name) if m.name in known else len(known),
    )
    order = [k for k, _ in metrics.phase_keys(base)]
    order += [k for k, _ in metrics.phase_keys(new) if k not in order]
    phase = sorted((m for m in seen.values() if m.group != "run"), key=lambda m: order.index(m.group))
    return run + phase  # sorted() is stable: within a phase, catalogue order


def compare_reports(base: dict[str, Any], new: dict[str, Any]) -> list[Row]:
    rows = []
    for m in _ordered(base, new):
        b, n = metrics.reading(base, m.name), metrics.reading(new, m.name)
        change = n.value - b.value if (b and n) else None
        rel = failon.relative(b.value, n.value) if (b and n) else None
        v = verdict(b, n)
        direction = None
        if v == BEYOND and change:
            direction = "worse" if (change > 0) == (m.worse == metrics.UP) else "better"
        rows.append(
            Row(
                m.name,
                m.label,
                m.group,
                m.kind,
                m.worse,
                b.value if b else None,
                n.value if n else None,
                b.ci if b else None,
                n.ci if n else None,
                change,
                rel,
                v,
                direction,
            )
        )
    return rows


def compare(base: Run, news: list[Run], fail_on: list[str] | None = None) -> Comparison:
    conds = failon.parse_all(fail_on or [])
    pairs = [
        Pair(
            n,
            compare_reports(base.report, n.report),
            failon.check(n.report, conds, baseline=base.report) if conds else [],
        )
        for n in news
    ]
    return Comparison(base, pairs, [c.text for c in conds])


def load_run(path: str | os.PathLike[str], label: str | None = None, **report_options: Any) -> Run:
    """A report JSON as it is, or a recording (its report is built first)."""
    p = Path(path)
    if p.is_dir():  # a `spikewatch run --out` folder
        for name in ("report.json", "recording"):
            if (p / name).exists():
                return load_run(p / name, label or p.name, **report_options)
    label = label or (p.parent.name if p.name in ("report.json", "recording") else p.name)
    head = b""
    if p.is_file():  # else a rotated run: its segments' base name, their folder or a glob
        with open(p, "rb") as f:
            head = f.read(1)
    if head in (b"{", b" ", b"\n"):
        try:
            rep = json.loads(p.read_text())
        except (ValueError, UnicodeDecodeError) as exc:
            raise CompareError(f"{p}: not a report JSON ({exc})") from None
        if not isinstance(rep, dict) or "peak_bytes" not in rep or "phases" not in rep:
            raise CompareError(f"{p}: a JSON file but not a spikewatch report (no peak_bytes/phases)")
        rec = rep.get("recording")
        if rec and not Path(rec).is_absolute():
            rec = str(p.parent / rec) if (p.parent / rec).exists() else rec
        if rec and not Path(rec).exists() and (p.parent / "recording").exists():
            rec = str(p.parent / "recording")  # a run folder that moved (e.g. a CI artifact)
        return Run(label, str(p), rep, rec if rec and Path(rec).exists() else None)
    from spikewatch.sampler.wire.recording import RecordingError

    from .reader import load
    from .report import build_report

    try:
        rec = load(p)
    except FileNotFoundError as exc:
        raise CompareError(f"{p}: no such file, nor a run folder or segments ({exc})") from None
    except (RecordingError, OSError) as exc:
        raise CompareError(f"{p}: neither a report JSON nor a readable recording ({exc})") from None
    src = rec.main
    if not any(len(s) for s in src.series.values()):
        raise CompareError(f"{p}: the recording holds no samples")
    rep = build_report(src, **report_options)
    rep["recording"] = str(p)
    rep["sources"] = list(rec.sources)
    return Run(label, str(p), rep, str(p))
