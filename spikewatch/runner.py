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

The service learns its port from ``PORT`` / ``SPIKEWATCH_PORT`` in its environment
or ``{port}`` in CMD's arguments; the driver aims at the scenario's URL with that port.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import click

from . import options as opt
from . import outcome as outcome_mod
from . import procs
from .exits import BadInput, RuntimeFailure, io_failure, refuse_existing, write_text_atomic
from .session import Plan, RunError, Session

DEMO_LIMIT = "256M"


class NotRun(click.ClickException):
    """The run could not be carried out (the sampler did not start…)."""

    exit_code = outcome_mod.EXIT_NOT_EVALUATED


@dataclass
class Request:
    scenario: str
    command: list[str]
    limit: str | None
    out: str | None
    fail_on: tuple[str, ...]
    console: bool | None
    period: str
    port: int | None
    url: str | None
    limit_param: str = "--limit"
    keys: str | None = None
    heap_metric: str | None = None


def _scenario(path: str):
    from spikewatch.driver import ScenarioError, bundled, load_scenario

    p = Path(path)
    if not p.exists() and "/" not in path and bundled(path.removesuffix(".toml")).exists():
        p = bundled(path.removesuffix(".toml"))
    try:
        scenario = load_scenario(p)
        scenario.check_capacity(1)  # run drives with one worker
        return p, scenario
    except ScenarioError as exc:
        raise click.BadParameter(str(exc), param_hint="SCENARIO.toml") from None


def _aim(scenario_url: str, port: int) -> str:
    """The scenario's URL with the service's port in it (host and base path kept)."""
    parts = urlsplit(scenario_url)
    host = parts.hostname or "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return urlunsplit((parts.scheme, f"{host}:{port}", parts.path, parts.query, parts.fragment))


def _out_dir(out: str | None) -> Path:
    if out is None:
        base = Path("spikewatch-runs") / time.strftime("%Y%m%d-%H%M%S")
        d, n = base, 1
        while d.exists():
            n += 1
            d = base.with_name(f"{base.name}-{n}")
    else:
        d = Path(out)
        if (d / "recording").exists():
            raise BadInput(f"--out: {d} already holds a run (recording); give a new folder")
        refuse_existing(d, "--out", "empty it")
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise io_failure("create", d, exc) from None
    return d


def _plan(req: Request) -> tuple[Plan, str | None]:
    from spikewatch.analysis import failon
    from spikewatch.sampler.units import parse_size

    from .limits import limit_unavailable

    if not req.command:
        raise click.UsageError("say which service to launch after --, e.g. spikewatch run s.toml -- ./my-service")
    scenario_path, scenario = _scenario(req.scenario)
    try:
        relative = failon.needs_baseline(failon.parse_all(req.fail_on))
    except failon.FailOnError as exc:
        raise click.BadParameter(str(exc), param_hint="--fail-on") from None
    if relative:
        raise click.BadParameter(
            f"{', '.join(relative)} compare(s) against a baseline, which a run does not have: "
            "gate afterwards with spikewatch compare BASE.json DIR/report.json --fail-on …",
            param_hint="--fail-on",
        )
    period_ns = opt.duration_ns(req.period, "--period")
    if not 100_000 <= period_ns <= 1_000_000_000:
        raise click.BadParameter(f"{req.period!r} is outside 100us .. 1s", param_hint="--period")
    limit, no_limit_reason = req.limit, None
    if limit is not None:
        try:
            limit_bytes = parse_size(limit)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint=req.limit_param) from None
        if limit_bytes < 1 << 20:
            raise click.BadParameter("a limit below 1 MiB cannot run anything", param_hint=req.limit_param)
        no_limit_reason = limit_unavailable(limit_bytes)
        if no_limit_reason is not None:
            limit = None
    if req.url:
        parts = urlsplit(req.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise click.BadParameter(f"expected http://HOST:PORT[/base], got {req.url!r}", param_hint="--url")
    port = req.port or (urlsplit(req.url).port if req.url else None)
    if port is None:
        port = procs.free_ports(1)[0]
    url = req.url or _aim(scenario.target.url, port)
    command = [arg.replace("{port}", str(port)) for arg in req.command]
    heap_metric = req.heap_metric.replace("{port}", str(port)) if req.heap_metric else None
    if heap_metric is not None:
        from spikewatch.sampler.heapmetric import HeapMetricError, parse_spec

        try:
            parse_spec(heap_metric)
        except HeapMetricError as exc:
            raise click.BadParameter(str(exc), param_hint="--heap-metric") from None
    publish, inlet, history = procs.free_ports(3, avoid=(port,))
    plan = Plan(
        scenario=scenario_path.resolve(),
        command=command,
        url=url,
        port=port,
        out_dir=_out_dir(req.out),
        publish=f"tcp://127.0.0.1:{publish}",
        inlet=f"tcp://127.0.0.1:{inlet}",
        history=f"tcp://127.0.0.1:{history}",
        period=req.period,
        limit=limit,
        env={"PORT": str(port), "SPIKEWATCH_PORT": str(port)},
        keys=req.keys,
        heap_metric=heap_metric,
    )
    return plan, no_limit_reason


def _show_plan(plan: Plan, req: Request, no_limit_reason: str | None, echo) -> None:
    echo(f"spikewatch run: {plan.scenario.name} against {plan.url}")
    echo(f"  service   {' '.join(plan.command)}   (PORT={plan.port})")
    if plan.limit:
        echo(f"  limit     {plan.limit} (a new memory cgroup)")
    elif no_limit_reason:
        echo(f"  limit     NONE: running WITHOUT a memory limit, because {no_limit_reason}")
    else:
        echo("  limit     none (give --limit SIZE to test inside one)")
    echo(f"  sampler   every {plan.period}, publishing on {plan.publish}, inlet {plan.inlet}, history {plan.history}")
    echo(f"  output    {plan.out_dir}/  (recording, report.json, report.html; logs: sampler.log, driver.log)")


def _console(session: Session, plan: Plan, use_tui: bool) -> None:
    """Show the run live until the session is done (or the user stops it)."""
    from spikewatch.analysis.console import ConsoleOptions
    from spikewatch.sampler.cli import client_socket_options

    options = ConsoleOptions(
        inlet=[plan.inlet],
        title=f"spikewatch run {plan.scenario.name}",
        history=[plan.history],
        socket_options=client_socket_options(plan.keys),
        keys=plan.keys,
    )
    if use_tui:
        _tui(session, plan, options)
        return
    from spikewatch.analysis.console import PlainConsole

    printer = PlainConsole([plan.publish], options, out=_QuietOverruns(sys.stdout))
    watcher = threading.Thread(target=lambda: (session.done.wait(), printer.stop()), daemon=True)
    watcher.start()
    printer.run()


class _QuietOverruns:
    """stdout without the console's per-event overrun lines: on a busy 2-core host they
    come several a second and bury the progress; the status line still counts them."""

    def __init__(self, out) -> None:
        self.out = out

    def write(self, text: str) -> int:
        kept = "".join(line for line in text.splitlines(keepends=True) if ") overrun: " not in line)
        return self.out.write(kept)

    def flush(self) -> None:
        self.out.flush()


def _tui(session: Session, plan: Plan, options) -> None:
    from textual.binding import Binding

    from spikewatch.analysis.console.app import ConsoleApp

    class RunConsole(ConsoleApp):
        """The console, where quitting stops the run (cleanly) instead of only the view."""

        BINDINGS = [
            Binding("q", "stop_run", "stop the run", priority=True),
            Binding("ctrl+c", "stop_run", "stop the run", show=False, priority=True),
            *[b for b in ConsoleApp.BINDINGS if getattr(b, "action", "") != "quit"],
        ]

        def on_mount(self) -> None:
            # Textual also runs ConsoleApp.on_mount (handlers run along the MRO): no super() here.
            self.set_interval(0.25, self._check_done)

        def _check_done(self) -> None:
            if session.done.is_set():
                self.exit()

        def action_stop_run(self) -> None:
            session.request_stop()
            self.notify("stopping: ending the phase, stopping the service, writing the report…", timeout=30)

    RunConsole([plan.publish], options).run()


def execute(req: Request) -> int:
    echo = click.echo
    plan, no_limit_reason = _plan(req)
    _show_plan(plan, req, no_limit_reason, echo)
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
        _console(session, plan, use_tui)
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
    ctx.exit(_demo_compare(out, quick, lim, console, fail_on, request_memory, command))


def _demo_compare(
    out: str | None,
    quick: bool,
    limit: str | None,
    console: bool | None,
    fail_on: tuple[str, ...],
    request_memory: str,
    command: list[str],
) -> int:
    """Two demo runs, the second with more memory per in-flight request, and their comparison."""
    from spikewatch.analysis import failon
    from spikewatch.driver import bundled
    from spikewatch.sampler.units import format_bytes, parse_size

    try:
        extra = parse_size(request_memory)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--request-memory") from None
    try:
        failon.parse_all(fail_on)
    except failon.FailOnError as exc:
        raise click.BadParameter(str(exc), param_hint="--fail-on") from None
    d = _out_dir(out)
    if (d / "base").exists() or (d / "new").exists():
        raise click.BadParameter(f"{d} already holds a comparison; give a new folder", param_hint="--out")
    scenario = str(bundled("compare" if quick else "demo"))
    statuses = {}
    for name, mem in (("base", 0), ("new", extra)):
        click.echo(f"\n=== demo --compare: run '{name}', {format_bytes(mem)} extra per in-flight request ===\n")
        statuses[name] = execute(
            Request(
                scenario, [*command, "--request-memory", str(mem)], limit, str(d / name), (), console, "1ms", None, None
            )
        )
        if statuses[name] not in (outcome_mod.EXIT_OK, outcome_mod.EXIT_FAILED):
            click.echo(f"run '{name}' ended with status {statuses[name]}: no comparison", err=True)
            return statuses[name]

    from spikewatch.analysis.compare import CompareError, compare, load_run
    from spikewatch.analysis.compare_html import write_html
    from spikewatch.analysis.compare_render import markdown, render, write_json

    try:
        base, new = load_run(d / "base" / "report.json", "base"), load_run(d / "new" / "report.json", "new")
    except CompareError as exc:
        click.echo(f"no comparison: {exc}", err=True)
        return outcome_mod.EXIT_NOT_EVALUATED
    c = compare(base, [new], list(fail_on))
    write_json(c, d / "compare.json")
    (d / "compare.md").write_text(markdown(c), encoding="utf-8")
    write_html(c, d / "compare.html")
    click.echo("")
    render(c, phases=False)
    row = next((r for r in c.pairs[0].rows if r.metric == "bytes_per_request"), None)
    if row is not None and row.change is not None:
        click.echo(
            f"known difference {format_bytes(extra)} per in-flight request; measured "
            f"{format_bytes(row.change)} ({row.verdict})"
        )
    click.echo(f"wrote {d / 'compare.html'}, {d / 'compare.md'}, {d / 'compare.json'}")
    if sys.stdout.isatty():
        try:
            click.launch(str(d / "compare.html"))
        except OSError:
            pass  # no browser here: the path above is enough
    for line in c.pairs[0].failures:
        click.echo(f"FAIL --fail-on {line}")
    if c.failed:
        return outcome_mod.EXIT_FAILED
    return max(statuses.values())
