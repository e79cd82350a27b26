"""The ``spikewatch`` command: one click group whose subcommands load lazily.

Each subcommand lives beside the code it drives and is imported only when
invoked, so ``spikewatch sample`` never pulls in aiohttp, numpy or Textual
(the sampler's footprint is part of what users judge).
"""

from __future__ import annotations

import importlib

import click

from . import __version__

# name -> "module:attribute" of a click command
COMMANDS: dict[str, str] = {
    "sample": "spikewatch.sampler.cli:sample",
    "mark": "spikewatch.sampler.cli:mark",
    "keys": "spikewatch.sampler.cli:keys",
    "drive": "spikewatch.driver.cli:drive",
    "record": "spikewatch.analysis.cli:record",
    "report": "spikewatch.analysis.cli:report",
    "export": "spikewatch.analysis.cli:export",
    "console": "spikewatch.analysis.console.cli:console",
    "run": "spikewatch.runner:run",
    "demo": "spikewatch.runner:demo",
}


def _not_built(name: str) -> click.Command:
    @click.command(name, context_settings={"ignore_unknown_options": True}, help="(not built yet)")
    @click.argument("args", nargs=-1, type=click.UNPROCESSED)
    def placeholder(args: tuple[str, ...]) -> None:
        raise click.ClickException(f"'spikewatch {name}' is not built yet in this version")

    return placeholder


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            # Only a missing spikewatch module means "not built"; a missing
            # third-party dependency must say which extra to install.
            if exc.name and exc.name.split(".")[0] == "spikewatch":
                return _not_built(name)
            raise click.ClickException(
                f"'spikewatch {name}' needs the Python package {exc.name!r}: "
                "pip install 'spikewatch[all]'"
            ) from None
        command = getattr(module, attr, None)
        return command if isinstance(command, click.Command) else _not_built(name)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="spikewatch")
def main() -> None:
    """Catch the millisecond memory spikes that 15 s scrapes never show.

    \b
    Quick start:
      spikewatch demo                      the whole load test on a bundled service
      spikewatch sample -- ./my-service    sample a program from its first millisecond
      spikewatch report FILE.journal       what the peak was, and what dashboards showed
    """
