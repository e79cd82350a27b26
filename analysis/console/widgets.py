"""Textual widgets of the console: one :class:`SourcePanel` per sampler.

Widgets never touch sockets. The app tells a panel to refresh (at the bounded
UI rate) and the panel copies what it draws out of its :class:`SourceState`
under the stream lock.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import lru_cache

from rich.markup import escape
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from spikewatch.sampler.units import format_bytes, format_duration_ns
from spikewatch.sampler.wire import protocol
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.strip import Strip
from textual.widget import Widget
from textual.widgets import RichLog

from .chart import GUTTER, Frame, frame_from_envelope, hold_gaps, render_chart
from .envelope import EnvelopeCache
from .fmt import wall_clock, window_label
from .state import SERIES_HEAP, SERIES_WORKING_SET, SourceState, StreamState, pick_series, tree_pss_text


@dataclass
class View:
    """What the user chose to look at (shared by all panels)."""

    series: str = protocol.SERIES_RSS
    window_ns: int = 30_000_000_000


# Glyphs under the chart's time axis for events worth lining up with the curve.
_MARKS = {
    "phase": ("▲", "cyan"),
    "note": ("•", "cyan"),
    protocol.EV_HWM_SPIKE: ("◆", "yellow"),
    protocol.EV_RESTART: ("↻", "bold red"),
}


class Line(Widget):
    """One line of text that repaints only itself, and only when it changed.

    (``Static.update`` re-lays-out the whole screen on every call, which at
    15 fps × 4 panels costs more than everything else put together.)
    """

    DEFAULT_CSS = "Line { height: 1; }"

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.text = Text()

    def set(self, text: Text) -> None:
        if text.plain != self.text.plain or text.spans != self.text.spans:
            self.text = text
            self.refresh()

    def render(self) -> Text:
        return self.text


class Chart(Widget):
    """The last N seconds of one series at full resolution (min/max per character column)."""

    DEFAULT_CSS = "Chart { height: 1fr; min-height: 5; }"

    def __init__(self, stream: StreamState, src: SourceState, **kw) -> None:
        super().__init__(**kw)
        self.stream, self.src = stream, src
        self.view = View()
        self.t_end: int | None = None  # None: follow the newest sample
        self.frozen = False
        self.frame: Frame | None = None  # the last one drawn
        self.draws = 0
        self._strips: list[Strip] | None = None
        self._cache = EnvelopeCache()

    def show(self, view: View, frozen: bool) -> None:
        self.view = View(view.series, view.window_ns)
        self.frozen = frozen
        self._strips = None
        self.refresh()

    def on_resize(self) -> None:
        self._strips = None

    def render_line(self, y: int) -> Strip:
        # Line API: one Text -> Strips conversion per draw, not Textual's generic
        # per-widget Content pipeline (which dominated the console's CPU).
        if self._strips is None or len(self._strips) != self.size.height:
            base, width = self.rich_style, self.size.width
            strips = [text_strip(line, width, base) for line in self._draw().split("\n", allow_blank=True)]
            strips += [Strip.blank(width, base)] * (self.size.height - len(strips))
            self._strips = strips[: self.size.height]
        return self._strips[y] if y < len(self._strips) else Strip.blank(self.size.width)

    def _draw(self) -> Text:
        width, height = self.size.width, self.size.height
        columns, rows = max(4, width - GUTTER), max(1, height - 2)  # marks row, time labels row
        src = self.src
        with self.stream.lock:
            series = pick_series(src, self.view.series)
            if not (self.frozen and self.t_end is not None):
                self.t_end = src.last_t
            t_end = self.t_end
            ring = src.rings.get(series)
            if ring is None or t_end is None:
                return Text("waiting for samples…", style="dim")
            # Aligned buckets, one per character column, cached between draws.
            buckets = columns
            width_ns = max(1, -(-self.view.window_ns // buckets))
            k_last = t_end // width_ns
            k_first = k_last - buckets + 1
            mins, maxs = self._cache.envelope(
                ring.window, (series, width_ns, id(ring)), width_ns, k_first, k_last, (ring.last() or (t_end, 0))[0]
            )
            if series == SERIES_WORKING_SET:
                period = (src.hello or {}).get("detail_period_ns") or 100_000_000
                mins, maxs = hold_gaps(mins, maxs, 2 * -(-period // width_ns))
            limit = src.limit_for(series)
            marks = [
                (e.t, *(("✖", "bold red") if e.alarm else _MARKS[e.kind]))
                for e in src.events
                if e.alarm or e.kind in _MARKS
            ]
            # Lag of what is drawn; not while paused, nor after the sampler said goodbye.
            lag = src.wall_lag_ns(time.time_ns()) if not (self.frozen or src.ended) else None
        self.frame = frame_from_envelope(mins, maxs, series, k_first * width_ns, (k_last + 1) * width_ns, rows, limit)
        right = "paused " + wall_clock(src.to_wall(t_end)) if self.frozen else "now"
        if lag is not None:
            src.draw_lag.record(lag)
        self.draws += 1
        return render_chart(self.frame, window_label(self.view.window_ns), right, marks)


@lru_cache(maxsize=64)
def _style(spec: str) -> Style:
    return Style.parse(spec)


def text_strip(text: Text, width: int, base: Style) -> Strip:
    """One line of rich Text (non-overlapping spans, as chart lines are) as a Strip."""
    plain = text.plain
    segments: list[Segment] = []
    pos = 0
    for span in sorted(text.spans, key=lambda s: s.start):
        if span.start > pos:
            segments.append(Segment(plain[pos : span.start], base))
        style = span.style if isinstance(span.style, Style) else _style(str(span.style))
        segments.append(Segment(plain[span.start : span.end], base + style))
        pos = max(pos, span.end)
    if pos < len(plain):
        segments.append(Segment(plain[pos:], base))
    return Strip(segments).crop_extend(0, width, base)


def headroom_text(src: SourceState, series: str, width: int) -> Text:
    """``rss 120 MiB  ███▒▒░░░  peak 180 MiB / limit 256 MiB  headroom 30 %``."""
    cur, peak, limit = src.current.get(series), src.peaks.get(series), src.limit_for(series)
    text = Text(no_wrap=True, overflow="ellipsis")
    text.append(f"{series} ", "bold")
    text.append(f"{format_bytes(cur):>10}", "bold")
    heap = src.current.get(SERIES_HEAP)
    if heap is not None:
        text.append(f"  heap {format_bytes(heap)} (peak {format_bytes(src.peaks.get(SERIES_HEAP))})", "green")
    # The tree's PSS/USS goes last: on a narrow panel the ellipsis takes it, never the
    # limit and headroom before it.
    pss = tree_pss_text(src)
    extra = f"  {pss}" if pss is not None else ""
    if limit:
        headroom = 1 - (peak or 0) / limit
        style = "red" if headroom < 0.1 else ("yellow" if headroom < 0.25 else "green")
        tail = f"peak {format_bytes(peak)} / limit {format_bytes(limit)}  "
        verdict = f"headroom {headroom * 100:.0f} %"
        # The bar takes what the numbers leave (none on a narrow panel: numbers first).
        bar_w = min(60, width - len(text.plain) - len(tail) - len(verdict) - len(extra) - 5)
        if bar_w >= 6:
            fill = min(bar_w, round(bar_w * (cur or 0) / limit))
            pk = min(bar_w, max(fill, round(bar_w * (peak or 0) / limit)))
            text.append("  ▕")
            text.append("█" * fill, style)
            text.append("▒" * (pk - fill), style)
            text.append("░" * (bar_w - pk), "dim")
            text.append("▏ ")
        else:
            text.append("  ")
        text.append(tail)
        text.append(verdict, f"bold {style}")
    else:
        text.append(f"   peak {format_bytes(peak)}   no limit known (pass --limit to compare)", "dim")
    text.append(extra, "cyan")
    return text


def load_text(src: SourceState) -> Text:
    text = Text(no_wrap=True, overflow="ellipsis")
    text.append("phase ", "dim")
    text.append(src.phase or "–", "bold cyan")
    load = src.load
    if load:
        errors = sum((load.get("errors") or {}).values())
        p99 = load.get("lat_p99_ns")
        text.append("   load ", "dim")
        text.append(f"{load.get('rate', 0):.0f} req/s  in flight {load.get('in_flight', '–')}  ")
        text.append(f"errors {errors}", "bold red" if errors else "")
        text.append(f"  p99 {format_duration_ns(p99) if p99 is not None else '–'}")
    else:
        text.append("   no load telemetry", "dim")
    return text


def health_text(src: SourceState) -> Text:
    text = Text(no_wrap=True, overflow="ellipsis")
    hz = src.achieved_hz
    period = (src.hello or {}).get("period_ns")
    text.append("sampler ", "dim")
    text.append(f"{hz:.0f} Hz" if hz is not None else "– Hz")
    if period:
        text.append(f" (of {1e9 / period:.0f})", "dim")
    overruns = src.counters.get("overruns", 0)
    text.append("  overruns ")
    text.append(str(overruns), "yellow" if overruns else "")
    text.append("  stream gaps ")
    text.append(str(src.gaps), "bold red" if src.gaps else "")
    lag = src.draw_lag.last
    text.append("  lag ")
    text.append(
        format_duration_ns(lag) if lag is not None else "–", "yellow" if lag is not None and lag > 500_000_000 else ""
    )
    if src.ended:
        text.append("  ended", "bold yellow")
    return text


class SourcePanel(Vertical):
    """Chart, headroom bar, phase/load, health and the event list of one sampler."""

    DEFAULT_CSS = """
    SourcePanel { height: 1fr; min-height: 10; border: round $primary; }
    SourcePanel .main { width: 3fr; }
    SourcePanel RichLog { width: 1fr; min-width: 28; border-left: solid $primary-darken-2; }
    """

    def __init__(self, stream: StreamState, src: SourceState, **kw) -> None:
        super().__init__(**kw)
        self.stream, self.src = stream, src
        self.chart = Chart(stream, src)
        self.bar = Line(classes="bar")
        self.load_line = Line(classes="load")
        self.health = Line(classes="health")
        self.events = RichLog(max_lines=500, wrap=True, min_width=20)
        self.shown_events = 0
        self.border_title = escape(src.label)  # titles are markup; a label is plain text

    def compose(self) -> ComposeResult:
        with Horizontal():
            with Vertical(classes="main"):
                yield self.chart
                yield self.bar
                yield self.load_line
                yield self.health
            yield self.events

    def refresh_numbers(self, view: View, paused: bool) -> None:
        """Redraw chart and numbers (skipped while paused, so the picture holds still)."""
        with self.stream.lock:
            series = pick_series(self.src, view.series)
            label = self.src.label
            bar = headroom_text(self.src, series, self.chart.size.width or self.size.width)
            load = load_text(self.src)
            health = health_text(self.src)
        if escape(label) != self.border_title:
            self.border_title = escape(label)
        self.bar.set(bar)
        self.load_line.set(load)
        self.health.set(health)
        self.chart.show(view, paused)

    def refresh_events(self) -> None:
        """Append events not shown yet (also while paused: alarms must not wait)."""
        with self.stream.lock:
            if self.src.anchor is None:
                return  # no hello yet: events wait for the clock anchor that dates them
            new = [e for e in self.src.events if e.n > self.shown_events]
            wall = [self.src.to_wall(e.t) for e in new]
        for ev, w in zip(new, wall):
            line = Text()
            line.append(wall_clock(w)[:12] + " ", "dim")
            line.append(ev.text, "bold red" if ev.alarm else ("cyan" if ev.kind in ("phase", "note") else ""))
            self.events.write(line)
            self.shown_events = ev.n
