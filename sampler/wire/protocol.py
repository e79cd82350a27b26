"""The spikewatch stream, version 1: the one place that knows its shape.

Everything on the wire is a ZeroMQ multipart message ``[topic, msgpack map]``
(see docs/architecture.md, "The wire"). Every map carries ``v`` (protocol
version), ``seq`` (one counter per sampler session across all topics) and ``t``
(the sampler's monotonic clock in ns). The sampler is the clock: markers and
load telemetry are stamped when the sampler *receives* them at its inlet.

This module is pure encoding and validation (msgpack only, no sockets), so the
sampler, the driver, the recorder and the console all agree on one definition.
Recordings reuse the same bodies; see :mod:`spikewatch.sampler.wire.recording`.

Bodies, beyond ``v``/``seq``/``t`` (all sizes in bytes, all times sampler monotonic ns;
a key is absent when the host cannot provide it):

``hello``   session (str, unique per sampler run), host, sampler_version, pid (of the
            sampler), wall_ns (wall clock at ``t``: the anchor for converting times),
            period_ns, detail_period_ns, series (list of series names in ``samples``),
            targets (list of {kind: pid|match|cgroup|unit|launch, spec: str, pids: [int]}),
            cgroup ({version, path, limit, owned, limit_own, limit_from, limit_kind} or None:
            limit is the effective one, the lowest up the tree (v2 memory.max or memory.high,
            v1 hierarchical_memory_limit), limit_own the cgroup's own, limit_from the
            hierarchy path that sets limit, limit_kind "max" or "high"), started_t (``t`` of the first sample),
            journal (path or None), heap_metric ({url, name, scrapes, failures, last_error} or None), final (True on the last hello before exit),
            tick_origin_t (deadline k of the sampling timer is tick_origin_t + k * period_ns),
            sched ("fifo" when the sampling thread runs real-time, else "other"),
            counters {samples, ticks_missed, overruns, published, dropped, inlet_ok,
            inlet_bad, journal_errors, journal_lost (messages published
            before this hello that are not in the journal file: dropped, or
            waiting on a disk that refused them), hwm_spikes}.
``samples`` dt (offsets from ``t``), series {name: [int]} — see :func:`samples_body`.
``detail``  procs (processes in the tree), pids, threads, rss_anon, rss_file, rss_shmem,
            vm_hwm (sum of the tree's VmHWM), vm_swap, sample_max (largest ``rss`` sample since
            the previous detail), and for a cgroup: cg_usage, cg_anon, cg_file,
            cg_inactive_file, cg_working_set (usage - inactive_file), cg_limit (the effective
            limit, as hello's; None if unlimited up the whole tree), cg_peak (kernel max since the previous detail, when resettable),
            cg_oom_kill, cg_oom, cg_failcnt, psi_some_avg10, psi_full_avg10, psi_some_total_us,
            psi_scope ("cgroup", or "system" when only host-wide /proc/pressure exists, as on v1),
            heap (with --heap-metric: the service's own heap gauge, bytes, when a fresh scrape exists);
            when a PSS sweep of the tree finished since the previous detail (docs/trees.md):
            pss (the tree's proportional set size: shared pages split between the processes
            mapping them, so the sum counts each once), uss (private pages only), pss_rss (RSS
            summed over the same sweep, for the double count), pss_swap (SwapPss), pss_procs
            (processes read), pss_t (middle of the sweep), pss_period_ns (period of the sweeps).
``event``   kind (see EVENT_KINDS) plus: proc_start {pid, ppid, exe, cmdline: [str],
            start_t (process start on the sampler clock, when known), launched: bool,
            build, build_evidence (the launched command's executable, read before it ran:
            see sampler.buildinfo)}; build {pid, exe, build, build_evidence} (the same read
            in the background for a process that joined the tree, shortly after its proc_start);
            proc_exit {pid, code | signal, oom: bool}; oom_kill {pid (when known), count,
            last_bytes (last sampled usage of the headline series)}; restart {pid, old_pid};
            hwm_spike {series, bytes, t_from, t_to, sampled_max}; limit_change {old, new, limit_from, limit_kind}
            (the effective limit, as hello's); memory_events {t_from, totals, and the rise since
            t_from of each counter that rose: high, max, oom, oom_kill — v2 memory.events, v1
            max = failcnt; at most one a second unless oom or oom_kill rose};
            overrun {missed (ticks), late_ns, count (overruns
            folded into this event: at most one per ~100 ms; ``t`` is the first one)}; journal_error {path, error, records_lost};
            proc_churn {started, exited (processes that came or went without events of their own,
            over the budget of 50 proc_start a second, since t_from), t_from, members}: at most one a second.
``marker``  kind (phase_start | phase_end | note), name, attrs, origin_wall_ns; stamped
            ``t`` on receipt at the inlet.
``load``    see LOAD_NUMBER_FIELDS; plus errors {kind: count}, phase, origin_wall_ns, and
            endpoints {request name: {ENDPOINT_FIELDS..., errors: {kind: count}}} (per request
            name: at least in_flight, so memory can be attributed to endpoints).

A recorder that writes several samplers into one recording adds ``src`` (the
session id of the sampler it came from) to every body it writes.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any, Final, Literal, TypedDict, cast

import msgpack

PROTOCOL_VERSION = 1

# Topics, as they travel in the first frame.
HELLO = "hello"
SAMPLES = "samples"
DETAIL = "detail"
EVENT = "event"
MARKER = "marker"
LOAD = "load"
HISTORY = "history"  # reply frames of the backfill endpoint (same bodies, replayed)
TOPICS: tuple[str, ...] = (HELLO, SAMPLES, DETAIL, EVENT, MARKER, LOAD)

# Default endpoints: loopback only; binding elsewhere requires CURVE keys.
DEFAULT_PUBLISH = "tcp://127.0.0.1:7781"
DEFAULT_INLET = "tcp://127.0.0.1:7782"


class EndpointSyntaxError(ValueError):
    """An endpoint that is not ``tcp://HOST:PORT``, ``ipc://PATH`` or ``inproc://NAME``;
    the message names the endpoint and what is wrong with it."""


# A name ZeroMQ resolves (host, IPv4, interface), or `*` (all interfaces) when binding.
_HOST = re.compile(r"^(\*|[A-Za-z0-9_]([A-Za-z0-9_.%-]*[A-Za-z0-9_])?)$")
_OFF_ALIASES = ("off", "none", "")


def is_off(value: str | None) -> bool:
    """Whether an endpoint or output option was turned off (``--inlet off``)."""
    return value is None or value.strip().lower() in _OFF_ALIASES


def parse_endpoint(endpoint: str, *, bind: bool = False) -> tuple[str, str, int | None]:
    """Check ``endpoint`` before ZeroMQ sees it: ZeroMQ itself binds ``tcp://127.0.0.1:99999``
    to a random port and ``…:80a`` to port 80 without a word, and a connect to a port-less
    endpoint waits forever. Returns (transport, host or path, port or None); raises
    :class:`EndpointSyntaxError` with one sentence saying what is wrong.

    ``bind``: a port ``*`` (any free one) and the host ``*`` are allowed."""
    ep = endpoint.strip()
    scheme, sep, rest = ep.partition("://")
    example = "write e.g. tcp://127.0.0.1:7781 or ipc:///tmp/spikewatch.sock"
    if not sep:
        raise EndpointSyntaxError(f"{endpoint!r} is not a ZeroMQ endpoint; {example}")
    if scheme in ("ipc", "inproc"):
        if not rest:
            raise EndpointSyntaxError(f"{endpoint!r} names no {'path' if scheme == 'ipc' else 'name'}; {example}")
        return scheme, rest, None
    if scheme != "tcp":
        raise EndpointSyntaxError(f"{endpoint!r}: transport {scheme!r} is not supported (tcp://, ipc://); {example}")
    address = rest.split(";")[-1] if not bind else rest
    host, colon, port = address.rpartition(":")
    if not colon or not host:
        raise EndpointSyntaxError(f"{endpoint!r} has no port; {example}")
    if host.startswith("["):
        if not host.endswith("]") or len(host) < 3:
            raise EndpointSyntaxError(f"{endpoint!r}: an IPv6 host goes in brackets, e.g. tcp://[::1]:7781")
        host_ok = all(c in "0123456789abcdefABCDEF:." for c in host[1:-1])
        host = host[1:-1]
    else:
        host_ok = bool(_HOST.match(host)) and (bind or host != "*")
    if not host_ok:
        raise EndpointSyntaxError(f"{endpoint!r}: {host!r} is not a host name or address")
    if bind and port == "*":
        return scheme, host, None
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise EndpointSyntaxError(f"{endpoint!r}: port {port!r} is not a number from 1 to 65535")
    return scheme, host, int(port)


def check_endpoint(endpoint: str, *, bind: bool = False) -> str:
    """``endpoint`` unchanged (stripped) when :func:`parse_endpoint` accepts it."""
    parse_endpoint(endpoint, bind=bind)
    return endpoint.strip()


def tcp_address(endpoint: str) -> tuple[str, int] | None:
    """(host, port) a client connects to for a ``tcp://`` endpoint (also the
    ``tcp://source;host:port`` form), or None for other transports or a malformed one."""
    try:
        scheme, host, port = parse_endpoint(endpoint)
    except EndpointSyntaxError:
        return None
    if scheme != "tcp" or port is None:
        return None
    return host, port


DEFAULT_HISTORY = "tcp://127.0.0.1:7783"

# Series names in ``samples`` batches (bytes).
SERIES_RSS = "rss"  # resident set of the whole target tree
SERIES_CG_USAGE = "cg_usage"  # the target cgroup's usage

# Event kinds.
EV_PROC_START: Final = "proc_start"
EV_PROC_EXIT: Final = "proc_exit"
EV_OOM_KILL: Final = "oom_kill"
EV_RESTART: Final = "restart"
EV_HWM_SPIKE: Final = "hwm_spike"
EV_LIMIT_CHANGE: Final = "limit_change"
EV_OVERRUN: Final = "overrun"
EV_JOURNAL_ERROR: Final = "journal_error"
EV_BUILD: Final = "build"
EV_PROC_CHURN: Final = "proc_churn"
EV_MEMORY_EVENTS: Final = "memory_events"
EVENT_KINDS: tuple[str, ...] = (
    EV_PROC_START,
    EV_PROC_EXIT,
    EV_OOM_KILL,
    EV_RESTART,
    EV_HWM_SPIKE,
    EV_LIMIT_CHANGE,
    EV_OVERRUN,
    EV_JOURNAL_ERROR,
    EV_BUILD,
    EV_PROC_CHURN,
    EV_MEMORY_EVENTS,
)

# Marker kinds.
PHASE_START = "phase_start"
PHASE_END = "phase_end"
NOTE = "note"
MARKER_KINDS: tuple[str, ...] = (PHASE_START, PHASE_END, NOTE)

# Inlet limits: anything larger or deeper is counted and dropped.
MAX_INLET_FRAME = 64 * 1024
MAX_NAME_LEN = 200
MAX_ATTRS = 64
MAX_DEPTH = 4


class ProtocolError(ValueError):
    """A message that does not follow the protocol; says what is wrong."""


def pack(body: Mapping[str, Any]) -> bytes:
    """msgpack-encode one message body."""
    return msgpack.packb(body, use_bin_type=True)


def unpack(data: bytes, max_size: int | None = None) -> dict[str, Any]:
    """Decode one message body; raise :class:`ProtocolError` if it is not a map."""
    if max_size is not None and len(data) > max_size:
        raise ProtocolError(f"frame of {len(data)} bytes exceeds {max_size}")
    try:
        body = msgpack.unpackb(data, raw=False, strict_map_key=True, max_bin_len=max_size or 0x7FFFFFFF)
    except Exception as exc:  # msgpack raises several unrelated types
        raise ProtocolError(f"bad msgpack: {exc.__class__.__name__}: {exc}") from None
    if not isinstance(body, dict):
        raise ProtocolError(f"body is {type(body).__name__}, expected a map")
    return body


def encode(topic: str, body: Mapping[str, Any]) -> list[bytes]:
    """Frames for one message: ``[topic, packed body]``."""
    return [topic.encode(), pack(body)]


def decode(frames: Sequence[bytes], max_size: int | None = None) -> tuple[str, dict[str, Any]]:
    """Parse ``[topic, body]`` frames from the stream; raise :class:`ProtocolError`."""
    if len(frames) != 2:
        raise ProtocolError(f"expected 2 frames [topic, body], got {len(frames)}")
    try:
        topic = bytes(frames[0]).decode()
    except UnicodeDecodeError:
        raise ProtocolError("topic is not UTF-8") from None
    return topic, unpack(bytes(frames[1]), max_size)


# --- the messages, one typed definition each ---------------------------------
#
# A body is a plain dict on the wire and in memory (msgpack packs it as is, and
# the hot paths never pay for objects); these TypedDicts are its one
# definition. Producers build bodies with the functions below, consumers take
# them through the ``as_*`` decoders, which check what the reader relies on.


class Header(TypedDict):
    v: int
    seq: int
    t: int


def header(seq: int, t: int) -> Header:
    """The keys every stream map starts with."""
    return {"v": PROTOCOL_VERSION, "seq": seq, "t": t}


class Target(TypedDict):
    kind: str  # pid | match | cgroup | unit | launch
    spec: str
    pids: list[int]


class _CgroupCore(TypedDict):
    version: int
    path: str
    limit: int | None  # the effective limit: the lowest up the tree
    owned: bool


class CgroupInfo(_CgroupCore, total=False):
    limit_own: int | None  # the cgroup's own (None: "max")
    limit_from: str | None  # hierarchy path of the cgroup that sets ``limit``
    limit_kind: str | None  # "max" or "high" (v2 memory.high)


class HeapMetricInfo(TypedDict):
    """``--heap-metric``: where the service's heap gauge is read, and how that went."""

    url: str
    name: str
    scrapes: int
    failures: int
    last_error: str | None


class Hello(Header, total=False):
    session: str
    host: str
    sampler_version: str
    pid: int
    wall_ns: int
    period_ns: int
    detail_period_ns: int
    series: list[str]
    targets: list[Target]
    cgroup: CgroupInfo | None
    started_t: int | None
    tick_origin_t: int | None
    sched: str
    journal: str | None
    heap_metric: HeapMetricInfo | None
    final: bool
    counters: dict[str, int]
    src: str  # added by a recorder that merges several samplers


class Samples(Header):
    dt: list[int]
    series: dict[str, list[int]]


class DetailFields(TypedDict, total=False):
    """What the detail tier reads, before the header is put on."""

    procs: int
    pids: list[int]
    threads: int
    rss_anon: int
    rss_file: int
    rss_shmem: int
    vm_hwm: int
    vm_swap: int
    sample_max: dict[str, int]
    cg_usage: int | None
    cg_anon: int | None
    cg_file: int | None
    cg_inactive_file: int | None
    cg_working_set: int | None
    cg_limit: int | None
    cg_peak: int
    cg_oom_kill: int | None
    cg_oom: int | None
    cg_failcnt: int | None
    psi_some_avg10: float | None
    psi_full_avg10: float | None
    psi_some_total_us: int | None
    psi_scope: str
    heap: int
    pss: int
    uss: int
    pss_rss: int
    pss_swap: int
    pss_procs: int
    pss_t: int
    pss_period_ns: int


class Detail(Header, DetailFields, total=False):
    """A ``detail`` as it travels: the header and the detail tier's fields."""

    src: str  # added by a recorder that merges several samplers


def detail_body(seq: int, t: int, fields: DetailFields) -> Detail:
    body = cast(Detail, dict(fields))
    body.update(header(seq, t))
    return body


# Events: ``kind`` plus the fields of that kind (a field the sampler does not
# know is left out, never sent as None).
class ProcStart(TypedDict, total=False):
    kind: Literal["proc_start"]
    pid: int
    ppid: int
    exe: str | None
    cmdline: list[str]
    start_t: int
    launched: bool
    build: str  # the launched command's build profile read from its executable (buildinfo)
    build_evidence: str


class ProcExit(TypedDict, total=False):
    kind: Literal["proc_exit"]
    pid: int
    code: int
    signal: int
    oom: bool


class OomKill(TypedDict, total=False):
    kind: Literal["oom_kill"]
    pid: int
    count: int
    last_bytes: int | None


class Restart(TypedDict):
    kind: Literal["restart"]
    pid: int
    old_pid: int


class HwmSpike(TypedDict):
    kind: Literal["hwm_spike"]
    series: str
    bytes: int
    t_from: int
    t_to: int
    sampled_max: int


class _LimitChangeCore(TypedDict):
    kind: Literal["limit_change"]
    old: int | None
    new: int | None


class LimitChange(_LimitChangeCore, total=False):
    limit_from: str | None
    limit_kind: str | None


class MemoryEvents(TypedDict, total=False):
    """Rises of the cgroup's memory.events counters (v1: failcnt as ``max``) since ``t_from``."""

    kind: Literal["memory_events"]
    t_from: int
    totals: dict[str, int]
    high: int
    max: int
    oom: int
    oom_kill: int


class Overrun(TypedDict):
    kind: Literal["overrun"]
    missed: int
    late_ns: int
    count: int


class JournalError(TypedDict):
    kind: Literal["journal_error"]
    path: str
    error: str | None
    records_lost: int


class Build(TypedDict):
    """A process's build profile, read in the background after its proc_start."""

    kind: Literal["build"]
    pid: int
    exe: str
    build: str  # debug, release, unknown, interpreted, wrapper
    build_evidence: str


class ProcChurn(TypedDict):
    kind: Literal["proc_churn"]
    started: int
    exited: int
    t_from: int
    members: int


EventFields = (
    ProcStart
    | ProcExit
    | OomKill
    | Restart
    | HwmSpike
    | LimitChange
    | Overrun
    | JournalError
    | Build
    | ProcChurn
    | MemoryEvents
)


class Event(Header, total=False):
    """An ``event`` as it travels: the header, ``kind`` and that kind's fields."""

    kind: str
    src: str


def event_body(seq: int, t: int, fields: EventFields) -> Event:
    body = cast(Event, {k: v for k, v in fields.items() if v is not None})
    body.update(header(seq, t))
    return body


class Marker(Header, total=False):
    kind: str  # one of MARKER_KINDS
    name: str
    attrs: dict[str, Any]
    origin_wall_ns: int | None
    src: str


class Load(Header, total=False):
    """Driver telemetry over one interval; numbers in LOAD_NUMBER_FIELDS (latencies in ns)."""

    interval_ns: int
    rate: float
    target_rate: float
    in_flight: int
    completed: int
    sent: int
    bytes_sent: int
    bytes_recv: int
    lat_p50_ns: int
    lat_p90_ns: int
    lat_p99_ns: int
    lat_max_ns: int
    late_sends: int
    dropped_sends: int
    schedule_lag_ns: int
    workers: int
    loop_lag_ns: int
    errors: dict[str, int]
    phase: str
    origin_wall_ns: int
    source: str
    src: str


def inlet_body(seq: int, t: int, fields: Mapping[str, Any]) -> Marker | Load:
    """A validated inlet message stamped with the sampler's header on receipt."""
    body = dict(fields)
    body.update(header(seq, t))
    return cast("Marker | Load", body)


def _need(body: Mapping[str, Any], topic: str, *keys: str) -> None:
    for k in keys:
        if k not in body:
            raise ProtocolError(f"{topic} without {k!r}")


def as_hello(body: Mapping[str, Any]) -> Hello:
    _need(body, HELLO, "seq", "t", "session")
    return cast(Hello, body)


def as_samples(body: Mapping[str, Any]) -> Samples:
    _need(body, SAMPLES, "t", "dt", "series")
    if not isinstance(body["series"], dict):
        raise ProtocolError("samples.series is not a map")
    return cast(Samples, body)


def as_detail(body: Mapping[str, Any]) -> Detail:
    _need(body, DETAIL, "t")
    return cast(Detail, body)


def as_event(body: Mapping[str, Any]) -> Event:
    _need(body, EVENT, "t", "kind")
    return cast(Event, body)


def as_marker(body: Mapping[str, Any]) -> Marker:
    _need(body, MARKER, "t", "kind", "name")
    return cast(Marker, body)


def as_load(body: Mapping[str, Any]) -> Load:
    _need(body, LOAD, "t")
    return cast(Load, body)


# --- samples batches -------------------------------------------------------


def samples_body(seq: int, times: Sequence[int], series: Mapping[str, Sequence[int]]) -> Samples:
    """A columnar ``samples`` batch: first time ``t``, offsets ``dt``, one column per series."""
    t0 = times[0]
    return {
        "v": PROTOCOL_VERSION,
        "seq": seq,
        "t": t0,
        "dt": [t - t0 for t in times],
        "series": {name: list(col) for name, col in series.items()},
    }


def sample_times(body: Mapping[str, Any]) -> list[int]:
    """Absolute monotonic ns of every sample in a ``samples`` batch."""
    t0 = body["t"]
    return [t0 + d for d in body["dt"]]


# --- what arrives at the inlet ---------------------------------------------


def _check_value(value: Any, depth: int, where: str) -> None:
    if depth > MAX_DEPTH:
        raise ProtocolError(f"{where}: nested deeper than {MAX_DEPTH}")
    if value is None or isinstance(value, (bool, int, str)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ProtocolError(f"{where}: not a finite number")
        return
    if isinstance(value, (list, tuple)):
        if len(value) > MAX_ATTRS * 16:
            raise ProtocolError(f"{where}: list too long")
        for i, v in enumerate(value):
            _check_value(v, depth + 1, f"{where}[{i}]")
        return
    if isinstance(value, dict):
        if len(value) > MAX_ATTRS:
            raise ProtocolError(f"{where}: more than {MAX_ATTRS} keys")
        for k, v in value.items():
            if not isinstance(k, str):
                raise ProtocolError(f"{where}: keys must be strings")
            _check_value(v, depth + 1, f"{where}.{k}")
        return
    raise ProtocolError(f"{where}: unsupported type {type(value).__name__}")


def marker_message(
    kind: str, name: str, attrs: Mapping[str, Any] | None = None, origin_wall_ns: int | None = None
) -> dict[str, Any]:
    """What a sender puts on the inlet for a marker (the sampler adds v/seq/t)."""
    import time

    body = {
        "kind": kind,
        "name": name,
        "attrs": dict(attrs or {}),
        "origin_wall_ns": time.time_ns() if origin_wall_ns is None else origin_wall_ns,
    }
    return validate_marker(body)


def validate_marker(body: Mapping[str, Any]) -> dict[str, Any]:
    """Check an inlet marker; return the normalised fields or raise :class:`ProtocolError`."""
    kind = body.get("kind")
    if kind not in MARKER_KINDS:
        raise ProtocolError(f"marker kind must be one of {', '.join(MARKER_KINDS)}, got {kind!r}")
    name = body.get("name")
    if not isinstance(name, str) or not name or len(name) > MAX_NAME_LEN:
        raise ProtocolError(f"marker name must be a non-empty string of at most {MAX_NAME_LEN} chars")
    attrs = body.get("attrs", {})
    if not isinstance(attrs, dict):
        raise ProtocolError("marker attrs must be a map")
    _check_value(attrs, 1, "attrs")
    origin = body.get("origin_wall_ns")
    if origin is not None and (not isinstance(origin, int) or isinstance(origin, bool)):
        raise ProtocolError("origin_wall_ns must be an integer")
    return {"kind": kind, "name": name, "attrs": attrs, "origin_wall_ns": origin}


# Fields of a ``load`` message (driver telemetry over one interval). All optional
# except ``interval_ns``; latencies are ns; ``errors`` maps an error kind to a count.
LOAD_NUMBER_FIELDS: tuple[str, ...] = (
    "interval_ns",
    "rate",
    "target_rate",
    "in_flight",
    "completed",
    "sent",
    "bytes_sent",
    "bytes_recv",
    "lat_p50_ns",
    "lat_p90_ns",
    "lat_p99_ns",
    "lat_max_ns",
    "late_sends",
    "dropped_sends",
    "schedule_lag_ns",
    "workers",
    "loop_lag_ns",  # the driver's own event-loop lag: high means latencies include client queueing
)


# Per request name inside ``load.endpoints`` (same meaning as the totals).
ENDPOINT_FIELDS: tuple[str, ...] = (
    "in_flight",
    "in_flight_mean",  # at the end of the interval; mean over it
    "completed",
    "sent",
    "rate",
    "lat_p50_ns",
    "lat_p90_ns",
    "lat_p99_ns",
    "lat_max_ns",
)


def _number_ok(value: Any) -> bool:
    return (
        not isinstance(value, bool)
        and isinstance(value, (int, float))
        and (not isinstance(value, float) or math.isfinite(value))
    )


def _error_counts_ok(value: Any) -> bool:
    return isinstance(value, dict) and all(
        isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) for k, v in value.items()
    )


def _check_endpoints(value: Any) -> None:
    if not isinstance(value, dict) or len(value) > MAX_ATTRS:
        raise ProtocolError(f"load.endpoints must map at most {MAX_ATTRS} request names to their figures")
    for name, fields in value.items():
        if not isinstance(name, str) or not name or len(name) > MAX_NAME_LEN:
            raise ProtocolError(
                f"load.endpoints: request names must be non-empty strings of at most {MAX_NAME_LEN} chars"
            )
        if not isinstance(fields, dict):
            raise ProtocolError(f"load.endpoints[{name!r}] must be a map")
        for key, v in fields.items():
            if key in ENDPOINT_FIELDS:
                if not _number_ok(v):
                    raise ProtocolError(f"load.endpoints[{name!r}].{key} must be a finite number")
            elif key == "errors":
                if not _error_counts_ok(v):
                    raise ProtocolError(f"load.endpoints[{name!r}].errors must map error kinds to counts")
                _check_value(v, 1, "errors")
            else:
                raise ProtocolError(f"load.endpoints[{name!r}] has unknown field {key!r}")


def validate_load(body: Mapping[str, Any]) -> dict[str, Any]:
    """Check an inlet ``load`` message; return it normalised or raise :class:`ProtocolError`."""
    out: dict[str, Any] = {}
    if not isinstance(body.get("interval_ns"), int):
        raise ProtocolError("load needs an integer interval_ns")
    for key, value in body.items():
        if key in LOAD_NUMBER_FIELDS:
            if not _number_ok(value):
                raise ProtocolError(f"load.{key} must be a finite number")
        elif key == "errors":
            if not _error_counts_ok(value):
                raise ProtocolError("load.errors must map error kinds to counts")
            _check_value(value, 1, "errors")
        elif key == "endpoints":
            _check_endpoints(value)
        elif key in ("phase", "origin_wall_ns", "source"):
            _check_value(value, 1, key)
        else:
            raise ProtocolError(f"load has unknown field {key!r}")
        out[key] = value
    return out


def validate_inlet(frames: Sequence[bytes]) -> tuple[str, dict[str, Any]]:
    """Parse and validate one inlet message; raise :class:`ProtocolError` on anything wrong."""
    if sum(len(f) for f in frames) > MAX_INLET_FRAME:
        raise ProtocolError(f"message larger than {MAX_INLET_FRAME} bytes")
    topic, body = decode(frames, MAX_INLET_FRAME)
    if topic == MARKER:
        return topic, validate_marker(body)
    if topic == LOAD:
        return topic, validate_load(body)
    raise ProtocolError(f"the inlet takes {MARKER!r} or {LOAD!r}, not {topic[:40]!r}")
