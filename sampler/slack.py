"""Slow work in the slack of the hot loop: what is due (batches, detail tier, hello,
tree refresh, the end of the run) is queued as small steps (generators) that run after
a tick while time is left before the next deadline; at least one step runs per tick so
nothing starves."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from typing import Any

from . import cgroup
from .state import Task
from .targets import Targets
from .wire import protocol


def once(fn: Callable[[], None]) -> Task:
    fn()
    return
    yield  # pragma: no cover - makes this a generator


class SlackWork(Targets):
    def _periodic(self, name: str, interval: int, t: int) -> bool:
        """Due now? Then the next time is the next point of its grid (a tick a few
        µs late must not push the work a whole period later), never a catch-up burst."""
        due = self._due
        at = due.get(name)
        if at is None or t < at:
            return False
        # On the grid from the loop's origin, whatever the first time was: work that is
        # due together (tree refresh, detail, hello) shares one burst, and its caches.
        o = self.origin_t
        due[name] = o + ((t - o) // interval + 1) * interval
        return True

    def _run_due(self, t: int) -> tuple[bool, bool]:
        """Queue what is due; whether the batch work and the detail are (the caller runs them first)."""
        due = self._due
        c = self.config
        periodic = self._periodic
        batch = periodic("batch", self.batch_ns, t)
        detail = periodic("detail", self.detail_ns, t)
        if periodic("hello", c.hello_ns, t):
            if batch:
                try:
                    self._hello(t, hold=True)  # out with this batch: one ZeroMQ wake-up, not two
                except Exception:
                    self._internal_error()
            else:
                self._tasks.append(once(lambda: self._hello(time.monotonic_ns())))
        # Every tree_ns (200 ms) for every kind of target, and then only when a process
        # was created since (Membership.unchanged): our own cgroup's cgroup.procs costs
        # ~95 µs after the loop's sleeps on a VM (v1 builds the pid list); its cgroup,
        # sampled every tick with its peak, holds a shorter-lived process.
        if periodic("tree", c.tree_ns, t):
            m = self.membership
            if not m.scan_running:
                # A --match pattern can match a process that merely exec'd (no new pid).
                if self.tree.pattern is not None or not m.unchanged(t):
                    if m.cheap and self.tree.cgroup_pids is not None:
                        steps = m.quick_scan()
                        if steps is not None:
                            self._tasks.append(steps)
                    else:
                        self._tasks.append(m.scan())
                if self.auto.fd >= 0:
                    self._tasks.append(once(self._follow_auto_cgroup))
        if t >= due.get("end", 1 << 62):
            due.pop("end")
            self._stop = True
        if t >= due.get("duration", 1 << 62):
            due.pop("duration")
            self._our_signals = {signal.SIGTERM, signal.SIGKILL}
            self.request_stop("duration reached", signal.SIGTERM)
        if t >= due.get("grace", 1 << 62):
            due.pop("grace")
            if self._child is not None and self._child.running:
                self._log("spikewatch: the command did not exit in time; killing it")
                self._signal_child(signal.SIGKILL)
                self._schedule("grace", t + 2_000_000_000)
            else:
                self._stop = True
        self._next_due = min(due.values())
        return batch, detail

    def _slack(self, t: int, next_deadline: int) -> None:
        if self.first_t is None and self.batch.times:
            self.first_t = self.batch.times[0]
        tasks = self._tasks
        limit = next_deadline - self.period_ns // 4
        mono = time.monotonic_ns
        if self._child_signalled:
            self._child_signalled = False
            try:
                self._reap_child(t)
            except Exception:
                self._internal_error()
        # The batch work and the detail are called directly, not queued: they are the
        # most frequent slow work, and a queued step costs a generator and a closure.
        if t >= self._next_due:
            batch, detail = self._run_due(t)
            if batch or detail:
                try:
                    self._batch_work(t, detail, batch)
                except Exception:
                    self._internal_error()  # reported once per place; sampling goes on
                if mono() >= limit:
                    return  # it was this tick's step; the queue waits for the next
        while tasks:
            try:
                next(tasks[0])
            except StopIteration:
                tasks.popleft()
            except Exception:
                # A bug in the slow work must not stop the sampling: report it
                # (with its traceback, once per place) and drop that step.
                tasks.popleft()
                self._internal_error()
            if mono() >= limit:
                break

    def _batch_work(self, t: int, detail: bool = False, batch: bool = True) -> None:
        """What is due at a detail or batch time. Messages go out every batch period:
        a detail due in between (and its interval's samples) waits for it (held)."""
        if not self._sigchld or t >= self._reap_due:
            # With our SIGCHLD handler the exit is reaped after the tick it arrives at
            # (_slack); this poll, once a second then, is only a backstop.
            self._reap_due = t + 1_000_000_000
            self._reap_child(t)
        if detail:
            try:
                # now, not the tick's t: the interval ends after its last sample
                self._detail(time.monotonic_ns(), publish=batch)  # the open batch goes with it
            except Exception:
                self._internal_error()
        if not batch:
            return  # the rest waits for the batch period (each call here costs, cold)
        if not detail:
            self._flush_samples()  # else the detail published the batch, and what was held
        self._drain_inlet()
        for pid, exe, ev in self._build_probe.results():
            self._event(
                t,
                protocol.Build(kind=protocol.EV_BUILD, pid=pid, exe=exe, build=ev.profile, build_evidence=ev.evidence),
            )
        if self._pattern is None or self.tree.roots:
            self.membership.check_roots(t)
        self.events.churn(t)
        w = self._ov_window
        if w is not None and t - self._ov_last_pub >= 100_000_000:
            self._ov_window = None
            self._ov_last_pub = t
            self._event(w[0], protocol.Overrun(kind=protocol.EV_OVERRUN, missed=w[2], late_ns=w[3], count=w[1]))
        j = self.journal
        if j is None:
            return
        if j.wake_due:
            # A block made whole by this burst is encoded from the next tick on, between
            # ticks (Journal.defer_wake): woken now, its thread would contend for the GIL
            # with the rest of the burst at every system call.
            self._tasks.append(once(j.kick))
        if j.errors and not self._journal_error_sent:
            self._journal_error_sent = True
            self._log_fn(f"spikewatch: cannot write the journal {j.path}: {j.last_error}; sampling goes on")
            self._event(
                t,
                protocol.JournalError(
                    kind=protocol.EV_JOURNAL_ERROR, path=str(j.path), error=j.last_error, records_lost=j.records_lost
                ),
            )

    def _overrun(self, missed: int, late_ns: int, t: int) -> None:
        """Out of line: the timer expired ``missed`` extra times before we woke."""
        self.ticks_missed += missed
        self.overruns += 1
        w = self._ov_window
        if w is None:
            self._ov_window = [t, 1, missed, late_ns]
        else:
            w[1] += 1
            w[2] += missed
            if late_ns > w[3]:
                w[3] = late_ns

    def _detail(self, t: int, publish: bool = True) -> None:
        """The ~100 ms tier (:class:`~spikewatch.sampler.detail.DetailTier`), one message per interval."""
        assert self.publisher is not None
        # The caller reaps a launched command first, so that an OOM kill seen here is
        # attributed to its pid. The files are read first and the open batch goes out
        # after them, back to back with the detail (one wake-up of ZeroMQ's I/O thread
        # for both): the interval's largest samples include that batch, so every sample
        # belongs to exactly one interval. An event raised on the way publishes the
        # batch before itself.
        imax = self.batch.interval_max()
        t_from = self._detail_t or self.first_t or t
        body = self.detail.read_procs(imax, t_from, t)
        self._take_pss(body, imax.get(protocol.SERIES_RSS))
        cg = self.cg
        if cg is not None:
            # The usage the hot loop read at this tick (0 is its mark of a failed read)
            cgu = self.batch.cgu
            usage = cgu[-1] if self.auto.fd < 0 and cg.usage_fd >= 0 and cgu and cgu[-1] > 0 else None
            try:
                self.detail.read_cgroup(body, imax, t_from, t, usage)
            except cgroup.CgroupGone:
                if self._tree_from_cgroup and not cg.owned:
                    self._log(f"spikewatch: cgroup {cg.info.dir} was removed")
                    self._end_after_tail(t, "the cgroup was removed")
            except OSError:
                pass
        else:
            self.detail.refresh_host_oom()
        if self._heap is not None:
            # The service's own heap figure, if one arrived within two detail periods.
            heap = self._heap.latest(2 * self.detail_ns)
            if heap is not None:
                body["heap"] = heap
        msgs = self._take_samples()
        self.batch.next_interval()
        self._detail_t = t
        # The header (and so the seq) is taken now, after the samples and events
        # published above: seq stays in order.
        msgs.append((protocol.DETAIL, {**protocol.header(self.publisher.next_seq(), t), **body}))
        if publish:
            self.publisher.publish_all(msgs)
        else:
            self.publisher.hold(msgs)

    def _take_pss(self, body: dict[str, Any], rss: int | None) -> None:
        """A PSS reading that arrived since the last detail goes into this one; the
        next sweep is asked for when due (never waited for)."""
        r = self.pss.poll(time.monotonic_ns(), tuple(self.tree.procs), rss)
        if r is not None:
            body.update(r.detail_fields())
            if self.pss_peak is None or r.pss > self.pss_peak:
                self.pss_peak = r.pss

    def _signal_child(self, sig: int) -> None:
        if self._child is not None:
            self._child.signal(sig)

    def request_stop(self, reason: str = "stop requested", sig: int = signal.SIGTERM) -> None:
        """End the run: a launched command gets ``sig`` and is waited for (then
        killed after the grace period); otherwise the loop ends at the next tick."""
        self._signal_count += 1
        if self._child is not None and self._child.running and self._signal_count <= 2:
            self._stop_reason = reason
            self._signal_child(sig)
            if self._signal_count == 1:
                self._schedule("grace", time.monotonic_ns() + self.config.stop_grace_ns)
            else:
                self._schedule("grace", time.monotonic_ns())
            return
        self._stop_reason = self._stop_reason or reason
        self._stop = True
