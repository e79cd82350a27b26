"""The live console: ``spikewatch console EP...``.

Embedding (e.g. from ``spikewatch run``)::

    from spikewatch.analysis.console import ConsoleApp, ConsoleOptions, PlainConsole
    ConsoleApp(endpoints, ConsoleOptions(inlet=[inlet])).run()   # terminal UI; q quits
    PlainConsole(endpoints, ConsoleOptions()).run(duration=None) # one line a second; .stop()

Importing this package does not import Textual; the names load on first use.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ConsoleApp", "ConsoleOptions", "PlainConsole", "minmax_envelope"]


def __getattr__(name: str) -> Any:
    if name == "ConsoleApp":
        from .app import ConsoleApp

        return ConsoleApp
    if name == "ConsoleOptions":
        from .options import ConsoleOptions

        return ConsoleOptions
    if name == "PlainConsole":
        from .plain import PlainConsole

        return PlainConsole
    if name == "minmax_envelope":
        from .envelope import minmax_envelope

        return minmax_envelope
    raise AttributeError(name)
