"""The terminal summary (rich): leads with the true peak against what a 15 s scrape showed."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table
from spikewatch.sampler.units import format_bytes

from .endpoints import describe as describe_attribution
from .heap import describe as describe_heap
from .phases import describe_growth
from .trees import describe as describe_tree


def _b(n: Any) -> str:
    return format_bytes(n) if n is not None else "–"


def _s(x: Any) -> str:
    return f"{x:.3f} s" if isinstance(x, (int, float)) else "–"


def _check(v: Any) -> str:
    return {True: "[green]yes[/]", False: "[red]no[/]"}.get(v, "[yellow]unknown[/]")


def headline(report: dict[str, Any]) -> str:
    """One sentence: the true peak and what the 15 s dashboard would have shown."""
    peak = report.get("peak_bytes")
    sv = report.get("scrape_view") or {}
    first = "15s" if "15s" in sv else next(iter(sv), None)
    src = " (kernel high-water mark)" if report.get("peak_source") == "hwm" else ""
    line = f"true peak {_b(peak)} ({report.get('headline_series')}{src}) at {_s(report.get('peak_t'))}"
    if first and sv[first].get("max_bytes") is not None:
        v = sv[first]
        line += (
            f", a {first} scrape would have shown {_b(v['max_bytes'])} "
            f"({v['missed_fraction'] * 100:.0f} % missed; {v['hit_probability'] * 100:.0f} % of scrape offsets catch ≥90 % of the peak)"
        )
    return line


def heap_lines(report: dict[str, Any]) -> list[str]:
    """The service's heap beside RSS: its peak, and the retention verdict after each burst."""
    h = report.get("heap")
    if not h:
        return []
    out = [
        (
            f"heap ({h.get('metric') or 'heap metric'}): peak {_b(h['peak_bytes'])} at {_s(h['peak_t'])}, "
            f"last {_b(h['last_bytes'])}, {h['samples']} scrapes"
        )
    ]
    for i, b in enumerate(h.get("bursts") or [], 1):
        out.append(
            f"  after burst {i} of '{b['phase']}' at {_s(b['t_start'])}: {describe_heap(b, h.get('rss_series', 'rss'))}"
        )
    a = h.get("after_bursts")
    if a:
        w = a.get("after_window") or [None, None]
        out.append(
            f"  after the bursts of '{a['phase']}' (before the first, then {_s(w[0])}–{_s(w[1])}): "
            f"{describe_heap(a, h.get('rss_series', 'rss'))}"
        )
    for r in h.get("ramps") or []:
        out.append(
            f"  ramp '{r['phase']}': heap {_b(r['heap_bytes_per_request'])} per in-flight request "
            f"(R² {r['r2']:.2f}; {h.get('rss_series', 'rss')} says {_b(r['rss_bytes_per_request'])})"
        )
    return out


def render(report: dict[str, Any], console: Console | None = None, max_spikes: int = 10) -> None:
    c = console or Console()
    integ = report.get("integrity") or {}
    if integ.get("notes"):
        # first, so nobody reads the figures below as the whole run
        c.print("[bold yellow]partial recording:[/] " + "; ".join(integ["notes"]), highlight=False)
    c.print(f"[bold]{headline(report)}[/]")
    tree = report.get("tree")
    if report.get("headline_reason") and (tree or report.get("headline_series") != "rss"):
        c.print(f"headline {report['headline_reason']}", highlight=False)
    if tree:
        c.print(describe_tree(tree), highlight=False)
        c.print(tree["hwm_note"], highlight=False)
    smp = report["samples"]
    c.print(
        f"{smp['count']:,} samples of {report['headline_series']} over {report['duration_s']:.1f} s "
        f"({smp['achieved_hz'] or 0:.0f} Hz), {smp['gaps']} messages missing, {smp['overruns']} overruns, "
        f"longest gap {smp['longest_gap_ms']} ms"
    )
    others = [x for x in report.get("sources") or [] if x != report.get("source")]
    if others:
        c.print(
            f"this report covers sampler session {report.get('source')}; the recording also holds "
            f"{', '.join(others)} (use --source)",
            highlight=False,
        )
    lim = report.get("limit_bytes")
    if lim:
        c.print(f"limit {_b(lim)}, headroom {report['headroom'] * 100:.1f} %")
    c.print(
        f"recommended limit {_b(report.get('recommended_limit_bytes'))}: {report.get('recommended_limit_reason', '')}"
    )
    if report.get("oom_kills"):
        for k in report["oom_kills"]:
            c.print(f"[red]OOM kill[/] at {_s(k['t'])} pid {k.get('pid')} last sample {_b(k.get('last_bytes'))}")
    g = report.get("growth")
    if g:
        # A projection to the limit is only a finding when the growth is: not for a
        # flat, falling or inconclusive trend (the JSON keeps the figure either way).
        reach = g.get("time_to_limit_h") if g.get("trend") == "growing" else None
        c.print(
            f"growth {describe_growth(g)} over the {g['basis']}" + (f", limit reached in {reach} h" if reach else "")
        )
    for line in heap_lines(report):
        c.print(line, highlight=False)

    t = Table(title="series", show_edge=False)
    for col in ("series", "peak", "source", "p99", "mean", "samples"):
        t.add_column(col, justify="right" if col not in ("series", "source") else "left")
    for name, st in report["series"].items():
        mark = " *" if name == report["headline_series"] else ""
        t.add_row(
            name + mark,
            _b(st["peak_bytes"]),
            st["peak_source"],
            _b(st["p99_bytes"]),
            _b(st["mean_bytes"]),
            f"{st['count']:,}",
        )
    c.print(t)

    t = Table(title="what a scraper would have shown", show_edge=False)
    for col in ("interval", "dashboard max (median)", "missed", "P(see ≥90 % of peak)"):
        t.add_column(col, justify="right")
    for k, v in (report.get("scrape_view") or {}).items():
        if v.get("max_bytes") is None:
            continue
        t.add_row(k, _b(v["max_bytes"]), f"{v['missed_fraction'] * 100:.1f} %", f"{v['hit_probability'] * 100:.1f} %")
    c.print(t)

    if report.get("phases"):
        t = Table(title="phases", show_edge=False)
        for col in ("phase", "kind", "from", "to", "peak", "mean"):
            t.add_column(col)
        for p in report["phases"]:
            t.add_row(p["name"], p["kind"], _s(p["t_start"]), _s(p["t_end"]), _b(p["peak_bytes"]), _b(p["mean_bytes"]))
        c.print(t)
        for p in report["phases"]:
            note = phase_notes(p)
            if note:
                c.print(f"  [bold]{p['name']}[/] ({p['kind']}): {note}", highlight=False)

    render_endpoints(report, c)

    spikes = report.get("spikes") or []
    if spikes:
        top = sorted(spikes, key=lambda s: s["height_bytes"], reverse=True)[:max_spikes]
        t = Table(title=f"largest spikes ({len(top)} of {report.get('spikes_total', len(spikes))})", show_edge=False)
        for col in ("at", "height", "peak", "lasted", "phase", "near"):
            t.add_column(col)
        for s in sorted(top, key=lambda s: s["t_start"]):
            near = ", ".join(str(e.get("name") or e.get("kind")) for e in s["near_events"][:3])
            t.add_row(
                _s(s["t_start"]),
                "+" + _b(s["height_bytes"]),
                _b(s["peak_bytes"]),
                f"{s['duration_ms']:.0f} ms",
                s.get("phase") or "–",
                near or "–",
            )
        c.print(t)

    t = Table(title="checklist", show_edge=False)
    t.add_column("question")
    t.add_column("answer")
    t.add_column("why")
    for k, v in report["checklist"].items():
        t.add_row(k.replace("_", " "), _check(v), report.get("checklist_reasons", {}).get(k, ""))
    c.print(t)


def phase_notes(p: dict[str, Any]) -> str:
    """The one-line finding of a phase, by kind."""
    k = p["kind"]
    if k == "startup":
        return (
            f"startup peak {_b(p.get('startup_peak_bytes'))} vs steady {_b(p.get('steady_bytes'))}, "
            f"ready after {_s(p.get('time_to_ready_s'))}"
        )
    if k == "ramp":
        if p.get("bytes_per_request") is None:
            return "no load telemetry to relate memory to concurrency"
        ex = p.get("extrapolation") or {}
        return (
            f"{_b(p['bytes_per_request'])} per in-flight request (R² {p['r2']:.2f}), "
            f"{p.get('plateaus')}/{len(p.get('steps') or [])} steps plateau; "
            f"{ex.get('concurrency'):g} in flight → {_b(ex.get('bytes'))}"
        )
    if k in ("burst", "spike"):
        if p.get("burst_count") and not p.get("significant_bursts"):
            return (
                f"{p.get('burst_count')} bursts, none raised memory noticeably (max rise {_b(p.get('max_rise_bytes'))}); "
                f"retained {_b(p.get('retained_bytes'))}"
            )
        recovery = (
            f"recovery ≤ {_s(p['max_recovery_s'])}" if p.get("max_recovery_s") is not None else "recovery not measured"
        )
        return (
            f"{p.get('burst_count')} bursts, max rise {_b(p.get('max_rise_bytes'))}, "
            f"{recovery}, retained {_b(p.get('retained_bytes'))}"
            + (f", {p['unrecovered']} not recovered" if p.get("unrecovered") else "")
        )
    if k == "soak":
        g = p.get("growth")
        if not g:
            return "too short to judge"
        verdict = {
            "flat": "stable",
            "falling": "falling: still settling, no growth",
            "growing": "growing",
            "inconclusive": "inconclusive",
        }[g.get("trend", "inconclusive")]
        return f"{g['mib_per_hour']:+.2f} MiB/h ({verdict})"
    return ""


def endpoint_cells(e: dict[str, Any]) -> list[str]:
    """name, bytes per in-flight request, 95 % interval, max in flight, completed, errors."""
    ci = e.get("ci95")
    per = _b(e.get("bytes_per_inflight"))
    if e.get("bytes_per_inflight") is not None and not e.get("estimable"):
        per += " (not separable)"
    return [
        str(e["name"]),
        per,
        f"{_b(ci[0])} .. {_b(ci[1])}" if ci else "–",
        str(e.get("in_flight_max", "–")),
        "–" if e.get("completed") is None else f"{e['completed']:,}",
        str(e.get("errors", 0)),
    ]


ENDPOINT_COLUMNS = ("endpoint", "per in-flight request", "95 % interval", "max in flight", "completed", "errors")


def render_endpoints(report: dict[str, Any], c: Console) -> None:
    rows = report.get("endpoints") or []
    verdict = report.get("endpoint_attribution") or {}
    if not rows:
        return
    t = Table(title="memory per endpoint", show_edge=False)
    for col in ENDPOINT_COLUMNS:
        t.add_column(col)
    for e in rows:
        t.add_row(*endpoint_cells(e))
    c.print(t)
    c.print("  " + describe_attribution(verdict), highlight=False)
