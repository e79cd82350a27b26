"""What ``spikewatch run`` will do, worked out from its options before anything starts:
the scenario, free ports, a new output folder, whether the memory limit can be applied
here. Bad options are refused here (exit 2), so nothing is left half-started.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import click

from . import options as opt
from . import procs
from .exits import BadInput, io_failure, refuse_existing
from .session import Plan


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
    quiet: bool = False  # only errors and the final verdict line


def load_scenario_arg(path: str):
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


def aim(scenario_url: str, port: int) -> str:
    """The scenario's URL with the service's port in it (host and base path kept)."""
    parts = urlsplit(scenario_url)
    host = parts.hostname or "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return urlunsplit((parts.scheme, f"{host}:{port}", parts.path, parts.query, parts.fragment))


def out_dir(out: str | None) -> Path:
    if out is None:
        base = Path("spikewatch-runs") / time.strftime("%Y%m%d-%H%M%S")
        d, n = base, 1
        while d.exists():
            n += 1
            d = base.with_name(f"{base.name}-{n}")
    else:
        d = Path(out)
        if d.exists() and not d.is_dir():
            raise BadInput(f"--out: {d} is a file; give a folder (a new one, or an empty one)")
        if (d / "recording").exists():
            raise BadInput(f"--out: {d} already holds a run (recording); give a new folder")
        refuse_existing(d, "--out", "empty it")
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise io_failure("create", d, exc) from None
    return d


def make_plan(req: Request) -> tuple[Plan, str | None]:
    from spikewatch.analysis import failon
    from spikewatch.sampler.units import parse_size

    from .limits import limit_unavailable

    if not req.command:
        raise click.UsageError("say which service to launch after --, e.g. spikewatch run s.toml -- ./my-service")
    scenario_path, scenario = load_scenario_arg(req.scenario)
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
    url = req.url or aim(scenario.target.url, port)
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
        out_dir=out_dir(req.out),
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


def show_plan(plan: Plan, req: Request, no_limit_reason: str | None, echo) -> None:
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
