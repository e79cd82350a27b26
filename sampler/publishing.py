"""Publishing: every message the session sends goes out here, through the
:class:`~spikewatch.sampler.wire.stream.Publisher` (which also feeds the journal and the
in-process listeners); sequence numbers are taken as each message is built."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping
from typing import Any

from . import __version__
from .state import SamplerState
from .wire import protocol


class Publishing(SamplerState):
    def _publish(self, topic: str, body: Mapping[str, Any]) -> None:
        assert self.publisher is not None
        self.publisher.publish(topic, body)

    def _event(self, t: int, fields: protocol.EventFields) -> None:
        assert self.publisher is not None
        self._publish(protocol.EVENT, protocol.event_body(self.publisher.next_seq(), t, fields))

    def _flush_samples(self) -> None:
        """Publish the current batch (every batch period, with the detail when due, and
        before any event, so the stream never shows an event ahead of the samples
        that led to it)."""
        if self.publisher is None:
            return
        msgs = self._take_samples()
        if msgs or self.publisher.holding:
            self.publisher.publish_all(msgs)

    def _take_samples(self) -> list[tuple[str, Mapping[str, Any]]]:
        """The open batch as a message to publish (none when it is empty), its seq
        taken now; the batch is empty afterwards."""
        assert self.publisher is not None
        taken = self.batch.take()
        if taken is None:
            return []
        ts, cols = taken
        return [(protocol.SAMPLES, protocol.samples_body(self.publisher.next_seq(), ts, cols))]

    def _drain_inlet(self) -> None:
        if self.inlet is None or self.publisher is None:
            return
        q = self.inlet.queue
        while q:
            t, topic, fields = q.popleft()
            self._publish(topic, protocol.inlet_body(self.publisher.next_seq(), t, fields))

    def counters(self) -> dict[str, int]:
        p = self.publisher
        return {
            "samples": self.samples,
            "ticks_missed": self.ticks_missed,
            "overruns": self.overruns,
            "published": p.published if p else 0,
            "dropped": p.dropped if p else 0,
            "inlet_ok": self.inlet.ok if self.inlet else 0,
            "inlet_bad": self.inlet.bad if self.inlet else 0,
            "journal_errors": self.journal.errors if self.journal else 0,
            # Records the journal could not keep (its retry buffer overflowed while
            # the disk was full); the stream itself still carried them.
            "journal_lost": self.journal.records_lost if self.journal else 0,
            "hwm_spikes": self.detail.hwm_spikes,
        }

    def _hello(self, t: int, final: bool = False, hold: bool = False) -> None:
        """``hold``: it goes out with the next publish (the batch due at the same tick)."""
        assert self.publisher is not None
        roots = sorted(self.tree.roots)
        tree = sorted(self.tree.procs)
        targets: list[protocol.Target] = []
        for kind, spec in self.config.target.describe():
            pids = tree if kind in ("cgroup", "unit") and self._tree_from_cgroup else roots
            targets.append({"kind": kind, "spec": spec, "pids": pids})
        cg: protocol.CgroupInfo | None = None
        if self.cg is not None:
            cg = {
                "version": self.cg.version,
                "path": self.cg.info.path,
                "limit": self.detail.limit,
                "owned": self.cg.owned,
            }
            lim = self.detail.limits
            if lim is not None:
                # limit is the effective one; these say whose it is.
                cg["limit_own"], cg["limit_from"], cg["limit_kind"] = lim.own, lim.source, lim.kind
        body = protocol.Hello(
            **protocol.header(self.publisher.next_seq(), t),
            session=self.session,
            host=socket.gethostname(),
            sampler_version=__version__,
            pid=os.getpid(),
            wall_ns=time.time_ns() - (time.monotonic_ns() - t),
            period_ns=self.period_ns,
            detail_period_ns=self.detail_ns,
            batch_period_ns=self.batch_ns,
            series=list(self.series),
            targets=targets,
            cgroup=cg,
            started_t=self.first_t,
            heap_metric=self._heap_hello(),
            tick_origin_t=self.origin_t or None,
            sched=self.sched,
            journal=str(self.journal.path) if self.journal else None,
            final=final,
            counters=self.counters(),
        )
        if hold:
            self.publisher.hold(((protocol.HELLO, body),))
        else:
            self._publish(protocol.HELLO, body)

    def _heap_hello(self) -> protocol.HeapMetricInfo | None:
        h = self._heap
        if h is None:
            return None
        return {"url": h.url, "name": h.name, "scrapes": h.scrapes, "failures": h.failures, "last_error": h.last_error}
