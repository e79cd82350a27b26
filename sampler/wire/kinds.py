"""The wire's names: protocol version, topics, series, event kinds and marker kinds.
Part of the wire's public face (re-exported by :mod:`spikewatch.sampler.wire.protocol`)."""

from __future__ import annotations

from typing import Final

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
