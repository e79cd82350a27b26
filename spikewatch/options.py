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
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import click

from spikewatch.sampler.units import parse_duration_ns
from spikewatch.sampler.wire import protocol

OFF = "off"
DURATION_HELP = "with its unit: 500us, 2ms, 30s, 5m, 1h"
_BARE = re.compile(r"^\s*[0-9]*\.?[0-9]+\s*$")
F = TypeVar("F", bound=Callable[..., Any])


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


# --- option groups more than one command takes ---------------------------------------
#
# One definition each, so the same option reads, helps and fails the same way in every
# command (a decorator adds it; the command's parameter keeps its name).

KEYS_HELP = "CURVE keys folder (server.key + your *.key_secret) for a sampler started with --keys."
CLIENT_KEY_HELP = "Which NAME.key_secret in --keys to use (default: client)."


def client_keys(f: F) -> F:
    """``--keys DIR`` and ``--client-key NAME`` (parameters ``keys``, ``client_key``) of every
    command that connects to a sampler; read them with :func:`client_socket_options`."""
    f = click.option("--client-key", "client_key", metavar="NAME", help=CLIENT_KEY_HELP)(f)
    return click.option("--keys", "keys", metavar="DIR", help=KEYS_HELP)(f)


def client_socket_options(keys: str | None, name: str | None = None) -> dict[int, Any]:
    """CURVE client socket options from ``--keys``/``--client-key`` ({} without keys); a
    usage error naming the option when the folder or the key is unusable."""
    if not keys:
        if name:
            raise click.BadParameter(
                "--client-key NAME picks a key in --keys DIR: give --keys too", param_hint="--client-key"
            )
        return {}
    # Imported here: the security module (and pyzmq's CURVE) only when keys are given.
    from spikewatch.sampler.wire.security import KeysError, client_options

    try:
        return client_options(keys, name)
    except KeysError as exc:
        raise click.BadParameter(str(exc), param_hint="--keys") from None


def quiet(f: F) -> F:
    """``-q/--quiet`` for commands whose only other output is progress (errors still print)."""
    return click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors.")(f)


def inlet(f: F) -> F:
    """``--inlet EP`` of a command that sends to one sampler's inlet (``mark``, ``bridge``)."""
    return click.option(
        "--inlet", default=protocol.DEFAULT_INLET, show_default=True, metavar="EP", help="The sampler's inlet endpoint."
    )(f)


def history_sources(f: F) -> F:
    """``--history EP`` (repeatable; parameter ``history``) of a subscriber: the samplers'
    history endpoints, one per stream endpoint in the same order; checked by
    :func:`history_endpoints`."""
    return click.option(
        "--history",
        "history",
        multiple=True,
        metavar="EP",
        help="The sampler's --history endpoint (one per EP, same order): start with what happened before attaching.",
    )(f)


def history_endpoints(history: Sequence[str], streams: Sequence[str]) -> list[str]:
    """Checked ``--history`` endpoints; a usage error for more of them than stream endpoints."""
    if len(history) > len(streams):
        raise click.BadParameter(
            f"{len(history)} history endpoints for {len(streams)} stream endpoint(s); "
            "give at most one per EP, in the same order",
            param_hint="--history",
        )
    return [endpoint(ep, "--history") for ep in history]


def _stop_after(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    return None if value is None else duration_s(value, "--duration")


def stop_after(f: F) -> F:
    """``--duration T`` of a subscriber (``record``, ``console``): seconds (float) or None."""
    return click.option(
        "--duration",
        callback=_stop_after,
        metavar="T",
        help="Stop after T (with its unit: 30s, 5m); default: until Ctrl-C/SIGTERM.",
    )(f)
