"""The installed command's first code: a signal while the command line loads is an
interrupt (one line, exit 130), not a traceback (Ctrl-C) or a silent 143 (SIGTERM).

From the subcommand's own import on, :mod:`spikewatch.cli` and each command handle
signals; this covers the ~0.3 s before that, while click and the CLI are imported.
"""

from __future__ import annotations

import signal
import sys


def interrupt(signum: int, frame: object) -> None:
    """A SIGTERM handler that makes the signal a Ctrl-C (KeyboardInterrupt)."""
    raise KeyboardInterrupt


def main() -> None:
    old = signal.signal(signal.SIGTERM, interrupt)
    try:
        from .cli import main as cli_main
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        raise SystemExit(130) from None
    finally:
        # Commands that do not set their own SIGTERM handler keep the default one.
        signal.signal(signal.SIGTERM, old)
    cli_main()
