"""The spikewatch sampler: reads process and cgroup memory every millisecond.

Imports only the standard library, psutil, pyzmq and msgpack.

Modules:

* :mod:`sampler.daemon` — :class:`~sampler.daemon.Sampler` (one session: setup,
  the hot loop, the slow work in its slack, publishing, hello, shutdown); it
  re-exports what it is configured with.
* :mod:`sampler.config` — :class:`~sampler.config.SamplerConfig`, :class:`~sampler.config.Target`,
  :class:`~sampler.config.SamplerError`, the default journal name.
* :mod:`sampler.launch` — the launched command: held before exec, released, reaped, signalled.
* :mod:`sampler.detail` — the ~100 ms tier: status totals, cgroup fields, kernel peaks
  (``hwm_spike``), OOM kills.
* :mod:`sampler.lifecycle` — proc_start / proc_exit / restart events and their budget.
* :mod:`sampler.batch` — the open sample batch the hot loop appends to, and its maxima.
* :mod:`sampler.membership` — keeps the tree in step with the processes that exist (off the hot path).
* :mod:`sampler.procfs` — careful /proc reads (kept-open statm/status, stat, HWM reset).
* :mod:`sampler.tree` — which processes are sampled (a pid counted once).
* :mod:`sampler.ticker` — timerfd on absolute monotonic deadlines, timer slack, SCHED_FIFO.
* :mod:`sampler.stream` — PUB publisher (pack once, journal, listeners), inlet, journal thread.
* :mod:`sampler.cgroup` — memory cgroups v1/v2. :mod:`sampler.protocol` — the wire protocol.
* :mod:`sampler.cli` — ``spikewatch sample``, ``spikewatch mark`` and ``spikewatch keys``.
* :mod:`sampler.security` — CURVE keys, the ZAP authenticator, the loopback rule (docs/security.md).
* :mod:`sampler.history` — the backfill ring (a publish listener) and its ROUTER endpoint.
* :mod:`sampler.backfill` — consumer side: history + live merged by ``seq`` (clone pattern).

In-process use (tests, exporters)::

    from sampler.daemon import Sampler, SamplerConfig, Target
    s = Sampler(SamplerConfig(Target(argv=["./svc"]), publish="tcp://127.0.0.1:9781",
                              inlet=None, journal="run.journal", duration_ns=10**10))
    s.listeners.append(lambda topic, body, packed: ...)   # every published message
    status = s.run()        # blocks; from the main thread it also handles SIGINT/SIGTERM
"""

__version__ = "0.1.0"
