"""CURVE keys on the command line: ``spikewatch keys``, the client options every command
that connects to a sampler derives from ``--keys``, and the sampler's side of them
(refusing non-loopback binds without keys, reloading authorized clients on SIGHUP).

The keys themselves live in :mod:`spikewatch.sampler.wire.security`; this module only
turns its errors into one-line command-line errors."""

from __future__ import annotations

import signal

import click

from spikewatch.exits import BadInput, io_failure
from spikewatch.options import client_socket_options as client_socket_options  # defined once, for every command


def _server_security(ctx: click.Context, keys: str | None, require: bool, endpoints: list):
    """Refuse non-loopback binds without keys; with keys, start the ZAP handler."""
    from .wire.security import KeysError, check_binds, server_security

    if keys and ctx.get_parameter_source("keys") == click.core.ParameterSource.ENVIRONMENT:
        import os

        if not os.path.isfile(os.path.join(keys, "server.key_secret")):
            keys = None  # the unit's default folder, no keys made in it: loopback only then
    if require and not keys:
        raise click.UsageError("--require-keys needs --keys DIR (make keys with `spikewatch keys DIR`)")
    try:
        check_binds(endpoints, keys)
        return server_security(keys, warn=lambda msg: click.echo(msg, err=True)) if keys else None
    except KeysError as exc:
        raise BadInput(str(exc)) from None


def _watch_keys(security, quiet: bool):
    """Follow DIR/authorized_clients while sampling (spikewatch.sampler.wire.security.KeyWatcher) and make
    SIGHUP reload it at once. Returns the SIGHUP handler to put back afterwards."""
    import threading

    def log(msg: str) -> None:
        if not quiet:
            click.echo(msg, err=True)

    def warn(msg: str) -> None:
        click.echo(msg, err=True)

    if security is not None:
        watcher = security.watch(log, warn)

        def on_hup(signum, frame) -> None:
            watcher.request_reload()  # sets an event: the reload runs on the watcher's thread
    else:

        def on_hup(signum, frame) -> None:
            # Printed from a thread: a write from inside a signal handler could re-enter stderr.
            threading.Thread(
                target=warn,
                daemon=True,
                args=(
                    "spikewatch: SIGHUP: CURVE is off (no server.key_secret in the keys folder when the sampler "
                    "started), nothing to reload; restart the sampler to turn CURVE on",
                ),
            ).start()

    return signal.signal(signal.SIGHUP, on_hup)


@click.command()
@click.argument("directory", metavar="DIR")
@click.option("--name", default="client", show_default=True, help="Name of the client key pair to add.")
def keys(directory: str, name: str) -> None:
    """Create CURVE key pairs for a sampler and its clients (spikewatch keys DIR).

    Makes the sampler's pair once, and a client pair NAME, authorized.

    \b
    On the sampler host:   spikewatch sample --keys DIR --publish tcp://0.0.0.0:7781 ...
    On a client:           copy DIR/server.key and DIR/NAME.key_secret into a folder,
                           spikewatch record --keys FOLDER ...
    """
    from .wire.security import KeysError, create_keys

    try:
        made = create_keys(directory, name)
    except KeysError as exc:
        raise BadInput(str(exc)) from None
    except OSError as exc:
        raise io_failure("write keys to", directory, exc) from None
    click.echo(f"sampler keys:  {made['server_secret']} (secret, stays here), {made['server_public']}")
    click.echo(f"client {name}:  {made['client_secret']} (secret, give to that client with server.key)")
    click.echo(f"authorized:    {made['authorized']}")
