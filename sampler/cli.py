"""Command-line entry points that belong to the sampler side: ``sample``, ``mark``."""

from __future__ import annotations

import click

from . import protocol
from .client import InletClient


@click.command()
@click.argument("text")
@click.option("--inlet", default=protocol.DEFAULT_INLET, show_default=True, help="The sampler's inlet endpoint.")
@click.option("--attr", "attrs", multiple=True, metavar="KEY=VALUE", help="Attach an attribute (repeatable).")
def mark(text: str, inlet: str, attrs: tuple[str, ...]) -> None:
    """Send a note marker (e.g. "cache warmed") to a running sampler."""
    fields = {}
    for item in attrs:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint="--attr")
        fields[key] = value
    try:
        message = protocol.marker_message(protocol.NOTE, text, fields)
    except protocol.ProtocolError as exc:
        raise click.ClickException(str(exc)) from None
    with InletClient(inlet, linger_ms=1000) as client:
        client.send(protocol.MARKER, message)
    click.echo(f"note sent to {inlet}: {text}")
