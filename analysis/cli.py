"""``spikewatch record``, ``spikewatch report`` and ``spikewatch export``."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from spikewatch.sampler.units import format_bytes, parse_duration


def _load(path: str):  # noqa: ANN202 - keeps numpy out of `--help`
    from spikewatch.sampler.wire.recording import RecordingError

    from .reader import load

    try:
        return load(path)
    except (RecordingError, FileNotFoundError, IsADirectoryError, PermissionError) as exc:
        raise click.ClickException(f"cannot read {path}: {exc}") from None


@click.command()
@click.argument("endpoints", nargs=-1, required=True)
@click.option("-o", "--output", "output", required=True, type=click.Path(dir_okay=False),
              help="Recording file to write (appended to if it exists).")
@click.option("--duration", default=None, help="Stop after this long (e.g. 30s, 5m); default: until Ctrl-C/SIGTERM.")
@click.option("-q", "--quiet", is_flag=True, help="Only print the summary.")
@click.option("--history", "history", multiple=True, metavar="EP",
              help="Sampler's history endpoint (sample --history): backfill what happened before attaching. One per EP, in order.")
@click.option("--keys", "keys", metavar="DIR", help="CURVE keys folder (server.key + your *.key_secret) for samplers started with --keys.")
@click.option("--client-key", "client_key", metavar="NAME", help="Which NAME.key_secret in --keys to use (default: client).")
def record(endpoints: tuple[str, ...], output: str, duration: str | None, quiet: bool,
           history: tuple[str, ...] = (), keys: str | None = None, client_key: str | None = None) -> None:
    """Subscribe to samplers' streams (EP, e.g. tcp://127.0.0.1:7781) and write a recording.

    With several endpoints, each sampler's messages carry its session id
    (`src`), so the report can keep them apart. Messages lost in transit are
    counted from gaps in their sequence numbers.
    """
    from .record import Recorder

    dur = None
    if duration is not None:
        try:
            dur = parse_duration(duration)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--duration") from None
    for ep in endpoints:
        if "://" not in ep:
            raise click.BadParameter(f"{ep!r} is not a ZeroMQ endpoint (e.g. tcp://127.0.0.1:7781)", param_hint="EP")
    parent = Path(output).resolve().parent
    if not parent.is_dir():
        raise click.BadParameter(f"folder {parent} does not exist", param_hint="-o")

    def gap(src: str, lost: int) -> None:
        if not quiet:
            click.echo(f"missed {lost} message(s) from {src}", err=True)

    try:
        from spikewatch.sampler.cli import client_socket_options

        if len(history) > len(endpoints):
            raise click.BadParameter("give at most one --history per EP", param_hint="--history")
        rec = Recorder(list(endpoints), output, on_gap=gap, history=list(history) or None,
                       socket_options=client_socket_options(keys, client_key) or None, keys=keys)
    except OSError as exc:
        raise click.ClickException(f"cannot write {output}: {exc}") from None
    rec.install_signal_handlers()
    if not quiet:
        click.echo(f"recording {', '.join(endpoints)} -> {output}" + (f" for {duration}" if duration else " (Ctrl-C to stop)"), err=True)
    stats = rec.run(dur)
    for err in rec.backfill_errors:
        click.echo(f"warning: no backfill: {err}", err=True)
    msgs = ", ".join(f"{k} {v}" for k, v in sorted(stats.messages.items())) or "nothing"
    click.echo(f"recorded {sum(stats.messages.values())} messages ({msgs}) in {stats.seconds:.1f} s: "
               f"{stats.samples:,} samples from {len(stats.sessions)} session(s) {', '.join(stats.sessions)}")
    click.echo(f"missed {stats.missed} message(s) in {len(stats.gaps)} gap(s); {stats.bad_messages} undecodable; "
               f"{format_bytes(stats.bytes_written)} written to {output}")
    if stats.records_dropped:
        click.echo(f"warning: {stats.records_dropped} records could not be written (disk full?)", err=True)
    if not stats.messages:
        click.echo("warning: nothing arrived: is a sampler publishing on " + ", ".join(endpoints) + "?", err=True)


@click.command()
@click.argument("recording", type=click.Path(exists=True))
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Write the report as JSON ('-' for stdout).")
@click.option("--html", "html_out", type=click.Path(dir_okay=False), help="Write a self-contained HTML page.")
@click.option("--fail-on", "fail_on", multiple=True, metavar="EXPR",
              help="Exit 1 when a condition holds: peak>400MiB, growth>10MiB/h, headroom<20%, oom>0, "
                   "scrape_missed>50%, spikes>N (repeatable or comma-separated); a condition the "
                   "recording cannot answer (e.g. headroom without a limit) fails too.")
@click.option("--baseline", "baseline", type=click.Path(exists=True, dir_okay=False), metavar="BASE.json",
              help="A previous report JSON: --fail-on conditions with a signed value compare against it "
                   "('peak>+10%', 'startup_peak>+20MiB'; see spikewatch compare).")
@click.option("--source", default=None, help="Which sampler session to report on (default: the one with most samples).")
@click.option("--scrape", "scrape_intervals", default="15s,30s,60s", show_default=True,
              help="Scrape intervals to compare against the true peak.")
@click.option("--target-concurrency", type=click.FloatRange(min=0, min_open=True), default=None, help="Extrapolate the ramp to this many requests in flight.")
@click.option("--margin", type=click.FloatRange(0, 10), default=0.25, show_default=True, help="Margin over the peak for the recommended limit.")
@click.option("-q", "--quiet", is_flag=True, help="No terminal summary (still prints failed --fail-on conditions).")
def report(recording: str, json_out: str | None, html_out: str | None, fail_on: tuple[str, ...], source: str | None,
           scrape_intervals: str, target_concurrency: float | None, margin: float, quiet: bool,
           baseline: str | None = None) -> None:
    """Analyse a recording: true peak vs what scrapes showed, spikes, phases, limits, checklist."""
    from . import failon

    try:
        conditions = failon.parse_all(fail_on)
    except failon.FailOnError as exc:
        raise click.BadParameter(str(exc), param_hint="--fail-on") from None
    relative = failon.needs_baseline(conditions)
    if relative and not baseline:
        raise click.BadParameter(f"{', '.join(relative)} compare(s) against a baseline: give --baseline BASE.json",
                                 param_hint="--fail-on")
    base_report = None
    if baseline:
        from .compare import CompareError, load_run

        try:
            base_report = load_run(baseline).report
        except CompareError as exc:
            raise click.BadParameter(str(exc), param_hint="--baseline") from None
    try:
        intervals = [parse_duration(x) for x in scrape_intervals.split(",") if x.strip()]
        if not intervals or min(intervals) <= 0:
            raise ValueError("give at least one positive interval")
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--scrape") from None

    from .report import build_report

    rec = _load(recording)
    try:
        src = rec.source(source)
    except KeyError as exc:
        raise click.BadParameter(str(exc.args[0]), param_hint="--source") from None
    if not any(len(s) for s in src.series.values()):
        raise click.ClickException(f"{recording} holds no samples (only {src.records} other records): nothing to report")
    rep = build_report(src, intervals_s=intervals, target_concurrency=target_concurrency, margin=margin)
    rep["recording"] = str(rec.path)
    rep["sources"] = list(rec.sources)

    if json_out:
        text = json.dumps(rep, indent=2, default=str)
        if json_out == "-":
            click.echo(text)
        else:
            Path(json_out).write_text(text + "\n")
    if html_out:
        from .html import write_html

        write_html(src, rep, html_out)
    if not quiet and json_out != "-":
        from .terminal import render

        render(rep)
        for label, p in (("JSON", json_out), ("HTML", html_out)):
            if p:
                click.echo(f"{label}: {p}")
    failed = failon.check(rep, conditions, baseline=base_report)
    if failed:
        click.echo("FAILED:", err=True)
        for line in failed:
            click.echo(f"  {line}", err=True)
        sys.exit(1)


@click.command()
@click.argument("recording", type=click.Path(exists=True))
@click.option("--format", "fmt", type=click.Choice(["parquet", "csv"]), default="parquet", show_default=True)
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(file_okay=False), help="Folder for the tables.")
def export(recording: str, fmt: str, out_dir: str) -> None:
    """Write samples, details, events, markers and load as tables (Parquet or CSV).

    \b
    Then, e.g.:
      import pandas as pd
      df = pd.read_parquet("DIR/samples.parquet")
      df.plot(x="t_s", y="rss")
    """
    from .export import export_recording

    rec = _load(recording)
    os.makedirs(out_dir, exist_ok=True)
    try:
        written = export_recording(rec, out_dir, fmt)
    except ImportError as exc:
        raise click.ClickException(f"Parquet export needs pyarrow ({exc}): pip install 'spikewatch[export]', or use --format csv") from None
    for name, (path, rows) in written.items():
        click.echo(f"{name:8s} {rows:>10,} rows  {path}")
