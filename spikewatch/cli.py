"""The ``spikewatch`` command: one click group whose subcommands load lazily.

Each subcommand lives beside the code it drives and is imported only when
invoked, so ``spikewatch sample`` never pulls in aiohttp, numpy or Textual
(the sampler's footprint is part of what users judge).
"""

from __future__ import annotations

import importlib
from typing import Any

import click

from . import __version__
from .entry import interrupt
from .exits import io_failure

# name -> "module:attribute" of a click command
COMMANDS: dict[str, str] = {
    "sample": "spikewatch.sampler.cli:sample",
    "mark": "spikewatch.sampler.cli:mark",
    "keys": "spikewatch.sampler.cli_keys:keys",
    "drive": "spikewatch.driver.cli:drive",
    "record": "spikewatch.analysis.cli:record",
    "report": "spikewatch.analysis.cli:report",
    "export": "spikewatch.analysis.cli:export",
    "compare": "spikewatch.analysis.compare_cli:compare",
    "convert": "spikewatch.analysis.cli:convert",
    "console": "spikewatch.analysis.console.cli:console",
    "run": "spikewatch.runner:run",
    "demo": "spikewatch.runner:demo",
    "bridge": "spikewatch.bridge:bridge",
}


# Import names that differ from the distribution to install, and the extras
# that bring the optional ones: a missing package is named with the line that
# installs it, in one sentence (never a traceback).
DISTRIBUTIONS: dict[str, str] = {"hdrh": "hdrhistogram", "zmq": "pyzmq", "yaml": "pyyaml"}
EXTRAS: dict[str, str] = {"prometheus_client": "prometheus", "pyarrow": "export", "locust": "locust"}


def missing_dependency(name: str | None, command: str) -> str:
    """One line for a command whose third-party dependency is not installed."""
    top = (name or "?").split(".")[0]
    extra = EXTRAS.get(top)
    dist = DISTRIBUTIONS.get(top, top)
    how = f"pip install 'spikewatch[{extra}]'" if extra else f"pip install {dist} (a slim install leaves it out)"
    return f"'spikewatch {command}' needs the Python package {dist!r}, which is not installed: {how}"


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        if name in ("run", "demo"):
            # They stop within a second of SIGTERM, saying what they kept: from here on
            # (their imports take a while) SIGTERM is Ctrl-C, not a silent death.
            term_is_interrupt()
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.split(".")[0] == "spikewatch":
                raise  # our own module missing: a broken install, worth its traceback
            raise MissingDependency(missing_dependency(exc.name, name)) from None
        command = getattr(module, attr)
        assert isinstance(command, click.Command), target
        return command

    def invoke(self, ctx: click.Context) -> Any:
        # Heavy imports happen late (numpy when the report starts, ...): a
        # dependency missing there is the same one-line error as at import.
        try:
            return super().invoke(ctx)
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.split(".")[0] == "spikewatch":
                raise
            name = ctx.invoked_subcommand or ctx.info_name or "?"
            raise MissingDependency(missing_dependency(exc.name, name)) from None
        except BrokenPipeError:
            raise SystemExit(0) from None  # `spikewatch report R | head`: the reader left
        except KeyboardInterrupt:
            # Ctrl-C that no command handled (e.g. while it was still importing): the
            # documented 130, not click's "Aborted!" with 1, which CI reads as a failed gate.
            click.echo("interrupted", err=True)
            raise SystemExit(130) from None
        except OSError as exc:
            # The last line of defence of "one line, never a traceback": an I/O error a
            # command did not expect still names its path and reason, and exits 3.
            path = exc.filename if exc.filename is not None else (ctx.invoked_subcommand or "spikewatch")
            raise io_failure("use", path, exc) from None


def term_is_interrupt() -> Any:
    """SIGTERM raises KeyboardInterrupt (exit 130 with one line, see LazyGroup.invoke) in
    the main thread; returns the handler it replaces (None off the main thread)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, interrupt)


class MissingDependency(click.ClickException):
    """Exit 2, like every other problem with what the user has (see README: exit codes)."""

    exit_code = 2


def _version_message() -> str:
    from spikewatch.sampler.wire import blocks, protocol

    # The format this spikewatch writes (it reads 1 as well as blocks.VERSIONS).
    return (
        f"spikewatch {__version__} (wire protocol {protocol.PROTOCOL_VERSION}, "
        f"recording format {blocks.VERSION}, reads {', '.join(map(str, (1, *blocks.VERSIONS)))})"
    )


def _print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        click.echo(_version_message())
        ctx.exit()


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_print_version,
    help="Show the version, wire protocol and recording format, and exit.",
)
def main() -> None:
    """Catch the millisecond memory spikes that 15 s scrapes never show.

    \b
    Quick start:
      spikewatch demo                      the whole load test on a bundled service
      spikewatch sample -- ./my-service    sample a program from its first millisecond
      spikewatch report FILE.journal       what the peak was, and what dashboards showed
    """
