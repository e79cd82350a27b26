"""Option values every command reads the same way: durations, endpoints, and "off".

* A duration on the command line always carries its unit (``500us``, ``1ms``, ``30s``,
  ``5m``, ``1h``): a bare ``1`` is refused, because ``--period 1`` (ms) and
  ``--duration 1`` (s) used to mean different things.
* An endpoint is checked by :func:`spikewatch.sampler.wire.protocol.parse_endpoint`
  before ZeroMQ sees it (ZeroMQ accepts ``…:99999`` and ``…:80a`` without a word).
* ``off`` is the one way to turn an endpoint or output off (``--inlet off``,
  ``--history off``, ``--journal off``); older spellings stay as hidden aliases.

Only the standard library, click and the wire protocol: ``spikewatch sample`` imports this.
"""

from __future__ import annotations

import re

import click

from spikewatch.sampler.units import parse_duration_ns
from spikewatch.sampler.wire import protocol

OFF = "off"
DURATION_HELP = "with its unit: 500us, 2ms, 30s, 5m, 1h"
_BARE = re.compile(r"^\s*[0-9]*\.?[0-9]+\s*$")


def duration_ns(text: str, option: str, *, positive: bool = True) -> int:
    """Nanoseconds of a command-line duration; a bare number or a bad one is a usage error."""
    if _BARE.match(text):
        raise click.BadParameter(
            f"{text!r} has no unit: write e.g. {text.strip()}ms or {text.strip()}s", param_hint=option
        )
    try:
        ns = parse_duration_ns(text)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=option) from None
    if positive and ns <= 0:
        raise click.BadParameter("must be longer than zero", param_hint=option)
    return ns


def duration_s(text: str, option: str, *, positive: bool = True) -> float:
    return duration_ns(text, option, positive=positive) / 1e9


def is_off(value: str | None) -> bool:
    return protocol.is_off(value)


def endpoint(value: str, option: str, *, bind: bool = False) -> str:
    """``value`` when it is a usable endpoint, else a usage error naming it and why."""
    try:
        return protocol.check_endpoint(value, bind=bind)
    except protocol.EndpointSyntaxError as exc:
        raise click.BadParameter(str(exc), param_hint=option) from None


def endpoint_or_off(value: str | None, option: str, *, bind: bool = False) -> str | None:
    """None for ``off`` (and the older ``none`` / empty spellings), else a checked endpoint."""
    if value is None or is_off(value):
        return None
    return endpoint(value, option, bind=bind)
