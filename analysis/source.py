"""The loaded form of a recording: one :class:`Source` per sampler session, its :class:`Series`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from spikewatch.sampler.wire import protocol
from spikewatch.sampler.wire.recording import RecordingError


@dataclass
class Series:
    """One sampled series: times (sampler monotonic ns) and values (bytes)."""

    name: str
    t: np.ndarray
    v: np.ndarray

    def __len__(self) -> int:
        return len(self.v)


@dataclass
class Source:
    """Everything one sampler session contributed to a recording."""

    src: str
    series: dict[str, Series] = field(default_factory=dict)
    details: dict[str, np.ndarray] = field(default_factory=dict)
    load: dict[str, np.ndarray] = field(default_factory=dict)
    load_records: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    markers: list[dict[str, Any]] = field(default_factory=list)
    hellos: list[dict[str, Any]] = field(default_factory=list)
    t0: int = 0  # first time seen in this source (ns): reports count seconds from here
    t_end: int = 0
    seq_missed: int = 0  # messages missing from the recording, from gaps in ``seq``
    seq_gaps: list[tuple[int, int]] = field(default_factory=list)
    records: int = 0
    batches: int = 0
    integrity: dict[str, Any] = field(default_factory=dict)  # what the reader salvaged (see integrity())
    # a streamed long recording: the exact figures of its one pass (analysis.streamfig.Figures);
    # then ``series`` hold each series' min/max envelope, not every sample
    stream: Any = None

    # -- conveniences used by the analyses ---------------------------------
    @property
    def hello(self) -> dict[str, Any]:
        """The last hello (its counters are the most complete), or {}."""
        return self.hellos[-1] if self.hellos else {}

    @property
    def period_ns(self) -> int | None:
        for h in reversed(self.hellos):
            if h.get("period_ns"):
                return int(h["period_ns"])
        for s in self.series.values():
            if len(s) > 1:
                return int(np.median(np.diff(s.t[:10_000])))
        return None

    @property
    def limit_bytes(self) -> int | None:
        """The memory limit in force at the end (detail cg_limit, else hello/limit_change)."""
        lim = self.details.get("cg_limit")
        if lim is not None:
            ok = lim[~np.isnan(lim)]
            if len(ok):
                return int(ok[-1])
        for ev in reversed(self.events):
            if ev.get("kind") == protocol.EV_LIMIT_CHANGE and ev.get("new"):
                return int(ev["new"])
        for h in reversed(self.hellos):
            cg = h.get("cgroup") or {}
            if cg.get("limit"):
                return int(cg["limit"])
        return None

    @property
    def limit_origin(self) -> tuple[str | None, str | None]:
        """(limit_from, limit_kind) of the limit in force at the end: which cgroup sets it
        (a container's own cgroup is often unlimited under a limited pod or slice) and
        whether it is memory.max or memory.high. (None, None) when not said."""
        for ev in reversed(self.events):
            if ev.get("kind") == protocol.EV_LIMIT_CHANGE:
                return ev.get("limit_from"), ev.get("limit_kind")
        for h in reversed(self.hellos):
            cg = h.get("cgroup") or {}
            if cg.get("limit") is not None:
                return cg.get("limit_from"), cg.get("limit_kind")
        return None, None

    def rel(self, t_ns: Any) -> Any:
        """Seconds from the start of the recording (scalar or array)."""
        if isinstance(t_ns, np.ndarray):
            return (t_ns - self.t0) / 1e9
        return None if t_ns is None else (t_ns - self.t0) / 1e9

    def events_of(self, *kinds: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("kind") in kinds]

    @property
    def duration_s(self) -> float:
        return (self.t_end - self.t0) / 1e9


@dataclass
class Recording:
    """A loaded recording: one :class:`Source` per sampler session."""

    path: Path
    sources: dict[str, Source]
    integrity: dict[str, Any] = field(default_factory=dict)

    @property
    def main(self) -> Source:
        """The source a report is about by default: the one with the most samples."""
        if not self.sources:
            raise RecordingError(f"{self.path}: no records")
        return max(self.sources.values(), key=lambda s: (sum(len(x) for x in s.series.values()), s.records))

    def source(self, name: str | None) -> Source:
        if name is None:
            return self.main
        if name in self.sources:
            return self.sources[name]
        matches = [k for k in self.sources if k.startswith(name)]
        if len(matches) == 1:
            return self.sources[matches[0]]
        raise KeyError(f"no source {name!r} in {self.path} (have: {', '.join(self.sources)})")
