"""The comparison as one self-contained page: phase-aligned memory overlay plus the tables.

Like the report page, it opens offline: plotly.js is inlined, the page is
rendered from the Jinja2 template shipped in ``analysis/templates``.
"""

from __future__ import annotations

import json
import os
from importlib import resources
from typing import Any

import plotly.graph_objects as go

from .compare import BEYOND, Comparison, Pair, Run
from .compare_align import AFTER, BEFORE, Overlay, align, polyline
from .compare_render import change, groups, phase_kind, rel, summary, value, verdict
from .metrics import phase_keys

MiB = float(1 << 20)
_RUN_COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf"]


def overlay(c: Comparison, buckets: int = 2000) -> tuple[Overlay | None, list[str]]:
    """The aligned envelopes of every run with a recording, and notes on the runs without."""
    from .reader import load

    notes = []
    runs = []
    for r in [c.base] + [p.new for p in c.pairs]:
        if r.recording is None:
            notes.append(
                f"{r.label}: no recording next to its report, so it is not drawn (compare the recording "
                "itself, or keep it beside report.json)."
            )
            continue
        try:
            src = load(r.recording).source(r.report.get("source"))
        except (KeyError, OSError, ValueError) as exc:
            notes.append(f"{r.label}: cannot read {r.recording} ({exc}); not drawn.")
            continue
        runs.append((r.label, src, r.report))
    if not runs:
        return None, notes
    ov = align(runs, buckets)
    names = {t.series for t in ov.traces}
    if len(names) > 1:
        notes.append(
            "the runs' headline series differ (" + ", ".join(sorted(names)) + "): the overlay draws each "
            "run's own, which may not compare like with like."
        )
    return ov, notes


def _marks(c: Comparison) -> dict[str, str]:
    """Phase key -> 'worse'/'better' when any of its rows is beyond noise (worse wins)."""
    out: dict[str, str] = {}
    for p in c.pairs:
        for r in p.rows:
            if r.group != "run" and r.verdict == BEYOND and r.direction and out.get(r.group) != "worse":
                out[r.group] = r.direction
    return out


def figure(c: Comparison, ov: Overlay) -> go.Figure:
    fig = go.Figure()
    marks = _marks(c)
    for s in ov.segments:
        if s.key in (BEFORE, AFTER) or s.width <= 0:
            continue
        shade = {"worse": "rgba(214,39,40,0.13)", "better": "rgba(44,160,44,0.12)"}.get(
            marks.get(s.key, ""), "rgba(120,120,120,0.06)"
        )
        fig.add_vrect(
            x0=s.x0,
            x1=s.x0 + s.width,
            fillcolor=shade,
            line_width=0,
            layer="below",
            annotation_text=f"{s.key} ({s.kind})" + {"worse": " ▲", "better": " ▼"}.get(marks.get(s.key, ""), ""),
            annotation_position="top left",
            annotation_font_size=11,
        )
        fig.add_vline(x=s.x0, line_color="#999", line_width=1, line_dash="dot")
    labels = [c.base.label] + [p.new.label for p in c.pairs]
    for tr in ov.traces:
        colour = _RUN_COLOURS[labels.index(tr.label) % len(_RUN_COLOURS)] if tr.label in labels else "#444"
        x, y = polyline(tr)
        fig.add_trace(
            go.Scattergl(
                x=x,
                y=y / MiB,
                mode="lines",
                name=f"{tr.label} ({tr.series})",
                line={"width": 1.2, "color": colour},
                opacity=0.8,
                hovertemplate="%{x:.3f} s<br>%{y:.1f} MiB<extra>" + tr.label + "</extra>",
            )
        )
    # each run's peak in each phase, at its aligned time: where the runs part
    seg = {s.key: s for s in ov.segments}
    for run in [c.base] + [p.new for p in c.pairs]:
        xs, ys, text = [], [], []
        for key, ph in phase_keys(run.report):
            if key in seg and ph.get("peak_t") is not None and ph.get("peak_bytes") is not None:
                xs.append(seg[key].x0 + float(ph["peak_t"]) - float(ph["t_start"]))
                ys.append(ph["peak_bytes"] / MiB)
                text.append(f"{run.label}: peak of {key}")
        if xs:
            colour = _RUN_COLOURS[labels.index(run.label) % len(_RUN_COLOURS)]
            fig.add_trace(
                go.Scatter(
                    x=xs,
                    y=ys,
                    mode="markers",
                    name=f"{run.label} phase peaks",
                    text=text,
                    marker={"symbol": "triangle-down", "size": 9, "color": colour},
                    hovertemplate="%{text}: %{y:.1f} MiB<extra></extra>",
                )
            )
    fig.update_layout(
        xaxis_title="seconds from the start of each phase (phases aligned)",
        yaxis_title="MiB",
        height=600,
        template="plotly_white",
        hovermode="closest",
        legend={"orientation": "h", "y": -0.15},
        margin={"t": 60, "l": 60, "r": 20, "b": 40},
    )
    return fig


def _pair_ctx(c: Comparison, p: Pair) -> dict[str, Any]:
    gs = []
    for key, rows in groups(p):
        gs.append(
            {
                "title": "the run" if key == "run" else f"phase {key} ({phase_kind(c, p, key)})",
                "rows": [
                    {
                        "name": r.metric if key == "run" else r.label,
                        "base": value(r, "base"),
                        "new": value(r, "new"),
                        "change": change(r),
                        "rel": rel(r),
                        "verdict": verdict(r),
                        "direction": r.direction,
                    }
                    for r in rows
                ],
            }
        )
    return {"label": p.new.label, "path": p.new.path, "summary": summary(c, p), "failures": p.failures, "groups": gs}


def page(c: Comparison, title: str = "spikewatch compare") -> str:
    import jinja2

    ov, notes = overlay(c)
    chart = None
    if ov is not None and ov.traces:
        chart = figure(c, ov).to_html(full_html=False, include_plotlyjs=True, config={"displaylogo": False})
    text = (resources.files("spikewatch.analysis") / "templates" / "compare.html.j2").read_text(encoding="utf-8")
    env = jinja2.Environment(autoescape=True, trim_blocks=True, lstrip_blocks=True)
    base: Run = c.base
    return env.from_string(text).render(
        title=title,
        base={"label": base.label, "path": base.path},
        pairs=[_pair_ctx(c, p) for p in c.pairs],
        chart=chart,
        overlay_notes=notes,
        series=", ".join(sorted({t.series for t in ov.traces})) if ov else "",
        data_json=json.dumps(c.to_dict(), default=str).replace("</", "<\\/"),
    )


def write_html(c: Comparison, path: str | os.PathLike[str]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(page(c))
