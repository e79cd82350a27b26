"""One ``spikewatch run``: the sampler (launching the service) and the driver as child
processes, supervised until the scenario ends, the service dies or the user stops it.

Order matters when stopping: the driver goes first (SIGTERM: it closes the current
phase with its end marker and writes its statistics), then the sampler (SIGTERM:
it forwards the signal to the service, waits for it, flushes the recording and
removes the service's cgroup). Anything still alive after that is killed, and any
cgroup the sampler left is removed here.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from . import limits, procs

# How long each child gets to stop on its own, per attempt, before the next signal.
DRIVER_STOP_S = (20.0, 5.0)
SAMPLER_STOP_S = (15.0, 5.0)
# After Ctrl-C / SIGTERM the whole run ends within a second (report included, see
# spikewatch.runner): the driver and the sampler stop side by side. The sampler is told
# once the driver has written driver.json (its last phase_end and telemetry are sent by
# then) or exited, at most STOP_STAGGER_S after the driver, so that marker is on record.
# A second signal from us stops each at once (the driver quits, the sampler kills the
# service; both still flush); a child that ignores that is killed.
STOP_STAGGER_S = 0.4
DRIVER_STOP_INTERRUPTED_S = (0.5, 0.3)
SAMPLER_STOP_INTERRUPTED_S = (0.5, 1.0)
READY_TIMEOUT_S = 30.0
TAIL_S = 0.5  # keep sampling after the last phase so its end is on record


class RunError(Exception):
    """The run could not be carried out; the message says why and where the logs are."""


@dataclass
class Plan:
    scenario: Path
    command: list[str]
    url: str
    port: int
    out_dir: Path
    publish: str
    inlet: str
    # The sampler's history endpoint: the console attaches after the driver has started,
    # and backfills from here so the first phase markers and the startup peak are on it.
    history: str | None = None
    period: str = "1ms"
    limit: str | None = None  # passed to the sampler (already checked to be possible)
    env: dict[str, str] = field(default_factory=dict)
    keys: str | None = None  # CURVE keys folder (spikewatch keys DIR): sampler, driver and console use it
    heap_metric: str | None = None  # URL#NAME of the service's heap gauge, {port} already filled in

    @property
    def recording(self) -> Path:
        return self.out_dir / "recording"

    @property
    def sampler_log(self) -> Path:
        return self.out_dir / "sampler.log"

    @property
    def driver_log(self) -> Path:
        return self.out_dir / "driver.log"

    @property
    def driver_json(self) -> Path:
        return self.out_dir / "driver.json"


@dataclass
class Outcome:
    service_died: bool = False  # the service ended before the scenario did
    interrupted: bool = False  # the user (or a signal) stopped the run
    sampler_status: int | None = None
    driver_status: int | None = None
    elapsed_s: float = 0.0
    cleanup_problems: list[str] = field(default_factory=list)
    pids: dict[str, int] = field(default_factory=dict)


def _python() -> list[str]:
    return [sys.executable, "-m", "spikewatch"]


class Session:
    """Start with :meth:`start`, then :meth:`supervise` (blocks; any thread) until done."""

    def __init__(self, plan: Plan, log: Callable[[str], None]) -> None:
        self.plan = plan
        self.log = log
        self.sampler: subprocess.Popen[bytes] | None = None
        self.driver: subprocess.Popen[bytes] | None = None
        self.outcome = Outcome()
        self._stop = threading.Event()
        self._stops = 0
        self.stop_requested_at: float | None = None  # monotonic time of the first stop request
        self._t0 = time.monotonic()
        self.done = threading.Event()
        # Everything the sampler started (the service and its children), so that none
        # outlives the run even if the sampler itself dies without stopping them.
        self._descendants: dict[int, psutil.Process] = {}
        self._last_look = 0.0

    # --- start ---------------------------------------------------------------------

    def sampler_argv(self) -> list[str]:
        p = self.plan
        argv = [
            *_python(),
            "sample",
            "--period",
            p.period,
            "--publish",
            p.publish,
            "--inlet",
            p.inlet,
            "--journal",
            str(p.recording),
        ]
        if p.history:
            argv += ["--history", p.history]
        if p.limit:
            argv += ["--limit", p.limit]
        if p.keys:
            argv += ["--keys", p.keys, "--require-keys"]
        if p.heap_metric:
            argv += ["--heap-metric", p.heap_metric]
        return [*argv, "--", *p.command]

    def driver_argv(self) -> list[str]:
        p = self.plan
        return [
            *_python(),
            "drive",
            str(p.scenario),
            "--inlet",
            p.inlet,
            "--url",
            p.url,
            "--json",
            str(p.driver_json),
            "--quiet",
            *(["--keys", p.keys] if p.keys else []),
        ]

    def start(self) -> None:
        """Sampler first (it launches the service, held until sampling runs), the driver once
        the sampler's inlet listens, so the first phase marker is not lost."""
        p = self.plan
        env = {**os.environ, **p.env}
        self.sampler = procs.spawn(self.sampler_argv(), p.sampler_log, env)
        self.outcome.pids["sampler"] = self.sampler.pid
        host, port = p.inlet.removeprefix("tcp://").rsplit(":", 1)
        if not procs.wait_listening(host, int(port), self.sampler, READY_TIMEOUT_S):
            self._shutdown()
            log = procs.tail(p.sampler_log)
            said = [line.removeprefix("Error: ") for line in log.splitlines() if line.startswith("Error: ")]
            if said:  # the sampler's own one-line error says it all (command not found, …)
                raise RunError(f"the sampler did not start: {said[-1]} (log {p.sampler_log})")
            raise RunError(f"the sampler did not start (log {p.sampler_log}):\n{log}")
        self.driver = procs.spawn(self.driver_argv(), p.driver_log, env)
        self.outcome.pids["driver"] = self.driver.pid
        self._t0 = time.monotonic()

    # --- run -----------------------------------------------------------------------

    def request_stop(self, hurry: bool = True) -> None:
        """Stop early (Ctrl-C, q in the console, SIGTERM). Safe from signal handlers and threads.

        ``hurry``: a signal, which the run answers within a second (:attr:`stop_requested_at`
        bounds the report); q in the console waits for the whole report instead."""
        self._stops += 1
        if self.stop_requested_at is None and hurry:
            self.stop_requested_at = time.monotonic()
        self.outcome.interrupted = True
        self._stop.set()
        if self._stops >= 2:
            # Impatient: the driver quits at once on its second SIGTERM, the sampler kills
            # the service on its second SIGTERM (both still flush what they have).
            for proc, sig in ((self.driver, signal.SIGTERM), (self.sampler, signal.SIGTERM)):
                if proc is not None:
                    procs.send(proc, sig)

    def supervise(self) -> Outcome:
        assert self.sampler is not None and self.driver is not None
        try:
            while not self._stop.wait(0.1):
                self._look()
                if self.driver.poll() is not None:
                    time.sleep(TAIL_S)
                    break
                if self.sampler.poll() is not None:
                    self.outcome.service_died = True
                    break
            self._shutdown()
        finally:
            self.outcome.elapsed_s = time.monotonic() - self._t0
            self.done.set()
        return self.outcome

    def _shutdown(self) -> None:
        o = self.outcome
        if self._stop.is_set():
            self._stop_side_by_side()
        else:  # the scenario ended (or the service died): no hurry, the driver first
            if self.driver is not None:
                o.driver_status = procs.stop(self.driver, signal.SIGTERM, DRIVER_STOP_S)
            if self.sampler is not None:
                o.sampler_status = procs.stop(self.sampler, signal.SIGTERM, SAMPLER_STOP_S)
        if self.sampler is not None:
            o.cleanup_problems = limits.remove_leftovers(self.sampler.pid)
            self._kill_strays()

    def _stop_side_by_side(self) -> None:
        o = self.outcome
        driver, sampler = self.driver, self.sampler

        def stop_driver() -> None:
            if driver is not None:
                o.driver_status = procs.stop(driver, signal.SIGTERM, DRIVER_STOP_INTERRUPTED_S)

        helper = threading.Thread(target=stop_driver, name="spikewatch-stop-driver", daemon=True)
        helper.start()
        told = time.monotonic()
        while helper.is_alive() and not self.plan.driver_json.exists() and time.monotonic() - told < STOP_STAGGER_S:
            helper.join(0.01)
        if sampler is not None:
            o.sampler_status = procs.stop(sampler, signal.SIGTERM, SAMPLER_STOP_INTERRUPTED_S)
        helper.join()

    def _look(self) -> None:
        now = time.monotonic()
        if self.sampler is None or now - self._last_look < 0.5:
            return
        self._last_look = now
        try:
            for p in psutil.Process(self.sampler.pid).children(recursive=True):
                self._descendants.setdefault(p.pid, p)
        except psutil.Error:
            pass

    def _kill_strays(self) -> None:
        """SIGKILL what the sampler started and left running (it normally stops them itself)."""
        for p in self._descendants.values():
            try:
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:  # is_running checks pid reuse
                    self.log(f"spikewatch: killing leftover process {p.pid} ({p.name()})")
                    p.kill()
            except psutil.Error:
                pass

    def kill_all(self) -> None:
        """Last resort (e.g. an exception in the display): nothing may outlive the run."""
        self._last_look = 0.0
        self._look()
        for proc in (self.driver, self.sampler):
            if proc is not None and proc.poll() is None:
                procs.stop(proc, signal.SIGTERM, (3.0, 3.0))
        if self.sampler is not None:
            self.outcome.cleanup_problems = limits.remove_leftovers(self.sampler.pid)
        self._kill_strays()
