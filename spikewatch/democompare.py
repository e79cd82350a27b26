"""``spikewatch demo --compare``: the demo twice, the second run holding a known amount
more per in-flight request, then the two compared; the comparison should find that size."""

from __future__ import annotations

import sys

import click

from . import outcome as outcome_mod
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
        click.echo(f"\n=== demo --compare: run '{name}', {format_bytes(mem)} extra per in-flight request ===\n")
        statuses[name] = execute(
            Request(
                scenario, [*command, "--request-memory", str(mem)], limit, str(d / name), (), console, "1ms", None, None
            )
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
    write_json(c, d / "compare.json")
    (d / "compare.md").write_text(markdown(c), encoding="utf-8")
    write_html(c, d / "compare.html")
    click.echo("")
    render(c, phases=False)
    row = next((r for r in c.pairs[0].rows if r.metric == "bytes_per_request"), None)
    if row is not None and row.change is not None:
        click.echo(
            f"known difference {format_bytes(extra)} per in-flight request; measured "
            f"{format_bytes(row.change)} ({row.verdict})"
        )
    click.echo(f"wrote {d / 'compare.html'}, {d / 'compare.md'}, {d / 'compare.json'}")
    if sys.stdout.isatty():
        try:
            click.launch(str(d / "compare.html"))
        except OSError:
            pass  # no browser here: the path above is enough
    for line in c.pairs[0].failures:
        click.echo(f"FAIL --fail-on {line}")
    if c.failed:
        return outcome_mod.EXIT_FAILED
    return max(statuses.values())
