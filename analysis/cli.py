"""``spikewatch record``, ``spikewatch report`` and ``spikewatch export``."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import click
from spikewatch.sampler.units import format_bytes

from spikewatch import options as opt
from spikewatch.exits import (
    EXIT_FAILED,
    BadInput,
    RuntimeFailure,
    atomic_path,
    check_output,
    io_failure,
    reason,
    refuse_existing,
    write_text_atomic,
)


def _load(path: str, how: Any = None) -> Any:
    """``how(path)`` (by default :func:`reader.load`), its bad input said in one line."""
    from spikewatch.sampler.wire.recording import RecordingError

    from .reader import load

    try:
        return (how or load)(path)
    except FileNotFoundError as exc:  # a run may be a journal's name, a folder or a glob: said here, not by click
        raise BadInput(f"cannot read {path}: {exc}") from None
    except RecordingError as exc:
        raise BadInput(f"cannot read {path}: {exc}") from None
    except OSError as exc:
        raise io_failure("read", path, exc) from None


@click.command()
@click.argument("endpoints", nargs=-1, required=True)
@click.option(
    "-o",
    "--out",
    "output",
    type=click.Path(dir_okay=False),
    metavar="FILE",
    help="Recording file to write (required); an existing one is refused unless --append.",
)
@click.option("--output", "output_old", type=click.Path(dir_okay=False), hidden=True, help="Old spelling of --out.")
@click.option("--append", is_flag=True, help="Add to an existing FILE (the report then sees every session in it).")
@click.option(
    "--rotate",
    metavar="T|SIZE",
    default=None,
    help="Start a new segment (FILE.000001, FILE.000002…) every T (e.g. 1h) or SIZE (e.g. 256M); "
    "report, compare, export and convert read FILE as one run.",
)
@click.option(
    "--keep",
    metavar="T|SIZE",
    default=None,
    help="With --rotate: delete the oldest segments beyond this age (e.g. 7d) or total size (e.g. 10G).",
)
@opt.stop_after
@click.option("-q", "--quiet", is_flag=True, help="Only print the summary.")
@opt.history_sources
@opt.client_keys
def record(
    endpoints: tuple[str, ...],
    output: str | None,
    duration: float | None,
    quiet: bool,
    history: tuple[str, ...] = (),
    keys: str | None = None,
    client_key: str | None = None,
    append: bool = False,
    output_old: str | None = None,
    rotate: str | None = None,
    keep: str | None = None,
) -> None:
    """Subscribe to samplers' streams (EP, e.g. tcp://127.0.0.1:7781) and write a recording.

    With several endpoints, each sampler's messages carry its session id
    (`src`), so the report can keep them apart. Messages lost in transit are
    counted from gaps in their sequence numbers. Exit status 3 when nothing
    arrived (the empty file is removed) or the disk refused the recording.
    """
    from .record import Recorder

    output = output or output_old
    if not output:
        raise click.UsageError("say where the recording goes: -o FILE")
    eps = [opt.endpoint(ep, "EP") for ep in endpoints]
    hist = opt.history_endpoints(history, eps)
    check_output(output, "-o")
    from spikewatch.sampler.cli import rotation

    rotate_at, keep_for = rotation(rotate, keep, "--rotate", "--keep")
    if rotate and append:
        raise click.UsageError("--rotate goes on numbering after the last segment: --append is not needed")
    if not append:
        refuse_existing(output, "-o", "add --append to add to it")
    existed = os.path.exists(output)

    def gap(src: str, lost: int) -> None:
        if not quiet:
            click.echo(f"missed {lost} message(s) from {src}", err=True)

    try:
        rec = Recorder(
            eps,
            output,
            on_gap=gap,
            history=hist or None,
            socket_options=opt.client_socket_options(keys, client_key) or None,
            keys=keys,
            rotate=rotate_at,
            keep=keep_for,
        )
    except OSError as exc:
        raise io_failure("write", output, exc) from None
    rec.install_signal_handlers()
    if not quiet:
        click.echo(
            f"recording {', '.join(eps)} -> {output}" + (f" for {duration:g}s" if duration else " (Ctrl-C to stop)"),
            err=True,
        )
    stats = rec.run(duration)
    for err in rec.backfill_errors:
        click.echo(f"warning: no backfill: {err}", err=True)
    msgs = ", ".join(f"{k} {v}" for k, v in sorted(stats.messages.items())) or "nothing"
    click.echo(
        f"recorded {sum(stats.messages.values())} messages ({msgs}) in {stats.seconds:.1f} s: "
        f"{stats.samples:,} samples from {len(stats.sessions)} session(s) {', '.join(stats.sessions)}"
    )
    click.echo(
        f"missed {stats.missed} message(s) in {len(stats.gaps)} gap(s); {stats.bad_messages} undecodable; "
        f"{format_bytes(stats.bytes_written)} written to {output}"
        + (f" in segments {output}.NNNNNN ({rec.writer.segments_deleted} deleted by --keep)" if rotate else "")
    )
    if stats.write_error is not None:
        raise RuntimeFailure(
            f"cannot write {output}: {reason(stats.write_error)}; kept "
            f"{format_bytes(stats.bytes_written)}, lost {stats.records_lost} record(s)"
        )
    if stats.records_dropped:
        click.echo(f"warning: {stats.records_dropped} records could not be written (disk full?)", err=True)
    if not stats.messages:
        if not existed:
            with contextlib.suppress(OSError):
                os.unlink(rec.writer.path)  # FILE, or with --rotate its empty segment
        raise RuntimeFailure(
            "nothing arrived from "
            + ", ".join(eps)
            + ": is a sampler publishing there? "
            + ("(the empty recording was removed)" if not existed else f"({output} unchanged)")
        )


@click.command()
@click.argument("recording")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Write the report as JSON ('-' for stdout).")
@click.option("--html", "html_out", type=click.Path(dir_okay=False), help="Write a self-contained HTML page.")
@click.option(
    "--fail-on",
    "fail_on",
    multiple=True,
    metavar="EXPR",
    help="Exit 1 when a condition holds: peak>400MiB, growth>10MiB/h, headroom<20%, oom>0, "
    "scrape_missed>50%, spikes>N (repeatable or comma-separated); a condition the "
    "recording cannot answer (e.g. headroom without a limit) fails too.",
)
@click.option(
    "--baseline",
    "baseline",
    type=click.Path(exists=True, dir_okay=False),
    metavar="BASE.json",
    help="A previous report JSON: --fail-on conditions with a signed value compare against it "
    "('peak>+10%', 'startup_peak>+20MiB'; see spikewatch compare).",
)
@click.option("--source", default=None, help="Which sampler session to report on (default: the one with most samples).")
@click.option(
    "--scrape",
    "scrape_intervals",
    default="15s,30s,60s",
    show_default=True,
    help="Scrape intervals to compare against the true peak.",
)
@click.option(
    "--target-concurrency",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Extrapolate the ramp to this many requests in flight.",
)
@click.option(
    "--margin",
    type=click.FloatRange(0, 10),
    default=0.25,
    show_default=True,
    help="Margin over the peak for the recommended limit.",
)
@click.option("-q", "--quiet", is_flag=True, help="No terminal summary (still prints failed --fail-on conditions).")
def report(
    recording: str,
    json_out: str | None,
    html_out: str | None,
    fail_on: tuple[str, ...],
    source: str | None,
    scrape_intervals: str,
    target_concurrency: float | None,
    margin: float,
    quiet: bool,
    baseline: str | None = None,
) -> None:
    """Analyse a recording: true peak vs what scrapes showed, spikes, phases, limits, checklist."""
    from . import failon

    try:
        conditions = failon.parse_all(fail_on)
    except failon.FailOnError as exc:
        raise click.BadParameter(str(exc), param_hint="--fail-on") from None
    relative = failon.needs_baseline(conditions)
    if relative and not baseline:
        raise click.BadParameter(
            f"{', '.join(relative)} compare(s) against a baseline: give --baseline BASE.json", param_hint="--fail-on"
        )
    base_report = None
    if baseline:
        from .compare import CompareError, load_run

        try:
            base_report = load_run(baseline).report
        except CompareError as exc:
            raise click.BadParameter(str(exc), param_hint="--baseline") from None
    intervals = [opt.duration_s(x.strip(), "--scrape") for x in scrape_intervals.split(",") if x.strip()]
    if not intervals:
        raise click.BadParameter("give at least one interval, e.g. 15s,30s,60s", param_hint="--scrape")

    from .report import build_report

    check_output(json_out, "--json")
    check_output(html_out, "--html")
    from .reader import load

    # a long run is read in one pass: the scrape view over these intervals is taken on the way
    rec = _load(recording, lambda p: load(p, scrape_intervals=tuple(intervals)))
    try:
        src = rec.source(source)
    except KeyError as exc:
        raise click.BadParameter(str(exc.args[0]), param_hint="--source") from None
    if not any(len(s) for s in src.series.values()):
        raise BadInput(f"{recording} holds no samples (only {src.records} other records): nothing to report")
    rep = build_report(src, intervals_s=intervals, target_concurrency=target_concurrency, margin=margin)
    rep["recording"] = str(rec.path)
    rep["sources"] = list(rec.sources)

    if json_out:
        text = json.dumps(rep, indent=2, default=str)
        if json_out == "-":
            click.echo(text)
        else:
            write_text_atomic(json_out, text + "\n")
    if html_out:
        from .html import write_html

        try:
            with atomic_path(html_out) as tmp:
                write_html(src, rep, tmp)
        except OSError as exc:
            raise io_failure("write", html_out, exc) from None
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
        sys.exit(EXIT_FAILED)


@click.command()
@click.argument("recording")
@click.option("--format", "fmt", type=click.Choice(["parquet", "csv"]), default="parquet", show_default=True)
@click.option(
    "-o",
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    metavar="DIR",
    help="Folder for the tables (required); a folder that already holds files is refused unless --force.",
)
@click.option("--output", "out_old", type=click.Path(file_okay=False), hidden=True, help="Old spelling of --out.")
@click.option("--force", is_flag=True, help="Write into an existing folder, replacing tables of the same name.")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors.")
def export(
    recording: str, fmt: str, out_dir: str | None, force: bool = False, out_old: str | None = None, quiet: bool = False
) -> None:
    """Write samples, details, events, markers and load as tables (Parquet or CSV).

    \b
    Then, e.g.:
      import pandas as pd
      df = pd.read_parquet("DIR/samples.parquet")
      df.plot(x="t_s", y="rss")
    """
    import shutil
    import tempfile

    from .export import export_run

    out_dir = out_dir or out_old
    if not out_dir:
        raise click.UsageError("say where the tables go: -o DIR")
    if not force:
        refuse_existing(out_dir, "-o", "add --force to write into it")
    target = Path(out_dir)
    if fmt == "parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError as exc:
            raise BadInput(
                f"Parquet export needs pyarrow ({exc}): pip install 'spikewatch[export]', or use --format csv"
            ) from None
    # Tables go to a temporary folder beside DIR and are moved in only when all are
    # written, so a full disk or a kill never leaves a half table under its real name.
    try:
        target.parent.resolve().mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent.resolve()))
    except OSError as exc:
        raise io_failure("write to", out_dir, exc) from None
    try:
        # a long run streams: its samples go to their table as they are read
        written = _load(recording, lambda p: export_run(p, tmp, fmt))
        target.mkdir(exist_ok=True)
        moved = {}
        for name, (path, rows) in written.items():
            final = target / Path(path).name
            os.replace(path, final)
            moved[name] = (str(final), rows)
    except OSError as exc:
        raise io_failure("write to", out_dir, exc) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for name, (path, rows) in moved.items():
        if not quiet:
            click.echo(f"{name:8s} {rows:>10,} rows  {path}")


@click.command()
@click.argument("old")
@click.argument("new", type=click.Path(dir_okay=False))
@click.option(
    "--lossless-times",
    is_flag=True,
    help="Keep sample times to the nanosecond (default: within ±1 µs, ~1.5 bytes a sample less).",
)
def convert(old: str, new: str, lossless_times: bool) -> None:
    """Rewrite a recording or journal (or a rotated journal's segments) in the current format (4: compact blocks).

    Whatever the old file's damage let through is kept, and said.
    """
    from spikewatch.sampler.wire import blocks
    from spikewatch.sampler.wire.recording import RecordingError, Salvage, iter_records, open_writer, resolve_run

    try:
        files = resolve_run(old)
    except FileNotFoundError as exc:
        raise BadInput(str(exc)) from None
    refuse_existing(new, "NEW", "pick a new name (convert never overwrites)")
    salvage = Salvage()
    n = 0
    try:
        with atomic_path(new) as tmp:  # never a half-converted file under NEW
            with open_writer(tmp, format=2, quantum_ns=1 if lossless_times else blocks.QUANTUM_NS) as w:
                for f in files:  # the segments of a rotated journal become one file
                    for topic, body in iter_records(f, salvage=salvage):
                        w.write(topic, body)
                        n += 1
    except RecordingError as exc:
        raise BadInput(f"cannot read {old}: {exc}") from None
    except OSError as exc:
        raise io_failure("write", new, exc) from None
    before, after = sum(os.path.getsize(f) for f in files), os.path.getsize(new)
    click.echo(
        f"{n:,} records: {before:,} bytes (format {salvage.format}) -> {after:,} bytes (format {blocks.VERSION}), "
        f"{after / max(before, 1) * 100:.1f} %"
    )
    if salvage.torn_tail_bytes or salvage.skipped:
        skipped = sum(g["to_byte"] - g["from_byte"] for g in salvage.skipped)
        click.echo(
            f"not converted: a torn tail of {salvage.torn_tail_bytes:,} bytes, {len(salvage.skipped)} damaged "
            f"range(s) of {skipped:,} bytes",
            err=True,
        )
