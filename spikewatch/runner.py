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

import signal
import sys
import threading

import click

from . import options as opt
from . import outcome as outcome_mod
from . import procs
from .exits import RuntimeFailure, write_text_atomic
from .runplan import Request, make_plan, show_plan
from .runview import watch
from .session import Plan, RunError, Session

DEMO_LIMIT = "256M"


class NotRun(click.ClickException):
    """The run could not be carried out (the sampler did not start…)."""

    exit_code = outcome_mod.EXIT_NOT_EVALUATED


def execute(req: Request) -> int:
    echo = click.echo
    plan, no_limit_reason = make_plan(req)
    show_plan(plan, req, no_limit_reason, echo)
    use_tui = req.console if req.console is not None else (sys.stdout.isatty() and sys.stdin.isatty())
    session = Session(plan, log=echo)
    try:
        session.start()
    except RunError as exc:
        raise NotRun(str(exc)) from None
    except KeyboardInterrupt:  # Ctrl-C while the sampler was still starting
        session.kill_all()
        echo("interrupted before the load started; nothing to report")
        return outcome_mod.EXIT_INTERRUPTED

    # The report's code (numpy and friends, ~1 s) loads while the load runs, so a stop
    # (Ctrl-C, SIGTERM) is followed by the report without that wait.
    threading.Thread(target=_preload_report, name="spikewatch-preload", daemon=True).start()
    old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for s in old:
        signal.signal(s, lambda *_: session.request_stop())
    supervisor = threading.Thread(target=session.supervise, name="spikewatch-run", daemon=True)
    try:
        supervisor.start()
        watch(session, plan, use_tui)
        if not session.done.is_set():  # the view ended first (e.g. the console closed)
            session.request_stop()
        while supervisor.is_alive():  # short waits, so a second Ctrl-C is handled promptly
            supervisor.join(0.2)
    finally:
        if supervisor.is_alive() or not session.done.is_set():
            session.kill_all()
        for s, h in old.items():
            signal.signal(s, h)
    return _finish(plan, req, session, no_limit_reason)


def _preload_report() -> None:
    try:
        import spikewatch.analysis.html
        import spikewatch.analysis.reader
        import spikewatch.analysis.report
        import spikewatch.analysis.terminal  # noqa: F401
    except Exception:  # only a head start: _finish imports (and reports) them again
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
    if driver_text.strip():
        echo("")
        echo(driver_text)
    echo("")
    src, report, problem = outcome_mod.build(plan)
    failed = failon.check(report, req.fail_on) if report is not None and req.fail_on else []
    if report is not None:
        from spikewatch.analysis.terminal import render

        render(report)
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
    echo("")
    if no_limit_reason:
        echo(f"NOTE: ran WITHOUT a memory limit: {no_limit_reason}")
    for line in verdict.lines:
        echo(line)
    if o.service_died and not (fate or "").startswith("OOM"):
        echo(f"last lines of the service's output ({plan.sampler_log}):")
        echo(procs.tail(plan.sampler_log, 10))
    for problem_line in o.cleanup_problems:
        echo(f"cleanup: {problem_line}", err=True)
    if problem:
        echo(f"no report: {problem} (logs: {plan.sampler_log}, {plan.driver_log})", err=True)
    else:
        echo(f"wrote {plan.recording}, {plan.out_dir / 'report.json'}, {plan.out_dir / 'report.html'}")
    why = "; ".join(verdict.failures) if verdict.failures else "passed"
    echo(f"exit status {verdict.status}: {why}")
    return verdict.status


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
    if keys:
        from spikewatch.sampler.cli import client_socket_options

        client_socket_options(keys)  # a bad folder fails here, before anything starts
    ctx.exit(
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
            )
        )
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
) -> None:
    """The whole load test on a bundled demo service: startup peak, ramp, bursts, idle, soak.

    Runs `python -m spikewatch.driver.demo_service` under the bundled demo scenario (~90 s)
    inside a memory limit where the host allows, and writes the recording and the
    report (JSON + HTML) to --out.

    With --compare it runs twice with a known difference (the second run's service
    holds --request-memory more per request in flight) and compares them: the
    change in bytes per in-flight request should come out near that size, beyond noise.
    """
    from spikewatch.driver import bundled

    command = [sys.executable, "-m", "spikewatch.driver.demo_service", "--port", "{port}"]
    lim = None if opt.is_off(limit) or limit == "0" else limit
    if not compare_runs:
        scenario = str(bundled("quick" if quick else "demo"))
        ctx.exit(execute(Request(scenario, command, lim, out, fail_on, console, "1ms", None, None)))
    from .democompare import demo_compare

    ctx.exit(demo_compare(out, quick, lim, console, fail_on, request_memory, command))
