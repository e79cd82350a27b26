"""``spikewatch run`` and ``spikewatch demo``: the whole load test in one command.

    spikewatch run SCENARIO.toml [--limit SIZE] [--out DIR] -- CMD ARGS...

1. checks that the memory limit can be applied here (else says why and runs without);
2. starts ``spikewatch sample`` on free loopback ports, launching CMD (inside a new
   memory cgroup of SIZE), with its journal going to DIR/recording;
3. starts ``spikewatch drive SCENARIO`` aimed at the service, markers to the sampler;
4. shows the live console on a terminal, one status line a second otherwise;
5. when the scenario ends (or the service dies, or Ctrl-C): stops the driver, then
   the sampler and service, removes the cgroup, writes DIR/report.json and
   DIR/report.html, prints the summary and exits with the status that
   :mod:`spikewatch.outcome` documents.

The plan (options checked, ports, output folder) is :mod:`spikewatch.runplan`, the live
view :mod:`spikewatch.runview`, ``demo --compare`` :mod:`spikewatch.democompare`.
The service learns its port from ``PORT`` / ``SPIKEWATCH_PORT`` in its environment
or ``{port}`` in CMD's arguments; the driver aims at the scenario's URL with that port.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, NoReturn

import click

from . import options as opt
from . import outcome as outcome_mod
from . import procs
from .cli import term_is_interrupt
from .exits import RuntimeFailure, write_text_atomic
from .runplan import Request, make_plan, show_plan
from .runview import watch
from .session import Plan, RunError, Session

DEMO_LIMIT = "256M"
# After Ctrl-C / SIGTERM the run ends within a second: the report has until this long
# after the stop request, the rest is printing and exiting.
REPORT_BY_S = 0.8
_OUT_DIRS: list[Path] = []  # this process's run folders, for exit_now's clean-up


class NotRun(click.ClickException):
    """The run could not be carried out (the sampler did not start…)."""

    exit_code = outcome_mod.EXIT_NOT_EVALUATED


def execute(req: Request) -> int:
    echo = click.echo
    plan, no_limit_reason = make_plan(req)
    _OUT_DIRS.append(plan.out_dir)
    use_tui = req.console if req.console is not None else (sys.stdout.isatty() and sys.stdin.isatty())
    session = Session(plan, log=lambda line: echo(line, err=True))
    term_is_interrupt()  # until the session's own handlers below: SIGTERM is Ctrl-C
    try:
        if not req.quiet:
            show_plan(plan, req, no_limit_reason, echo)
        session.start()
    except RunError as exc:
        raise NotRun(str(exc)) from None
    except KeyboardInterrupt:  # Ctrl-C / SIGTERM while the sampler was still starting
        session.kill_all()
        echo(f"interrupted before the load started; nothing to report ({plan.out_dir} holds the logs)", err=req.quiet)
        return outcome_mod.EXIT_INTERRUPTED

    # The report's code (numpy and friends, ~1 s) loads and warms while the load runs, so
    # a stop (Ctrl-C, SIGTERM) is followed by the report without that wait.
    threading.Thread(target=_preload_report, args=(session,), name="spikewatch-preload", daemon=True).start()
    old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for s in old:
        signal.signal(s, lambda *_: session.request_stop())
    supervisor = threading.Thread(target=session.supervise, name="spikewatch-run", daemon=True)
    try:
        supervisor.start()
        if req.quiet:
            while not session.done.wait(0.2):
                pass
        else:
            watch(session, plan, use_tui)
        if not session.done.is_set():  # the view ended first (e.g. the console closed)
            session.request_stop(hurry=False)
        while supervisor.is_alive():  # short waits, so a second Ctrl-C is handled promptly
            supervisor.join(0.2)
    finally:
        if supervisor.is_alive() or not session.done.is_set():
            session.kill_all()
        for s, h in old.items():
            signal.signal(s, h)
    return _finish(plan, req, session, no_limit_reason)


def _preload_report(session: Session) -> None:
    """Load the report's code, then warm it on the recording so far (plotly builds its
    validators and templates on first use, ~0.3 s): a stop is then followed by the report
    without that wait. Only a head start: any failure here is ignored (the report itself
    says what went wrong)."""
    try:
        import tempfile

        # Lowest priority for this thread only (Linux nice values are per thread): the
        # warm-up must not take CPU from the service and driver being measured.
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        import spikewatch.analysis.terminal  # noqa: F401
        from spikewatch.analysis.html import write_html
        from spikewatch.analysis.reader import load
        from spikewatch.analysis.report import build_report

        rec = session.plan.recording
        deadline = time.monotonic() + 30
        while not (rec.exists() and rec.stat().st_size > 4096):
            if session.done.wait(0.5) or time.monotonic() > deadline:
                return
        src = load(rec).main
        with tempfile.TemporaryDirectory(prefix="spikewatch-warm-") as tmp:
            write_html(src, build_report(src), Path(tmp) / "warm.html")
    except Exception:
        pass


def _finish(plan: Plan, req: Request, session: Session, no_limit_reason: str | None) -> int:
    from spikewatch.analysis import failon

    echo = click.echo
    o = session.outcome
    # The driver's own start line repeats the plan printed at the start: shown here, at
    # the end, it read as if the driver had only just started.
    driver_text = "\n".join(
        line for line in procs.tail(plan.driver_log, 40).splitlines() if not line.startswith("driving ")
    )
    if driver_text.strip() and not req.quiet:
        echo("")
        echo(driver_text)
        echo("")
    stopped_at = session.stop_requested_at
    src, report, problem = _report(plan, None if stopped_at is None else stopped_at + REPORT_BY_S)
    failed = failon.check(report, req.fail_on) if report is not None and req.fail_on else []
    if report is not None and not req.quiet:
        from spikewatch.analysis.terminal import headline, render

        if stopped_at is None:
            render(report)
        else:  # stopped early: the headline now, the tables are in the report
            echo(headline(report))
    fate = outcome_mod.service_fate(src, report)
    drive = outcome_mod.driver_results(plan)
    verdict = outcome_mod.decide(o, report, problem, drive, failed, fate)
    if report is not None:
        report["run"] = {
            "command": plan.command,
            "scenario": str(plan.scenario),
            "url": plan.url,
            "limit": plan.limit,
            "no_limit_reason": no_limit_reason,
            "service": fate,
            "service_died": o.service_died,
            "interrupted": o.interrupted,
            "thresholds": (drive or {}).get("thresholds"),
            "fail_on": list(req.fail_on),
            "failures": verdict.failures,
            "exit_status": verdict.status,
        }
        import json

        try:
            write_text_atomic(plan.out_dir / "report.json", json.dumps(report, indent=2, default=str) + "\n")
        except RuntimeFailure as exc:
            problem = problem or exc.message
            verdict = outcome_mod.not_evaluated(verdict, exc.message)
    if not req.quiet:
        echo("")
        if no_limit_reason:
            echo(f"NOTE: ran WITHOUT a memory limit: {no_limit_reason}")
        for line in verdict.lines:
            echo(line)
    if o.service_died and not (fate or "").startswith("OOM"):
        echo(f"last lines of the service's output ({plan.sampler_log}):", err=req.quiet)
        echo(procs.tail(plan.sampler_log, 10), err=req.quiet)
    for problem_line in o.cleanup_problems:
        echo(f"cleanup: {problem_line}", err=True)
    if problem:
        lead = "no report.html" if report is not None and "did not fit" in problem else "no report"
        echo(f"{lead}: {problem} (logs: {plan.sampler_log}, {plan.driver_log})", err=True)
        if not req.quiet:
            kept = [p.name for p in (plan.driver_json, plan.out_dir / "report.json") if p.exists()]
            if plan.recording.exists():
                kept.insert(0, f"{plan.recording} ({plan.recording.stat().st_size:,} bytes, whole)")
            echo(f"kept {', '.join(kept) or 'nothing'}")
    elif not req.quiet:
        echo(f"wrote {plan.recording}, {plan.out_dir / 'report.json'}, {plan.out_dir / 'report.html'}")
    why = "; ".join(verdict.failures) if verdict.failures else "passed"
    echo(f"exit status {verdict.status}: {why}")
    return verdict.status


def _report(plan: Plan, by: float | None) -> tuple[Any, dict[str, Any] | None, str | None]:
    """:func:`outcome.build`, given until ``by`` (monotonic) when the run was stopped: a long
    recording's report can take longer than the second a stop may take. Past ``by`` it is
    abandoned (the process exits at once, see :func:`exit_now`; the recording is whole):
    report.json alone when it was written, else nothing, and the problem says how to make
    what is missing."""
    if by is None:
        return outcome_mod.build(plan)
    box: dict[str, Any] = {}

    def build() -> None:
        try:
            box["done"] = outcome_mod.build(plan, written=box)
        except BaseException as exc:  # re-raised below, in the caller's thread
            box["error"] = exc

    worker = threading.Thread(target=build, name="spikewatch-report", daemon=True)
    worker.start()
    worker.join(max(0.0, by - time.monotonic()))
    if "error" in box:
        raise box["error"]
    if "done" in box:
        return box["done"]
    again = f"spikewatch report {plan.recording}"
    html, js = plan.out_dir / "report.html", plan.out_dir / "report.json"
    if "json" in box:
        src, report = box["json"]
        return (
            src,
            report,
            f"{html.name} did not fit in the second a stop may take; make it with: {again} --html {html}",
        )
    return None, None, f"it did not fit in the second a stop may take; make it with: {again} --json {js} --html {html}"


def exit_now(status: int) -> NoReturn:
    """End a stopped run at once: everything is written and said, and Python's own shutdown
    (tearing down numpy, plotly, rich…) took 0.3-0.5 s more. A report still being built
    (see :func:`_report`) leaves only its hidden temporary files, removed here."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    for folder in _OUT_DIRS:
        for tmp in folder.glob(".*.part"):
            tmp.unlink(missing_ok=True)
    os._exit(status)


def end(ctx: click.Context, status: int) -> NoReturn:
    """Exit with ``status``; a stopped run (130) at once, when this process is the command
    (not a test's CliRunner, whose streams are not the real ones)."""
    if status == outcome_mod.EXIT_INTERRUPTED and sys.stdout is sys.__stdout__:
        exit_now(status)
    ctx.exit(status)


_CTX = {"help_option_names": ["-h", "--help"]}


@click.command(context_settings=_CTX)
@click.argument("scenario", metavar="SCENARIO.toml")
@click.argument("command", nargs=-1, type=click.UNPROCESSED, metavar="-- CMD ARGS...")
@click.option("--limit", metavar="SIZE", help="Run the service in a new memory cgroup of SIZE (e.g. 512M).")
@click.option(
    "-o",
    "--out",
    metavar="DIR",
    help="A new folder for recording, report.json, report.html (default ./spikewatch-runs/DATE-TIME); a folder holding files is refused.",
)
@click.option(
    "--fail-on",
    "fail_on",
    multiple=True,
    metavar="EXPR",
    help="Exit 1 when a report condition holds: peak>400MiB, oom>0, headroom<20%, scrape_missed>50%… (repeatable).",
)
@click.option(
    "--console/--no-console",
    default=None,
    help="Full-screen live console (default when on a terminal) or one status line a second.",
)
@click.option("--period", default="1ms", show_default=True, help="Sampling period, with its unit (500us, 1ms).")
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    help="The port the service listens on (default: a free one, given to it as PORT / {port}).",
)
@click.option("--url", help="Aim the driver here instead of the scenario's URL with --port in it.")
@click.option(
    "--keys",
    "keys",
    metavar="DIR",
    help="CURVE keys folder (from `spikewatch keys DIR`): sampler, driver and console use it.",
)
@click.option(
    "--heap-metric",
    "heap_metric",
    metavar="URL#NAME",
    help="The service's own heap gauge in Prometheus text, plotted beside RSS with a retention verdict "
    "after each burst, e.g. 'http://127.0.0.1:{port}/metrics#app_heap_bytes' ({port}: the service's).",
)
@click.option(
    "-q",
    "--quiet",
    is_flag=True,
    help="Print only errors and the final verdict line (no plan, live view or report tables).",
)
@click.pass_context
def run(
    ctx: click.Context,
    scenario: str,
    command: tuple[str, ...],
    limit: str | None,
    out: str | None,
    fail_on: tuple[str, ...],
    console: bool | None,
    period: str,
    port: int | None,
    url: str | None,
    keys: str | None = None,
    heap_metric: str | None = None,
    quiet: bool = False,
) -> None:
    """Load-test a service and catch its memory spikes: sample, drive, record, report.

    \b
    Examples:
      spikewatch run scenario.toml --limit 256M -- ./my-service --port {port}
      spikewatch run scenario.toml --fail-on 'oom>0' --fail-on 'peak>400MiB' -- python app.py

    The service gets its port in the environment (PORT, SPIKEWATCH_PORT) and in place
    of {port} in its arguments; the driver aims at the scenario's URL with that port.
    Exit status: 0 passed, 1 a --fail-on condition or scenario threshold failed or
    the service died mid-run (OOM kill included), 2 bad usage (nothing started),
    3 not evaluated (could not start, never ready, nothing recorded, the disk refused the
    report), 130 interrupted; the report is written whenever there is one to write.
    """
    term_is_interrupt()
    if keys:
        from spikewatch.sampler.cli import client_socket_options

        client_socket_options(keys)  # a bad folder fails here, before anything starts
    end(
        ctx,
        execute(
            Request(
                scenario,
                list(command),
                limit,
                out,
                fail_on,
                console,
                period,
                port,
                url,
                keys=keys,
                heap_metric=heap_metric,
                quiet=quiet,
            )
        ),
    )


@click.command(context_settings=_CTX)
@click.option("-o", "--out", metavar="DIR", help="A new folder for the results (default ./spikewatch-runs/DATE-TIME).")
@click.option("--quick", is_flag=True, help="A ~10 s smoke run instead of the ~90 s demo.")
@click.option(
    "--limit",
    default=DEMO_LIMIT,
    show_default=True,
    metavar="SIZE",
    help="Memory limit for the demo service ('off' for no limit).",
)
@click.option("--console/--no-console", default=None, help="Full-screen live console (default on a terminal).")
@click.option(
    "--fail-on",
    "fail_on",
    multiple=True,
    metavar="EXPR",
    help="As for spikewatch run; with --compare, as for spikewatch compare ('peak>+10%').",
)
@click.option(
    "--compare",
    "compare_runs",
    is_flag=True,
    help="Run the demo twice, the second time holding --request-memory more per in-flight request, "
    "then compare the two runs (DIR/base, DIR/new, DIR/compare.html, compare.md, compare.json).",
)
@click.option(
    "--request-memory",
    default="2MiB",
    show_default=True,
    metavar="SIZE",
    help="With --compare: the extra memory each in-flight request holds in the second run.",
)
@click.option(
    "-q",
    "--quiet",
    is_flag=True,
    help="Print only errors and the final verdict line (no plan, live view or report tables).",
)
@click.pass_context
def demo(
    ctx: click.Context,
    out: str | None,
    quick: bool,
    limit: str,
    console: bool | None,
    fail_on: tuple[str, ...],
    compare_runs: bool = False,
    request_memory: str = "2MiB",
    quiet: bool = False,
) -> None:
    """The whole load test on a bundled demo service: startup peak, ramp, bursts, idle, soak.

    Runs `python -m spikewatch.driver.demo_service` under the bundled demo scenario (~90 s)
    inside a memory limit where the host allows, and writes the recording and the
    report (JSON + HTML) to --out.

    With --compare it runs twice with a known difference (the second run's service
    holds --request-memory more per request in flight) and compares them: the
    change in bytes per in-flight request should come out near that size, beyond noise.
    """
    term_is_interrupt()
    from spikewatch.driver import bundled

    command = [sys.executable, "-m", "spikewatch.driver.demo_service", "--port", "{port}"]
    lim = None if opt.is_off(limit) or limit == "0" else limit
    if not compare_runs:
        scenario = str(bundled("quick" if quick else "demo"))
        end(ctx, execute(Request(scenario, command, lim, out, fail_on, console, "1ms", None, None, quiet=quiet)))
    from .democompare import demo_compare

    end(ctx, demo_compare(out, quick, lim, console, fail_on, request_memory, command, quiet))
