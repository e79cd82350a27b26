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

Other parts hook in through :attr:`Sampler.listeners` (called with every
published message, off the hot path): e.g. a Prometheus exporter or a history
ring can subscribe in-process.
"""

from __future__ import annotations

import collections
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Generator

import zmq

from . import __version__, cgroup, procfs, protocol
from .procfs import PAGE_SIZE, ProcHandle, ProcfsError
from .stream import EndpointError, Inlet, Journal, Listener, Publisher
from .tree import ProcessTree
from .ticker import Ticker, reset_scheduling, set_timer_slack, try_realtime

MIN_PERIOD_NS = 100_000
_HWM_ABS_NOISE = 1 << 20  # VmHWM reads ~0.2 MB low, v1 max_usage ~0.5 MB high (FACTS.md)
_HWM_REL_NOISE = 0.02
# The launched command first stops itself; we SIGCONT it once sampling runs.
# If the sampler dies before that, the orphaned process group gets SIGHUP.
_LAUNCH_SHIM = 'kill -STOP $$; exec "$@"'

Task = Generator[None, None, None]


class SamplerError(Exception):
    """A problem the user can fix; the message says how."""


@dataclass
class Target:
    """What to sample. One process target (pid, match or launch) and/or one
    cgroup target (cgroup or unit)."""

    pid: int | None = None
    match: str | None = None
    argv: list[str] | None = None
    cgroup: str | None = None
    unit: str | None = None

    def describe(self) -> list[tuple[str, str]]:
        out = []
        if self.pid is not None:
            out.append(("pid", str(self.pid)))
        if self.match is not None:
            out.append(("match", self.match))
        if self.argv:
            out.append(("launch", " ".join(self.argv)))
        if self.cgroup is not None:
            out.append(("cgroup", self.cgroup))
        if self.unit is not None:
            out.append(("unit", self.unit))
        return out


@dataclass
class SamplerConfig:
    target: Target
    period_ns: int = 1_000_000
    detail_period_ns: int = 100_000_000
    publish: str = protocol.DEFAULT_PUBLISH
    inlet: str | None = protocol.DEFAULT_INLET
    journal: str | None = None
    limit: int | None = None
    duration_ns: int | None = None
    reset_hwm: bool = False
    realtime: bool = True  # SCHED_FIFO for the sampling thread when permitted
    quiet: bool = False
    batch_ns: int = 20_000_000
    hello_ns: int = 1_000_000_000
    tree_ns: int = 200_000_000
    tail_ns: int = 300_000_000
    stop_grace_ns: int = 10_000_000_000
    socket_options: dict[int, Any] = field(default_factory=dict)
    # Bound for in-process use: where to print the start line and the summary.
    log: Callable[[str], None] | None = None


def default_journal_path(now: float | None = None) -> str:
    """``spikewatch-YYYYmmdd-HHMMSS.journal`` in the current folder (``-2``, ``-3``…
    when a run in the same second already took the name)."""
    stem = time.strftime("spikewatch-%Y%m%d-%H%M%S", time.localtime(now))
    path, n = f"{stem}.journal", 1
    while os.path.exists(path):
        n += 1
        path = f"{stem}-{n}.journal"
    return path


def _once(fn: Callable[[], None]) -> Task:
    fn()
    return
    yield  # pragma: no cover - makes this a generator


class Sampler:
    """One sampling session. ``Sampler(config).run()`` returns the exit status."""

    def __init__(self, config: SamplerConfig, *, context: zmq.Context | None = None) -> None:
        c = config
        if c.period_ns < MIN_PERIOD_NS:
            raise SamplerError(f"the period must be at least 100us (got {c.period_ns} ns)")
        t = c.target
        procs = sum(x is not None and x != [] for x in (t.pid, t.match, t.argv))
        cgs = sum(x is not None for x in (t.cgroup, t.unit))
        if procs > 1 or cgs > 1 or procs + cgs == 0:
            raise SamplerError("give one target: --pid N, --match REGEX or -- CMD (optionally with one of --cgroup PATH / --unit NAME)")
        if c.limit is not None and not t.argv:
            raise SamplerError("--limit applies to a launched command: spikewatch sample --limit 512M -- CMD ARGS")
        if c.limit is not None and cgs:
            raise SamplerError("--limit creates its own cgroup; drop --cgroup/--unit")
        self.config = c
        self.period_ns = c.period_ns
        self.detail_ns = max(c.detail_period_ns, c.period_ns)
        self.session = uuid.uuid4().hex
        self._ctx = context or zmq.Context.instance()
        self._log_fn = c.log or (lambda s: print(s, file=sys.stderr, flush=True))
        self.exit_status = 0
        self.sched = "other"
        self._our_signals: set[int] = set()  # signals we sent on our own account (--duration)
        self._pattern: re.Pattern[str] | None = None
        if t.match is not None:
            try:
                self._pattern = re.compile(t.match)
            except re.error as exc:
                raise SamplerError(f"--match {t.match!r} is not a regular expression: {exc}") from None

        # Filled by setup().
        self.publisher: Publisher | None = None
        self.inlet: Inlet | None = None
        self.journal: Journal | None = None
        self.cg: cgroup.MemoryCgroup | None = None
        self._tree_from_cgroup = False
        self._procs_fd = -1
        self._child: subprocess.Popen[bytes] | None = None
        self._child_handle: ProcHandle | None = None
        self._held = False  # the launched command waits (stopped) for us
        self._setup_done = False
        self._journal_size_at_open = 0
        self.listeners: list[Listener] = []

        # Process tree, and what we told about it.
        self.tree = ProcessTree(exclude=set(), pattern=self._pattern)
        self._announced: set[int] = set()  # live pids whose proc_start went out
        self._muted: set[int] = set()  # live pids over the proc_start budget
        self._recent_exits: collections.deque[tuple[list[str], int, int]] = collections.deque(maxlen=64)
        self._root_exits: collections.deque[int] = collections.deque(maxlen=16)
        self._proc_events_this_s = 0
        self._proc_events_window = 0

        # Current batch (lists mutated in place: the hot loop holds them).
        self._times: list[int] = []
        self._rss: list[int] = []
        self._cgu: list[int] = []
        self.series: list[str] = [protocol.SERIES_RSS]

        # Counters and peaks.
        self.samples = 0
        self.ticks_missed = 0
        self.overruns = 0
        self.hwm_spikes = 0
        self.internal_errors = 0
        self._errors_seen: set[str] = set()
        self.first_t: int | None = None
        self.last_t: int | None = None
        self.origin_t = 0
        self.peak: dict[str, int] = {}
        self.peak_t: dict[str, int] = {}
        self.hwm_peak: dict[str, int] = {}
        self._imax: dict[str, int] = {}  # largest sample since the previous detail
        self._prev_imax: dict[str, int] = {}
        self._detail_t = 0
        self._prev_hwm: dict[int, int] = {}
        self._cg_peak_prev: int | None = None
        self._oom_prev: int | None = None
        self._oom_unclaimed_t: int | None = None
        self._limit: int | None = None
        self._ov_window: list[int] | None = None  # [first_t, count, missed, max_late]
        self._ov_last_pub = 0
        self._journal_error_sent = False

        # Scheduling.
        self._tasks: collections.deque[Task] = collections.deque()
        self._scan_running = False
        self._next_due = 0
        self._due: dict[str, int] = {}
        self._stop = False
        self._stop_reason = ""
        self._stop_at: int | None = None  # end after the tail
        self._signal_count = 0
        self._end_requested = threading.Event()

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
            if t.cgroup is not None:
                self.cg = cgroup.MemoryCgroup(cgroup.resolve(t.cgroup))
            elif t.unit is not None:
                self.cg = cgroup.MemoryCgroup(cgroup.unit_cgroup(t.unit))
            if self.cg is not None and t.pid is None and t.match is None and not t.argv:
                self._tree_from_cgroup = True
            if t.pid is not None:
                self.tree.add(t.pid, root=True)  # raises ProcessGone / AccessDenied
            if t.argv:
                if shutil.which(t.argv[0]) is None:
                    raise SamplerError(f"command not found: {t.argv[0]!r} (give a path, or put it on PATH)")
                if c.limit is not None:
                    self.cg = cgroup.create_limited(c.limit)
                    self._tree_from_cgroup = True
        except (cgroup.CgroupError, ProcfsError) as exc:
            self._close_all()
            raise SamplerError(str(exc)) from None
        if self.cg is not None:
            self.series.append(protocol.SERIES_CG_USAGE)
            if self.cg.owned:
                try:
                    self._procs_fd = os.open(self.cg.info.dir / "cgroup.procs", os.O_RDONLY | os.O_CLOEXEC)
                except OSError:
                    pass
            if self._tree_from_cgroup:
                self.tree.cgroup_pids = self._cgroup_members
            try:
                self._limit = self.cg.read_limit()
                self._oom_prev = self.cg.read_oom().get("oom_kill", 0)
            except (OSError, cgroup.CgroupError):
                pass
        else:
            self._oom_prev = _vmstat_oom_kill()
        try:
            self.publisher = Publisher(self._ctx, c.publish, socket_options=c.socket_options)
            self.publisher.listeners = self.listeners
            if c.inlet:
                self.inlet = Inlet(self._ctx, c.inlet, socket_options=c.socket_options)
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
                self.journal = Journal(journal)
            except OSError as exc:
                self._close_all()
                raise SamplerError(f"cannot open the journal {journal}: {exc.strerror}; pick another path with --journal FILE") from None
            self.publisher.journal = self.journal
        if t.argv:
            self._launch(t.argv)
        self._setup_done = True

    def _launch(self, argv: list[str]) -> None:
        """Start ``argv`` behind a tiny sh that stops itself before exec; it is
        continued (SIGCONT) after the first tick, so the first samples are taken
        before the program's first instruction. With --limit it is moved into the
        new cgroup while stopped: every byte the program touches is charged there."""
        try:
            self._child = subprocess.Popen(
                ["/bin/sh", "-c", _LAUNCH_SHIM, "spikewatch-launch", *argv], process_group=0,
            )
        except OSError as exc:
            self._close_all()
            raise SamplerError(f"cannot start {argv[0]!r}: {exc.strerror}") from None
        pid = self._child.pid
        _, status = os.waitpid(pid, os.WUNTRACED)
        if not os.WIFSTOPPED(status):
            self._child.returncode = -1
            self._close_all()
            raise SamplerError(f"the launch shell for {argv[0]!r} exited before it could be sampled")
        self._held = True
        try:
            if self.cg is not None and self.cg.owned:
                cgroup.move_pid(pid, self.cg)
            self._child_handle = self.tree.add(pid, root=True)
        except (cgroup.CgroupError, ProcfsError) as exc:
            self._child.kill()
            self._child.wait()
            self._close_all()
            raise SamplerError(str(exc)) from None

    def _release_child(self) -> None:
        if not self._held or self._child is None:
            return
        self._held = False
        t = time.monotonic_ns()
        pid = self._child.pid
        os.kill(pid, signal.SIGCONT)
        argv = list(self.config.target.argv or [])
        self._announced.add(pid)
        h = self.tree.procs.get(pid)
        if h is not None:
            h.argv, h.start_t = argv, t
        self._event(t, protocol.EV_PROC_START, pid=pid, ppid=os.getpid(),
                    exe=shutil.which(argv[0]) or argv[0], cmdline=argv, start_t=t, launched=True)

    # ------------------------------------------------------------ process tree

    def _announce(self, h: ProcHandle, t: int) -> None:
        """proc_start (and restart) for a process that joined the tree, once it had
        time to exec (so its command line is its own, not its parent's)."""
        if h.pid in self._announced or h.pid in self._muted or h.gone:
            return
        h.refresh_identity()
        restart_of = None
        for i, (argv, old_pid, t_exit) in enumerate(self._recent_exits):
            if argv == h.argv and h.argv and t - t_exit < 60_000_000_000:
                restart_of = old_pid
                del self._recent_exits[i]
                break
        if restart_of is None and h.pid in self.tree.roots and self._root_exits:
            restart_of = self._root_exits.popleft()  # a matched target came back
        if h.pid not in self.tree.roots and restart_of is None and not self._proc_event_budget(t):
            self._muted.add(h.pid)  # sampled all the same; no start/exit events for it
            return
        self._announced.add(h.pid)
        self._event(t, protocol.EV_PROC_START, pid=h.pid, ppid=h.ppid, exe=h.exe, cmdline=h.argv,
                    start_t=h.start_t, launched=False)
        if restart_of is not None:
            self._event(t, protocol.EV_RESTART, pid=h.pid, old_pid=restart_of)

    def _proc_event_budget(self, t: int) -> bool:
        """At most 50 proc_start events per second for descendants (a forking
        shell script must not flood the stream)."""
        window = t // 1_000_000_000
        if window != self._proc_events_window:
            self._proc_events_window, self._proc_events_this_s = window, 0
        self._proc_events_this_s += 1
        return self._proc_events_this_s <= 50

    def _proc_exited(self, h: ProcHandle, t: int, exit_info: dict[str, int] | None = None) -> None:
        """A process left the tree: publish what we know, end the run if it was the launched one."""
        if h.gone:
            return
        h.gone = True
        was_root = h.pid in self.tree.roots
        self.tree.forget(h)
        self._prev_hwm.pop(h.pid, None)
        if exit_info is None:
            exit_info = {}
        # An OOM kill shows as a rise of the OOM counter around a SIGKILL exit (or
        # an exit we could not see the status of, when the cgroup's counter says so).
        oom = False
        sig = exit_info.get("signal")
        if sig == signal.SIGKILL or (not exit_info and self.cg is not None):
            count = self._oom_count()
            if count is not None and self._oom_prev is not None and count > self._oom_prev:
                self._flush_samples()
                self._event(t, protocol.EV_OOM_KILL, pid=h.pid, count=count - self._oom_prev,
                            last_bytes=self._last_headline_bytes())
                self._oom_prev = count
                oom = True
            elif self._oom_unclaimed_t is not None and t - self._oom_unclaimed_t < 1_000_000_000:
                oom = True
                self._oom_unclaimed_t = None
        announced = h.pid in self._announced
        self._announced.discard(h.pid)  # bounded however many processes come and go
        self._muted.discard(h.pid)
        if announced:
            self._flush_samples()
            self._event(t, protocol.EV_PROC_EXIT, pid=h.pid, oom=oom, **exit_info)
            self._recent_exits.append((h.argv, h.pid, t))
        if was_root:
            if self._pattern is not None and announced:
                self._root_exits.append(h.pid)
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
        child = self._child
        if child is None or child.returncode is not None:
            return
        try:
            pid, status = os.waitpid(child.pid, os.WNOHANG)
        except ChildProcessError:
            pid, status = child.pid, 0
        if pid == 0:
            return
        info = procfs.wait_status_to_exit(status)
        child.returncode = info.get("code", -info.get("signal", 0))
        if self._child_handle is not None:
            self._proc_exited(self._child_handle, t, info)

    def _check_roots(self, t: int) -> None:
        """Attached roots that became zombies (their parent has not reaped them yet)."""
        for pid in list(self.tree.roots):
            if self._child is not None and pid == self._child.pid:
                continue
            h = self.tree.procs.get(pid)
            if h is None:
                continue
            try:
                st = procfs.read_stat(pid)
            except ProcfsError:
                self._proc_exited(h, t)
                continue
            if st.state in ("Z", "X"):
                info = procfs.wait_status_to_exit(st.exit_code) if st.exit_code is not None else {}
                self._proc_exited(h, t, info)

    def _apply_tree(self, pids: set[int], t: int) -> None:
        tree = self.tree
        for pid in pids - tree.procs.keys():
            if pid in tree.exclude:
                continue
            try:
                tree.add(pid)
            except ProcfsError:
                continue
        for pid in list(tree.procs.keys() - pids):
            if pid in tree.roots:
                continue  # roots leave through _reap_child / _check_roots
            h = tree.procs[pid]
            info: dict[str, int] = {}
            try:
                st = procfs.read_stat(pid)
                if st.state in ("Z", "X") and st.exit_code is not None:
                    info = procfs.wait_status_to_exit(st.exit_code)
            except ProcfsError:
                pass
            self._proc_exited(h, t, info)
        for h in list(tree.procs.values()):
            if h.pid not in self._announced and h.pid not in self._muted and h.pid in pids:
                # A fork shows its parent's command line until it execs: wait a little.
                if h.start_t is None or t - h.start_t >= 50_000_000 or h.pid in tree.roots:
                    self._announce(h, t)

    def _cgroup_members(self) -> set[int]:
        assert self.cg is not None
        if self._procs_fd >= 0:
            # Our own cgroup: one pread of a kept-open cgroup.procs (~7 µs).
            return {int(x) for x in os.pread(self._procs_fd, 1 << 20, 0).split()}
        return set(self.cg.pids(recursive=True))  # a unit may have sub-cgroups

    def _scan_task(self) -> Task:
        """Refresh the tree off the hot path, a few /proc reads per step."""
        self._scan_running = True
        try:
            members = yield from self.tree.scan(time.monotonic_ns)
            self._apply_tree(members, time.monotonic_ns())
        finally:
            self._scan_running = False

    def _wait_for_match(self) -> bool:
        """Block (publishing hellos) until a process matches; False if stopped first."""
        assert self._pattern is not None
        self._log(f"spikewatch: waiting for a process matching {self._pattern.pattern!r}")
        next_hello = 0
        end = None if self.config.duration_ns is None else time.monotonic_ns() + self.config.duration_ns
        while not self._stop:
            members = self.tree.find_matches(time.monotonic_ns())
            if members:
                self._apply_tree(members, time.monotonic_ns())
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

    def _publish(self, topic: str, body: dict[str, Any]) -> None:
        assert self.publisher is not None
        self.publisher.publish(topic, body)

    def _event(self, t: int, kind: str, **fields: Any) -> None:
        assert self.publisher is not None
        body = protocol.header(self.publisher.next_seq(), t)
        body["kind"] = kind
        body.update({k: v for k, v in fields.items() if v is not None})
        self._publish(protocol.EVENT, body)

    def _flush_samples(self) -> None:
        """Publish the current batch (called every ~20 ms and before any event,
        so the stream never shows an event ahead of the samples that led to it)."""
        times = self._times
        if not times or self.publisher is None:
            return
        cols = {protocol.SERIES_RSS: self._rss[:]}
        if self.cg is not None:
            cols[protocol.SERIES_CG_USAGE] = self._cgu[:]
        ts = times[:]
        del times[:], self._rss[:], self._cgu[:]
        for name, col in cols.items():
            m = max(col)
            if m > self._imax.get(name, -1):
                self._imax[name] = m
            if m > self.peak.get(name, -1):
                self.peak[name] = m
                self.peak_t[name] = ts[col.index(m)]
        self._publish(protocol.SAMPLES, protocol.samples_body(self.publisher.next_seq(), ts, cols))

    def _drain_inlet(self) -> None:
        if self.inlet is None or self.publisher is None:
            return
        q = self.inlet.queue
        while q:
            t, topic, fields = q.popleft()
            body = protocol.header(self.publisher.next_seq(), t)
            body.update(fields)
            self._publish(topic, body)

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
            "hwm_spikes": self.hwm_spikes,
        }

    def _hello(self, t: int, final: bool = False) -> None:
        assert self.publisher is not None
        body = protocol.header(self.publisher.next_seq(), t)
        roots = sorted(self.tree.roots)
        tree = sorted(self.tree.procs)
        targets = []
        for kind, spec in self.config.target.describe():
            pids = tree if kind in ("cgroup", "unit") and self._tree_from_cgroup else roots
            targets.append({"kind": kind, "spec": spec, "pids": pids})
        cg = None
        if self.cg is not None:
            cg = {"version": self.cg.version, "path": self.cg.info.path, "limit": self._limit,
                  "owned": self.cg.owned}
        body.update(
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
            tick_origin_t=self.origin_t or None,
            sched=self.sched,
            journal=str(self.journal.path) if self.journal else None,
            final=final,
            counters=self.counters(),
        )
        self._publish(protocol.HELLO, body)

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
        if periodic("tree", c.tree_ns if self._procs_fd < 0 else min(c.tree_ns, 100_000_000)):
            if not self._scan_running:
                self._tasks.append(self._scan_task())
        if t >= due.get("end", 1 << 62):
            due.pop("end")
            self._stop = True
        if t >= due.get("duration", 1 << 62):
            due.pop("duration")
            self._our_signals = {signal.SIGTERM, signal.SIGKILL}
            self.request_stop("duration reached", signal.SIGTERM)
        if t >= due.get("grace", 1 << 62):
            due.pop("grace")
            if self._child is not None and self._child.returncode is None:
                self._log("spikewatch: the command did not exit in time; killing it")
                self._signal_child(signal.SIGKILL)
                self._schedule("grace", t + 2_000_000_000)
            else:
                self._stop = True
        self._next_due = min(due.values())

    def _slack(self, t: int, next_deadline: int) -> None:
        if self.first_t is None and self._times:
            self.first_t = self._times[0]
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
        if self._pattern is None or self.tree.roots:
            self._check_roots(t)
        w = self._ov_window
        if w is not None and t - self._ov_last_pub >= 100_000_000:
            self._ov_window = None
            self._ov_last_pub = t
            self._event(w[0], protocol.EV_OVERRUN, missed=w[2], late_ns=w[3], count=w[1])
        j = self.journal
        if j is not None and j.errors and not self._journal_error_sent:
            self._journal_error_sent = True
            self._log_fn(f"spikewatch: cannot write the journal {j.path}: {j.last_error}; sampling goes on")
            self._event(t, protocol.EV_JOURNAL_ERROR, path=str(j.path), error=j.last_error,
                        records_lost=j.records_lost)

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

    def _oom_count(self) -> int | None:
        if self.cg is not None:
            try:
                return self.cg.read_oom().get("oom_kill", 0)
            except (OSError, cgroup.CgroupError):
                return None
        return _vmstat_oom_kill()

    def _last_headline_bytes(self) -> int | None:
        name = protocol.SERIES_CG_USAGE if self.cg is not None else protocol.SERIES_RSS
        col = self._cgu if self.cg is not None else self._rss
        vals = [self._imax.get(name, 0), self._prev_imax.get(name, 0)]
        if col:
            vals.append(max(col))
        return max(vals)

    def _detail(self, t: int) -> None:
        """The ~100 ms tier: status fields, cgroup stat, kernel peaks, OOM counters."""
        assert self.publisher is not None
        # A launched command killed just now is reaped first, so that an OOM kill
        # seen below is attributed to its pid.
        self._reap_child(t)
        # Largest samples of the interval: publish the open batch first, so that
        # every sample belongs to exactly one interval.
        self._flush_samples()
        imax = self._imax
        t_from = self._detail_t or self.first_t or t
        reset = self.config.reset_hwm or self._child is not None
        # The header (and so the seq) is taken when the body is published, after
        # the samples and events this tick publishes first: seq stays in order.
        body: dict[str, Any] = {}
        totals = {"threads": 0, "rss_anon": 0, "rss_file": 0, "rss_shmem": 0, "vm_hwm": 0, "vm_swap": 0}
        interval_hwms: list[int] = []
        nprocs = 0
        for h in list(self.tree.procs.values()):
            try:
                st = h.status()
            except ProcfsError:
                continue
            if "vm_rss" not in st:
                continue  # a zombie: no memory, only a thread count
            nprocs += 1
            for k in totals:
                totals[k] += st.get(k, 0)
            hwm = st.get("vm_hwm", 0)
            if reset:
                try:
                    procfs.reset_hwm(h.pid)
                    interval_hwms.append(hwm)
                except ProcfsError:
                    pass
            else:
                prev = self._prev_hwm.get(h.pid)
                if prev is not None and hwm > prev:
                    interval_hwms.append(hwm)  # it rose: the new peak lies in this interval
            self._prev_hwm[h.pid] = hwm
        body.update(procs=nprocs, pids=sorted(self.tree.procs)[:256], **totals,
                    sample_max=imax.get(protocol.SERIES_RSS))
        if interval_hwms and imax.get(protocol.SERIES_RSS) is not None:
            # One process: its HWM is the tree's peak. Several: the largest one
            # is a lower bound (their peaks need not coincide).
            kernel = sum(interval_hwms) if nprocs == 1 else max(interval_hwms)
            self._check_spike(protocol.SERIES_RSS, kernel, imax[protocol.SERIES_RSS], t_from, t)
        cg = self.cg
        if cg is not None:
            try:
                self._detail_cgroup(cg, body, imax, t_from, t)
            except cgroup.CgroupGone:
                if self._tree_from_cgroup and not cg.owned:
                    self._log(f"spikewatch: cgroup {cg.info.dir} was removed")
                    self._end_after_tail(t, "the cgroup was removed")
            except OSError:
                pass
        else:
            # Host-wide counter (other cgroups' OOM kills count too): only a fresh
            # baseline for telling whether a SIGKILL exit of ours was an OOM kill.
            self._oom_prev = _vmstat_oom_kill()
        self._prev_imax = self._imax
        self._imax = {}
        self._detail_t = t
        self._publish(protocol.DETAIL, {**protocol.header(self.publisher.next_seq(), t), **body})

    def _detail_cgroup(self, cg: cgroup.MemoryCgroup, body: dict[str, Any], imax: dict[str, int],
                       t_from: int, t: int) -> None:
        stat = cg.read_stat()
        body.update(cg_usage=stat.get("usage"), cg_anon=stat.get("anon"), cg_file=stat.get("file"),
                    cg_inactive_file=stat.get("inactive_file"), cg_working_set=stat.get("working_set"))
        limit = cg.read_limit()
        body["cg_limit"] = limit
        if limit != self._limit:
            self._event(t, protocol.EV_LIMIT_CHANGE, old=self._limit, new=limit)
            self._limit = limit
        sampled = imax.get(protocol.SERIES_CG_USAGE)
        if cg.peak_resettable:
            peak = cg.read_peak()
            cg.reset_peak()
            if peak is not None:
                body["cg_peak"] = peak
                if sampled is not None:
                    self._check_spike(protocol.SERIES_CG_USAGE, peak, sampled, t_from, t)
        else:
            # A peak we may not reset (someone else's cgroup) still tells us about
            # this interval whenever it rose: the new maximum happened in it.
            peak = cg.read_peak()
            if peak is not None:
                if self._cg_peak_prev is not None and peak > self._cg_peak_prev and sampled is not None:
                    self._check_spike(protocol.SERIES_CG_USAGE, peak, sampled, t_from, t)
                self._cg_peak_prev = peak
        oom = cg.read_oom()
        body.update(cg_oom_kill=oom.get("oom_kill"), cg_oom=oom.get("oom", oom.get("under_oom")),
                    cg_failcnt=oom.get("limit_hits"))
        count = oom.get("oom_kill", 0)
        if self._oom_prev is not None and count > self._oom_prev:
            self._flush_samples()
            self._event(t, protocol.EV_OOM_KILL, count=count - self._oom_prev,
                        last_bytes=self._last_headline_bytes())
            self._oom_unclaimed_t = t
        self._oom_prev = count
        psi = cg.read_psi()
        if psi:
            body.update(psi_some_avg10=psi.get("some_avg10"), psi_full_avg10=psi.get("full_avg10"),
                        psi_some_total_us=int(psi.get("some_total", 0)),
                        psi_scope="system" if psi.get("system_wide") else "cgroup")

    def _check_spike(self, series: str, kernel: int, sampled: int, t_from: int, t_to: int) -> None:
        if kernel > self.hwm_peak.get(series, -1):
            self.hwm_peak[series] = kernel
        if kernel - sampled > max(_HWM_ABS_NOISE, int(kernel * _HWM_REL_NOISE)):
            self.hwm_spikes += 1
            self._flush_samples()
            self._event(t_to, protocol.EV_HWM_SPIKE, series=series, bytes=kernel, t_from=t_from,
                        t_to=t_to, sampled_max=sampled)

    # ------------------------------------------------------------ lifecycle

    def _signal_child(self, sig: int) -> None:
        if self._child is not None and self._child.returncode is None:
            try:
                os.kill(self._child.pid, sig)
            except ProcessLookupError:
                pass

    def request_stop(self, reason: str = "stop requested", sig: int = signal.SIGTERM) -> None:
        """End the run: a launched command gets ``sig`` and is waited for (then
        killed after the grace period); otherwise the loop ends at the next tick."""
        self._signal_count += 1
        if self._child is not None and self._child.returncode is None and self._signal_count <= 2:
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
            for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                old_handlers[s] = signal.signal(s, self._on_signal)
        ticker: Ticker | None = None
        try:
            if self.inlet is not None:
                self.inlet.start()
            if self.journal is not None:
                size = self._journal_size_at_open
                self._log(f"spikewatch: journal {self.journal.path}"
                          + (f" (appending to the {size} bytes already there)" if size else ""))
            if self._pattern is not None and not self._wait_for_match():
                self._stop_reason = self._stop_reason or "no process matched"
                return self._finish(time.monotonic_ns())
            set_timer_slack(1)
            if self.config.realtime:
                self.sched = "fifo" if try_realtime() else "other"
            ticker = Ticker(self.period_ns)
            self.origin_t = ticker.start()
            c = self.config
            o = self.origin_t
            self._due = {"batch": o + c.batch_ns, "detail": o + self.detail_ns, "hello": o,
                         "tree": o + (10_000_000 if not self._tree_from_cgroup else 0)}
            if c.duration_ns is not None:
                self._due["duration"] = o + c.duration_ns
            self._next_due = min(self._due.values())
            if self._child is not None:
                self._tasks.append(_once(self._release_child))
            for pid in sorted(self.tree.roots):
                h = self.tree.procs.get(pid)
                if h is not None and self._child is None:
                    self._announce(h, o)
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

    def _loop(self, ticker: Ticker) -> None:
        """The hot loop: wait, read kept-open files, append; the rest in the slack."""
        read, tfd, one = os.read, ticker.fd, (1).to_bytes(8, "little")
        pread = os.pread
        mono = time.monotonic_ns
        fds = self.tree.fds
        cgfd = self.cg.usage_fd if self.cg is not None else -1
        times, rss_col, cg_col = self._times, self._rss, self._cgu
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
            samples += 1
            if dead:
                self._on_dead(dead)
            if t >= self._next_due or tasks:
                self.samples = samples
                self.last_t = t
                self._slack(t, deadline + period)
        self.samples = samples
        self.last_t = self._times[-1] if self._times else self.last_t

    def _finish(self, t: int) -> int:
        """After the loop: last batch, a final detail, the last hello, the summary."""
        if self.publisher is not None:
            if self._child is not None:
                self._reap_child(t)
            self._flush_samples()
            if self.first_t is not None:
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
                if name in self.hwm_peak and self.hwm_peak[name] > self.peak[name]:
                    s += f" (kernel hwm {format_bytes(self.hwm_peak[name])})"
                parts.append(s)
        if self.hwm_spikes:
            parts.append(f"{self.hwm_spikes} hwm spikes")
        if self.journal is not None:
            parts.append(f"journal {self.journal.path}")
        if self._stop_reason:
            parts.append(self._stop_reason)
        return "spikewatch: " + ", ".join(parts)

    def _close_all(self) -> None:
        if self._child is not None and self._child.returncode is None:
            self._signal_child(signal.SIGKILL)
            try:
                self._child.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        self.tree.close()
        if self.inlet is not None:
            self.inlet.close()
            self.inlet = None
        if self.journal is not None:
            self.journal.close()
        if self.publisher is not None:
            self.publisher.close()
            self.publisher = None
        if self._procs_fd >= 0:
            os.close(self._procs_fd)
            self._procs_fd = -1
        if self.cg is not None:
            try:
                if self.cg.owned:
                    cgroup.remove(self.cg)
                else:
                    self.cg.close()
            except cgroup.CgroupError as exc:
                self._log_fn(f"spikewatch: {exc}")


def _vmstat_oom_kill() -> int | None:
    """The host-wide OOM kill counter (Linux 4.13+), for targets without a cgroup."""
    try:
        with open("/proc/vmstat", "rb") as f:
            for line in f:
                if line.startswith(b"oom_kill "):
                    return int(line.split()[1])
    except OSError:
        pass
    return None
