"""``spikewatch compare BASE NEW [NEW…]``: did this change make memory worse?"""

from __future__ import annotations

import sys

import click


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
# not click.Path(exists=True): a rotated run is named by its segments' base name, a folder or a glob
@click.argument("base")
@click.argument("new", nargs=-1, required=True)
@click.option(
    "--fail-on",
    "fail_on",
    multiple=True,
    metavar="EXPR",
    help="Exit 1 when a condition holds for any NEW: against BASE with a signed value "
    "('peak>+10%', 'startup_peak>+20MiB', 'throughput<-10%', 'scrape_missed>+5pp'), "
    "or on NEW's own value without a sign ('soak.slope>0', 'oom>0'). Repeatable or comma-separated.",
)
@click.option(
    "--json", "json_out", type=click.Path(dir_okay=False), help="Write the comparison as JSON ('-' for stdout)."
)
@click.option(
    "--md",
    "md_out",
    type=click.Path(dir_okay=False),
    help="Write Markdown for a pull-request comment ('-' for stdout).",
)
@click.option(
    "--html",
    "html_out",
    type=click.Path(dir_okay=False),
    help="Write a self-contained page: the runs' memory overlaid phase by phase, and the tables.",
)
@click.option("--phases/--no-phases", default=True, show_default=True, help="Per-phase tables in the terminal.")
@click.option("-q", "--quiet", is_flag=True, help="No terminal tables (still prints failed --fail-on conditions).")
def compare(
    base: str,
    new: tuple[str, ...],
    fail_on: tuple[str, ...],
    json_out: str | None,
    md_out: str | None,
    html_out: str | None,
    phases: bool,
    quiet: bool,
) -> None:
    """Compare runs: BASE and each NEW are report JSONs, recordings or `spikewatch run` folders.

    \b
    For every metric (peak, startup peak, time to ready, bytes per in-flight
    request, soak slope, recovery after bursts, scrape-missed share, OOM kills,
    hwm_spike events, driver throughput and latency) and every phase (p50/p99/max
    of RSS, cgroup usage and working set…): both values, the change, and whether it
    is beyond run-to-run noise. Only metrics with a 95 % interval in both reports
    (soak slope, bytes per in-flight request) get a noise verdict; the others say
    "no interval".

    \b
    Examples:
      spikewatch compare main/report.json pr/report.json --fail-on 'peak>+10%' --md comment.md
      spikewatch compare before.journal after.journal --html compare.html

    Exit status: 0 passed, 1 a --fail-on condition holds (or an input cannot be read),
    2 usage error.
    """
    from . import failon
    from .compare import CompareError, load_run
    from .compare import compare as build

    try:
        conditions = failon.parse_all(fail_on)
    except failon.FailOnError as exc:
        raise click.BadParameter(str(exc), param_hint="--fail-on") from None
    outs = [o for o in (json_out, md_out) if o == "-"]
    if len(outs) > 1:
        raise click.BadParameter("only one of --json and --md can go to stdout ('-')", param_hint="--json/--md")
    from spikewatch.exits import BadInput, atomic_path, check_output, io_failure, write_text_atomic

    for path, option in ((json_out, "--json"), (md_out, "--md"), (html_out, "--html")):
        check_output(path, option)  # before the comparison, not after it
    try:
        runs = [load_run(p) for p in (base, *new)]
    except CompareError as exc:
        raise BadInput(str(exc)) from None
    seen: dict[str, int] = {}
    for r in runs:  # two report.json from folders of the same name must still be told apart
        seen[r.label] = seen.get(r.label, 0) + 1
        if seen[r.label] > 1:
            r.label = f"{r.label} ({seen[r.label]})"
    c = build(runs[0], runs[1:], [x.text for x in conditions])

    if json_out:
        from .compare_render import write_json

        if json_out == "-":
            import json

            click.echo(json.dumps(c.to_dict(), indent=2, default=str))
        else:
            try:
                with atomic_path(json_out) as tmp:
                    write_json(c, tmp)
            except OSError as exc:
                raise io_failure("write", json_out, exc) from None
    if md_out:
        from .compare_render import markdown

        if md_out == "-":
            click.echo(markdown(c), nl=False)
        else:
            write_text_atomic(md_out, markdown(c))
    if html_out:
        from .compare_html import write_html

        try:
            with atomic_path(html_out) as tmp:
                write_html(c, tmp)
        except OSError as exc:
            raise io_failure("write", html_out, exc) from None
    if not quiet and not outs:
        from .compare_render import render

        render(c, phases=phases)
        for label, p in (("JSON", json_out), ("Markdown", md_out), ("HTML", html_out)):
            if p:
                click.echo(f"{label}: {p}")
    failed = [(p.new.label, line) for p in c.pairs for line in p.failures]
    if failed:
        click.echo("FAILED:", err=True)
        for label, line in failed:
            click.echo(f"  {label}: {line}", err=True)
        sys.exit(1)
