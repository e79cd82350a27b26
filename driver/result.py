"""What a played scenario measured: per-phase statistics, threshold verdicts, the exit
status they add up to, and the live :class:`Progress` a display gets every 100 ms."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .scenario import Scenario
from .stats import PhaseStats, Series


@dataclass
class Progress:
    """What a live display needs, once per telemetry interval."""

    phase: str
    kind: str
    index: int
    phases: int
    phase_elapsed_s: float
    phase_duration_s: float | None  # None while waiting for readiness
    elapsed_s: float
    remaining_s: float
    rate: float
    target: str
    in_flight: int
    completed: int
    errors: int
    p99_ns: int | None
    loop_lag_ns: int
    saturated: bool


@dataclass
class DriveResult:
    scenario: Scenario
    phases: list[PhaseStats]
    total: PhaseStats
    thresholds: list[dict[str, Any]]
    series: Series | None
    workers: int
    inlet: str
    sampler_reachable: bool
    started_wall_ns: int
    aborted: str | None = None
    interrupted: bool = False
    unfinished: int = 0
    saturated_intervals: int = 0
    max_loop_lag_ns: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def failed_thresholds(self) -> list[dict[str, Any]]:
        return [t for t in self.thresholds if not t["ok"]]

    @property
    def no_result(self) -> str | None:
        """Why the run measured nothing, or None: no request was sent though phases asked
        for load, or every request failed and no ``error_rate`` threshold says errors are
        expected (then that threshold decides)."""
        if self.aborted is not None or self.interrupted:
            return None
        wants_load = any(p.model != "none" for p in self.scenario.phases)
        if not wants_load:
            return None
        tot = self.total
        if tot.sent == 0 and tot.completed == 0:
            return f"no request was sent to {self.scenario.target.url}"
        if any(t["metric"] == "error_rate" for t in self.thresholds):
            return None
        if tot.completed and tot.error_count >= tot.completed:
            kinds = ", ".join(f"{k} {v}" for k, v in sorted(tot.errors.items())) or "errors"
            return f"every request to {self.scenario.target.url} failed ({kinds})"
        return None

    @property
    def passed(self) -> bool:
        return self.aborted is None and not self.failed_thresholds and self.no_result is None

    @property
    def exit_code(self) -> int:
        """0 passed, 1 a threshold failed, 3 no result (target never ready, nothing sent,
        every request failed), 130 interrupted (spikewatch.exits)."""
        if self.interrupted:
            return 130
        if self.aborted is not None or self.no_result is not None:
            return 3
        return 1 if self.failed_thresholds else 0

    def to_json(self) -> dict[str, Any]:
        return {
            "version": 1,
            "scenario": self.scenario.source,
            "target": self.scenario.target.url,
            "workers": self.workers,
            "inlet": self.inlet,
            "sampler_reachable": self.sampler_reachable,
            "started_wall_ns": self.started_wall_ns,
            "aborted": self.aborted,
            "interrupted": self.interrupted,
            "unfinished": self.unfinished,
            "driver": {"max_loop_lag_ns": self.max_loop_lag_ns, "saturated_intervals": self.saturated_intervals},
            "phases": [p.summary() for p in self.phases],
            "total": self.total.summary(),
            "thresholds": self.thresholds,
            "passed": self.passed,
            "no_result": self.no_result,
            "notes": self.notes,
            "telemetry": self.series.to_json([p.name for p in self.phases]) if self.series is not None else None,
        }


def check_thresholds(scenario: Scenario, total: PhaseStats) -> list[dict[str, Any]]:
    out = []
    h = total.hist
    n = h.get_total_count()
    for th in scenario.thresholds:
        observed: float | None
        if th.metric == "error_rate":
            observed = total.error_count / total.completed if total.completed else None
        elif n == 0:
            observed = None
        elif th.metric == "max":
            observed = h.get_max_value()
        elif th.metric == "mean":
            observed = h.get_mean_value()
        else:
            q = {"p50": 50, "p90": 90, "p95": 95, "p99": 99, "p999": 99.9}[th.metric]
            observed = h.get_value_at_percentile(q)
        ok = observed is not None and th.check(observed)
        if th.metric == "error_rate":
            shown = "no requests" if observed is None else f"{observed * 100:.3g}%"
        else:
            shown = "no requests" if observed is None else f"{observed / 1e6:.3g}ms"
        out.append({"metric": th.metric, "text": th.text, "observed": observed, "shown": shown, "ok": ok})
    return out
