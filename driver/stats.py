"""Per-phase statistics and the telemetry series, merged from workers' interval snapshots.

Memory stays flat over long soaks (k6 keeps every sample and ran out at 12 h): one
HDR histogram per phase plus one for the run, and the 100 ms series (only when asked
for) as one packed ``array`` per field, ~150 bytes per interval.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field
from typing import Any

from hdrh.histogram import HdrHistogram
from spikewatch.sampler.wire import protocol

from .engine import new_histogram

SATURATION_LAG_NS = 20_000_000  # loop lag above this: the driver, not the service, is queueing

# The per-interval columns of driver.json: the load message's numbers (one
# definition, in the wire) less the worker count, after the interval's time.
SERIES_FIELDS = ("t_s", *(f for f in protocol.LOAD_NUMBER_FIELDS if f != "workers"))


def percentiles(h: HdrHistogram) -> dict[str, int]:
    if h.get_total_count() == 0:
        return {}
    return {
        "lat_p50_ns": h.get_value_at_percentile(50),
        "lat_p90_ns": h.get_value_at_percentile(90),
        "lat_p99_ns": h.get_value_at_percentile(99),
        "lat_max_ns": h.get_max_value(),
    }


@dataclass
class PhaseStats:
    name: str
    kind: str
    model: str
    params: dict[str, Any]
    t_start_ns: int = 0  # driver monotonic
    t_end_ns: int = 0
    wall_start_ns: int = 0
    sent: int = 0
    completed: int = 0
    bytes_sent: int = 0
    bytes_recv: int = 0
    late: int = 0
    dropped: int = 0
    lag_max: int = 0
    loop_lag_max: int = 0
    saturated_intervals: int = 0
    in_flight_max: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    hist: HdrHistogram = field(default_factory=new_histogram)
    time_to_ready_s: float | None = None
    ready: bool | None = None
    target_level_sum: float = 0.0
    intervals: int = 0

    def add(self, snap: dict[str, Any]) -> None:
        self.sent += snap["sent"]
        self.completed += snap["completed"]
        self.bytes_sent += snap["bytes_sent"]
        self.bytes_recv += snap["bytes_recv"]
        self.late += snap["late"]
        self.dropped += snap["dropped"]
        self.lag_max = max(self.lag_max, snap["lag_max"])
        for k, v in snap["errors"].items():
            self.errors[k] = self.errors.get(k, 0) + v
        self.hist.add(snap["hist"])

    @property
    def duration_s(self) -> float:
        return max(0, self.t_end_ns - self.t_start_ns) / 1e9

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def summary(self) -> dict[str, Any]:
        d = self.duration_s
        out: dict[str, Any] = {
            "name": self.name,
            "kind": self.kind,
            "model": self.model,
            "params": self.params,
            "wall_start_ns": self.wall_start_ns,
            "duration_s": round(d, 3),
            "sent": self.sent,
            "completed": self.completed,
            "errors": dict(self.errors),
            "error_rate": self.error_count / self.completed if self.completed else 0.0,
            "rate": self.completed / d if d > 0 else 0.0,
            "bytes_sent": self.bytes_sent,
            "bytes_recv": self.bytes_recv,
            "late_sends": self.late,
            "dropped_sends": self.dropped,
            "schedule_lag_max_ns": self.lag_max,
            "in_flight_max": self.in_flight_max,
            "loop_lag_max_ns": self.loop_lag_max,
            "saturated_intervals": self.saturated_intervals,
        }
        if self.model == "open" and self.intervals:
            out["target_rate"] = self.target_level_sum / self.intervals
        if self.hist.get_total_count():
            out.update(percentiles(self.hist))
            out["lat_mean_ns"] = int(self.hist.get_mean_value())
        if self.kind == "startup":
            out["ready"] = self.ready
            out["time_to_ready_s"] = self.time_to_ready_s
        return out

    def marker_attrs(self) -> dict[str, Any]:
        """What rides on the phase_end marker (small, flat)."""
        s = self.summary()
        keep = (
            "completed",
            "error_rate",
            "rate",
            "late_sends",
            "dropped_sends",
            "in_flight_max",
            "lat_p50_ns",
            "lat_p99_ns",
            "lat_max_ns",
            "ready",
            "time_to_ready_s",
            "duration_s",
        )
        out = {k: s[k] for k in keep if k in s and s[k] is not None}
        if self.errors:
            out["errors"] = dict(list(self.errors.items())[:16])
        return out


class Series:
    """The 100 ms telemetry, packed: one array of doubles per field."""

    def __init__(self) -> None:
        self.cols = {f: array("d") for f in SERIES_FIELDS}
        self.phase = array("H")
        self.errors: list[tuple[int, dict[str, int]]] = []

    def append(self, t_s: float, phase_index: int, msg: dict[str, Any]) -> None:
        i = len(self.phase)
        self.phase.append(phase_index)
        self.cols["t_s"].append(t_s)
        for f in SERIES_FIELDS[1:]:
            v = msg.get(f)
            self.cols[f].append(float("nan") if v is None else float(v))
        if msg.get("errors"):
            self.errors.append((i, msg["errors"]))

    def __len__(self) -> int:
        return len(self.phase)

    def to_json(self, phase_names: list[str]) -> dict[str, Any]:
        def clean(col: array) -> list:
            return [None if v != v else (int(v) if v.is_integer() else round(v, 3)) for v in col]

        return {
            "fields": {f: clean(c) for f, c in self.cols.items()},
            "phase": [phase_names[i] for i in self.phase],
            "errors": [{"index": i, "errors": e} for i, e in self.errors],
        }
