"""The spikewatch stream, version 1: the one place that knows its shape.

Everything on the wire is a ZeroMQ multipart message ``[topic, msgpack map]``
(see docs/architecture.md, "The wire"). Every map carries ``v`` (protocol
version), ``seq`` (one counter per sampler session across all topics) and ``t``
(the sampler's monotonic clock in ns). The sampler is the clock: markers and
load telemetry are stamped when the sampler *receives* them at its inlet.

This module is pure encoding and validation (msgpack only, no sockets), so the
sampler, the driver, the recorder and the console all agree on one definition. It is
the wire's public face: import from here. The code lives by job beside it —
:mod:`~spikewatch.sampler.wire.kinds` (version, topics, series, event and marker kinds),
:mod:`~spikewatch.sampler.wire.endpoints` (endpoint syntax, "off"),
:mod:`~spikewatch.sampler.wire.framing` (frames, msgpack, :class:`ProtocolError`),
:mod:`~spikewatch.sampler.wire.messages` (one TypedDict, builder and ``as_*`` decoder per
message) and :mod:`~spikewatch.sampler.wire.inlet` (what the inlet accepts).
Recordings reuse the same bodies; see :mod:`spikewatch.sampler.wire.recording`.

Bodies, beyond ``v``/``seq``/``t`` (all sizes in bytes, all times sampler monotonic ns;
a key is absent when the host cannot provide it):

``hello``   session (str, unique per sampler run), host, sampler_version, pid (of the
            sampler), wall_ns (wall clock at ``t``: the anchor for converting times),
            period_ns, detail_period_ns, batch_period_ns (how often a ``samples`` batch goes
            out; absent from samplers before it was added), series (list of series names in ``samples``),
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

from .endpoints import (
    DEFAULT_HISTORY,
    DEFAULT_INLET,
    DEFAULT_PUBLISH,
    EndpointSyntaxError,
    check_endpoint,
    is_off,
    parse_endpoint,
    tcp_address,
)
from .framing import (
    ProtocolError,
    decode,
    encode,
    pack,
    packer,
    unpack,
)
from .inlet import (
    ENDPOINT_FIELDS,
    LOAD_NUMBER_FIELDS,
    MAX_ATTRS,
    MAX_DEPTH,
    MAX_INLET_FRAME,
    MAX_NAME_LEN,
    marker_message,
    validate_inlet,
    validate_load,
    validate_marker,
)
from .kinds import (
    DETAIL,
    EV_BUILD,
    EV_HWM_SPIKE,
    EV_JOURNAL_ERROR,
    EV_LIMIT_CHANGE,
    EV_MEMORY_EVENTS,
    EV_OOM_KILL,
    EV_OVERRUN,
    EV_PROC_CHURN,
    EV_PROC_EXIT,
    EV_PROC_START,
    EV_RESTART,
    EVENT,
    EVENT_KINDS,
    HELLO,
    HISTORY,
    LOAD,
    MARKER,
    MARKER_KINDS,
    NOTE,
    PHASE_END,
    PHASE_START,
    PROTOCOL_VERSION,
    SAMPLES,
    SERIES_CG_USAGE,
    SERIES_RSS,
    TOPICS,
)
from .messages import (
    Build,
    CgroupInfo,
    Detail,
    DetailFields,
    Event,
    EventFields,
    Header,
    HeapMetricInfo,
    Hello,
    HwmSpike,
    JournalError,
    LimitChange,
    Load,
    Marker,
    MemoryEvents,
    Message,
    OomKill,
    Overrun,
    ProcChurn,
    ProcExit,
    ProcStart,
    Restart,
    Samples,
    Target,
    as_detail,
    as_event,
    as_hello,
    as_load,
    as_marker,
    as_message,
    as_samples,
    detail_body,
    event_body,
    header,
    inlet_body,
    sample_times,
    samples_body,
)

__all__ = [
    "Build",
    "CgroupInfo",
    "DEFAULT_HISTORY",
    "DEFAULT_INLET",
    "DEFAULT_PUBLISH",
    "DETAIL",
    "Detail",
    "DetailFields",
    "ENDPOINT_FIELDS",
    "EVENT",
    "EVENT_KINDS",
    "EV_BUILD",
    "EV_HWM_SPIKE",
    "EV_JOURNAL_ERROR",
    "EV_LIMIT_CHANGE",
    "EV_MEMORY_EVENTS",
    "EV_OOM_KILL",
    "EV_OVERRUN",
    "EV_PROC_CHURN",
    "EV_PROC_EXIT",
    "EV_PROC_START",
    "EV_RESTART",
    "EndpointSyntaxError",
    "Event",
    "EventFields",
    "HELLO",
    "HISTORY",
    "Header",
    "HeapMetricInfo",
    "Hello",
    "HwmSpike",
    "JournalError",
    "LOAD",
    "LOAD_NUMBER_FIELDS",
    "LimitChange",
    "Load",
    "MARKER",
    "MARKER_KINDS",
    "MAX_ATTRS",
    "MAX_DEPTH",
    "MAX_INLET_FRAME",
    "MAX_NAME_LEN",
    "Marker",
    "Message",
    "MemoryEvents",
    "NOTE",
    "OomKill",
    "Overrun",
    "PHASE_END",
    "PHASE_START",
    "PROTOCOL_VERSION",
    "ProcChurn",
    "ProcExit",
    "ProcStart",
    "ProtocolError",
    "Restart",
    "SAMPLES",
    "SERIES_CG_USAGE",
    "SERIES_RSS",
    "Samples",
    "TOPICS",
    "Target",
    "as_detail",
    "as_event",
    "as_hello",
    "as_load",
    "as_message",
    "as_marker",
    "as_samples",
    "check_endpoint",
    "decode",
    "detail_body",
    "encode",
    "event_body",
    "header",
    "inlet_body",
    "is_off",
    "marker_message",
    "pack",
    "packer",
    "parse_endpoint",
    "sample_times",
    "samples_body",
    "tcp_address",
    "unpack",
    "validate_inlet",
    "validate_load",
    "validate_marker",
]
