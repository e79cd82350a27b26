"""What the console knows about each sampler: ring buffers, counters, events.

Pure bookkeeping fed with decoded stream messages (no sockets, no UI), so the
Textual app, the plain status printer and the tests share one model. The
receiver thread writes under :attr:`StreamState.lock`; readers take the lock
only to copy what they draw.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from spikewatch.sampler.units import format_bytes, format_duration_ns
from spikewatch.sampler.wire import protocol
from spikewatch.sampler.wire.seqgaps import SeqGaps

# Series the console can chart; ``cg_working_set`` comes from ``detail`` (~10 Hz).
SERIES_WORKING_SET = "cg_working_set"
SERIES_HEAP = "heap"  # from ``detail`` with --heap-metric: a number shown, not charted
# The tree's PSS and USS (shared pages counted once; private only), from the ``detail``
# that follows each smaps_rollup sweep (every 0.1 .. 10 s): numbers shown, not charted.
SERIES_PSS = "pss"
SERIES_USS = "uss"
CHART_SERIES: tuple[str, ...] = (protocol.SERIES_RSS, protocol.SERIES_CG_USAGE, SERIES_WORKING_SET)
# Series the cgroup limit applies to (for rss it is only a guide).
LIMITED_SERIES = (protocol.SERIES_CG_USAGE, SERIES_WORKING_SET)

MAX_EVENTS = 1000
OVERRUN_EVERY_NS = 5_000_000_000
LAG_HISTORY = 20_000


class Ring:
    """Fixed-capacity (t, value) ring of int64 numpy arrays, oldest overwritten."""

    def __init__(self, capacity: int) -> None:
        self.capacity = max(16, int(capacity))
        self.t = np.zeros(self.capacity, dtype=np.int64)
        self.v = np.zeros(self.capacity, dtype=np.int64)
        self.written = 0  # total ever appended

    def __len__(self) -> int:
        return min(self.written, self.capacity)

    def extend(self, ts: np.ndarray, vs: np.ndarray) -> None:
        n = len(ts)
        if n == 0:
            return
        if n > self.capacity:
            ts, vs = ts[-self.capacity :], vs[-self.capacity :]
            self.written += n - self.capacity
            n = self.capacity
        start = self.written % self.capacity
        first = min(n, self.capacity - start)
        self.t[start : start + first] = ts[:first]
        self.v[start : start + first] = vs[:first]
        if first < n:
            self.t[: n - first] = ts[first:]
            self.v[: n - first] = vs[first:]
        self.written += n

    def _segments(self) -> list[slice]:
        if self.written <= self.capacity:
            return [slice(0, self.written)]
        head = self.written % self.capacity
        return [slice(head, self.capacity), slice(0, head)]

    def window(self, t_from: int, t_to: int) -> tuple[np.ndarray, np.ndarray]:
        """Copies of the samples with ``t_from <= t <= t_to``, oldest first."""
        ts: list[np.ndarray] = []
        vs: list[np.ndarray] = []
        for seg in self._segments():
            t = self.t[seg]
            lo = int(np.searchsorted(t, t_from, "left"))
            hi = int(np.searchsorted(t, t_to, "right"))
            if hi > lo:
                ts.append(t[lo:hi])
                vs.append(self.v[seg][lo:hi])
        if not ts:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        return np.concatenate(ts), np.concatenate(vs)

    def last(self) -> tuple[int, int] | None:
        if self.written == 0:
            return None
        i = (self.written - 1) % self.capacity
        return int(self.t[i]), int(self.v[i])


class LagStats:
    """Recent lags (ns) between a sample's time and the moment it was seen or drawn."""

    def __init__(self, history: int = LAG_HISTORY) -> None:
        self.recent: deque[int] = deque(maxlen=history)
        self.count = 0
        self.max = 0
        self.last: int | None = None

    def record(self, lag_ns: int) -> None:
        self.recent.append(lag_ns)
        self.count += 1
        self.last = lag_ns
        self.max = max(self.max, lag_ns)

    def summary(self) -> dict[str, float | int | None]:
        if not self.recent:
            return {"count": 0, "p50_ms": None, "p99_ms": None, "max_ms": None}
        a = np.fromiter(self.recent, dtype=np.int64)
        p50, p99 = np.percentile(a, [50, 99])
        return {"count": self.count, "p50_ms": p50 / 1e6, "p99_ms": p99 / 1e6, "max_ms": self.max / 1e6}


@dataclass
class ConsoleEvent:
    """One line of the event list."""

    n: int  # running number within the source, so views know what they have shown
    t: int  # sampler monotonic ns
    kind: str
    text: str
    alarm: bool = False


@dataclass
class SourceState:
    """One sampler session as seen on one endpoint."""

    key: str
    endpoint: str
    capacity: int
    session: str | None = None
    host: str | None = None
    hello: dict[str, Any] | None = None
    anchor: tuple[int, int] | None = None  # (sampler t, wall ns) from the latest hello
    started_t: int | None = None
    ended: bool = False
    limit: int | None = None  # as the sampler reports it (hello, detail, limit_change)
    limit_override: int | None = None
    rings: dict[str, Ring] = field(default_factory=dict)
    current: dict[str, int] = field(default_factory=dict)
    peaks: dict[str, int] = field(default_factory=dict)
    detail: dict[str, Any] | None = None
    load: dict[str, Any] | None = None
    phase: str | None = None
    events: deque[ConsoleEvent] = field(default_factory=lambda: deque(maxlen=MAX_EVENTS))
    events_total: int = 0
    oom_kills: list[ConsoleEvent] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=dict)
    achieved_hz: float | None = None
    _prev_hello: tuple[int, int] | None = None  # (t, samples counter)
    # Live: a hole counts as lost once 100 newer messages came; bounded pending.
    seq: SeqGaps = field(default_factory=lambda: SeqGaps(settle=100, max_pending=10_000))
    messages: int = 0
    samples: int = 0
    last_t: int | None = None  # newest sample time
    _last_overrun_t: int | None = None
    _overruns_held: int = 0
    _missed_held: int = 0
    receive_lag: LagStats = field(default_factory=LagStats)
    draw_lag: LagStats = field(default_factory=LagStats)

    # --- reading -----------------------------------------------------------

    @property
    def label(self) -> str:
        name = self.host or self.endpoint
        return f"{name} ({self.session[:8]})" if self.session else f"{name} (waiting for hello)"

    @property
    def gaps(self) -> int:
        return self.seq.lost

    def to_wall(self, t: int) -> int | None:
        """Wall-clock ns of sampler time ``t``, via the latest hello's anchor."""
        if self.anchor is None:
            return None
        at, wall = self.anchor
        return wall + (t - at)

    def series_names(self) -> list[str]:
        return [s for s in CHART_SERIES if s in self.rings] + [s for s in self.rings if s not in CHART_SERIES]

    def limit_for(self, series: str) -> int | None:
        """The limit to compare ``series`` with: the user's ``--limit``, else the sampler's."""
        return self.limit_override or self.limit

    def wall_lag_ns(self, now_wall_ns: int) -> int | None:
        """How far the newest sample is behind ``now_wall_ns``."""
        if self.last_t is None:
            return None
        wall = self.to_wall(self.last_t)
        return None if wall is None else now_wall_ns - wall

    # --- writing -----------------------------------------------------------

    def _ring(self, name: str) -> Ring:
        ring = self.rings.get(name)
        if ring is None:
            ring = self.rings[name] = Ring(self.capacity)
        return ring

    def _event(self, t: int, kind: str, text: str, alarm: bool = False) -> ConsoleEvent:
        self.events_total += 1
        ev = ConsoleEvent(self.events_total, t, kind, text, alarm)
        self.events.append(ev)
        return ev

    def _peak(self, series: str, value: int) -> None:
        if value > self.peaks.get(series, -1):
            self.peaks[series] = value

    def ingest(self, topic: str, body: Mapping[str, Any], recv_wall_ns: int | None) -> None:
        """Apply one message taken through ``protocol.as_message`` (StreamState.ingest);
        ``recv_wall_ns`` is when it arrived (None for replayed history)."""
        self.messages += 1
        seq, t = body.get("seq"), body.get("t")
        if not isinstance(t, int):
            return  # a topic this version does not know, without a time
        if seq is not None:
            lost = self.seq.see(seq)
            if lost:
                self._event(t, "stream_gap", f"stream gap: {lost} message(s) missed", alarm=True)
        handler = _HANDLERS.get(topic)
        if handler is not None:
            handler(self, body, t, recv_wall_ns or 0)

    def _on_hello(self, body: Mapping[str, Any], t: int, recv: int) -> None:
        self.hello = dict(body)
        self.session = body["session"]
        self.host = body.get("host", self.host)
        if isinstance(body.get("wall_ns"), int):
            self.anchor = (t, body["wall_ns"])
        self.started_t = body.get("started_t", self.started_t)
        cg = body.get("cgroup") or {}
        if isinstance(cg, dict) and cg.get("limit"):
            self.limit = int(cg["limit"])
        counters = body.get("counters") or {}
        self.counters = dict(counters)
        taken = counters.get("samples")
        if isinstance(taken, int):
            if self._prev_hello and t > self._prev_hello[0]:
                pt, ps = self._prev_hello
                self.achieved_hz = (taken - ps) * 1e9 / (t - pt)
            self._prev_hello = (t, taken)
        if body.get("final"):
            self.ended = True

    def _on_samples(self, body: Mapping[str, Any], t: int, recv: int) -> None:
        ts = t + np.asarray(body["dt"], dtype=np.int64)
        if len(ts) == 0:
            return
        for name, col in body["series"].items():  # as_samples: one value per dt in each
            vs = np.asarray(col, dtype=np.int64)
            self._ring(name).extend(ts, vs)
            self.current[name] = int(vs[-1])
            self._peak(name, int(vs.max()))
        self.samples += len(ts)
        last = int(ts[-1])
        if self.last_t is None or last > self.last_t:
            self.last_t = last
        wall = self.to_wall(last)
        if wall is not None and recv is not None:
            self.receive_lag.record(recv - wall)

    def _on_detail(self, body: Mapping[str, Any], t: int, recv: int) -> None:
        self.detail = dict(body)
        heap = body.get(SERIES_HEAP)
        if isinstance(heap, int):  # the service's own heap gauge (--heap-metric), shown beside RSS
            self.current[SERIES_HEAP] = heap
            self._peak(SERIES_HEAP, heap)
        for name in (SERIES_PSS, SERIES_USS):
            v = body.get(name)
            if isinstance(v, int):
                self.current[name] = v
                self._peak(name, v)
            elif body.get("procs") == 0:
                self.current.pop(name, None)  # the tree is gone: its last sweep is not "now"
        ws = body.get(SERIES_WORKING_SET)
        if isinstance(ws, int):
            self._ring(SERIES_WORKING_SET).extend(np.array([t], np.int64), np.array([ws], np.int64))
            self.current[SERIES_WORKING_SET] = ws
            self._peak(SERIES_WORKING_SET, ws)
        if "cg_limit" in body and isinstance(body["cg_limit"], int):
            self.limit = body["cg_limit"]
        # The kernel's high-water marks catch what fell between samples.
        if isinstance(body.get("cg_peak"), int):
            self._peak(protocol.SERIES_CG_USAGE, body["cg_peak"])

    def _on_event(self, body: Mapping[str, Any], t: int, recv: int) -> None:
        kind = body["kind"]
        if kind == protocol.EV_OVERRUN and not self._overrun_due(body, t):
            return
        text, alarm = describe_event(body)
        if kind == protocol.EV_OVERRUN and self._overruns_held > 1:
            text += f" (+{self._overruns_held - 1} more overruns, {self._missed_held} ticks in all)"
        if kind == protocol.EV_OVERRUN:
            self._overruns_held = self._missed_held = 0
        ev = self._event(t, kind, text, alarm)
        if kind == protocol.EV_OOM_KILL or (kind == protocol.EV_PROC_EXIT and body.get("oom")):
            if not (kind == protocol.EV_PROC_EXIT and self.oom_kills and t - self.oom_kills[-1].t < 1_000_000_000):
                self.oom_kills.append(ev)  # one banner per kill, not per report of it
        elif kind == protocol.EV_HWM_SPIKE and isinstance(body.get("bytes"), int):
            self._peak(str(body.get("series", protocol.SERIES_RSS)), body["bytes"])
        elif kind == protocol.EV_LIMIT_CHANGE:
            new = body.get("new")
            self.limit = new if isinstance(new, int) and new > 0 else None

    def _overrun_due(self, body: Mapping[str, Any], t: int) -> bool:
        """Overruns come several a second on a busy host: list at most one per
        ``OVERRUN_EVERY_NS`` (with a count of the others) so they cannot bury phases
        and notes; the health line still shows the sampler's own total."""
        self._overruns_held += 1
        missed = body.get("missed")
        self._missed_held += missed if isinstance(missed, int) else 0
        if self._last_overrun_t is not None and t - self._last_overrun_t < OVERRUN_EVERY_NS:
            return False
        self._last_overrun_t = t
        return True

    def _on_marker(self, body: Mapping[str, Any], t: int, recv: int) -> None:
        kind, name = body["kind"], body["name"]
        if kind == protocol.PHASE_START:
            self.phase = name
            self._event(t, "phase", f"▶ phase {name}")
        elif kind == protocol.PHASE_END:
            if self.phase == name:
                self.phase = None
            self._event(t, "phase", f"■ end of {name}")
        else:
            self._event(t, "note", f"✎ {name}")

    def _on_load(self, body: Mapping[str, Any], t: int, recv: int) -> None:
        self.load = dict(body)


_HANDLERS = {
    protocol.HELLO: SourceState._on_hello,
    protocol.SAMPLES: SourceState._on_samples,
    protocol.DETAIL: SourceState._on_detail,
    protocol.EVENT: SourceState._on_event,
    protocol.MARKER: SourceState._on_marker,
    protocol.LOAD: SourceState._on_load,
}


def describe_event(body: Mapping[str, Any]) -> tuple[str, bool]:
    """One human line for a sampler ``event``, and whether it is an alarm."""
    kind = body.get("kind")
    pid = body.get("pid")
    if kind == protocol.EV_OOM_KILL:
        last = body.get("last_bytes")
        extra = f", last {format_bytes(last)}" if isinstance(last, int) else ""
        return f"OOM KILL pid {pid if pid is not None else '?'}{extra}", True
    if kind == protocol.EV_PROC_EXIT:
        how = f"signal {body['signal']}" if body.get("signal") is not None else f"code {body.get('code')}"
        return f"proc_exit pid {pid} ({how}{', OOM' if body.get('oom') else ''})", bool(body.get("oom"))
    if kind == protocol.EV_PROC_START:
        return f"proc_start pid {pid} {body.get('exe') or ''}".rstrip(), False
    if kind == protocol.EV_RESTART:
        return f"restart pid {body.get('old_pid')} → {pid}", True
    if kind == protocol.EV_HWM_SPIKE:
        return (
            f"hwm_spike {body.get('series')} {format_bytes(body.get('bytes'))} "
            f"(samples saw {format_bytes(body.get('sampled_max'))})"
        ), False
    if kind == protocol.EV_LIMIT_CHANGE:
        return f"limit {format_bytes(body.get('old'))} → {format_bytes(body.get('new'))}", False
    if kind == protocol.EV_OVERRUN:
        return f"overrun: {body.get('missed')} tick(s) missed, {format_duration_ns(body.get('late_ns'))} late", False
    if kind == protocol.EV_JOURNAL_ERROR:
        return f"journal error: {body.get('error')}", True
    return f"{kind}", False


AUTO_SERIES = "auto"


def tree_pss_text(src: SourceState) -> str | None:
    """``tree pss 120 MiB (peak 150 MiB) uss 90 MiB``, or None before the first sweep."""
    pss, uss = src.current.get(SERIES_PSS), src.current.get(SERIES_USS)
    if pss is None:
        return None
    text = f"tree pss {format_bytes(pss)} (peak {format_bytes(src.peaks.get(SERIES_PSS))})"
    return text + (f" uss {format_bytes(uss)}" if uss is not None else "")


def pick_series(src: SourceState, wanted: str) -> str:
    """``wanted`` if this source has it, else the first series it has. ``auto``: the series
    the report's headline uses (spikewatch.analysis.peaks.headline_series): the cgroup's
    usage under a limit, else rss, so the live peak and headroom match the report's."""
    names = src.series_names()
    if wanted == AUTO_SERIES:
        if src.limit and "cg_usage" in src.rings:
            return "cg_usage"
        return "rss" if "rss" in src.rings or not names else names[0]
    return wanted if wanted in src.rings or not names else names[0]


def _restarted(src: SourceState, seq: Any) -> bool:
    """A ``seq`` far below the newest one: the sampler behind the endpoint started over."""
    last = src.seq.last_seq()
    return isinstance(seq, int) and last is not None and seq < last - 1000 and seq < 1000


class StreamState:
    """All sources, keyed by endpoint and session, behind one lock."""

    def __init__(self, max_window_s: float = 300.0, max_rate_hz: float = 1000.0, limit: int | None = None) -> None:
        self.lock = threading.Lock()
        self.sources: dict[str, SourceState] = {}
        self._by_endpoint: dict[str, SourceState] = {}
        # Room for the longest window at the sampler's rate, plus slack for jitter.
        self.capacity = int(max_window_s * max_rate_hz * 1.1)
        self.version = 0
        self.bad_messages = 0
        self.limit_override = limit

    def _new_source(self, endpoint: str, session: str | None) -> SourceState:
        key = f"{endpoint}#{session or len(self.sources)}"
        src = SourceState(
            key=key, endpoint=endpoint, capacity=self.capacity, session=session, limit_override=self.limit_override
        )
        self.sources[key] = src
        self._by_endpoint[endpoint] = src
        return src

    def ingest(self, endpoint: str, topic: str, body: Mapping[str, Any], recv_wall_ns: int | None) -> None:
        """Apply one decoded message that arrived on ``endpoint`` (caller holds the lock).
        A malformed body (``protocol.as_message`` refuses it) is counted in
        :attr:`bad_messages` and goes no further."""
        try:
            body = protocol.as_message(topic, body)
        except protocol.ProtocolError:
            self.bad_messages += 1
            return
        src = self._by_endpoint.get(endpoint)
        if topic == protocol.HELLO:
            session = body.get("session")
            if src is None:
                src = self._new_source(endpoint, session)
            elif session and src.session and session != src.session:
                src.ended = True  # the sampler restarted: a new session gets its own panel
                src = self._new_source(endpoint, session)
        elif src is None:
            src = self._new_source(endpoint, None)
        elif src.session is not None and _restarted(src, body.get("seq")):
            # seq starting over before the new session's hello: keep it out of the old panel.
            src.ended = True
            src = self._new_source(endpoint, None)
        src.ingest(topic, body, recv_wall_ns)
        self.version += 1
