"""One self-contained HTML page: the memory chart plus the report's tables.

The page opens offline: plotly.js is embedded inline (no CDN), and nothing
else is loaded from anywhere. The chart draws every series through a min/max
envelope per pixel column (:mod:`spikewatch.analysis.downsample`), so a 1 ms spike in an
hour-long run still shows at full height.
"""

from __future__ import annotations

import html as _html
import json
import os
from importlib import resources
from typing import Any

import jinja2
import numpy as np
import plotly.graph_objects as go
from spikewatch.sampler.units import format_bytes
from spikewatch.sampler.wire import protocol

from . import scrape
from .downsample import envelope_xy
from .endpoints import describe as describe_attribution
from .heap import describe as describe_heap
from .heap import heap_ctx
from .peaks import series_arrays
from .phases import describe_growth
from .reader import Recording, Source
from .terminal import ENDPOINT_COLUMNS, endpoint_cells, headline, phase_notes
from .trees import describe as describe_tree

MiB = float(1 << 20)
BUCKETS = 2000
_PHASE_COLOURS = [
    "rgba(99,110,250,0.10)",
    "rgba(0,204,150,0.10)",
    "rgba(255,161,90,0.12)",
    "rgba(171,99,250,0.10)",
    "rgba(25,211,243,0.10)",
    "rgba(255,102,146,0.10)",
]


def _b(n: Any) -> str:
    return format_bytes(n) if isinstance(n, (int, float)) else "–"


def _s(x: Any) -> str:
    return f"{x:.3f} s" if isinstance(x, (int, float)) else "–"


LABEL_FONT_PX = 11
LABEL_ROW_PX = 16
# Label widths are estimated for a narrow plot (the page's chart is wider on most screens),
# so rows are assigned conservatively: on a wider chart the labels only get further apart.
_PLOT_PX = 800
_CHAR_PX = 0.62 * LABEL_FONT_PX


def stagger(starts: list[float], labels: list[str], span: float, plot_px: int = _PLOT_PX) -> list[int]:
    """A row for each label (0 = nearest the plot) such that labels in one row never overlap.

    Each label starts at its x (data units, ``span`` wide across ``plot_px`` pixels) and is
    as wide as its text; the first row where the previous label has ended takes it.
    """
    per_px = span / plot_px if span > 0 else 0.0
    ends: list[float] = []
    rows = []
    for x, text in sorted(zip(starts, labels), key=lambda xl: xl[0]):
        width = (len(text) * _CHAR_PX + 8) * per_px
        row = next((i for i, end in enumerate(ends) if x >= end), len(ends))
        if row == len(ends):
            ends.append(0.0)
        ends[row] = x + width
        rows.append(row)
    order = sorted(range(len(starts)), key=lambda i: starts[i])
    out = [0] * len(starts)
    for k, i in enumerate(order):
        out[i] = rows[k]
    return out


def figure(src: Source, report: dict[str, Any], buckets: int = BUCKETS) -> go.Figure:
    fig = go.Figure()
    head = report["headline_series"]
    names = list(report["series"])
    names.sort(key=lambda n: (n != head, report["series"][n]["rate"] != "sample", n))
    for name in names:
        arrs = series_arrays(src, name)
        if arrs is None:
            continue
        x, y = envelope_xy(arrs[0], arrs[1], buckets)
        fig.add_trace(
            go.Scattergl(
                x=src.rel(x),
                y=y / MiB,
                mode="lines",
                name=name + (" (headline)" if name == head else ""),
                line={"width": 1.6 if name == head else 1.0},
                visible=True if (name == head or report["series"][name]["rate"] == "sample") else "legendonly",
                hovertemplate="%{x:.3f} s<br>%{y:.1f} MiB<extra>" + name + "</extra>",
            )
        )

    hctx = heap_ctx(src)
    if hctx is not None:
        x, y = envelope_xy(hctx.t, hctx.v, buckets)
        metric = (report.get("heap") or {}).get("metric") or "heap"
        fig.add_trace(
            go.Scattergl(
                x=src.rel(x),
                y=y / MiB,
                mode="lines",
                name=f"heap ({metric}, the service's own figure)",
                line={"width": 1.6, "dash": "dot", "color": "#2ca02c"},
                hovertemplate="%{x:.3f} s<br>%{y:.1f} MiB<extra>heap</extra>",
            )
        )

    phases = report.get("phases") or []
    labels = [f"{p['name']} ({p['kind']})" for p in phases]
    span = max([float(report.get("duration_s") or 0), *(p["t_end"] for p in phases)], default=0.0)
    label_rows = stagger([p["t_start"] for p in phases], labels, span)
    for i, (p, label, row) in enumerate(zip(phases, labels, label_rows)):
        fig.add_vrect(
            x0=p["t_start"],
            x1=p["t_end"],
            fillcolor=_PHASE_COLOURS[i % len(_PHASE_COLOURS)],
            line_width=0,
            layer="below",
        )
        # Above the plot, one row per overlap: a short phase's label never covers its neighbour's.
        fig.add_annotation(
            x=p["t_start"],
            xref="x",
            xanchor="left",
            y=1,
            yref="paper",
            yanchor="bottom",
            yshift=2 + row * LABEL_ROW_PX,
            text=label,
            showarrow=False,
            font={"size": LABEL_FONT_PX},
            bgcolor="rgba(255,255,255,0.85)",
        )

    notes = [m for m in src.markers if m.get("kind") == protocol.NOTE]
    if notes:
        fig.add_trace(
            go.Scatter(
                x=[src.rel(int(m["t"])) for m in notes],
                y=[0] * len(notes),
                mode="markers",
                name="notes",
                marker={"symbol": "triangle-up", "size": 11, "color": "#444"},
                text=[str(m.get("name")) for m in notes],
                hovertemplate="%{x:.3f} s: %{text}<extra>note</extra>",
            )
        )
        for m in notes:
            fig.add_vline(x=src.rel(int(m["t"])), line_dash="dot", line_color="#888", line_width=1)

    ht, hv = series_arrays(src, head) or (np.zeros(0, np.int64), np.zeros(0, np.int64))

    def at(t: int) -> float:
        if not len(ht):
            return 0.0
        i = max(0, int(np.searchsorted(ht, t, side="right")) - 1)
        return float(hv[i]) / MiB

    evs = [e for e in src.events if e.get("kind") not in (protocol.EV_OVERRUN, protocol.EV_OOM_KILL)]
    if evs:
        fig.add_trace(
            go.Scatter(
                x=[src.rel(int(e["t"])) for e in evs],
                y=[
                    (e["bytes"] / MiB) if e.get("kind") == protocol.EV_HWM_SPIKE and e.get("bytes") else at(int(e["t"]))
                    for e in evs
                ],
                mode="markers",
                name="events",
                marker={"symbol": "diamond", "size": 9, "color": "#7f3c8d"},
                text=[_event_text(e) for e in evs],
                hovertemplate="%{x:.3f} s: %{text}<extra>event</extra>",
            )
        )

    kills = report.get("oom_kills") or []
    if kills:
        fig.add_trace(
            go.Scatter(
                x=[k["t"] for k in kills],
                y=[(k.get("last_bytes") or 0) / MiB for k in kills],
                mode="markers",
                name="OOM kills",
                marker={"symbol": "x", "size": 16, "color": "red", "line": {"width": 2}},
                text=[f"OOM kill pid {k.get('pid')}, last {_b(k.get('last_bytes'))}" for k in kills],
                hovertemplate="%{x:.3f} s: %{text}<extra></extra>",
            )
        )

    if report.get("limit_bytes"):
        fig.add_hline(
            y=report["limit_bytes"] / MiB,
            line_color="red",
            line_dash="dash",
            annotation_text=f"limit {_b(report['limit_bytes'])}",
            annotation_position="top right",
        )

    sv = report.get("scrape_view") or {}
    first = "15s" if "15s" in sv else next(iter(sv), None)
    if first and sv[first].get("median_offset_s") is not None and len(ht):
        st, sy = scrape.scrape_points(ht, hv, float(first[:-1]), sv[first]["median_offset_s"], int(ht[0]))
        fig.add_trace(
            go.Scatter(
                x=src.rel(st),
                y=sy / MiB,
                mode="markers+lines",
                name=f"what a {first} scrape saw",
                line={"dash": "dot", "width": 1, "color": "#e07b00"},
                marker={"size": 7, "color": "#e07b00"},
                hovertemplate="%{x:.1f} s: %{y:.1f} MiB<extra>" + first + " scrape</extra>",
            )
        )

    spikes = report.get("spikes") or []
    if spikes:
        fig.add_trace(
            go.Scatter(
                x=[s["peak_t"] for s in spikes],
                y=[s["peak_bytes"] / MiB for s in spikes],
                mode="markers",
                name="spikes",
                marker={"symbol": "triangle-down", "size": 8, "color": "#d62728"},
                text=[
                    f"+{_b(s['height_bytes'])} over {_b(s['baseline_bytes'])}, {s['duration_ms']:.0f} ms"
                    for s in spikes
                ],
                hovertemplate="%{x:.3f} s: %{text}<extra>spike</extra>",
            )
        )

    fig.update_layout(
        title=_html.escape(headline(report)),
        xaxis_title="seconds from the start of the recording",
        yaxis_title="MiB",
        height=620,
        template="plotly_white",
        hovermode="closest",
        legend={"orientation": "h", "y": -0.15},
        margin={"t": 80 + (max(label_rows) + 1 if label_rows else 0) * LABEL_ROW_PX, "l": 60, "r": 20, "b": 40},
    )
    return fig


def _event_text(e: dict[str, Any]) -> str:
    k = e.get("kind")
    extra: dict[str, Any] = {
        kk: e[kk] for kk in ("pid", "code", "signal", "series", "old", "new", "old_pid") if kk in e
    }
    if k == protocol.EV_HWM_SPIKE and e.get("bytes"):
        extra["bytes"] = _b(e["bytes"])
    return f"{k} " + ", ".join(f"{a}={b}" for a, b in extra.items())


def _table(headers: list[str], rows: list[list[Any]]) -> dict[str, Any]:
    return {"headers": headers, "rows": rows}


def context(src: Source, report: dict[str, Any], title: str = "spikewatch report") -> dict[str, Any]:
    """What the report template renders: plain values (the template escapes them) and tables.

    A table is ``{"headers": [...], "rows": [[...], ...]}``; ``summary`` is a list of
    ``[label, value]`` rows, so another line is one more row.
    """
    fig = figure(src, report)
    smp = report["samples"]
    summary: list[list[Any]] = [
        ["recording", report.get("recording")],
        ["source (sampler session)", report.get("source")],
        ["duration", _s(report.get("duration_s"))],
        ["samples", f"{smp['count']:,} at {smp['achieved_hz'] or 0:.0f} Hz (target {smp.get('target_hz') or '–'} Hz)"],
        ["missing messages (seq gaps)", smp["gaps"]],
        ["sampler overruns", smp["overruns"]],
        ["longest gap between samples", f"{smp['longest_gap_ms']} ms"],
        [
            "headline series",
            f"{report['headline_series']} (the one the limit applies to)"
            if report.get("limit_bytes")
            else report["headline_series"],
        ],
        ["why this series", report.get("headline_reason") or "–"],
        ["true peak", f"{_b(report['peak_bytes'])} at {_s(report.get('peak_t'))} ({report['peak_source']})"],
        ["limit", _b(report.get("limit_bytes"))],
        ["headroom", f"{report['headroom'] * 100:.1f} %" if report.get("headroom") is not None else "–"],
        ["recommended limit", f"{_b(report.get('recommended_limit_bytes'))}: {report.get('recommended_limit_reason')}"],
    ]
    tree = report.get("tree")
    if tree:
        summary.append(["processes in the tree", describe_tree(tree)])
        summary.append(["kernel high-water marks", tree["hwm_note"]])
    g = report.get("growth")
    if g:
        summary.append(["growth after warm-up", f"{describe_growth(g)} over the {g['basis']}"])

    h = report.get("heap")
    heap: dict[str, Any] | None = None
    if h:
        rows = [
            [f"burst {k} of '{b['phase']}' at {_s(b['t_start'])}", describe_heap(b, h.get("rss_series", "rss"))]
            for k, b in enumerate(h.get("bursts") or [], 1)
        ]
        if h.get("after_bursts"):
            rows.append(["after all the bursts", describe_heap(h["after_bursts"], h.get("rss_series", "rss"))])
        heap = {
            "metric": "–" if h.get("metric") is None else h["metric"],
            "samples": h["samples"],
            "peak": _b(h["peak_bytes"]),
            "peak_at": _s(h["peak_t"]),
            "table": _table(["", ""], rows) if rows else None,
        }

    checklist = [
        {"question": k.replace("_", " "), "answer": v, "why": report.get("checklist_reasons", {}).get(k)}
        for k, v in report["checklist"].items()
    ]

    scrape_rows = _table(
        [
            "interval",
            "dashboard max (median over offsets)",
            "worst offset",
            "best offset",
            "missed",
            "P(see ≥ 90 % of the peak)",
        ],
        [
            [
                k,
                _b(v.get("max_bytes")),
                _b(v.get("worst_bytes")),
                _b(v.get("best_bytes")),
                f"{v['missed_fraction'] * 100:.1f} %" if v.get("missed_fraction") is not None else "–",
                f"{v['hit_probability'] * 100:.1f} %" if v.get("hit_probability") is not None else "–",
            ]
            for k, v in (report.get("scrape_view") or {}).items()
        ],
    )

    series = _table(
        ["series", "peak", "peak at", "peak from", "p99", "mean", "samples", "rate"],
        [
            [
                n,
                _b(s["peak_bytes"]),
                _s(s["peak_t"]),
                s["peak_source"],
                _b(s["p99_bytes"]),
                _b(s["mean_bytes"]),
                f"{s['count']:,}",
                s["rate"],
            ]
            for n, s in report["series"].items()
        ],
    )

    phases = report.get("phases") or []
    details: list[dict[str, Any]] = []
    for p in phases:
        if p["kind"] in ("burst", "spike") and p.get("bursts"):
            details.append(
                {
                    "title": f"Bursts of '{p['name']}'",
                    "table": _table(
                        ["from", "to", "baseline before", "peak", "rise", "recovery", "retained"],
                        [
                            [
                                _s(b["t_start"]),
                                _s(b["t_end"]),
                                _b(b["baseline_bytes"]),
                                _b(b["peak_bytes"]),
                                _b(b.get("rise_bytes")),
                                _s(b["recovery_s"]) if b["recovery_s"] is not None else "not recovered",
                                _b(b["retained_bytes"]),
                            ]
                            for b in p["bursts"]
                        ],
                    ),
                }
            )
        if p["kind"] == "ramp" and p.get("steps"):
            details.append(
                {
                    "title": f"Steps of '{p['name']}'",
                    "table": _table(
                        ["from", "to", "load level", "memory (2nd half median)", "drift", "plateau"],
                        [
                            [
                                _s(s["t_start"]),
                                _s(s["t_end"]),
                                s.get("level"),
                                _b(s.get("level_bytes")),
                                _b(s.get("drift_bytes")),
                                {True: "yes", False: "no"}.get(s.get("plateau"), "–"),
                            ]
                            for s in p["steps"]
                        ],
                    ),
                }
            )

    kills = report.get("oom_kills") or []
    spikes = report.get("spikes") or []
    return {
        "title": title,
        "headline": headline(report),
        "chart": fig.to_html(full_html=False, include_plotlyjs=True, config={"displaylogo": False}),
        "summary": summary,
        "heap": heap,
        "checklist": checklist,
        "scrape": scrape_rows,
        "series": series,
        "phases": _table(
            ["phase", "kind", "from", "to", "peak", "mean", "finding"],
            [
                [
                    p["name"],
                    p["kind"],
                    _s(p["t_start"]),
                    _s(p["t_end"]),
                    _b(p["peak_bytes"]),
                    _b(p["mean_bytes"]),
                    phase_notes(p),
                ]
                for p in phases
            ],
        )
        if phases
        else None,
        "phase_details": details,
        "endpoints": _table(list(ENDPOINT_COLUMNS), [endpoint_cells(e) for e in report.get("endpoints") or []])
        if report.get("endpoints")
        else None,
        "endpoint_verdict": describe_attribution(report.get("endpoint_attribution") or {}),
        "oom_kills": _table(
            ["at", "pid", "last sample before", "max in the second before"],
            [[_s(k["t"]), k.get("pid"), _b(k.get("last_bytes")), _b(k.get("max_bytes_1s_before"))] for k in kills],
        )
        if kills
        else None,
        "spikes_total": report.get("spikes_total", len(spikes)),
        "spikes": _table(
            ["at", "height", "peak", "baseline", "lasted", "phase", "seen by", "near"],
            [
                [
                    _s(s["t_start"]),
                    "+" + _b(s["height_bytes"]),
                    _b(s["peak_bytes"]),
                    _b(s["baseline_bytes"]),
                    f"{s['duration_ms']:.1f} ms",
                    s.get("phase"),
                    s.get("source"),
                    "; ".join(f"{e.get('name') or e.get('kind')} ({e['dt_s']:+.2f} s)" for e in s["near_events"][:5]),
                ]
                for s in spikes[:200]
            ],
        )
        if spikes
        else None,
        "report_json": _json_for_script(report),
    }


def render(template: str, ctx: dict[str, Any]) -> str:
    """Render one of analysis/templates/ with autoescaping on."""
    env = jinja2.Environment(autoescape=True, trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined)
    text = (resources.files("spikewatch.analysis") / "templates" / template).read_text(encoding="utf-8")
    return env.from_string(text).render(ctx)


def page(src: Source, report: dict[str, Any], title: str = "spikewatch report") -> str:
    return render("report.html.j2", context(src, report, title))


def _json_for_script(report: dict[str, Any]) -> str:
    return json.dumps(report, default=str).replace("</", "<\\/")


def write_html(rec: Recording | Source, report: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """Write the report page for the source the report is about."""
    src = rec if isinstance(rec, Source) else rec.source(report.get("source"))
    text = page(src, report, title=f"spikewatch report: {os.path.basename(str(report.get('recording') or ''))}")
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
