"""A comparison for people: terminal tables (rich), Markdown for a pull-request comment, JSON."""

from __future__ import annotations

import json
import math
import os
from typing import Any

from .compare import BEYOND, Comparison, Pair, Row
from .metrics import fmt


def value(r: Row, which: str, compact: bool = False) -> str:
    """The value, with its 95 % interval when it has one (as ± its wider half when COMPACT)."""
    v = r.base if which == "base" else r.new
    ci = r.base_ci if which == "base" else r.new_ci
    if v is None:
        return "–"
    text = fmt(r.kind, v)
    if ci is not None:
        if compact:
            text += " ±" + fmt(r.kind, max(v - ci[0], ci[1] - v))
        else:
            text += f" [{fmt(r.kind, ci[0])} .. {fmt(r.kind, ci[1])}]"
    return text


def change(r: Row) -> str:
    if r.change is None:
        return "–"
    return fmt(r.kind, r.change, signed=True)


def rel(r: Row) -> str:
    if r.relative is None:
        return "–"
    if math.isinf(r.relative):
        return "from 0"
    return f"{r.relative * 100:+.1f} %"


def verdict(r: Row) -> str:
    return f"{r.verdict} ({r.direction})" if r.direction else r.verdict


def groups(p: Pair) -> list[tuple[str, list[Row]]]:
    """('run', rows), then (phase key, rows) in order."""
    out: dict[str, list[Row]] = {}
    for r in p.rows:
        out.setdefault(r.group, []).append(r)
    return list(out.items())


def phase_kind(c: Comparison, p: Pair, key: str) -> str:
    from .metrics import phase_keys

    for rep in (c.base.report, p.new.report):
        for k, ph in phase_keys(rep):
            if k == key:
                return str(ph.get("kind", ""))
    return ""


def summary(c: Comparison, p: Pair) -> str:
    """One sentence: how many changes are beyond noise, and the gates."""
    beyond = [r for r in p.rows if r.verdict == BEYOND]
    # a run figure taken from one phase (bytes_per_request from the ramp) is said once
    run_values = {(r.base, r.new) for r in beyond if r.group == "run"}
    beyond = [r for r in beyond if r.group == "run" or (r.base, r.new) not in run_values]
    text = f"{p.new.label} against {c.base.label}: "
    if beyond:
        text += (
            f"{len(beyond)} change(s) beyond noise: "
            + ", ".join(
                f"{_where(r)} {rel(r) if r.relative is not None and not math.isinf(r.relative) else change(r)} ({r.direction})"
                for r in beyond[:6]
            )
            + ("…" if len(beyond) > 6 else "")
        )
    else:
        with_ci = sum(1 for r in p.rows if r.base_ci and r.new_ci)
        text += f"nothing beyond noise among the {with_ci} metric(s) that carry an interval"
    if c.conditions:
        text += "; gates " + ("FAILED" if p.failures else "passed")
    return text


def _where(r: Row) -> str:
    return r.label if r.group == "run" else f"{r.group}: {r.label}"


# --- terminal ---------------------------------------------------------------------


def render(c: Comparison, console: Any = None, phases: bool = True) -> None:
    from rich.console import Console
    from rich.table import Table

    con = console or Console()
    for p in c.pairs:
        con.print(f"[bold]{summary(c, p)}[/]", highlight=False)
        for key, rows in groups(p):
            if key != "run" and not phases:
                continue
            title = "run" if key == "run" else f"phase {key} ({phase_kind(c, p, key)})"
            t = Table(title=title, show_edge=False)
            for col, just in (
                ("metric", "left"),
                (c.base.label, "right"),
                (p.new.label, "right"),
                ("change", "right"),
                ("relative", "right"),
                ("verdict", "left"),
            ):
                t.add_column(col, justify=just)  # type: ignore[arg-type]
            for r in rows:
                style = {"worse": "red", "better": "green"}.get(r.direction or "", "")
                v = f"[{style}]{verdict(r)}[/]" if style else verdict(r)
                t.add_row(
                    r.label if key != "run" else r.metric,
                    value(r, "base", True),
                    value(r, "new", True),
                    change(r),
                    rel(r),
                    v,
                )
            con.print(t)
        for line in p.failures:
            con.print(f"[red]FAIL[/] --fail-on {line}", highlight=False)


# --- Markdown (a pull-request comment) ---------------------------------------------


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("<", "&lt;")


def _md_table(c: Comparison, p: Pair, rows: list[Row], names: bool) -> list[str]:
    out = [
        f"| metric | {_md(c.base.label)} | {_md(p.new.label)} | change | relative | verdict |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        mark = {"worse": " :red_circle:", "better": " :green_circle:"}.get(r.direction or "", "")
        out.append(
            f"| {_md(r.metric if names else r.label)} | {_md(value(r, 'base'))} | {_md(value(r, 'new'))} | "
            f"{_md(change(r))} | {_md(rel(r))} | {_md(verdict(r))}{mark} |"
        )
    return out


def markdown(c: Comparison) -> str:
    lines = ["## spikewatch compare", ""]
    for p in c.pairs:
        lines.append(f"**{_md(summary(c, p))}**")
        lines.append("")
        if p.failures:
            lines.append("Failed gates:")
            lines += [f"- `{_md(f)}`" for f in p.failures]
            lines.append("")
        for key, rows in groups(p):
            if key == "run":
                lines += _md_table(c, p, rows, names=True)
                lines.append("")
                continue
            n = sum(1 for r in rows if r.verdict == BEYOND)
            lines.append(
                f"<details><summary>phase <b>{_md(key)}</b> ({_md(phase_kind(c, p, key))})"
                + (f": {n} beyond noise" if n else "")
                + "</summary>"
            )
            lines.append("")
            lines += _md_table(c, p, rows, names=False)
            lines.append("")
            lines.append("</details>")
            lines.append("")
    lines.append(
        "_Verdicts: **beyond noise** when the change exceeds both runs' 95 % intervals combined; "
        "**no interval** when a figure is one measurement per run (spikewatch cannot tell it from "
        "run-to-run noise)._"
    )
    return "\n".join(lines) + "\n"


# --- JSON ---------------------------------------------------------------------------


def write_json(c: Comparison, path: str | os.PathLike[str]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(c.to_dict(), f, indent=2, default=str)
        f.write("\n")
