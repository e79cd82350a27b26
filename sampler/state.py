"""What one sampling session holds: its configuration, its parts, its counters and
its schedule. The layers above add one job each (see :mod:`~spikewatch.sampler.daemon`):
:mod:`~spikewatch.sampler.publishing`, :mod:`~spikewatch.sampler.targets`,
:mod:`~spikewatch.sampler.slack`; the hot loop is :mod:`~spikewatch.sampler.hotloop`."""

from __future__ import annotations

import collections
import signal
import sys
import uuid
from collections.abc import Generator
from typing import Any

import zmq

from . import cgroup
from .autocgroup import AutoCgroup
from .batch import Batch
from .buildinfo import BuildEvidence, BuildProbe
from .config import SamplerConfig, check
from .detail import DetailTier
from .launch import Launched
from .lifecycle import ProcessEvents
from .membership import Membership
from .procfs import ProcHandle
from .pss import PssReader
from .tree import ProcessTree
from .wire import protocol
from .wire.stream import Inlet, Journal, Listener, Publisher

Task = Generator[None, None, None]


class SamplerState:
    """The state of one session; :class:`~spikewatch.sampler.daemon.Sampler` is what users build."""

    #: Signals that end the run (forwarded to a launched command). `spikewatch sample`
    #: with CURVE keys drops SIGHUP from these: there it reloads the client keys.
    stop_signals: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    # Built by Sampler.__init__: their callbacks live in the layers above.
    events: ProcessEvents
    membership: Membership
    detail: DetailTier

    def __init__(self, config: SamplerConfig, *, context: zmq.Context[Any] | None = None) -> None:
        c = config
        self._pattern = check(c)
        self.config = c
        self.period_ns = c.period_ns
        self.detail_ns = max(c.detail_period_ns, c.period_ns)
        self.batch_ns = max(c.batch_ns, c.period_ns)
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
        self._child_signalled = False  # SIGCHLD: reap the launched command after this tick
        self._sigchld = False  # our SIGCHLD handler is installed: no need to poll for the exit
        self._reap_due = 0
        self._child_handle: ProcHandle | None = None
        self._setup_done = False
        self._journal_size_at_open = 0
        self.listeners: list[Listener] = []

        # Process tree, what we told about it, and the detail tier reading it.
        self.tree = ProcessTree(exclude=set(), pattern=self._pattern)
        self._build_probe = BuildProbe()
        self._launched_build: BuildEvidence | None = None
        self._heap: Any = None  # sampler.heapmetric.HeapScraper with --heap-metric
        self.batch = Batch()
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

    def _log(self, msg: str) -> None:
        if not self.config.quiet:
            self._log_fn(msg)

    def _schedule(self, name: str, at: int) -> None:
        self._due[name] = at
        self._next_due = min(self._due.values())

    def _internal_error(self) -> None:
        import traceback

        self.internal_errors += 1
        where = traceback.extract_tb(sys.exc_info()[2])[-1]
        key = f"{where.filename}:{where.lineno}"
        if key not in self._errors_seen:
            self._errors_seen.add(key)
            self._log_fn("spikewatch: internal error (sampling goes on):\n" + traceback.format_exc().rstrip())
