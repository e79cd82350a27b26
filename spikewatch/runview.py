"""The live view of ``spikewatch run``: the full-screen console on a terminal, else one
status line a second, until the session is done (quitting the view stops the run)."""

from __future__ import annotations

import sys
import threading

from .session import Plan, Session


def watch(session: Session, plan: Plan, use_tui: bool) -> None:
    """Show the run live until the session is done (or the user stops it)."""
    from spikewatch.analysis.console import ConsoleOptions
    from spikewatch.sampler.cli import client_socket_options

    options = ConsoleOptions(
        inlet=[plan.inlet],
        title=f"spikewatch run {plan.scenario.name}",
        history=[plan.history],
        socket_options=client_socket_options(plan.keys),
        keys=plan.keys,
    )
    if use_tui:
        _tui(session, plan, options)
        return
    from spikewatch.analysis.console import PlainConsole

    printer = PlainConsole([plan.publish], options, out=_QuietOverruns(sys.stdout))
    watcher = threading.Thread(target=lambda: (session.done.wait(), printer.stop()), daemon=True)
    watcher.start()
    printer.run()


class _QuietOverruns:
    """stdout without the console's per-event overrun lines: on a busy 2-core host they
    come several a second and bury the progress; the status line still counts them."""

    def __init__(self, out) -> None:
        self.out = out

    def write(self, text: str) -> int:
        kept = "".join(line for line in text.splitlines(keepends=True) if ") overrun: " not in line)
        return self.out.write(kept)

    def flush(self) -> None:
        self.out.flush()


def _tui(session: Session, plan: Plan, options) -> None:
    from textual.binding import Binding

    from spikewatch.analysis.console.app import ConsoleApp

    class RunConsole(ConsoleApp):
        """The console, where quitting stops the run (cleanly) instead of only the view."""

        BINDINGS = [
            Binding("q", "stop_run", "stop the run", priority=True),
            Binding("ctrl+c", "stop_run", "stop the run", show=False, priority=True),
            *[b for b in ConsoleApp.BINDINGS if getattr(b, "action", "") != "quit"],
        ]

        def on_mount(self) -> None:
            # Textual also runs ConsoleApp.on_mount (handlers run along the MRO): no super() here.
            self.set_interval(0.25, self._check_done)

        def _check_done(self) -> None:
            if session.done.is_set():
                self.exit()

        def action_stop_run(self) -> None:
            session.request_stop(hurry=False)  # asked for in the view, which says it is writing the report
            self.notify("stopping: ending the phase, stopping the service, writing the report…", timeout=30)

    RunConsole([plan.publish], options).run()
