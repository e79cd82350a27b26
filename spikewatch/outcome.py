"""After a run: the report files, what happened to the service, and the exit status.

Exit status of ``spikewatch run`` / ``spikewatch demo`` (first rule that applies):

* 130 — interrupted (Ctrl-C, q in the console, SIGTERM); the report is still written.
* 1 — failed: a ``--fail-on`` condition holds, a scenario ``[thresholds]`` entry
  failed, or the service died before the scenario ended (an OOM kill included).
* 3 — not evaluated: the service could not be started (e.g. command not found) or
  never became ready, the driver sent nothing or every request failed, nothing was
  recorded, or the report could not be written (a full disk: one line naming the file).
* 0 — passed.

(2 is click's usage error: a bad option or scenario file, before anything ran.)
"""

from __future__ import annotations

import json
import signal
from dataclasses import dataclass, field
from typing import Any

from spikewatch.sampler.units import format_bytes
from spikewatch.sampler.wire import protocol

from .session import Outcome, Plan

EXIT_OK, EXIT_FAILED, EXIT_NOT_EVALUATED, EXIT_INTERRUPTED = 0, 1, 3, 130


@dataclass
class Verdict:
    status: int
    lines: list[str] = field(default_factory=list)  # what happened, one finding per line
    failures: list[str] = field(default_factory=list)  # why the status is not 0


def _signal_name(n: int) -> str:
    try:
        return signal.Signals(n).name
    except ValueError:
        return f"signal {n}"


def service_fate(src: Any, report: dict[str, Any] | None) -> str | None:
    """How the launched service ended, from the recording: 'OOM-killed at 12.3 s (limit 64 MiB)'…"""
    kills = (report or {}).get("oom_kills") or []
    limit = (report or {}).get("limit_bytes")
    lim = f" (limit {format_bytes(limit)})" if limit else ""
    if kills:
        k = kills[0]
        details = [f"limit {format_bytes(limit)}"] if limit else []
        if k.get("last_bytes"):
            details.append(f"last sample {format_bytes(k['last_bytes'])}")
        return f"OOM-killed at {k['t']:.1f} s" + (f" ({'; '.join(details)})" if details else "")
    if src is None:
        return None
    launched = {e.get("pid") for e in src.events_of(protocol.EV_PROC_START) if e.get("launched")}
    for e in src.events_of(protocol.EV_PROC_EXIT):
        if e.get("pid") in launched or not launched:
            t = src.rel(e.get("t"))
            at = f" at {t:.1f} s" if t is not None else ""
            if e.get("oom"):
                return f"OOM-killed{at}{lim}"
            if e.get("signal"):
                return f"killed by {_signal_name(int(e['signal']))}{at}"
            return f"exited with status {e.get('code')}{at}"
    return None


def build(plan: Plan, written: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any] | None, str | None]:
    """Load the recording, write report.json and report.html; (source, report, problem).

    ``written["json"]`` is set to (source, report) once report.json is whole, for a caller
    that cannot wait for the (slower) HTML."""
    from spikewatch.analysis.html import write_html
    from spikewatch.analysis.reader import load
    from spikewatch.analysis.report import build_report
    from spikewatch.sampler.wire.recording import RecordingError

    try:
        rec = load(plan.recording)
        src = rec.main
    except (RecordingError, OSError) as exc:
        return None, None, f"no recording to report on ({exc})"
    if not any(len(s) for s in src.series.values()):
        return src, None, f"{plan.recording} holds no samples"
    report = build_report(src)
    report["recording"] = str(plan.recording)
    report["sources"] = list(rec.sources)
    from .exits import atomic_open, atomic_path, reason

    for name in ("report.json", "report.html"):
        path = plan.out_dir / name
        try:
            if name == "report.json":
                with atomic_open(path, "w", encoding="utf-8") as f:
                    f.write(json.dumps(report, indent=2, default=str) + "\n")
                if written is not None:
                    written["json"] = (src, report)
            else:
                with atomic_path(path) as tmp:
                    write_html(src, report, tmp)
        except OSError as exc:
            return src, report, f"cannot write {path}: {reason(exc)}"
    return src, report, None


def driver_results(plan: Plan) -> dict[str, Any] | None:
    try:
        return json.loads(plan.driver_json.read_text())
    except (OSError, ValueError):
        return None


def not_evaluated(v: Verdict, why: str) -> Verdict:
    """A verdict that would have passed becomes "not evaluated" (3) for ``why``."""
    if v.status == EXIT_OK:
        v.status = EXIT_NOT_EVALUATED
        v.failures.append(why)
    return v


def decide(
    outcome: Outcome,
    report: dict[str, Any] | None,
    problem: str | None,
    drive: dict[str, Any] | None,
    fail_on_failed: list[str],
    fate: str | None,
) -> Verdict:
    """The exit status and the lines that explain it (see the module docstring for the rules)."""
    v = Verdict(EXIT_OK)
    if outcome.service_died and fate is None:
        # No exit of the service on record: the sampler itself may have failed.
        v.lines.append(
            f"the sampler ended early (exit status {outcome.sampler_status}; see sampler.log): "
            "the scenario was cut short"
        )
        v.failures.append("the sampler or the service ended before the scenario finished")
    elif outcome.service_died:
        v.lines.append(f"service {fate}: the scenario was cut short (the driver stopped early)")
        v.failures.append(f"the service died mid-run ({fate})")
    elif fate and "OOM" in fate:
        v.lines.append(f"service {fate}")
        v.failures.append(f"the service was {fate}")
    aborted = (drive or {}).get("aborted")
    if aborted and not outcome.service_died:
        v.lines.append(f"the driver gave up: {aborted}")
    no_result = (drive or {}).get("no_result")
    if no_result and not outcome.service_died:
        v.lines.append(f"the load measured nothing: {no_result}")
    for th in (drive or {}).get("thresholds") or []:
        mark = "ok  " if th.get("ok") else "FAIL"
        v.lines.append(f"{mark} threshold {th.get('text')} (observed {th.get('shown')})")
        if not th.get("ok"):
            v.failures.append(f"scenario threshold {th.get('text')} (observed {th.get('shown')})")
    for line in fail_on_failed:
        v.lines.append(f"FAIL --fail-on {line}")
        v.failures.append(f"--fail-on {line}")
    if outcome.driver_status is None and drive is None:
        v.lines.append("the driver did not run")
    elif drive is None and outcome.interrupted:
        v.lines.append("the driver was stopped before its first phase began (no statistics)")
    elif drive is None:
        v.lines.append(f"the driver left no statistics (exit status {outcome.driver_status}); see driver.log")
    if outcome.interrupted:
        v.status = EXIT_INTERRUPTED
        v.failures.insert(0, "interrupted")
    elif v.failures:
        v.status = EXIT_FAILED
    elif problem is not None or (aborted and not outcome.service_died):
        v.status = EXIT_NOT_EVALUATED
        v.failures.append(problem or "the service never became ready")
    elif no_result and not outcome.service_died:
        v.status = EXIT_NOT_EVALUATED
        v.failures.append(no_result)
    return v
