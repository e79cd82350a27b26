"""What may arrive at the sampler's inlet (markers and load telemetry from any sender):
the limits, the checks, and :func:`marker_message` for senders. Part of the wire's public
face (re-exported by :mod:`spikewatch.sampler.wire.protocol`)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from .framing import ProtocolError, decode
from .kinds import LOAD, MARKER, MARKER_KINDS

# Inlet limits: anything larger or deeper is counted and dropped.
MAX_INLET_FRAME = 64 * 1024
MAX_NAME_LEN = 200
MAX_ATTRS = 64
MAX_DEPTH = 4


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
