"""The sampler daemon: one thread samples, everything else fits in its slack.

Shape of a run (:meth:`Sampler.run`)::

    setup: resolve the target, bind sockets, open the journal, launch the command
    loop:  wait for the timerfd -> pread statm of every process + cgroup usage
           -> append to the current batch -> if work is due, do it in the slack
              before the next deadline (publish batch, detail tier, hello,
              tree refresh, child reaping, inlet republishing)
    end:   forward signals / let the launched command exit, flush, last hello

The hot loop (:meth:`Sampler._loop`) reads only kept-open descriptors. Slow work
is queued as small steps (generators) that run after a tick while time is left
before the next deadline; at least one step runs per tick so nothing starves.
Two helper threads do what must not wait for a tick: the journal writer (a
write can block) and the inlet reader (markers are stamped on arrival).

The parts it composes, one job each: :mod:`~spikewatch.sampler.config` (what was asked),
:mod:`~spikewatch.sampler.launch` (the command held before exec), :mod:`~spikewatch.sampler.batch`
(samples not yet published), :mod:`~spikewatch.sampler.detail` (the ~100 ms tier),
:mod:`~spikewatch.sampler.lifecycle` (start/exit/restart events) and
:mod:`~spikewatch.sampler.membership` (the tree kept in step with the processes).

Other parts hook in through :attr:`Sampler.listeners` (called with every
published message, off the hot path): e.g. a Prometheus exporter or a history
ring can subscribe in-process.
"""

from __future__ import annotations

import collections
import os
import shutil
import signal
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable, Generator, Mapping
from typing import Any

import zmq

from . import __version__, cgroup, procfs
from .autocgroup import AutoCgroup
from .batch import Batch
from .buildinfo import BuildEvidence, BuildProbe, inspect
from .config import MIN_PERIOD_NS, SamplerConfig, SamplerError, Target, check, default_journal_path
from .detail import DetailTier
from .launch import Launched
from .lifecycle import ProcessEvents
from .membership import Membership
from .procfs import PAGE_SIZE, ProcfsError, ProcHandle
from .pss import PssReader
from .ticker import Ticker, reset_scheduling, set_timer_slack, try_realtime
from .tree import ProcessTree
from .wire import protocol
from .wire.stream import EndpointError, Inlet, Journal, Listener, Publisher

__all__ = ["MIN_PERIOD_NS", "Sampler", "SamplerConfig", "SamplerError", "Target", "default_journal_path"]

Task = Generator[None, None, None]


def _once(fn: Callable[[], None]) -> Task:
    fn()
    return
    yield  # pragma: no cover - makes this a generator


class Sampler:
    """One sampling session. ``Sampler(config).run()`` returns the exit status."""

    #: Signals that end the run (forwarded to a launched command). `spikewatch sample`
    #: with CURVE keys drops SIGHUP from these: there it reloads the client keys.
    stop_signals: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self, config: SamplerConfig, *, context: zmq.Context[Any] | None = None) -> None:
        c = config
        self._pattern = check(c)
        self.config = c
        self.period_ns = c.period_ns
        self.detail_ns = max(c.detail_period_ns, c.period_ns)
        self.session = uuid.uuid4().hex
        self._ctx = context or zmq.Context.instance()
        self._log_fn = c.log or (lambda s: print(s, file=sys.stderr, flush=True))
        self.exit_status = 0
        self.sched = "other"
        self._our_signals: set[int] = set()  # signals we sent on our own account (--duration)

        # Filled by setup().
        self.publisher: Publisher | None = None
        self.inlet: Inlet | None = None
        self.journal: Journal | None = None
        self.cg: cgroup.MemoryCgroup | None = None
        self._tree_from_cgroup = False
        self.auto = AutoCgroup(self._log, self._log_fn)  # --cgroup auto
        self._child: Launched | None = None
        self._child_handle: ProcHandle | None = None
        self._setup_done = False
        self._journal_size_at_open = 0
        self.listeners: list[Listener] = []

        # Process tree, what we told about it, and the detail tier reading it.
        self.tree = ProcessTree(exclude=set(), pattern=self._pattern)
        self._build_probe = BuildProbe()
        self._launched_build: BuildEvidence | None = None
        self._heap: Any = None  # sampler.heapmetric.HeapScraper with --heap-metric
        self.events = ProcessEvents(
            self.tree, event=self._event, flush=self._flush_samples, probe=self._build_probe.submit
        )
        self.membership = Membership(self.tree, self.events, exited=self._proc_exited)
        self.batch = Batch()
        self.detail = DetailTier(
            self.tree, None, event=self._event, flush=self._flush_samples, headline=self.batch.headline_bytes
        )
        self.series: list[str] = [protocol.SERIES_RSS]
        # PSS/USS of the tree (shared pages counted once), read by a helper process.
        self.pss = PssReader(min_period_ns=self.detail_ns, budget=c.pss_budget)
        self.pss_peak: int | None = None

        # Counters and peaks.
        self.samples = 0
        self.ticks_missed = 0
        self.overruns = 0
        self.internal_errors = 0
        self._errors_seen: set[str] = set()
        self.first_t: int | None = None
        self.last_t: int | None = None
        self.origin_t = 0
        self._detail_t = 0
        self._ov_window: list[int] | None = None  # [first_t, count, missed, max_late]
        self._ov_last_pub = 0
        self._journal_error_sent = False

        # Scheduling.
        self._tasks: collections.deque[Task] = collections.deque()
        self._next_due = 0
        self._due: dict[str, int] = {}
        self._stop = False
        self._stop_reason = ""
        self._stop_at: int | None = None  # end after the tail
        self._signal_count = 0
        self._end_requested = threading.Event()

    @property
    def hwm_spikes(self) -> int:
        """Kernel high-water marks above every sample of their interval."""
        return self.detail.hwm_spikes

    @property
    def hwm_peak(self) -> dict[str, int]:
        return self.detail.hwm_peak

    @property
    def peak(self) -> dict[str, int]:
        """Largest sample of each series over the run."""
        return self.batch.peak

    @property
    def peak_t(self) -> dict[str, int]:
        return self.batch.peak_t

    # ------------------------------------------------------------ setup

    def _log(self, msg: str) -> None:
        if not self.config.quiet:
            self._log_fn(msg)

    def setup(self) -> None:
        """Resolve targets, bind sockets, open the journal, launch (blocked before exec)."""
        if self._setup_done:
            return
        c, t = self.config, self.config.target
        self.tree.exclude = {os.getpid(), *procfs.ancestors(os.getpid())}
        try:
            if t.cgroup is not None and not t.auto_cgroup:
                self.cg = cgroup.MemoryCgroup(cgroup.resolve(t.cgroup))
            elif t.unit is not None:
                self.cg = cgroup.MemoryCgroup(cgroup.unit_cgroup(t.unit))
            if self.cg is not None and t.pid is None and t.match is None and not t.argv:
                self._tree_from_cgroup = True
            if t.pid is not None:
                self.tree.add(t.pid, root=True)  # raises ProcessGone / AccessDenied
                if t.auto_cgroup:
                    self.cg = self.auto.find(t.pid)
            if t.argv:
                if shutil.which(t.argv[0]) is None:
                    raise SamplerError(f"command not found: {t.argv[0]!r} (give a path, or put it on PATH)")
                if c.limit is not None:
                    self.cg = cgroup.create_limited(c.limit, log=self._log)
                    self._tree_from_cgroup = True
        except (cgroup.CgroupError, ProcfsError) as exc:
            self._close_all()
            raise SamplerError(str(exc)) from None
        if self.cg is not None:
            self._sample_cgroup(self.cg, members=self._tree_from_cgroup)
        else:
            self.detail.baseline()
        try:
            self.publisher = Publisher(self._ctx, c.publish, socket_options=c.socket_options)
            self.publisher.listeners = self.listeners
            if c.inlet:
                self.inlet = Inlet(
                    self._ctx, c.inlet, socket_options=c.socket_options, sender_allowed=c.inlet_sender_allowed
                )
        except EndpointError as exc:
            self._close_all()
            raise SamplerError(str(exc)) from None
        journal = c.journal
        if journal is None and (t.argv or t.match is not None):
            # The ways a newcomer starts (a command, a name): keep what was seen.
            journal = default_journal_path()
        if journal:
            try:
                self._journal_size_at_open = os.path.getsize(journal) if os.path.isfile(journal) else 0
                (rb, rs), (kb, ks) = c.journal_rotate, c.journal_keep
                self.journal = Journal(journal, rotate_bytes=rb, rotate_s=rs, keep_bytes=kb, keep_s=ks)
            except OSError as exc:
                self._close_all()
                raise SamplerError(
                    f"cannot open the journal {journal}: {exc.strerror}; pick another path with --journal FILE"
                ) from None
            self.publisher.journal = self.journal
        if t.argv:
            self._launch(t.argv)
        if c.heap_metric is not None:
            from .heapmetric import HeapScraper  # http.client: only for those who ask

            self._heap = HeapScraper(*c.heap_metric, period_ns=self.detail_ns)
            self._heap.start()
        # A launched command is ours: its HWM may be reset, so every interval has its own.
        self.detail.reset_hwm = c.reset_hwm or self._child is not None
        self._setup_done = True

    def _sample_cgroup(self, cg: cgroup.MemoryCgroup, *, members: bool) -> None:
        """Add ``cg`` to what is sampled (at setup, or at the first ``--match`` with
        ``--cgroup auto``)."""
        self.cg = cg
        self.series.append(protocol.SERIES_CG_USAGE)
        self.batch.cgroup = True
        self.membership.follow_cgroup(cg, members=members)
        self.detail.cg = cg
        self.detail.baseline()

    def _follow_auto_cgroup(self) -> None:
        """After a tree scan (``--match`` + ``--cgroup auto``): a restart that landed in
        another cgroup is sampled there from now on (the hot loop's descriptor was
        re-pointed by :meth:`AutoCgroup.moved`)."""
        if self.cg is None:
            return
        new = self.auto.moved(self.tree.roots, self.tree.procs, self.cg)
        if new is None:
            return
        old, self.cg = self.cg, new
        self.membership.follow_cgroup(new, members=False)
        self.detail.cg = new
        self.detail.rebaseline_events()  # the new cgroup's counters are a new baseline, not news
        try:
            # Primes the peak and OOM baselines; publishes limit_change if its limit differs.
            self.detail.read_cgroup({}, {}, time.monotonic_ns(), time.monotonic_ns())
        except (cgroup.CgroupError, OSError):
            pass
        old.close()

    def _launch(self, argv: list[str]) -> None:
        """Start ``argv`` held before exec (:class:`~spikewatch.sampler.launch.Launched`); with
        --limit it is moved into the new cgroup while stopped."""
        # Its build profile, read now (before sampling starts), while the path is the file exec'd.
        self._launched_build = inspect(shutil.which(argv[0]) or argv[0])
        try:
            self._child = Launched(argv)
        except SamplerError:
            self._close_all()
            raise
        if not self._child.dies_with_sampler:
            self._log(
                "spikewatch: no setpriv with --pdeathsig (util-linux): "
                "if this sampler is SIGKILLed, the command keeps running"
            )
        try:
            if self.cg is not None and self.cg.owned:
                cgroup.move_pid(self._child.pid, self.cg)
            self._child_handle = self.tree.add(self._child.pid, root=True)
            self.membership.launched_pid = self._child.pid
        except (cgroup.CgroupError, ProcfsError) as exc:
            self._child.kill(timeout=None)
            self._close_all()
            raise SamplerError(str(exc)) from None

    def _release_child(self) -> None:
        """SIGCONT after the first tick: its first samples precede its first instruction."""
        child = self._child
        if child is None or not child.held:
            return
        t = time.monotonic_ns()
        child.release()
        argv = list(self.config.target.argv or [])
        h = self.tree.procs.get(child.pid)
        if h is not None:
            h.argv, h.start_t = argv, t
        self.events.launched(child.pid, t, os.getpid(), shutil.which(argv[0]) or argv[0], argv, self._launched_build)

    # ------------------------------------------------------------ process tree

    def _proc_exited(self, h: ProcHandle, t: int, exit_info: dict[str, int] | None = None) -> None:
        """A process left the tree: publish what we know, end the run if it was the launched one."""
        if h.gone:
            return
        h.gone = True
        was_root = h.pid in self.tree.roots
        self.tree.forget(h)
        self.detail.forget(h.pid)
        if exit_info is None:
            exit_info = {}
        oom = self.detail.oom_at_exit(h.pid, t, exit_info)
        announced = self.events.exited(h, t, oom, exit_info)
        if was_root:
            if self._pattern is not None and announced:
                self.events.root_exited(h.pid)
            launched = self._child is not None and h.pid == self._child.pid
            if launched:
                code = exit_info.get("code")
                sig = exit_info.get("signal")
                self.exit_status = code if code is not None else 128 + (sig or 0)
                if sig is not None and sig in self._our_signals:
                    self.exit_status = 0  # ended by --duration: a normal end of the run
            if launched or (self.config.target.pid is not None and not self.tree.roots):
                self._end_after_tail(t, "the target exited")

    def _end_after_tail(self, t: int, reason: str) -> None:
        if self._stop_at is None:
            self._stop_at = t + self.config.tail_ns
            self._stop_reason = self._stop_reason or reason
            self._schedule("end", self._stop_at)

    def _on_dead(self, dead: list[int]) -> None:
        """Hot-loop path: some statm reads failed with ESRCH (process reaped)."""
        t = time.monotonic_ns()
        for fd in dead:
            h = self.tree.by_fd.get(fd)
            if h is None:
                continue
            if self._child is not None and h.pid == self._child.pid:
                self.tree.drop_fd(h)  # the launched child: reaped by _reap_child, which knows the status
                continue
            try:
                self._proc_exited(h, t)
            except Exception:
                self.tree.drop_fd(h)
                self._internal_error()
        dead.clear()

    def _reap_child(self, t: int) -> None:
        info = self._child.reap() if self._child is not None else None
        if info is not None and self._child_handle is not None:
            self._proc_exited(self._child_handle, t, info)

    def _wait_for_match(self) -> bool:
        """Block (publishing hellos) until a process matches; False if stopped first."""
        assert self._pattern is not None
        self._log(f"spikewatch: waiting for a process matching {self._pattern.pattern!r}")
        next_hello = 0
        end = None if self.config.duration_ns is None else time.monotonic_ns() + self.config.duration_ns
        while not self._stop:
            members = self.tree.find_matches(time.monotonic_ns())
            if members:
                self.membership.apply(members, time.monotonic_ns())
                return True
            now = time.monotonic_ns()
            if end is not None and now >= end:
                return False
            if now >= next_hello:
                self._hello(now)
                next_hello = now + self.config.hello_ns
            self._drain_inlet()
            self._end_requested.wait(0.1)
        return False

    # ------------------------------------------------------------ publishing

    def _publish(self, topic: str, body: Mapping[str, Any]) -> None:
        assert self.publisher is not None
        self.publisher.publish(topic, body)

    def _event(self, t: int, fields: protocol.EventFields) -> None:
        assert self.publisher is not None
        self._publish(protocol.EVENT, protocol.event_body(self.publisher.next_seq(), t, fields))

    def _flush_samples(self) -> None:
        """Publish the current batch (called every ~20 ms and before any event,
        so the stream never shows an event ahead of the samples that led to it)."""
        if self.publisher is None:
            return
        taken = self.batch.take()
        if taken is None:
            return
        ts, cols = taken
        self._publish(protocol.SAMPLES, protocol.samples_body(self.publisher.next_seq(), ts, cols))

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

    def _hello(self, t: int, final: bool = False) -> None:
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
        self._publish(protocol.HELLO, body)

    def _heap_hello(self) -> protocol.HeapMetricInfo | None:
        h = self._heap
        if h is None:
            return None
        return {"url": h.url, "name": h.name, "scrapes": h.scrapes, "failures": h.failures, "last_error": h.last_error}

    # ------------------------------------------------------------ slow work

    def _schedule(self, name: str, at: int) -> None:
        self._due[name] = at
        self._next_due = min(self._due.values())

    def _run_due(self, t: int) -> None:
        due = self._due
        c = self.config

        def periodic(name: str, interval: int) -> bool:
            # On the grid of its first due time (a tick a few µs early must not
            # push the work a whole period later), never in a catch-up burst.
            at = due.get(name)
            if at is None or t < at:
                return False
            at += interval
            due[name] = at if at > t else t + interval
            return True

        if periodic("batch", c.batch_ns):
            self._tasks.appendleft(_once(lambda: self._batch_work(t)))
        if periodic("detail", self.detail_ns):
            self._tasks.append(_once(lambda: self._detail(time.monotonic_ns())))
        if periodic("hello", c.hello_ns):
            self._tasks.append(_once(lambda: self._hello(time.monotonic_ns())))
        if periodic("tree", min(c.tree_ns, 100_000_000) if self.membership.cheap else c.tree_ns):
            if not self.membership.scan_running:
                self._tasks.append(self.membership.scan())
                if self.auto.fd >= 0:
                    self._tasks.append(_once(self._follow_auto_cgroup))
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

    def _slack(self, t: int, next_deadline: int) -> None:
        if self.first_t is None and self.batch.times:
            self.first_t = self.batch.times[0]
        if t >= self._next_due:
            self._run_due(t)
        tasks = self._tasks
        limit = next_deadline - self.period_ns // 4
        mono = time.monotonic_ns
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

    def _internal_error(self) -> None:
        import traceback

        self.internal_errors += 1
        where = traceback.extract_tb(sys.exc_info()[2])[-1]
        key = f"{where.filename}:{where.lineno}"
        if key not in self._errors_seen:
            self._errors_seen.add(key)
            self._log_fn("spikewatch: internal error (sampling goes on):\n" + traceback.format_exc().rstrip())

    def _batch_work(self, t: int) -> None:
        self._reap_child(t)
        self._flush_samples()
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
        if j is not None and j.errors and not self._journal_error_sent:
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

    def _detail(self, t: int) -> None:
        """The ~100 ms tier (:class:`~spikewatch.sampler.detail.DetailTier`), one message per interval."""
        assert self.publisher is not None
        # A launched command killed just now is reaped first, so that an OOM kill
        # seen below is attributed to its pid.
        self._reap_child(t)
        # Largest samples of the interval: publish the open batch first, so that
        # every sample belongs to exactly one interval.
        self._flush_samples()
        imax = self.batch.imax
        t_from = self._detail_t or self.first_t or t
        body = self.detail.read_procs(imax, t_from, t)
        self._take_pss(body, imax.get(protocol.SERIES_RSS))
        cg = self.cg
        if cg is not None:
            try:
                self.detail.read_cgroup(body, imax, t_from, t)
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
        self.batch.next_interval()
        self._detail_t = t
        # The header (and so the seq) is taken now, after the samples and events
        # published above: seq stays in order.
        self._publish(protocol.DETAIL, {**protocol.header(self.publisher.next_seq(), t), **body})

    def _take_pss(self, body: dict[str, Any], rss: int | None) -> None:
        """A PSS reading that arrived since the last detail goes into this one; the
        next sweep is asked for when due (never waited for)."""
        r = self.pss.poll(time.monotonic_ns(), tuple(self.tree.procs), rss)
        if r is not None:
            body.update(r.detail_fields())
            if self.pss_peak is None or r.pss > self.pss_peak:
                self.pss_peak = r.pss

    # ------------------------------------------------------------ lifecycle

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
        self._end_requested.set()

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.request_stop(f"signal {signal.Signals(signum).name}", signum)

    def run(self) -> int:
        """Sample until the target ends, ``--duration`` passes or a signal arrives;
        returns the exit status (the launched command's, else 0)."""
        self.setup()
        old_handlers: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():
            for s in self.stop_signals:
                old_handlers[s] = signal.signal(s, self._on_signal)
        ticker: Ticker | None = None
        try:
            if self.inlet is not None:
                self.inlet.start()
            if self.journal is not None:
                size = self._journal_size_at_open
                self._log(
                    f"spikewatch: journal {self.journal.path}"
                    + (f" (appending to the {size} bytes already there)" if size else "")
                )
            if self._pattern is not None and not self._wait_for_match():
                self._stop_reason = (
                    self._stop_reason + ": " if self._stop_reason else ""
                ) + f"no process matched {self._pattern.pattern!r}, nothing sampled"
                self.exit_status = 3  # spikewatch.exits.EXIT_RUNTIME: a run with no target is no result
                return self._finish(time.monotonic_ns())
            if self.config.target.auto_cgroup and self.cg is None:
                cg = self.auto.attach(self.tree.roots, self.tree.procs)
                if cg is None:
                    self.exit_status = 3  # spikewatch.exits.EXIT_RUNTIME
                    self._stop_reason = "--cgroup auto: the matched process's cgroup was not found"
                    return self._finish(time.monotonic_ns())
                self._sample_cgroup(cg, members=False)
            self.pss.start()  # before the sampling thread turns real-time
            set_timer_slack(1)
            if self.config.realtime:
                self.sched = "fifo" if try_realtime() else "other"
            ticker = Ticker(self.period_ns)
            self.origin_t = ticker.start()
            c = self.config
            o = self.origin_t
            self._due = {
                "batch": o + c.batch_ns,
                "detail": o + self.detail_ns,
                "hello": o,
                "tree": o + (10_000_000 if not self._tree_from_cgroup else 0),
            }
            if c.duration_ns is not None:
                self._due["duration"] = o + c.duration_ns
            self._next_due = min(self._due.values())
            if self._child is not None:
                self._tasks.append(_once(self._release_child))
            for pid in sorted(self.tree.roots):
                h = self.tree.procs.get(pid)
                if h is not None and self._child is None:
                    self.events.announce(h, o)
            self._detail_t = o
            self._loop(ticker)
            return self._finish(time.monotonic_ns())
        finally:
            if ticker is not None:
                ticker.close()
            if self.sched == "fifo":
                reset_scheduling()  # in-process users get their thread back as it was
            for s, hnd in old_handlers.items():
                signal.signal(s, hnd)
            self._close_all()
            self._drop_empty_journal()

    def _drop_empty_journal(self) -> None:
        """A journal this run created and never wrote a sample to would look like a
        recording of nothing: remove it and say so."""
        j = self.journal
        if j is None or self.samples or self._journal_size_at_open:
            return
        try:
            os.unlink(j.path)
        except OSError:
            return
        self._log_fn(f"spikewatch: removed the journal {j.path}: it held no samples")

    def _loop(self, ticker: Ticker) -> None:
        """The hot loop: wait, read kept-open files, append; the rest in the slack."""
        read, tfd, one = os.read, ticker.fd, (1).to_bytes(8, "little")
        pread = os.pread
        mono = time.monotonic_ns
        fds = self.tree.fds
        cgfd = self.auto.fd if self.auto.fd >= 0 else self.cg.usage_fd if self.cg is not None else -1
        # The v2 root cgroup has no usage file: its usage is summed from memory.stat.
        cg_read = self.cg.read_usage if self.cg is not None and cgfd < 0 else None
        times, rss_col, cg_col = self.batch.times, self.batch.rss, self.batch.cgu
        t_append, r_append, c_append = times.append, rss_col.append, cg_col.append
        page = PAGE_SIZE
        period = self.period_ns
        deadline = self.origin_t - period
        dead: list[int] = []
        tasks = self._tasks
        samples = self.samples
        self.first_t = None
        while not self._stop:
            expirations = read(tfd, 8)  # blocks until the next deadline
            t = mono()
            deadline += period
            if expirations != one:  # the timer fired more than once: ticks were missed
                n = int.from_bytes(expirations, "little")
                deadline += (n - 1) * period
                self._overrun(n - 1, t - deadline, t)
            rss = 0
            for fd in fds:
                try:
                    rss += int(pread(fd, 64, 0).split(None, 2)[1])
                except OSError:
                    dead.append(fd)
            t_append(t)
            r_append(rss * page)
            if cgfd >= 0:
                try:
                    c_append(int(pread(cgfd, 32, 0)))
                except OSError:
                    c_append(0)
            elif cg_read is not None:
                try:
                    c_append(cg_read())
                except (OSError, ValueError, cgroup.CgroupError):
                    c_append(0)
            samples += 1
            if dead:
                self._on_dead(dead)
            if t >= self._next_due or tasks:
                self.samples = samples
                self.last_t = t
                self._slack(t, deadline + period)
        self.samples = samples
        self.last_t = times[-1] if times else self.last_t

    def _finish(self, t: int) -> int:
        """After the loop: last batch, a final detail, the last hello, the summary."""
        if self.publisher is not None:
            if self._child is not None:
                self._reap_child(t)
            self._flush_samples()
            if self.first_t is not None:
                self.detail.final = True
                self._detail(time.monotonic_ns())
            self._drain_inlet()
            self._batch_work(time.monotonic_ns())
            self._hello(time.monotonic_ns(), final=True)
        self._log(self.summary())
        return self.exit_status

    def summary(self) -> str:
        from .units import format_bytes

        parts = []
        if self.first_t is not None and self.last_t is not None and self.last_t > self.first_t:
            span = (self.last_t - self.first_t) / 1e9
            rate = (self.samples - 1) / span if self.samples > 1 else 0.0
            parts.append(f"{self.samples} samples in {span:.1f} s ({rate:.0f} Hz of {1e9 / self.period_ns:.0f})")
        else:
            parts.append(f"{self.samples} samples")
        parts.append(f"{self.overruns} overruns / {self.ticks_missed} missed ticks")
        for name in self.series:
            if name in self.peak:
                s = f"peak {name} {format_bytes(self.peak[name])}"
                hwm = self.detail.hwm_peak.get(name)
                if hwm is not None and hwm > self.peak[name]:
                    s += f" (kernel hwm {format_bytes(hwm)})"
                parts.append(s)
        if self.pss_peak is not None:
            parts.append(f"peak tree pss {format_bytes(self.pss_peak)}")
        if self.detail.hwm_spikes:
            parts.append(f"{self.detail.hwm_spikes} hwm spikes")
        if self.journal is not None:
            parts.append(f"journal {self.journal.path}")
        if self._stop_reason:
            parts.append(self._stop_reason)
        return "spikewatch: " + ", ".join(parts)

    def _close_all(self) -> None:
        self._build_probe.close()
        if self._heap is not None:
            self._heap.stop()
        self.pss.stop()
        if self._child is not None:
            self._child.kill()
        self.tree.close()
        if self.inlet is not None:
            self.inlet.close()
            self.inlet = None
        if self.journal is not None:
            self.journal.close()
        if self.publisher is not None:
            self.publisher.close()
            self.publisher = None
        self.membership.close()
        self.auto.close()
        if self.cg is not None:
            try:
                if self.cg.owned:
                    cgroup.remove(self.cg)
                else:
                    self.cg.close()
            except cgroup.CgroupError as exc:
                self._log_fn(f"spikewatch: {exc}")
