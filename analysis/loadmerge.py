"""Load telemetry from several senders into one series (several driver hosts, one sampler).

Each ``spikewatch drive`` tags its ``load`` messages with ``source`` (host and pid). When
one sampler hears several, the analyses must see the load the service saw, not every
sender's share in turn (an interleaved series of thirds would triple the bytes per
request of a ramp). So the series is rebuilt on the ticks of the sender heard most often:
levels (in flight, rate) are the sum of each sender's figure nearest in time, interval means
(an endpoint's ``in_flight_mean``) the sum over senders of each one's average since the
previous tick, counts (completed, errors…) the sum of everything that arrived since the
previous tick. A sender not heard within three of its own intervals of
a tick does not count there.
"""

from __future__ import annotations

import bisect
from typing import Any

LEVELS = ("rate", "target_rate", "in_flight", "workers")
COUNTS = ("completed", "sent", "bytes_sent", "bytes_recv", "late_sends", "dropped_sends")
MAXIMA = ("schedule_lag_ns", "loop_lag_ns", "lat_p50_ns", "lat_p90_ns", "lat_p99_ns", "lat_max_ns")
EP_LEVELS = ("in_flight", "rate")
EP_COUNTS = ("completed", "sent")


def _add_counts(into: dict[str, Any], body: dict[str, Any]) -> None:
    for k in COUNTS:
        v = body.get(k)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            into[k] = into.get(k, 0) + v
    for k, v in (body.get("errors") or {}).items():
        errs = into.setdefault("errors", {})
        errs[k] = errs.get(k, 0) + v
    for name, ep in (body.get("endpoints") or {}).items():
        if not isinstance(ep, dict):
            continue
        dst = into.setdefault("endpoints", {}).setdefault(name, {})
        for k in EP_COUNTS:
            if isinstance(ep.get(k), (int, float)):
                dst[k] = dst.get(k, 0) + ep[k]
        for kind, n in (ep.get("errors") or {}).items():
            e = dst.setdefault("errors", {})
            e[kind] = e.get(kind, 0) + n


def _iv(b: dict[str, Any]) -> int:
    v = b.get("interval_ns")
    return int(v) if isinstance(v, (int, float)) and v > 0 else 100_000_000


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def merge_sources(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One series from several senders' ``load`` bodies; unchanged for one sender."""
    by_src: dict[str, list[dict[str, Any]]] = {}
    for b in sorted(records, key=lambda b: b.get("t", 0)):
        by_src.setdefault(str(b.get("source") or ""), []).append(b)
    if len(by_src) <= 1:
        return records
    lead = max(by_src, key=lambda s: len(by_src[s]))
    times = {s: [int(b.get("t", 0)) for b in bs] for s, bs in by_src.items()}
    out: list[dict[str, Any]] = []
    pending: dict[str, Any] = {}
    seq = sorted(records, key=lambda b: b.get("t", 0))
    i = 0
    prev_t = -1 << 62
    for b in by_src[lead]:
        t = int(b.get("t", 0))
        while i < len(seq) and int(seq[i].get("t", 0)) <= t:  # counts: each message once, at the next tick
            _add_counts(pending, seq[i])
            i += 1
        near: list[dict[str, Any]] = []  # each sender's message nearest to t
        means: dict[str, float] = {}  # endpoint -> in_flight_mean over [t - iv, t], all senders
        for src, bs in by_src.items():
            ts = times[src]
            j = bisect.bisect_left(ts, t)
            best = min((k for k in (j - 1, j) if 0 <= k < len(bs)), key=lambda k: abs(ts[k] - t))
            if abs(ts[best] - t) <= 3 * _iv(bs[best]):
                near.append(bs[best])
            # interval means: the average of this sender's since our previous tick (messages are
            # stamped on receipt, so a stalled moment delivers two at once: average, never add)
            lo = bisect.bisect_right(ts, prev_t)
            hi = bisect.bisect_right(ts, t)
            picked = bs[lo:hi] or ([bs[best]] if abs(ts[best] - t) <= 3 * _iv(bs[best]) else [])
            for name in {n for x in picked for n in (x.get("endpoints") or {})}:
                vals = [
                    x["endpoints"][name]["in_flight_mean"]
                    for x in picked
                    if isinstance((x.get("endpoints") or {}).get(name), dict)
                    and _num(x["endpoints"][name].get("in_flight_mean"))
                ]
                if vals:
                    means[name] = means.get(name, 0.0) + sum(vals) / len(vals)
        merged: dict[str, Any] = {
            k: v for k, v in b.items() if k not in (*LEVELS, *COUNTS, *MAXIMA, "errors", "endpoints")
        }
        merged["source"] = f"{len(near)} senders"
        for k in LEVELS:
            vals = [x[k] for x in near if _num(x.get(k))]
            if vals:
                merged[k] = sum(vals)
        for k in MAXIMA:
            vals = [x[k] for x in near if _num(x.get(k))]
            if vals:
                merged[k] = max(vals)  # a percentile of the whole is not the sum of the parts' percentiles
        for k in COUNTS:
            if k in pending:
                merged[k] = pending[k]
        merged["errors"] = pending.get("errors", {})
        eps: dict[str, dict[str, Any]] = {}
        for x in near:
            for name, ep in (x.get("endpoints") or {}).items():
                if isinstance(ep, dict):
                    dst = eps.setdefault(name, {})
                    for k in EP_LEVELS:
                        if _num(ep.get(k)):
                            dst[k] = dst.get(k, 0) + ep[k]
        for name, m in means.items():
            eps.setdefault(name, {})["in_flight_mean"] = round(m, 3)
        for name, counted in (pending.get("endpoints") or {}).items():
            eps.setdefault(name, {}).update(counted)
        if eps:
            merged["endpoints"] = eps
        out.append(merged)
        pending = {}
        prev_t = t
    while i < len(seq):  # what the others sent after the lead's last message
        _add_counts(pending, seq[i])
        i += 1
    if pending and out:
        last = out[-1]
        for k in COUNTS:
            if k in pending:
                last[k] = last.get(k, 0) + pending[k]
        for k, n in (pending.get("errors") or {}).items():
            last["errors"][k] = last["errors"].get(k, 0) + n
        for name, counted in (pending.get("endpoints") or {}).items():
            dst = last.setdefault("endpoints", {}).setdefault(name, {})
            for k, v in counted.items():
                if k != "errors":
                    dst[k] = dst.get(k, 0) + v
    return out


def _merge_pair(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Two consecutive intervals of one sender as one: counts add, levels and interval
    means average, maxima (latency percentiles, lags) keep the larger; stamped at the later."""
    out = {k: v for k, v in b.items() if k not in (*LEVELS, *COUNTS, *MAXIMA, "errors", "endpoints")}
    out["interval_ns"] = _iv(a) + _iv(b)
    for k in LEVELS:
        vals = [x[k] for x in (a, b) if _num(x.get(k))]
        if vals:
            out[k] = sum(vals) / len(vals)
    for k in MAXIMA:
        vals = [x[k] for x in (a, b) if _num(x.get(k))]
        if vals:
            out[k] = max(vals)
    pending: dict[str, Any] = {}
    _add_counts(pending, a)
    _add_counts(pending, b)
    for k in COUNTS:
        if k in pending:
            out[k] = pending[k]
    out["errors"] = pending.get("errors", {})
    eps: dict[str, dict[str, Any]] = {}
    for x in (a, b):
        for name, ep in (x.get("endpoints") or {}).items():
            if isinstance(ep, dict):
                dst = eps.setdefault(name, {})
                for k in (*EP_LEVELS, "in_flight_mean"):
                    if _num(ep.get(k)):
                        dst.setdefault("_" + k, []).append(ep[k])
    for dst in eps.values():
        for k in (*EP_LEVELS, "in_flight_mean"):
            vals = dst.pop("_" + k, None)
            if vals:
                dst[k] = sum(vals) / len(vals)
    for name, counted in (pending.get("endpoints") or {}).items():
        eps.setdefault(name, {}).update(counted)
    if eps:
        out["endpoints"] = eps
    return out


def coarsen(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Half as many records over the same time (a long soak's telemetry, bounded): each
    sender's consecutive pairs merged by :func:`_merge_pair`."""
    by_src: dict[str, list[dict[str, Any]]] = {}
    for b in records:
        by_src.setdefault(str(b.get("source") or ""), []).append(b)
    out: list[dict[str, Any]] = []
    for bs in by_src.values():
        out.extend(_merge_pair(bs[i], bs[i + 1]) if i + 1 < len(bs) else bs[i] for i in range(0, len(bs), 2))
    out.sort(key=lambda b: b.get("t", 0))
    return out
