"""The sampler daemon: one thread samples, everything else fits in its slack.

Shape of a run (:meth:`Sampler.run`)::

    setup: resolve the target, bind sockets, open the journal, launch the command
    loop:  wait for the timerfd -> pread statm of every process + cgroup usage
           -> append to the current batch -> if work is due, do it in the slack
              before the next deadline (publish batch, detail tier, hello,
              tree refresh, child reaping, inlet republishing)
    end:   forward signals / let the launched command exit, flush, last hello

The hot loop (:func:`~spikewatch.sampler.hotloop.sample_loop`) reads only kept-open descriptors. Slow work
is queued as small steps (generators) that run after a tick while time is left
before the next deadline; at least one step runs per tick so nothing starves.
Two helper threads do what must not wait for a tick: the journal writer (a
write can block; it encodes between ticks, :func:`~spikewatch.sampler.ticker.between_ticks`)
and the inlet reader (markers are stamped on arrival).

The parts it composes, one job each: :mod:`~spikewatch.sampler.config` (what was asked),
:mod:`~spikewatch.sampler.launch` (the command held before exec), :mod:`~spikewatch.sampler.batch`
(samples not yet published), :mod:`~spikewatch.sampler.detail` (the ~100 ms tier),
:mod:`~spikewatch.sampler.lifecycle` (start/exit/restart events) and
:mod:`~spikewatch.sampler.membership` (the tree kept in step with the processes).

The class is built in layers, one job a module: :mod:`~spikewatch.sampler.state`
(what a session holds), :mod:`~spikewatch.sampler.publishing` (messages out),
:mod:`~spikewatch.sampler.targets` (cgroup, launched command, exits),
:mod:`~spikewatch.sampler.slack` (slow work between ticks, stopping),
:mod:`~spikewatch.sampler.hotloop` (the loop itself) and this module (setup, run,
signals, the end of the run).

Other parts hook in through :attr:`Sampler.listeners` (called with every
published message, off the hot path): e.g. a Prometheus exporter or a history
ring can subscribe in-process.
"""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from typing import Any

import zmq

from . import cgroup, procfs
from .buildinfo import inspect
from .config import MIN_PERIOD_NS, SamplerConfig, SamplerError, Target, default_journal_path
from .detail import DetailTier
from .hotloop import sample_loop
from .launch import Launched
from .lifecycle import ProcessEvents
from .membership import Membership
from .procfs import ProcfsError
from .slack import SlackWork, once
from .ticker import Ticker, between_ticks, reset_scheduling, set_timer_slack, try_realtime
from .wire.stream import EndpointError, Inlet, Journal, Publisher

__all__ = ["MIN_PERIOD_NS", "Sampler", "SamplerConfig", "SamplerError", "Target", "default_journal_path"]


class Sampler(SlackWork):
    """One sampling session. ``Sampler(config).run()`` returns the exit status."""

    def __init__(self, config: SamplerConfig, *, context: zmq.Context[Any] | None = None) -> None:
        super().__init__(config, context=context)
        self.events = ProcessEvents(
            self.tree, event=self._event, flush=self._flush_samples, probe=self._build_probe.submit
        )
        self.membership = Membership(self.tree, self.events, exited=self._proc_exited)
        self.detail = DetailTier(
            self.tree, None, event=self._event, flush=self._flush_samples, headline=self.batch.headline_bytes
        )

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

    def _on_child(self, signum: int, frame: Any) -> None:
        # A launched command's exit (an OOM kill among them) is reaped after the next
        # tick instead of at the next batch (up to 100 ms later): its events keep the
        # tick's precision, and waiting for it costs nothing.
        self._child_signalled = True
        self._next_due = 0

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
            if self._child is not None:
                old_handlers[signal.SIGCHLD] = signal.signal(signal.SIGCHLD, self._on_child)
                self._sigchld = True
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
            if self.journal is not None:
                pause = between_ticks(self.origin_t, self.period_ns)
                if pause is not None:
                    self.journal.pause = pause
                    self.journal.defer_wake = True  # kicked after each burst (SlackWork._batch_work)
            c = self.config
            o = self.origin_t
            self._due = {
                "batch": o + self.batch_ns,
                "detail": o + self.detail_ns,
                "hello": o,
                "tree": o + (10_000_000 if not self._tree_from_cgroup else 0),
            }
            if c.duration_ns is not None:
                self._due["duration"] = o + c.duration_ns
            self._next_due = min(self._due.values())
            if self._child is not None:
                self._tasks.append(once(self._release_child))
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
        sample_loop(self, ticker)

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
