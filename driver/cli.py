"""``spikewatch drive SCENARIO.toml``: play a scenario, show progress, check thresholds."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import click
from spikewatch.sampler.units import format_bytes
from spikewatch.sampler.wire import protocol

from spikewatch import options as opt
from spikewatch.exits import BadInput, check_output, write_text_atomic

from .scenario import ScenarioError, bundled, load_scenario


def _ms(ns: float | None) -> str:
    if ns is None:
        return "–"
    return f"{ns / 1e6:.1f}ms" if ns < 10e9 else f"{ns / 1e9:.1f}s"


def _resolve(path: str) -> Path:
    p = Path(path)
    if not p.exists() and "/" not in path and bundled(path.removesuffix(".toml")).exists():
        return bundled(path.removesuffix(".toml"))
    return p


class _Plain:
    """One line per second when stdout is not a terminal (CI logs, pipes)."""

    def __init__(self) -> None:
        self.last = 0.0
        self.phase = ""

    def __call__(self, p: Any) -> None:
        now = time.monotonic()
        if p.phase == self.phase and now - self.last < 1.0:
            return
        self.phase, self.last = p.phase, now
        dur = f"/{p.phase_duration_s:.0f}s" if p.phase_duration_s else ""
        sat = "  DRIVER SATURATED" if p.saturated else ""
        click.echo(
            f"[{p.index + 1}/{p.phases} {p.phase} {p.kind}] {p.phase_elapsed_s:5.1f}s{dur} "
            f"target {p.target}  rate {p.rate:7.0f}/s  in flight {p.in_flight:4d}  "
            f"errors {p.errors}  p99 {_ms(p.p99_ns)}  left {p.remaining_s:.0f}s{sat}"
        )


class _Live:
    """A rich live panel, refreshed a few times a second."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.live import Live

        self.state: Any = None
        self.console = Console()
        self.live = Live(
            self._render(), console=self.console, refresh_per_second=4, transient=True, get_renderable=self._render
        )

    def _render(self) -> Any:
        from rich.table import Table

        p = self.state
        t = Table.grid(padding=(0, 2))
        if p is None:
            t.add_row("starting…")
            return t
        dur = f" / {p.phase_duration_s:.0f}s" if p.phase_duration_s else ""
        t.add_row(
            f"[bold]{p.phase}[/] ({p.kind}, {p.index + 1}/{p.phases})",
            f"{p.phase_elapsed_s:.1f}s{dur}",
            f"elapsed {p.elapsed_s:.0f}s",
            f"left ~{p.remaining_s:.0f}s",
        )
        t.add_row(f"target {p.target}", f"rate {p.rate:.0f}/s", f"in flight {p.in_flight}", f"p99 {_ms(p.p99_ns)}")
        err = f"[red]errors {p.errors}[/]" if p.errors else "errors 0"
        sat = "[yellow]driver saturated: latencies include client queueing[/]" if p.saturated else ""
        t.add_row(f"done {p.completed}", err, f"loop lag {_ms(p.loop_lag_ns)}", sat)
        return t

    def __call__(self, p: Any) -> None:
        self.state = p

    def __enter__(self) -> _Live:
        self.live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.live.__exit__(*exc)


def print_summary(result: Any) -> None:
    from rich import box
    from rich.console import Console
    from rich.table import Table

    console = Console(soft_wrap=False, width=None if sys.stdout.isatty() else 130)
    wide = console.width >= 125  # on a narrow terminal keep the columns that matter most
    cols = ["phase", "kind", "time", "requests", "rate/s", "errors", "p50", "p90", "p99", "max", "late/dropped", "note"]
    if not wide:
        cols = [c for c in cols if c not in ("kind", "p90", "late/dropped")]
    table = Table(
        title="spikewatch drive: per phase",
        title_justify="left",
        box=box.HEAVY_HEAD if wide else box.SIMPLE,
        pad_edge=wide,
    )
    for col in cols:
        table.add_column(col, justify="left" if col in ("phase", "kind", "note") else "right")
    for ph in result.phases + [result.total]:
        s = ph.summary()
        note = ""
        if ph.kind == "startup":
            note = f"ready in {s['time_to_ready_s']:.2f}s" if s.get("ready") else "NOT READY"
        elif s.get("target_rate") is not None:
            note = f"target {s['target_rate']:.0f}/s"
        if s["saturated_intervals"]:
            note += " driver saturated" if wide else " saturated"
        err = f"{s['error_rate'] * 100:.2f}%" if s["completed"] else "–"
        rate = f"{s['rate']:.0f}" if ph.model != "none" or s["completed"] else "–"
        cells = {
            "phase": ph.name if ph.kind != "total" else "[bold]all[/]",
            "kind": ph.kind if ph.kind != "total" else "",
            "time": f"{s['duration_s']:.1f}s",
            "requests": str(s["completed"]),
            "rate/s": rate,
            "errors": err,
            "p50": _ms(s.get("lat_p50_ns")),
            "p90": _ms(s.get("lat_p90_ns")),
            "p99": _ms(s.get("lat_p99_ns")),
            "max": _ms(s.get("lat_max_ns")),
            "late/dropped": f"{s['late_sends']}/{s['dropped_sends']}",
            "note": note,
        }
        table.add_row(*(cells[c] for c in cols))
    console.print(table)
    tot = result.total.summary()
    console.print(
        f"sent {format_bytes(tot['bytes_sent'])}, received {format_bytes(tot['bytes_recv'])}; "
        f"errors: {', '.join(f'{k} {v}' for k, v in tot['errors'].items()) or 'none'}"
    )
    for note in result.notes:
        console.print(f"[yellow]note:[/] {note}")
    if result.aborted:
        console.print(f"[red]aborted:[/] {result.aborted}")
    for th in result.thresholds:
        mark = "[green]✓[/]" if th["ok"] else "[red]✗[/]"
        console.print(f"{mark} {th['text']}  (observed {th['shown']})")


def _enough_file_descriptors(sc: Any, workers: int) -> None:
    """Every request in flight holds a connection: raise the soft limit on open files
    to what the scenario needs (up to the hard limit), or refuse naming both figures,
    rather than failing connects with EMFILE mid-run."""
    import resource

    per_worker = max([p.peak_level for p in sc.phases if p.model == "closed"] + [0]) / workers
    need = int(max(per_worker, sc.client.connections / workers)) + 64  # + sockets, pipes, files
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if need <= soft:
        return
    if hard == resource.RLIM_INFINITY or need <= hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
        return
    raise BadInput(
        f"the scenario needs about {need:,} open connections per worker but this process may "
        f"open at most {hard:,} files (ulimit -n): raise the limit, or use more --workers"
    )


@click.command()
@click.argument("scenario", metavar="SCENARIO.toml")
@click.option(
    "--inlet",
    default=protocol.DEFAULT_INLET,
    show_default=True,
    metavar="EP|off",
    help="The sampler's inlet: phase markers and load telemetry go there ('off': nowhere).",
)
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="Processes, each with its own event loop; rate and concurrency are split between them.",
)
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False),
    metavar="FILE",
    help="Write per-phase statistics and the 100 ms telemetry series to this file.",
)
@click.option("--url", help="Aim at this base URL instead of the scenario's target.url.")
@click.option("--seed", type=int, help="Override the scenario's seed (payloads and arrivals repeat).")
@click.option("--quiet", "-q", is_flag=True, help="No live progress; only the summary.")
@opt.client_keys
def drive(
    scenario: str,
    inlet: str,
    workers: int,
    json_path: str | None,
    url: str | None,
    seed: int | None,
    quiet: bool,
    keys: str | None = None,
    client_key: str | None = None,
) -> None:
    """Play a load scenario (phases: startup, ramp, steady, burst, spike, soak, idle).

    Sends a marker at every phase change and 100 ms load telemetry to a sampler's
    inlet, prints a per-phase summary and checks [thresholds]. Exit status: 0 passed,
    1 a threshold failed, 2 a bad scenario or option, 3 no result (the target never
    became ready, nothing was sent, or every request failed while no error_rate
    threshold allows it), 130 interrupted (the summary of what ran is still printed).
    """
    import dataclasses

    from .run import run_scenario

    inlet_ep = opt.endpoint_or_off(inlet, "--inlet")
    socket_options = opt.client_socket_options(keys, client_key)

    try:
        sc = load_scenario(_resolve(scenario))
        if url:
            sc = sc.with_url(url)
        sc.check_capacity(workers)
    except ScenarioError as exc:
        raise BadInput(str(exc)) from None
    _enough_file_descriptors(sc, workers)
    if json_path:
        check_output(json_path, "--json")
    if seed is not None:
        sc = dataclasses.replace(sc, seed=seed)
    plan = sum(p.duration_ns for p in sc.phases) / 1e9
    click.echo(
        f"driving {sc.target.url}: {len(sc.phases)} phases, ~{plan:.0f}s planned"
        f"{' + startup' if any(p.kind == 'startup' for p in sc.phases) else ''}, "
        f"{workers} worker{'s' if workers > 1 else ''}; markers -> {inlet_ep or 'nowhere (--inlet off)'}"
    )
    # The summary's table code, loaded now: imported after a Ctrl-C it took most of
    # the second a stop may take (0.7 s on a busy 2-core host).
    import rich.console
    import rich.table  # noqa: F401

    display: Any = None
    if not quiet:
        display = _Live() if sys.stdout.isatty() else _Plain()
    try:
        with display if isinstance(display, _Live) else contextlib.nullcontext():
            result = run_scenario(
                sc,
                inlet=inlet_ep,
                workers=workers,
                progress=display,
                keep_series=bool(json_path),
                socket_options=socket_options,
            )
    except KeyboardInterrupt:  # a second Ctrl-C: the user wants out now, not a summary
        click.echo("stopped at once (second Ctrl-C): no summary", err=True)
        out, err = sys.stdout, sys.stderr
        if out is sys.__stdout__ and out is not None:  # the command itself, not a CliRunner
            # The loop was left mid-stop: its tasks and transports would print "Event loop
            # is closed" tracebacks from their destructors at teardown. Nothing is left to keep.
            out.flush()
            if err is not None:
                err.flush()
            os._exit(130)
        sys.exit(130)
    print_summary(result)
    if json_path:
        write_text_atomic(json_path, json.dumps(result.to_json(), indent=1))
        click.echo(f"statistics written to {json_path}")
    if result.exit_code:
        if result.interrupted:
            click.echo("interrupted: the summary covers what ran until then", err=True)
            if sys.stdout is not None and sys.stdout is sys.__stdout__:  # the command itself, not a CliRunner
                # All is written and said: skip Python's teardown (0.2-0.4 s with aiohttp and
                # uvloop loaded), a third of the second a stop may take.
                print(end="", flush=True)
                print(end="", file=sys.stderr, flush=True)
                os._exit(result.exit_code)
        elif result.aborted:
            click.echo(f"no result: {result.aborted}", err=True)
        elif result.no_result:
            click.echo(f"no result: {result.no_result}", err=True)
        elif result.failed_thresholds:
            click.echo(f"{len(result.failed_thresholds)} threshold(s) failed", err=True)
        sys.exit(result.exit_code)
