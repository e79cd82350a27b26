"""Memory envelopes of several runs on one axis aligned on phase starts, not wall clock.

Two runs never start their phases at the same second (the service was ready
sooner, the sampler started earlier), so overlaying them by time from the
start of the recording compares a burst with a ramp. Here the axis is cut
into segments: what came before the first phase, each phase (matched by name,
as :func:`spikewatch.analysis.metrics.phase_keys` names them) and what came
after the last. Each segment is as wide as its longest run, and in every run
a phase's first sample lands on its segment's start. x = 0 is the start of
the first phase.

Every segment is bucketed through :func:`spikewatch.analysis.downsample.minmax`,
so a 1 ms spike keeps its full height in the overlay.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .downsample import minmax
from .metrics import phase_keys
from .peaks import series_arrays
from .reader import Source

BEFORE, AFTER = "(before)", "(after)"


@dataclass
class Segment:
    key: str
    kind: str
    x0: float  # seconds on the aligned axis
    width: float


@dataclass
class Trace:
    label: str
    series: str
    x: np.ndarray  # aligned seconds of each bucket's start
    lo: np.ndarray  # bytes
    hi: np.ndarray
    starts: dict[str, float] = field(default_factory=dict)  # segment key -> this run's own start (s from its t0)
    breaks: list[int] = field(default_factory=list)  # index of each segment's first bucket after the first


@dataclass
class Overlay:
    segments: list[Segment]
    traces: list[Trace]

    def segment(self, key: str) -> Segment:
        return next(s for s in self.segments if s.key == key)


def _bounds(report: dict[str, Any], end_s: float) -> list[tuple[str, str, float, float]]:
    """(key, kind, start, end) per segment in this run's own seconds; a phase runs until the next starts."""
    ph = phase_keys(report)
    if not ph:
        return [(AFTER, "", 0.0, end_s)]
    out = [(BEFORE, "", 0.0, float(ph[0][1]["t_start"]))]
    for i, (key, p) in enumerate(ph):
        stop = float(ph[i + 1][1]["t_start"]) if i + 1 < len(ph) else float(p["t_end"])
        out.append((key, str(p.get("kind", "")), float(p["t_start"]), stop))
    out.append((AFTER, "", float(ph[-1][1]["t_end"]), end_s))
    return out


def _series(src: Source, report: dict[str, Any], prefer: str | None) -> tuple[str, np.ndarray, np.ndarray] | None:
    for name in (prefer, report.get("headline_series"), "rss"):
        if name:
            arrs = series_arrays(src, name)
            if arrs is not None and len(arrs[0]):
                return name, arrs[0], arrs[1]
    return None


def align(runs: list[tuple[str, Source, dict[str, Any]]], buckets: int = 2000, series: str | None = None) -> Overlay:
    """Overlay ``(label, source, report)`` runs; ``series`` defaults to the first run's headline series."""
    prefer = series or (runs[0][2].get("headline_series") if runs else None)
    per_run = []
    for label, src, rep in runs:
        per_run.append((label, src, rep, _bounds(rep, src.duration_s if src.duration_s else 0.0)))
    order: list[tuple[str, str]] = []
    widths: dict[str, float] = {}
    for _, _, _, bounds in per_run:
        for key, kind, a, b in bounds:
            if key not in widths:
                order.append((key, kind))
                widths[key] = 0.0
            widths[key] = max(widths[key], b - a)
    # (before) ends at 0; the phases follow one another; (after) follows the last phase
    order.sort(key=lambda kk: 0 if kk[0] == BEFORE else (2 if kk[0] == AFTER else 1))
    segments = []
    x = -widths.get(BEFORE, 0.0)
    for key, kind in order:
        segments.append(Segment(key, kind, x, widths[key]))
        x += widths[key]
    total = max(x - segments[0].x0, 1e-9) if segments else 1.0
    seg_x0 = {s.key: s.x0 for s in segments}

    traces = []
    for label, src, rep, bounds in per_run:
        found = _series(src, rep, prefer)
        if found is None:
            continue
        name, t_ns, v = found
        rel = (t_ns - src.t0) / 1e9
        xs: list[Any] = []
        los: list[Any] = []
        his: list[Any] = []
        starts = {}
        breaks = []
        for key, _, a, b in bounds:
            starts[key] = a
            i, j = int(np.searchsorted(rel, a, side="left")), int(np.searchsorted(rel, b, side="left"))
            if key == AFTER:
                j = len(rel)
            if j <= i:
                continue
            n = max(10, int(buckets * (b - a) / total))
            bt, lo, hi = minmax(rel[i:j], v[i:j], n, t_range=(a, b) if b > a else None)
            # (before) is aligned on its end, every other segment on its start
            shift = seg_x0[key] + (widths[BEFORE] - (b - a) if key == BEFORE else 0.0) - a
            if xs:
                breaks.append(sum(len(x) for x in xs))
            xs.append(bt + shift)
            los.append(lo)
            his.append(hi)
        if xs:
            traces.append(
                Trace(label, name, np.concatenate(xs), np.concatenate(los), np.concatenate(his), starts, breaks)
            )
    return Overlay(segments, traces)


def polyline(tr: Trace) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) through (x, lo), (x, hi) of every bucket: drawn as a line, each bucket is a vertical stroke.

    A NaN between segments breaks the line: a run whose phase ended before its
    band does gets no stroke drawn across the time it does not have.
    """
    x = np.repeat(tr.x.astype(np.float64), 2)
    y = np.empty(2 * len(tr.lo), dtype=np.float64)
    y[0::2] = tr.lo
    y[1::2] = tr.hi
    at = [2 * b for b in tr.breaks]
    return np.insert(x, at, np.nan), np.insert(y, at, np.nan)
