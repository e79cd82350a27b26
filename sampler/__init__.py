"""The spikewatch sampler: reads process and cgroup memory every millisecond.

Imports only the standard library, psutil, pyzmq and msgpack.

Modules:

* :mod:`spikewatch.sampler.daemon` — :class:`~spikewatch.sampler.daemon.Sampler` (one session: setup,
  run, signals, shutdown); it re-exports what it is configured with. Its layers, one job a module:
  :mod:`~spikewatch.sampler.state` (what a session holds), :mod:`~spikewatch.sampler.publishing`
  (messages out, hello), :mod:`~spikewatch.sampler.targets` (cgroup, launched command, exits),
  :mod:`~spikewatch.sampler.slack` (slow work between ticks, stopping).
* :mod:`spikewatch.sampler.hotloop` — the hot loop: timerfd wake-up, kept-open reads, appends.
* :mod:`spikewatch.sampler.config` — :class:`~spikewatch.sampler.config.SamplerConfig`, :class:`~spikewatch.sampler.config.Target`,
  :class:`~spikewatch.sampler.config.SamplerError`, the default journal name.
* :mod:`spikewatch.sampler.launch` — the launched command: held before exec, released, reaped, signalled.
* :mod:`spikewatch.sampler.detail` — the ~100 ms tier: status totals, cgroup fields, kernel peaks
  (``hwm_spike``), OOM kills.
* :mod:`spikewatch.sampler.lifecycle` — proc_start / proc_exit / restart events and their budget.
* :mod:`spikewatch.sampler.buildinfo` — the build profile read from an executable (debug, release, interpreted).
* :mod:`spikewatch.sampler.heapmetric` — the service's own heap gauge, scraped in a thread (``--heap-metric``).
* :mod:`spikewatch.sampler.batch` — the open sample batch the hot loop appends to, and its maxima.
* :mod:`spikewatch.sampler.membership` — keeps the tree in step with the processes that exist (off the hot path).
* :mod:`spikewatch.sampler.procfs` — careful /proc reads (kept-open statm/status, stat, HWM reset).
* :mod:`spikewatch.sampler.tree` — which processes are sampled (a pid counted once).
* :mod:`spikewatch.sampler.ticker` — timerfd on absolute monotonic deadlines, timer slack, SCHED_FIFO.
* :mod:`spikewatch.sampler.wire.stream` — PUB publisher (pack once, journal, listeners), inlet, journal thread.
* :mod:`spikewatch.sampler.cgroup` — memory cgroups v1/v2 (code in :mod:`spikewatch.sampler.cgroups`). :mod:`spikewatch.sampler.wire.protocol` — the wire protocol.
* :mod:`spikewatch.sampler.cli` — ``spikewatch sample`` and ``spikewatch mark``;
  :mod:`spikewatch.sampler.cli_keys` — ``spikewatch keys`` and the ``--keys`` client options.
* :mod:`spikewatch.sampler.wire.security` — CURVE keys, the ZAP authenticator, the loopback rule (docs/security.md).
* :mod:`spikewatch.sampler.history` — the backfill ring (a publish listener) and its ROUTER endpoint.
* :mod:`spikewatch.sampler.backfill` — consumer side: history + live merged by ``seq`` (clone pattern).

In-process use (tests, exporters)::

    from spikewatch.sampler.daemon import Sampler, SamplerConfig, Target
    s = Sampler(SamplerConfig(Target(argv=["./svc"]), publish="tcp://127.0.0.1:9781",
                              inlet=None, journal="run.journal", duration_ns=10**10))
    s.listeners.append(lambda topic, body, packed: ...)   # every published message
    status = s.run()        # blocks; from the main thread it also handles SIGINT/SIGTERM
"""

__version__ = "0.1.0"
