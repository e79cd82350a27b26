"""The Locust plugin's counting, apart from Locust: each process's counts per request name
(:class:`Counts`) and the publisher's sum of them into one ``load`` body per interval
(:class:`Totals`). Standard library and the wire only, so it runs (and is tested) without
Locust or gevent; :mod:`spikewatch.locust` wires it to Locust's events."""

from __future__ import annotations

import time
from typing import Any

from spikewatch.sampler.wire import protocol


def _bucket(us: float) -> int:
    """Latency in µs rounded to two significant digits: small, mergeable histograms."""
    v = int(us)
    if v < 100:
        return v
    scale = int(10 ** (len(str(v)) - 2))
    return (v + scale // 2) // scale * scale


def _percentile(hist: dict[int, int], q: float) -> int:
    total = sum(hist.values())
    need = max(1, int(total * q / 100 + 0.999999))
    seen = 0
    for us in sorted(hist):
        seen += hist[us]
        if seen >= need:
            return us * 1000
    return max(hist) * 1000


class Counts:
    """One process's counts per request name since they were last taken."""

    def __init__(self) -> None:
        self.in_flight: dict[str, int] = {}
        self.completed: dict[str, int] = {}
        self.errors: dict[str, dict[str, int]] = {}
        self.hist: dict[str, dict[int, int]] = {}
        # time in flight per name (ns x requests) since the last take: the interval's mean
        # in-flight count, which is what the interval's mean memory answers to
        self.busy_ns: dict[str, int] = {}
        self.changed: dict[str, int] = {}  # when each name's in-flight count last changed

    def _integrate(self, name: str, now: int) -> None:
        last = self.changed.get(name, now)
        self.busy_ns[name] = self.busy_ns.get(name, 0) + self.in_flight.get(name, 0) * (now - last)
        self.changed[name] = now

    def start(self, name: str) -> None:
        self._integrate(name, time.monotonic_ns())
        self.in_flight[name] = self.in_flight.get(name, 0) + 1

    def end(self, name: str) -> None:
        self._integrate(name, time.monotonic_ns())
        self.in_flight[name] = self.in_flight.get(name, 0) - 1

    def done(self, name: str, response_time_ms: float, error: str | None) -> None:
        self.completed[name] = self.completed.get(name, 0) + 1
        h = self.hist.setdefault(name, {})
        b = _bucket(max(0.0, float(response_time_ms or 0)) * 1000)
        h[b] = h.get(b, 0) + 1
        if error is not None:
            e = self.errors.setdefault(name, {})
            e[error] = e.get(error, 0) + 1

    def take(self) -> dict[str, Any]:
        """A snapshot to merge elsewhere (msgpack-able: Locust sends it to the master); resets
        everything but the in-flight counts, which are a level, not a count."""
        now = time.monotonic_ns()
        for name in self.in_flight:
            self._integrate(name, now)
        snap = {
            "in_flight": dict(self.in_flight),
            "busy_ns": self.busy_ns,
            "completed": self.completed,
            "errors": self.errors,
            "hist": {n: [[k, v] for k, v in h.items()] for n, h in self.hist.items()},
        }
        self.completed, self.errors, self.hist, self.busy_ns = {}, {}, {}, {}
        return snap


class Totals:
    """What the publisher adds up between two ``load`` messages: every snapshot's counts
    (each consumed once), and each sender's latest in-flight figures."""

    def __init__(self) -> None:
        self.completed: dict[str, int] = {}
        self.errors: dict[str, dict[str, int]] = {}
        self.hist: dict[str, dict[int, int]] = {}
        self.busy_ns: dict[str, int] = {}
        self.in_flight_of: dict[str, dict[str, int]] = {}  # sender -> name -> in flight
        self.senders: set[str] = set()  # who sent counts this interval

    def add(self, sender: str, snap: dict[str, Any]) -> None:
        self.senders.add(sender)
        self.in_flight_of[sender] = {str(k): int(v) for k, v in (snap.get("in_flight") or {}).items()}
        for name, n in (snap.get("completed") or {}).items():
            self.completed[name] = self.completed.get(name, 0) + int(n)
        for name, n in (snap.get("busy_ns") or {}).items():
            self.busy_ns[name] = self.busy_ns.get(name, 0) + int(n)
        for name, errs in (snap.get("errors") or {}).items():
            e = self.errors.setdefault(name, {})
            for kind, n in errs.items():
                e[kind] = e.get(kind, 0) + int(n)
        for name, pairs in (snap.get("hist") or {}).items():
            h = self.hist.setdefault(name, {})
            for us, n in pairs:
                h[int(us)] = h.get(int(us), 0) + int(n)

    def message(self, interval_ns: int, phase: str, workers: int) -> dict[str, Any]:
        """The ``load`` body for this interval; starts the next one."""
        in_flight: dict[str, int] = {}
        for per in self.in_flight_of.values():
            for name, n in per.items():
                in_flight[name] = in_flight.get(name, 0) + n
        names = list(dict.fromkeys([*in_flight, *self.completed, *self.busy_ns]))[: protocol.MAX_ATTRS]
        all_hist: dict[int, int] = {}
        all_errors: dict[str, int] = {}
        endpoints: dict[str, dict[str, Any]] = {}
        for name in names:
            done = self.completed.get(name, 0)
            ep: dict[str, Any] = {
                "in_flight": max(0, in_flight.get(name, 0)),
                "in_flight_mean": round(max(0, self.busy_ns.get(name, 0)) / interval_ns, 3),
                "completed": done,
                "rate": done * 1e9 / interval_ns,
            }
            h = self.hist.get(name)
            if h:
                ep.update(
                    lat_p50_ns=_percentile(h, 50),
                    lat_p90_ns=_percentile(h, 90),
                    lat_p99_ns=_percentile(h, 99),
                    lat_max_ns=max(h) * 1000,
                )
                for us, n in h.items():
                    all_hist[us] = all_hist.get(us, 0) + n
            errs = self.errors.get(name)
            if errs:
                ep["errors"] = dict(list(errs.items())[:16])
                for kind, n in errs.items():
                    all_errors[kind] = all_errors.get(kind, 0) + n
            endpoints[name] = ep
        completed = sum(self.completed.values())
        msg: dict[str, Any] = {
            "interval_ns": interval_ns,
            "rate": completed * 1e9 / interval_ns,
            "in_flight": max(0, sum(in_flight.values())),
            "completed": completed,
            "errors": dict(list(all_errors.items())[:16]),
            "workers": workers,
            "phase": phase,
            "origin_wall_ns": time.time_ns(),
            "source": "locust",
            "endpoints": endpoints,
        }
        if all_hist:
            msg.update(
                lat_p50_ns=_percentile(all_hist, 50),
                lat_p90_ns=_percentile(all_hist, 90),
                lat_p99_ns=_percentile(all_hist, 99),
                lat_max_ns=max(all_hist) * 1000,
            )
        self.completed, self.errors, self.hist, self.busy_ns = {}, {}, {}, {}
        self.senders = set()
        return msg
