"""``ConsoleApp``: the live console as an embeddable Textual app.

    app = ConsoleApp(["tcp://127.0.0.1:7781"], ConsoleOptions(inlet=["tcp://127.0.0.1:7782"]))
    app.run()                      # blocks; q quits
    app.call_from_thread(app.exit) # from another thread, to end it

The receiver thread posts :class:`StreamUpdated` at most ``fps`` times a
second; the app redraws panels in response, never per sample.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from spikewatch.sampler.units import format_bytes
from spikewatch.sampler.wire import protocol
from spikewatch.sampler.wire.client import InletClient
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.message import Message
from textual.widgets import Footer, Input, Static

from .fmt import wall_clock, window_label
from .options import WINDOWS_S, ConsoleOptions
from .receiver import StreamReceiver
from .state import CHART_SERIES, StreamState
from .widgets import Line, SourcePanel, View

PANEL_MIN_HEIGHT = 10


class StreamUpdated(Message):
    """Posted by the receiver thread: new data is in the stream state."""


class ConsoleApp(App):
    """Live view of one or more samplers' streams."""

    TITLE = "spikewatch console"
    AUTO_FOCUS = None  # keys go to the app; the note box takes focus only when opened
    CSS = """
    #status { height: 1; background: $panel; padding: 0 1; }
    #oom { height: auto; background: $error; color: $text; text-style: bold; padding: 0 1; display: none; }
    #oom.shown { display: block; }
    #waiting { padding: 1 2; color: $text-muted; }
    #note { dock: bottom; display: none; }
    #note.shown { display: block; }
    """
    BINDINGS = [
        Binding("q", "quit", "quit"),
        Binding("p", "pause", "pause"),
        Binding("plus,equals_sign", "window(1)", "window +"),
        Binding("minus", "window(-1)", "window −"),
        Binding("s", "series", "series"),
        Binding("n", "note", "note"),
        Binding("z", "zoom", "zoom source"),
    ]

    def __init__(self, endpoints: Sequence[str], options: ConsoleOptions | None = None) -> None:
        super().__init__()
        self.endpoints = list(endpoints)
        self.options = options or ConsoleOptions()
        self.stream = StreamState(max_window_s=self.options.max_window_s, limit=self.options.limit)
        self.view = View(series=self.options.series, window_ns=int(self.options.window_s * 1e9))
        self.paused = False
        self.zoom: str | None = None  # source key shown alone, or None for all
        self.panels: dict[str, SourcePanel] = {}
        self.notes_sent: list[str] = []
        self._banner = ""
        self._sized_for: tuple[int, int] = (0, 0)
        self.updates = 0
        self._receiver = StreamReceiver(
            self.endpoints,
            self.stream,
            lambda: self.post_message(StreamUpdated()),
            fps=self.options.fps,
            history=self.options.history,
            socket_options=self.options.socket_options,
            keys=self.options.keys,
        )
        self._notices_shown = 0
        self._inlets: list[InletClient] = []
        self.title = self.options.title

    # --- lifecycle -----------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield Line(id="status")
        yield Static(id="oom")
        with VerticalScroll(id="panels"):
            yield Static(f"waiting for samplers at {', '.join(self.endpoints)} …", id="waiting")
        yield Input(placeholder="note text, Enter to send, Esc to cancel", id="note", disabled=True)
        yield Footer()

    def on_mount(self) -> None:
        self._receiver.start()
        self._update_status()
        if self.options.duration_s:
            self.set_timer(self.options.duration_s, self.exit)

    def on_unmount(self) -> None:
        self._receiver.stop()
        for client in self._inlets:
            client.close()

    # --- stream updates ------------------------------------------------------

    async def on_stream_updated(self, message: StreamUpdated) -> None:
        if not self.is_running or not self.query("#oom"):
            return  # a late update while the app shuts down
        self.updates += 1
        if self._receiver.error is not None:
            self.notify(f"receiver stopped: {self._receiver.error}", severity="error", timeout=30)
        for notice in self._receiver.notices[self._notices_shown :]:
            if notice in self._receiver.handshake_errors:  # a sampler refused us: stays up longer
                self.notify(notice, severity="error", timeout=60)
            else:
                self.notify(notice, timeout=8)
        self._notices_shown = len(self._receiver.notices)
        with self.stream.lock:
            sources = list(self.stream.sources.values())
        for src in sources:
            if src.key not in self.panels:
                await self._add_panel(src)
        for panel in self.panels.values():
            panel.refresh_events()
            if not self.paused:
                panel.refresh_numbers(self.view, False)
        self._size_panels()  # here rather than on resize: the container's new size is known by now
        self._update_oom()
        self._update_status()

    async def _add_panel(self, src) -> None:
        waiting = self.query("#waiting")
        if waiting:
            await waiting.remove()
        panel = SourcePanel(self.stream, src, id=f"src{len(self.panels)}")
        self.panels[src.key] = panel
        await self.query_one("#panels").mount(panel)
        panel.display = self.zoom is None
        self._size_panels()
        panel.refresh_numbers(self.view, self.paused)

    def _size_panels(self) -> None:
        """Share the height among the shown panels, none below a readable minimum
        (more than fit scroll)."""
        shown = [p for p in self.panels.values() if p.display]
        available = self.query_one("#panels").size.height
        if shown and (available, len(shown)) != self._sized_for:
            self._sized_for = (available, len(shown))
            height = max(PANEL_MIN_HEIGHT, available // len(shown))
            for panel in shown:
                panel.styles.height = height

    def _update_oom(self) -> None:
        lines = []
        with self.stream.lock:
            for src in self.stream.sources.values():
                for ev in src.oom_kills:
                    limit = src.limit_for(self.view.series)
                    lim = f" (limit {format_bytes(limit)})" if limit else ""
                    what = ev.text.removeprefix("OOM KILL ")
                    lines.append(f"⚠ OOM KILL  {src.label}  at {wall_clock(src.to_wall(ev.t))}: {what}{lim}")
        banner = self.query_one("#oom", Static)
        text = "\n".join(lines[-3:])
        if lines and text != self._banner:
            self._banner = text
            banner.update(Text(text))
            banner.add_class("shown")

    def _update_status(self) -> None:
        state = "PAUSED" if self.paused else "live"
        text = Text(no_wrap=True, overflow="ellipsis")
        text.append(f"{self.options.title}  ", "bold")
        text.append(f"window {window_label(self.view.window_ns)}  series {self.view.series}  ")
        text.append(state, "bold yellow" if self.paused else "green")
        if self.zoom:
            text.append(f"  zoom {self.panels[self.zoom].src.label}")
        self.query_one("#status", Line).set(text)

    def _redraw(self) -> None:
        for panel in self.panels.values():
            panel.refresh_numbers(self.view, self.paused)
        self._update_status()

    # --- keys ----------------------------------------------------------------

    def action_pause(self) -> None:
        self.paused = not self.paused
        self._redraw()

    def action_window(self, step: int) -> None:
        current = self.view.window_ns / 1e9
        i = min(range(len(WINDOWS_S)), key=lambda k: abs(WINDOWS_S[k] - current))
        i = max(0, min(len(WINDOWS_S) - 1, i + step))
        self.view.window_ns = int(WINDOWS_S[i] * 1e9)
        self._redraw()

    def action_series(self) -> None:
        with self.stream.lock:
            have = {s for src in self.stream.sources.values() for s in src.rings}
        choices = [s for s in CHART_SERIES if s in have] or list(CHART_SERIES)
        i = choices.index(self.view.series) if self.view.series in choices else -1
        self.view.series = choices[(i + 1) % len(choices)]
        self._redraw()

    def action_zoom(self) -> None:
        keys = list(self.panels)
        if not keys:
            return
        order: list[str | None] = [None, *keys]
        self.zoom = order[(order.index(self.zoom) + 1) % len(order)]
        for key, panel in self.panels.items():
            panel.display = self.zoom is None or key == self.zoom
        self._size_panels()
        self._redraw()

    def action_note(self) -> None:
        box = self.query_one("#note", Input)
        box.disabled = False
        box.add_class("shown")
        box.focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        text = event.value.strip()
        self._close_note()
        if text:
            self.send_note(text)

    def on_key(self, event) -> None:
        if event.key == "escape" and self.query_one("#note", Input).has_class("shown"):
            self._close_note()

    def _close_note(self) -> None:
        box = self.query_one("#note", Input)
        box.value = ""
        box.remove_class("shown")
        box.disabled = True
        self.set_focus(None)

    def send_note(self, text: str) -> bool:
        """Send a note marker to every configured inlet; say so on screen."""
        if not self._inlets:
            self._inlets = [
                InletClient(ep, linger_ms=500, socket_options=self.options.socket_options) for ep in self.options.inlet
            ]
        try:
            ok = all([c.note(text) for c in self._inlets])
        except protocol.ProtocolError as exc:
            self.notify(f"note not sent: {exc}", severity="error")
            return False
        self.notes_sent.append(text)
        where = ", ".join(self.options.inlet)
        self.notify(f"note sent to {where}: {text}" if ok else f"note queued (no sampler at {where} yet)")
        return ok
