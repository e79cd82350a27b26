"""The messages, one typed definition each, with the functions that build them
(producers) and the ``as_*`` decoders that take them in (consumers). Part of the wire's
public face (re-exported by :mod:`spikewatch.sampler.wire.protocol`, whose docstring
describes every body)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, TypedDict, cast

from .framing import ProtocolError
from .kinds import DETAIL, EVENT, HELLO, LOAD, MARKER, PROTOCOL_VERSION, SAMPLES

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
    batch_period_ns: int  # how often a samples batch goes out (--batch-period)
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


_INT = (int,)
_STR = (str,)


def _check(body: Mapping[str, Any], topic: str, required: Mapping[str, tuple[type, ...]]) -> None:
    """The keys a consumer relies on are there, with their types; ``seq`` is an integer
    where present. One :class:`ProtocolError` naming the message and the key otherwise."""
    if not isinstance(body, Mapping):
        raise ProtocolError(f"{topic} body is {type(body).__name__}, expected a map")
    for key, types in required.items():
        if key not in body:
            raise ProtocolError(f"{topic} without {key!r}")
        _type(body[key], types, f"{topic}.{key}")
    if "seq" in body:
        _type(body["seq"], _INT, f"{topic}.seq")


def _type(value: Any, types: tuple[type, ...], where: str) -> None:
    # bool is an int to Python, never to the protocol
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
        expected = " or ".join(t.__name__ for t in types)
        raise ProtocolError(f"{where} is {type(value).__name__}, expected {expected}")


def as_hello(body: Mapping[str, Any]) -> Hello:
    _check(body, HELLO, {"seq": _INT, "t": _INT, "session": _STR})
    return cast(Hello, body)


def as_samples(body: Mapping[str, Any]) -> Samples:
    _check(body, SAMPLES, {"t": _INT, "dt": (list,), "series": (dict,)})
    n = len(body["dt"])
    for name, col in body["series"].items():
        if not isinstance(col, list) or len(col) != n:
            raise ProtocolError(f"samples.series[{name!r}] is not a list of {n} values (one per dt)")
    return cast(Samples, body)


def as_detail(body: Mapping[str, Any]) -> Detail:
    _check(body, DETAIL, {"t": _INT})
    return cast(Detail, body)


def as_event(body: Mapping[str, Any]) -> Event:
    _check(body, EVENT, {"t": _INT, "kind": _STR})
    return cast(Event, body)


def as_marker(body: Mapping[str, Any]) -> Marker:
    _check(body, MARKER, {"t": _INT, "kind": _STR, "name": _STR})
    return cast(Marker, body)


def as_load(body: Mapping[str, Any]) -> Load:
    _check(body, LOAD, {"t": _INT})
    return cast(Load, body)


Message = Hello | Samples | Detail | Event | Marker | Load
_DECODERS: dict[str, Callable[[Mapping[str, Any]], Message]] = {
    HELLO: as_hello,
    SAMPLES: as_samples,
    DETAIL: as_detail,
    EVENT: as_event,
    MARKER: as_marker,
    LOAD: as_load,
}


def as_message(topic: str, body: Mapping[str, Any]) -> Mapping[str, Any]:
    """The one door a consumer takes a stream message through: ``body`` checked by its
    topic's ``as_*`` decoder (:class:`ProtocolError` when malformed). A topic this
    version does not know passes unchecked: a newer sampler's message is not a bad one."""
    decoder = _DECODERS.get(topic)
    return body if decoder is None else decoder(body)


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
