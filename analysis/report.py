"""The report: every analysis over one source, as the JSON document of docs/architecture.md ("Report JSON").

``build_report(rec)`` returns a plain dict (JSON-ready); the terminal summary,
the HTML page and ``--fail-on`` all read that dict, so they cannot disagree.
Times are seconds from the start of the recording.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from spikewatch.sampler.wire import protocol

from . import checklist as checklist_mod
from . import endpoints, heap, limits, peaks, phases, scrape, spikes, trees
from .context import Ctx
from .reader import Recording, Source

REPORT_VERSION = 1


def build_report(
    rec: Recording | Source,
    *,
    source: str | None = None,
    intervals_s: Sequence[float] = scrape.DEFAULT_INTERVALS_S,
    spike_params: spikes.SpikeParams | None = None,
    target_concurrency: float | None = None,
    margin: float = 0.25,
    scrape_offsets: int = 500,
) -> dict[str, Any]:
    src = rec if isinstance(rec, Source) else rec.source(source)
    head_name, head_reason = peaks.headline_choice(src)
    ctx = Ctx.of(src, head_name)
    stats = peaks.series_stats(src)
    head = stats.get(ctx.name, {})
    peak = int(head.get("peak_bytes") or 0)
    limit = src.limit_bytes

    fig = src.stream  # a streamed long run: exact figures from its one pass, series as envelopes
    acc = fig.stats.get(ctx.name) if fig is not None else None
    streamed = acc is not None and ctx.name in fig.scrape and spike_params is None

    phase_objs, phase_rows = phases.analyse_phases(ctx, limit, target_concurrency)
    if streamed:
        sp = spikes.SpikeParams()
        evs = spikes.hwm_events(ctx)
        found = [dict(x) for x in fig.spikes[ctx.name].found]
        spike_list, spike_total = spikes.finish(ctx, phase_objs, found, fig.spikes[ctx.name].bases(evs), sp)
    else:
        spike_list, spike_total = spikes.detect(ctx, phase_objs, spike_params)
    kills = limits.oom_kills(ctx)
    endpoint_rows, attribution = endpoints.attribute(ctx, phase_objs)

    soak_growth = [p["growth"] for p in phase_rows if p["kind"] == "soak" and p.get("growth")]
    # a trend over less than a minute says nothing about stabilising
    long_enough = len(ctx.t) > 10 and int(ctx.t[-1]) - int(ctx.t[0]) >= 60_000_000_000
    whole = phases.growth(ctx, int(ctx.t[0]), int(ctx.t[-1]), limit) if long_enough else None
    growth = (
        dict(soak_growth[-1], basis="soak phase")
        if soak_growth
        else (dict(whole, basis="whole recording") if whole else None)
    )
    extrap = [p["extrapolation"]["bytes"] for p in phase_rows if p["kind"] == "ramp" and p.get("extrapolation")]
    rec_limit, rec_reason = limits.recommend(
        peak, limit, kills, growth, max(extrap) if (extrap and target_concurrency) else None, margin
    )
    checks, reasons = checklist_mod.checklist(src, phase_rows, limit, peak, len(kills), whole)

    count = len(ctx.t)
    span_s = (int(ctx.t[-1]) - int(ctx.t[0])) / 1e9 if count > 1 else 0.0
    period = src.period_ns
    counters = src.hello.get("counters") or {}
    overrun_events = src.events_of(protocol.EV_OVERRUN)
    long_gaps = 0
    longest_gap_ms = 0.0
    scrape_view = None
    if acc is not None and acc.count and acc.first_t is not None and acc.last_t is not None:
        count = acc.count
        span_s = (acc.last_t - acc.first_t) / 1e9 if count > 1 else 0.0
        longest_gap_ms = round(acc.diff_max / 1e6, 3) if count > 1 else 0.0
        long_gaps = acc.long_gaps(period)
        if streamed and tuple(intervals_s) == fig.scrape_intervals and scrape_offsets == 500:
            scrape_view = fig.scrape[ctx.name].view(peak)
    elif count > 1:
        d = np.diff(ctx.t)
        longest_gap_ms = round(float(d.max()) / 1e6, 3)
        if period:
            long_gaps = int(np.count_nonzero(d > 5 * period))

    report: dict[str, Any] = {
        "version": REPORT_VERSION,
        "recording": str(getattr(rec, "path", "")),
        "source": src.src,
        "sources": list(rec.sources) if isinstance(rec, Recording) else [src.src],
        "duration_s": round(src.duration_s, 6),
        "samples": {
            "count": count,
            "achieved_hz": round((count - 1) / span_s, 3) if span_s > 0 else None,
            "target_hz": round(1e9 / period, 3) if period else None,
            "gaps": src.seq_missed,
            "gap_ranges": [list(g) for g in src.seq_gaps[:50]],
            "overruns": int(counters.get("overruns", len(overrun_events))),
            "long_gaps": long_gaps,
            "longest_gap_ms": longest_gap_ms,
        },
        "series": stats,
        "headline_series": ctx.name,
        "headline_reason": head_reason,
        "tree": trees.summary(src, ctx.name, (stats.get(protocol.SERIES_RSS) or {}).get("peak_bytes")),
        "peak_bytes": peak,
        "peak_t": head.get("peak_t"),
        "peak_source": head.get("peak_source", "sampled"),
        "limit_bytes": limit,
        "limit_from": src.limit_origin[0] if limit is not None else None,
        "limit_kind": src.limit_origin[1] if limit is not None else None,
        "headroom": limits.headroom(peak, limit),
        "recommended_limit_bytes": rec_limit,
        "recommended_limit_reason": rec_reason,
        "scrape_view": scrape_view
        if scrape_view is not None
        else (scrape.scrape_view(ctx.t, ctx.v, peak, int(ctx.t[0]), intervals_s, scrape_offsets) if count else {}),
        "spikes": spike_list,
        "spikes_total": spike_total,
        "phases": phase_rows,
        "growth": growth,
        "endpoints": endpoint_rows,
        "endpoint_attribution": attribution,
        "oom_kills": kills,
        "events": _event_counts(src),
        "markers": [
            {"t": ctx.rel(int(m.get("t", 0))), "kind": m.get("kind"), "name": m.get("name")} for m in src.markers
        ],
        "checklist": checks,
        "checklist_reasons": reasons,
        # what the reader salvaged of a partial or damaged file (complete, notes, skipped ranges…)
        "integrity": src.integrity or None,
    }
    heap_row = heap.analyse(ctx, phase_rows)
    if heap_row is not None:
        report["heap"] = heap_row
    return report


def _event_counts(src: Source) -> dict[str, int]:
    out: dict[str, int] = {}
    for e in src.events:
        k = str(e.get("kind"))
        out[k] = out.get(k, 0) + 1
    return out


def report_file(
    recording: str | os.PathLike[str],
    *,
    json_path: str | os.PathLike[str] | None = None,
    html_path: str | os.PathLike[str] | None = None,
    source: str | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Load a recording, build its report, and write JSON and/or HTML: one call for the runner.

    ``options`` go to :func:`build_report` (intervals_s, target_concurrency, margin…).
    """
    import json

    from spikewatch.exits import atomic_path

    from .reader import load

    rec = load(recording)
    rep = build_report(rec, source=source, **options)
    # Under a hidden temporary name until whole: no 0-byte or half report under the real one.
    if json_path is not None:
        with atomic_path(json_path) as tmp:
            tmp.write_text(json.dumps(rep, indent=2, default=str) + "\n", encoding="utf-8")
    if html_path is not None:
        from .html import write_html

        with atomic_path(html_path) as tmp:
            write_html(rec, rep, tmp)
    return rep
