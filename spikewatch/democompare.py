"""``spikewatch demo --compare``: the demo twice, the second run holding a known amount
more per in-flight request, then the two compared; the comparison should find that size."""

from __future__ import annotations

import sys

import click

from . import outcome as outcome_mod
from .exits import atomic_path, io_failure
from .runner import Request, execute
from .runplan import out_dir


def demo_compare(
    out: str | None,
    quick: bool,
    limit: str | None,
    console: bool | None,
    fail_on: tuple[str, ...],
    request_memory: str,
    command: list[str],
    quiet: bool = False,
) -> int:
    """Two demo runs, the second with more memory per in-flight request, and their comparison."""
    from spikewatch.analysis import failon
    from spikewatch.driver import bundled
    from spikewatch.sampler.units import format_bytes, parse_size

    try:
        extra = parse_size(request_memory)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--request-memory") from None
    try:
        failon.parse_all(fail_on)
    except failon.FailOnError as exc:
        raise click.BadParameter(str(exc), param_hint="--fail-on") from None
    d = out_dir(out)
    if (d / "base").exists() or (d / "new").exists():
        raise click.BadParameter(f"{d} already holds a comparison; give a new folder", param_hint="--out")
    scenario = str(bundled("compare" if quick else "demo"))
    statuses = {}
    for name, mem in (("base", 0), ("new", extra)):
        if not quiet:
            click.echo(f"\n=== demo --compare: run '{name}', {format_bytes(mem)} extra per in-flight request ===\n")
        argv = [*command, "--request-memory", str(mem)]
        statuses[name] = execute(
            Request(scenario, argv, limit, str(d / name), (), console, "1ms", None, None, quiet=quiet)
        )
        if statuses[name] not in (outcome_mod.EXIT_OK, outcome_mod.EXIT_FAILED):
            click.echo(f"run '{name}' ended with status {statuses[name]}: no comparison", err=True)
            return statuses[name]

    from spikewatch.analysis.compare import CompareError, compare, load_run
    from spikewatch.analysis.compare_html import write_html
    from spikewatch.analysis.compare_render import markdown, render, write_json

    try:
        base, new = load_run(d / "base" / "report.json", "base"), load_run(d / "new" / "report.json", "new")
    except CompareError as exc:
        click.echo(f"no comparison: {exc}", err=True)
        return outcome_mod.EXIT_NOT_EVALUATED
    c = compare(base, [new], list(fail_on))
    # Each under a hidden temporary name until whole (a full disk or a stop leaves no 0-byte
    # or half file under the final name).
    for name, write in (
        ("compare.json", lambda tmp: write_json(c, tmp)),
        ("compare.md", lambda tmp: tmp.write_text(markdown(c), encoding="utf-8")),
        ("compare.html", lambda tmp: write_html(c, tmp)),
    ):
        try:
            with atomic_path(d / name) as tmp:
                write(tmp)
        except OSError as exc:
            click.echo(f"no comparison written: {io_failure('write', d / name, exc).message}", err=True)
            return outcome_mod.EXIT_NOT_EVALUATED
    if not quiet:
        click.echo("")
        render(c, phases=False)
    row = next((r for r in c.pairs[0].rows if r.metric == "bytes_per_request"), None)
    if row is not None and row.change is not None and not quiet:
        click.echo(
            f"known difference {format_bytes(extra)} per in-flight request; measured "
            f"{format_bytes(row.change)} ({row.verdict})"
        )
    if not quiet:
        click.echo(f"wrote {d / 'compare.html'}, {d / 'compare.md'}, {d / 'compare.json'}")
    if sys.stdout.isatty() and not quiet:
        try:
            click.launch(str(d / "compare.html"))
        except OSError:
            pass  # no browser here: the path above is enough
    for line in c.pairs[0].failures:
        click.echo(f"FAIL --fail-on {line}")
    status = outcome_mod.EXIT_FAILED if c.failed else max(statuses.values())
    if quiet:  # the comparison's verdict, as each run's last line gives its own
        why = "; ".join(f"--fail-on {line}" for line in c.pairs[0].failures) or "passed"
        click.echo(f"exit status {status}: {why}")
    return status
