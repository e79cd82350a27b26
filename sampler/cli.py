"""Command-line entry points that belong to the sampler side: ``sample``, ``mark``."""

from __future__ import annotations

import signal

import click

from spikewatch import options as opt
from spikewatch.exits import BadInput, RuntimeFailure, refuse_existing

from .cli_keys import _server_security, _watch_keys
from .cli_keys import client_socket_options as client_socket_options  # the import path other commands use
from .cli_keys import keys as keys
from .wire import protocol
from .wire.client import InletClient

MARK_WAIT_MS = 1500  # how long `mark` waits for the sampler to accept its handshake (and its linger)


@click.command()
@click.argument("text")
@opt.inlet
@click.option(
    "--timeout",
    default="1500ms",
    show_default=True,
    metavar="T",
    help="Give up (exit 3) when no sampler accepted the note within T.",
)
@click.option("--attr", "attrs", multiple=True, metavar="KEY=VALUE", help="Attach an attribute (repeatable).")
@opt.client_keys
@opt.quiet
def mark(
    text: str,
    inlet: str,
    attrs: tuple[str, ...],
    keys: str | None = None,
    client_key: str | None = None,
    timeout: str = "1500ms",
    quiet: bool = False,
) -> None:
    """Send a note marker (e.g. "cache warmed") to a running sampler.

    Exit status 0 when the sampler accepted the note, 2 for a bad inlet or attribute,
    3 when no sampler accepted it within --timeout."""
    if opt.is_off(inlet):
        raise click.BadParameter(
            f"a note needs somewhere to go: give the sampler's inlet, e.g. {protocol.DEFAULT_INLET}",
            param_hint="--inlet",
        )
    inlet = opt.endpoint(inlet, "--inlet")
    wait_ms = max(1, opt.duration_ns(timeout, "--timeout") // 1_000_000)
    fields = {}
    for item in attrs:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint="--attr")
        fields[key] = value
    try:
        message = protocol.marker_message(protocol.NOTE, text, fields)
    except protocol.ProtocolError as exc:
        raise BadInput(str(exc)) from None
    import zmq

    # Our own context, terminated before we exit: that is what waits (up to the linger)
    # for the note to leave. The shared instance is never terminated at exit, so a note
    # still queued for a sampler that is slow to accept the connection would be lost.
    # A PUSH cannot know whether its note arrived, but its handshake says whether the
    # sampler accepted us (spikewatch.sampler.wire.handshake): wait for that, up to the linger.
    ctx = zmq.Context()
    try:
        with InletClient(
            inlet,
            linger_ms=wait_ms,
            context=ctx,
            watch_handshakes=True,
            keys=keys,
            socket_options=client_socket_options(keys, client_key),
        ) as client:
            client.send(protocol.MARKER, message)
            assert client.handshake is not None
            problem = client.handshake.wait(wait_ms / 1000)
            if problem is not None:
                client.discard_queue()
    finally:
        ctx.term()
    if problem == "":
        raise RuntimeFailure(
            f"no sampler answered at {inlet} within {wait_ms / 1000:g} s: "
            f"the note was not sent (is `spikewatch sample` running with --inlet {inlet}?)"
        )
    if problem:
        raise RuntimeFailure(f"{problem}; the note was not sent")
    if not quiet:
        click.echo(f"note sent to {inlet}: {text}")


def _duration(text: str, what: str, default_unit: str = "") -> int:
    return opt.duration_ns(text, what)


def _share(text: str, what: str) -> float:
    """``1%``, ``0.5 %`` or ``0.01`` as a share of one core (0 .. 1)."""
    t = text.strip()
    try:
        v = float(t[:-1]) / 100 if t.endswith("%") else float(t)
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a share of a core (e.g. 1%, 0.5%, 0)", param_hint=what) from None
    if not 0 <= v <= 1:
        raise click.BadParameter(f"{text!r} is outside 0 .. 100%", param_hint=what)
    return v


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--pid", type=int, help="Sample this process and its descendants.")
@click.option(
    "--match", metavar="REGEX", help="Sample the process whose command line matches (waits for it; follows restarts)."
)
@click.option(
    "--cgroup",
    "cgroup_path",
    metavar="PATH|auto",
    help="Sample a memory cgroup (absolute, or relative to the memory hierarchy). 'auto' with --pid or "
    "--match: the cgroup the process lives in (its container's, reached through /proc/PID/root "
    "from a sidecar); with --match it is found at the first match and a restart into another "
    "cgroup is followed; exit status 3 if it cannot be found. (A cgroup named auto: ./auto.)",
)
@click.option("--unit", metavar="NAME", help="Sample a systemd unit's cgroup.")
@click.option("--period", default="1ms", show_default=True, help="Sampling period (100us .. 1s), with its unit.")
@click.option(
    "--detail-period",
    default="100ms",
    show_default=True,
    help="Period of the detail tier (status, cgroup stat, kernel peaks).",
)
@click.option(
    "--batch-period",
    default="200ms",
    show_default=True,
    help="How often samples and details are published (at most 1s; never more often than --period); "
    "events go out at once. Shorter: a livelier live view, more CPU.",
)
@click.option(
    "--publish", default=protocol.DEFAULT_PUBLISH, show_default=True, help="ZeroMQ PUB endpoint (tcp:// or ipc://)."
)
@click.option(
    "--inlet",
    default=protocol.DEFAULT_INLET,
    show_default=True,
    help="ZeroMQ PULL endpoint for markers and load telemetry ('off': none).",
)
@click.option(
    "--journal",
    metavar="FILE|off",
    help="Record everything published to FILE (default with -- CMD or --match: a new spikewatch-DATE-TIME.journal here; 'off': none). An existing FILE is refused unless --append.",
)
@click.option(
    "--append",
    is_flag=True,
    help="Add this run to an existing --journal FILE (a report then sees one recording with two sessions).",
)
@click.option("--no-journal", is_flag=True, hidden=True, help="Old spelling of --journal off.")
@click.option(
    "--journal-rotate",
    metavar="T|SIZE",
    default=None,
    help="Start a new journal segment (FILE.000001, FILE.000002…) every T (e.g. 1h) or SIZE (e.g. 256M).",
)
@click.option(
    "--journal-keep",
    metavar="T|SIZE",
    default=None,
    help="With --journal-rotate: delete the oldest segments beyond this age (e.g. 7d) or total size (e.g. 10G).",
)
@click.option("--limit", metavar="SIZE", help="Run the launched command in a new memory cgroup of SIZE (e.g. 512M).")
@click.option("--duration", metavar="T", help="Stop after T (with its unit: 30s, 5m); a launched command gets SIGTERM.")
@click.option(
    "--reset-hwm",
    is_flag=True,
    help="Reset an attached process's VmHWM every detail period (visible to it) to catch peaks between samples.",
)
@click.option(
    "--pss-budget",
    default="1%",
    show_default=True,
    metavar="PCT",
    help="CPU (share of one core) for reading the tree's PSS and USS from smaps_rollup, which count shared "
    "pages once; the period stretches to stay within it. 0 turns the readings off.",
)
@click.option(
    "--realtime/--no-realtime",
    default=True,
    show_default=True,
    help="Run the sampling thread under SCHED_FIFO when permitted (far fewer missed ticks on a busy host).",
)
@click.option(
    "--prometheus",
    "prometheus",
    metavar="HOST:PORT",
    help="Also serve /metrics for Prometheus (peaks since each scrape, kernel HWMs included).",
)
@click.option(
    "--prometheus-allow-remote",
    "prometheus_allow_remote",
    is_flag=True,
    help="Allow --prometheus on a non-loopback address (HTTP has no CURVE: restrict access by network).",
)
@click.option(
    "--keys",
    "keys",
    metavar="DIR",
    envvar="SPIKEWATCH_KEYS_DIR",
    help="CURVE keys folder (from `spikewatch keys DIR`): encrypt and authenticate stream, inlet and history. Required to bind outside loopback. [env SPIKEWATCH_KEYS_DIR]",
)
@click.option("--require-keys", is_flag=True, help="Use CURVE even on loopback (fail without --keys).")
@click.option(
    "--history",
    "history",
    default="off",
    show_default=True,
    metavar="EP|off",
    help="ROUTER endpoint answering late joiners with recent history (e.g. tcp://127.0.0.1:7783).",
)
@click.option(
    "--history-window", default="5m", show_default=True, metavar="T", help="How much history to keep for --history."
)
@click.option(
    "--history-size", default="64M", show_default=True, metavar="SIZE", help="At most this many bytes of history."
)
@click.option(
    "--heap-metric",
    "heap_metric",
    metavar="URL#NAME",
    help="Also scrape the service's own heap gauge from its Prometheus text at the detail tier, "
    "e.g. http://127.0.0.1:8080/metrics#app_heap_bytes (shown beside RSS).",
)
@opt.quiet
@click.argument("command", nargs=-1, type=click.UNPROCESSED, metavar="[-- CMD ARGS...]")
@click.pass_context
def sample(
    ctx: click.Context,
    pid: int | None,
    match: str | None,
    cgroup_path: str | None,
    unit: str | None,
    period: str,
    detail_period: str,
    batch_period: str,
    publish: str,
    inlet: str,
    journal: str | None,
    no_journal: bool,
    limit: str | None,
    duration: str | None,
    reset_hwm: bool,
    realtime: bool,
    prometheus: str | None,
    prometheus_allow_remote: bool,
    quiet: bool,
    command: tuple[str, ...],
    keys: str | None = None,
    require_keys: bool = False,
    history: str = "off",
    history_window: str = "5m",
    history_size: str = "64M",
    heap_metric: str | None = None,
    append: bool = False,
    journal_rotate: str | None = None,
    journal_keep: str | None = None,
    pss_budget: str = "1%",
) -> None:
    """Sample a service's memory every millisecond and publish it.

    \b
    Examples:
      spikewatch sample -- ./my-service --port 8080     launch it, sample from its first instruction
      spikewatch sample --limit 512M -- ./my-service    ... inside a new 512 MiB memory cgroup
      spikewatch sample --match 'gunicorn: master'      wait for it, follow restarts
      spikewatch sample --pid 1234 --duration 5m
      spikewatch sample --match '^myapp ' --cgroup auto ... and its container's memory cgroup
    """
    from .config import AUTO_CGROUP, auto_cgroup_misuse
    from .daemon import Sampler, SamplerConfig, SamplerError, Target
    from .units import parse_size

    period_ns = _duration(period, "--period", "ms")
    if period_ns < 100_000 or period_ns > 1_000_000_000:
        raise click.BadParameter(f"{period!r} is outside 100us .. 1s", param_hint="--period")
    detail_ns = _duration(detail_period, "--detail-period", "ms")
    batch_ns = _duration(batch_period, "--batch-period", "ms")
    if batch_ns > 1_000_000_000:
        raise click.BadParameter(f"{batch_period!r} is over 1s", param_hint="--batch-period")
    duration_ns = _duration(duration, "--duration", "s") if duration is not None else None
    limit_bytes = None
    if limit is not None:
        try:
            limit_bytes = parse_size(limit)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--limit") from None
        if limit_bytes < 1 << 20:
            raise click.BadParameter("a limit below 1 MiB cannot run anything", param_hint="--limit")
    if journal is not None and opt.is_off(journal):
        journal, no_journal = None, True
    elif journal and no_journal:
        raise click.UsageError("--journal FILE and --journal off contradict each other")
    if journal and not append:
        refuse_existing(journal, "--journal", "add --append to add this run to it")
    publish = opt.endpoint(publish, "--publish", bind=True)
    inlet_ep = opt.endpoint_or_off(inlet, "--inlet", bind=True)
    heap = None
    if heap_metric is not None:
        from .heapmetric import HeapMetricError, parse_spec

        try:
            heap = parse_spec(heap_metric)
        except HeapMetricError as exc:
            raise click.BadParameter(str(exc), param_hint="--heap-metric") from None
    rotate, keep = rotation(journal_rotate, journal_keep, "--journal-rotate", "--journal-keep")
    if journal_rotate and no_journal:
        raise click.UsageError("--journal-rotate and --no-journal contradict each other")
    budget = _share(pss_budget, "--pss-budget")
    argv = list(command)
    if cgroup_path == AUTO_CGROUP and (unit or argv or (pid is None and not match)):
        raise click.UsageError(auto_cgroup_misuse(Target(pid=pid, match=match, argv=argv, unit=unit)))
    if not any((pid is not None, match, cgroup_path, unit, argv)):
        raise click.UsageError("say what to sample: --pid N, --match REGEX, --cgroup PATH, --unit NAME or -- CMD ARGS")
    history_ep = opt.endpoint_or_off(history, "--history", bind=True)
    if history_ep is not None and history_ep in (publish, inlet_ep):
        raise click.BadParameter(
            "give the history its own endpoint (not --publish's or --inlet's)", param_hint="--history"
        )
    security = _server_security(ctx, keys, require_keys, [publish, inlet_ep, history_ep])
    # With a keys folder (even the units' empty default), SIGHUP reloads the client keys
    # instead of ending the run: `systemctl reload` must never stop the sampler.
    hup_reloads = bool(keys)
    old_hup = _watch_keys(security, quiet) if hup_reloads else None
    config = SamplerConfig(
        socket_options=security.socket_options if security else {},
        inlet_sender_allowed=security.authorized.allows_user_id if security and security.authorized else None,
        target=Target(pid=pid, match=match, argv=argv or None, cgroup=cgroup_path, unit=unit),
        period_ns=period_ns,
        detail_period_ns=detail_ns,
        batch_ns=batch_ns,
        publish=publish,
        inlet=inlet_ep,
        journal="" if no_journal else journal,
        journal_rotate=rotate,
        journal_keep=keep,
        limit=limit_bytes,
        duration_ns=duration_ns,
        reset_hwm=reset_hwm,
        realtime=realtime,
        quiet=quiet,
        heap_metric=heap,
        pss_budget=budget,
    )
    ring = None
    exporter = _prometheus_exporter(prometheus, prometheus_allow_remote) if prometheus else None
    if exporter is not None and not quiet:
        click.echo(f"spikewatch: Prometheus metrics at {exporter.url}", err=True)
    try:
        try:
            sampler = Sampler(config, context=security.context if security else None)
            if hup_reloads:
                sampler.stop_signals = tuple(sig for sig in sampler.stop_signals if sig != signal.SIGHUP)
            if exporter is not None:
                sampler.listeners.append(exporter)
            if history_ep is not None:
                ring = _history_server(security, history_ep, history_window, history_size, config.socket_options)
                sampler.listeners.append(ring)
            sampler.setup()
        except SamplerError as exc:
            raise RuntimeFailure(str(exc)) from None
        status = sampler.run()
    finally:
        if exporter is not None:
            exporter.close()
        if ring is not None:
            ring.close()
        if security is not None:
            security.close()
        if hup_reloads:
            signal.signal(signal.SIGHUP, old_hup if old_hup is not None else signal.SIG_DFL)
    ctx.exit(status)


def _prometheus_exporter(bind: str, allow_remote: bool):  # -> spikewatch.sampler.prometheus.PeakExporter
    """Started before the sampler sets up, so a bad address fails before anything is launched.
    Imported only here: ``spikewatch sample`` without --prometheus never loads it."""
    from .prometheus import BindError, ExporterError, PeakExporter

    try:
        exporter = PeakExporter(bind, allow_remote=allow_remote)
    except BindError as exc:
        raise click.BadParameter(str(exc), param_hint="--prometheus") from None
    except ExporterError as exc:
        raise RuntimeFailure(str(exc)) from None
    try:
        return exporter.start()
    except ExporterError as exc:
        raise RuntimeFailure(str(exc)) from None


def _history_server(security, endpoint: str, window: str, size: str, options: dict):
    import zmq

    from .daemon import SamplerError
    from .history import HistoryServer
    from .units import parse_size
    from .wire.stream import EndpointError

    window_ns = _duration(window, "--history-window", "s")
    try:
        max_bytes = parse_size(size)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--history-size") from None
    try:
        return HistoryServer(
            security.context if security else zmq.Context.instance(),
            endpoint,
            window_ns=window_ns,
            max_bytes=max_bytes,
            socket_options=options,
        )
    except EndpointError as exc:
        raise SamplerError(str(exc)) from None


def rotation(
    rotate: str | None, keep: str | None, rotate_flag: str, keep_flag: str
) -> tuple[tuple[int | None, float | None], tuple[int | None, float | None]]:
    """The rotation and retention options of a writer (``sample``'s journal, ``record``),
    each as :func:`size_or_age` gives it; retention without rotation is refused."""
    rotate_at, keep_for = size_or_age(rotate, rotate_flag), size_or_age(keep, keep_flag)
    if keep and not rotate:
        raise click.UsageError(f"{keep_flag} deletes whole segments: give {rotate_flag} too")
    return rotate_at, keep_for


def size_or_age(text: str | None, hint: str) -> tuple[int | None, float | None]:
    """``(bytes, None)`` for a size such as 256M, ``(None, seconds)`` for an age such as 1h."""
    from .units import parse_duration, parse_size

    if text is None:
        return (None, None)
    try:
        if text.strip().endswith("m"):
            raise ValueError("10m is ten minutes (10M is ten MiB)")
        n = parse_size(text)
        if n < 64 << 10:
            raise click.BadParameter(f"{text!r}: give at least 64K", param_hint=hint)
        return (n, None)
    except ValueError:
        pass
    try:
        s = parse_duration(text)
    except ValueError:
        raise click.BadParameter(
            f"{text!r} is neither a size (256M, 1G) nor a time (10m, 1h, 7d)", param_hint=hint
        ) from None
    if s < 1 or text.strip().replace(".", "").isdigit():
        raise click.BadParameter(
            f"{text!r}: give a unit and at least 1s (e.g. 10m, 1h, 7d) or a size (256M)", param_hint=hint
        )
    return (None, s)
