"""The console without a terminal UI: one status line per sampler every second.

For CI logs and ``spikewatch run`` without a TTY. Events (phase markers,
notes, OOM kills…) are printed as they arrive, between status lines.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Sequence
from typing import TextIO

from spikewatch.sampler.units import format_bytes, format_duration_ns

from .fmt import wall_clock
from .options import ConsoleOptions
from .receiver import StreamReceiver
from .state import SERIES_HEAP, SourceState, StreamState, pick_series, tree_pss_text


def status_line(src: SourceState, series: str, now_wall_ns: int) -> str:
    """``host [abcd1234] rss 120.0 MiB peak 180.0 MiB limit 256.0 MiB (30% headroom) | …``."""
    s = pick_series(src, series)
    cur, peak, limit = src.current.get(s), src.peaks.get(s), src.limit_for(s)
    parts = [f"{src.label} {s} {format_bytes(cur)} peak {format_bytes(peak)}"]
    if limit:
        parts[0] += f" limit {format_bytes(limit)} ({(1 - (peak or 0) / limit) * 100:.0f}% headroom)"
    if SERIES_HEAP in src.current:
        parts[0] += f" heap {format_bytes(src.current[SERIES_HEAP])} peak {format_bytes(src.peaks.get(SERIES_HEAP))}"
    pss = tree_pss_text(src)
    if pss is not None:
        parts[0] += f" {pss}"
    phase = f"phase {src.phase or '-'}"
    if src.load:
        errors = sum((src.load.get("errors") or {}).values())
        p99 = src.load.get("lat_p99_ns")
        phase += (
            f", {src.load.get('rate', 0):.0f} req/s, in flight {src.load.get('in_flight', '-')}, "
            f"errors {errors}, p99 {format_duration_ns(p99) if p99 is not None else '-'}"
        )
    parts.append(phase)
    hz = f"{src.achieved_hz:.0f} Hz" if src.achieved_hz is not None else "- Hz"
    lag = src.wall_lag_ns(now_wall_ns)
    parts.append(
        f"{hz}, overruns {src.counters.get('overruns', 0)}, gaps {src.gaps}, "
        f"lag {format_duration_ns(lag) if lag is not None else '-'}" + (", ended" if src.ended else "")
    )
    if src.oom_kills:
        parts.append(f"OOM KILLS {len(src.oom_kills)}")
    return " | ".join(parts)


class PlainConsole:
    """Print status lines for ``endpoints`` until :meth:`stop` or ``duration`` ends."""

    def __init__(
        self,
        endpoints: Sequence[str],
        options: ConsoleOptions | None = None,
        out: TextIO | None = None,
        interval: float = 1.0,
        quiet: bool = False,
    ) -> None:
        self.endpoints = list(endpoints)
        self.options = options or ConsoleOptions()
        self.out = out or sys.stdout
        # only errors (on stderr) and the last status line, as --quiet does everywhere
        self.quiet = quiet
        self.interval = interval
        self.stream = StreamState(max_window_s=self.options.max_window_s, limit=self.options.limit)
        self._stop = threading.Event()
        self._signalled = False
        self._shown: dict[str, int] = {}

    def stop(self) -> None:
        """From another thread (not a signal handler: see :meth:`stop_soon`)."""
        self._stop.set()

    def stop_soon(self) -> None:
        """From a signal handler. ``Event.set`` there deadlocks when the signal lands while
        the main thread waits on that same event (they share one lock): a plain flag
        instead, which the loop looks at every 50 ms."""
        self._signalled = True

    def run(self, duration: float | None = None) -> None:
        """Block, printing, until stopped (or ``duration`` seconds)."""
        duration = self.options.duration_s if duration is None else duration
        deadline = None if duration is None else time.monotonic() + duration
        self._say(f"spikewatch console: connecting to {', '.join(self.endpoints)}")
        with StreamReceiver(
            self.endpoints,
            self.stream,
            fps=4,
            history=self.options.history,
            socket_options=self.options.socket_options,
            keys=self.options.keys,
        ) as receiver:
            next_line = time.monotonic() + self.interval
            shown = 0
            while not (self._stop.is_set() or self._signalled):
                for notice in receiver.notices[shown:]:
                    # a sampler refusing our keys is an error; other notices (history) are news
                    self._say(f"spikewatch console: {notice}", error=notice in receiver.handshake_errors)
                shown = len(receiver.notices)
                if receiver.error is not None:
                    self._say(f"spikewatch console: receiving stopped: {receiver.error}", error=True)
                    break
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    break
                wake = next_line if deadline is None else min(next_line, deadline)
                if self._stop.wait(max(0.0, min(0.05, wake - now))) or self._signalled:
                    break
                if self.quiet:
                    continue
                self._print_events()
                if time.monotonic() >= next_line:
                    next_line += self.interval
                    self.print_status()
            if not self.quiet:
                self._print_events()
            self.print_status()

    def print_status(self) -> None:
        now = time.time_ns()
        with self.stream.lock:
            for src in self.stream.sources.values():
                lag = src.wall_lag_ns(now)
                if lag is not None:
                    src.draw_lag.record(lag)
            lines = [status_line(src, self.options.series, now) for src in self.stream.sources.values()]
        for line in lines or [f"waiting for samplers at {', '.join(self.endpoints)}"]:
            self._print(line)

    def _print_events(self) -> None:
        with self.stream.lock:
            new = []
            for src in self.stream.sources.values():
                if src.anchor is None:
                    continue  # no hello yet: its clock anchor dates these events, wait for it
                seen = self._shown.get(src.key, 0)
                for ev in src.events:
                    if ev.n > seen:
                        new.append(f"{wall_clock(src.to_wall(ev.t))} {src.label} {'!! ' if ev.alarm else ''}{ev.text}")
                        self._shown[src.key] = ev.n
        for line in new:
            self._print(line)

    def _say(self, line: str, error: bool = False) -> None:
        if error and self.quiet:
            print(line, file=sys.stderr, flush=True)
        elif not self.quiet:
            self._print(line)

    def _print(self, line: str) -> None:
        self.out.write(line + "\n")
        self.out.flush()
