"""``spikewatch console EP...``: the live view (Textual, or plain lines without a terminal)."""

from __future__ import annotations

import signal
import sys

import click
from spikewatch.sampler.units import parse_size
from spikewatch.sampler.wire import protocol

from spikewatch import options as opt


def _size(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return parse_size(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _duration(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    if value is None:
        return None
    return opt.duration_s(value, f"--{param.name}")


def _endpoint(ep: str, what: str) -> str:
    return opt.endpoint(ep, what)


@click.command()
@click.argument("endpoints", nargs=-1, metavar="[EP]...")
@click.option(
    "--inlet",
    "inlets",
    multiple=True,
    metavar="EP",
    help=f"Sampler inlet(s) that notes (key n) go to ('off': none); default {protocol.DEFAULT_INLET}.",
)
@click.option(
    "--window",
    "window",
    default="30s",
    show_default=True,
    callback=_duration,
    help="Chart window (5s, 10s, 30s, 1m, 5m; + and - change it live).",
)
@click.option(
    "--series",
    type=click.Choice(["auto", "rss", "cg_usage", "cg_working_set"]),
    default="auto",
    show_default=True,
    help="Series to chart (key s switches); auto: the one the report's headline uses "
    "(cgroup usage under a limit, else rss).",
)
@click.option(
    "--limit", callback=_size, metavar="SIZE", help="Compare with this limit instead of the one the sampler reports."
)
@click.option("--fps", type=click.FloatRange(1, 60), default=15, show_default=True, help="UI refresh rate.")
@click.option(
    "--plain",
    "--headless",
    "plain",
    is_flag=True,
    help="Print a status line a second instead of the full-screen view (automatic without a TTY).",
)
@opt.stop_after
@opt.history_sources
@opt.client_keys
@click.option(
    "-q",
    "--quiet",
    is_flag=True,
    help="Print only errors and, at the end, the last status line (implies --plain).",
)
def console(
    endpoints: tuple[str, ...],
    inlets: tuple[str, ...],
    window: float,
    series: str,
    limit: int | None,
    fps: float,
    plain: bool,
    duration: float | None,
    history: tuple[str, ...],
    keys: str | None,
    client_key: str | None,
    quiet: bool = False,
) -> None:
    """Watch one or more samplers live: chart, headroom, phase, load, events.

    EP is a sampler's publish endpoint (default tcp://127.0.0.1:7781); give
    several to watch several samplers. Keys: p pause, + / - window, s series,
    n note, z zoom one sampler, q quit.
    """
    from .options import ConsoleOptions

    eps = [_endpoint(e, "EP") for e in endpoints] or [protocol.DEFAULT_PUBLISH]
    history_eps = opt.history_endpoints(history, eps)
    note_inlets = [_endpoint(e, "--inlet") for e in inlets if not opt.is_off(e)]
    if not inlets:
        note_inlets = [protocol.DEFAULT_INLET]
    options = ConsoleOptions(
        inlet=note_inlets,
        window_s=window,
        series=series,
        fps=fps,
        limit=limit,
        duration_s=duration,
        history=history_eps,
        socket_options=opt.client_socket_options(keys, client_key),
        keys=keys,
    )
    if plain or quiet or not (sys.stdout.isatty() and sys.stdin.isatty()):
        from .plain import PlainConsole

        printer = PlainConsole(eps, options, quiet=quiet)
        # Both end the loop at once and still print the last status line (what was seen).
        signal.signal(signal.SIGTERM, lambda *_: printer.stop_soon())
        signal.signal(signal.SIGINT, lambda *_: printer.stop_soon())
        printer.run()
        return
    from .app import ConsoleApp

    ConsoleApp(eps, options).run()
