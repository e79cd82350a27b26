"""The ~100 ms detail tier: what is too slow to read every tick.

Per process: /proc status totals and the kernel's high-water mark (VmHWM). Per
cgroup: stat, limit, peak, OOM counters and PSI. A kernel peak above every sample
of the interval means a spike fell between two ticks: that is an ``hwm_spike``
event. The OOM kill counter is kept here too, so that a SIGKILL exit can be told
apart from an OOM kill (:meth:`DetailTier.oom_at_exit`).
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from typing import Any, Protocol, cast

from . import cgroup
from .procfs import ProcfsError
from .tree import ProcessTree
from .wire import protocol

_HWM_ABS_NOISE = 1 << 20  # VmHWM reads ~0.2 MB low, v1 max_usage ~0.5 MB high (measured over 2000 spikes)
_HWM_REL_NOISE = 0.02
_MEMORY_EVENTS = ("high", "max", "oom", "oom_kill")
_MEMORY_EVENTS_GAP_NS = 1_000_000_000
_TOTALS = ("threads", "rss_anon", "rss_file", "rss_shmem", "vm_hwm", "vm_swap")


class EventFn(Protocol):
    def __call__(self, t: int, fields: protocol.EventFields) -> None: ...


def vmstat_oom_kill() -> int | None:
    """The host-wide OOM kill counter (Linux 4.13+), for targets without a cgroup."""
    try:
        with open("/proc/vmstat", "rb") as f:
            for line in f:
                if line.startswith(b"oom_kill "):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


_PSI_EVERY_NS = 1_000_000_000
_LIMITS_EVERY_NS = 1_000_000_000


class DetailTier:
    """Reads the detail fields and reconciles kernel peaks with the samples.

    ``event`` publishes an event; ``flush`` publishes the open sample batch first
    (the stream never shows an event ahead of the samples that led to it);
    ``headline`` is the largest recent sample of the headline series."""

    def __init__(
        self,
        tree: ProcessTree,
        cg: cgroup.MemoryCgroup | None,
        *,
        event: EventFn,
        flush: Callable[[], None],
        headline: Callable[[], int | None],
    ) -> None:
        self.tree, self.cg = tree, cg
        self._event, self._flush, self._headline = event, flush, headline
        self.reset_hwm = False
        self.hwm_peak: dict[str, int] = {}
        self.hwm_spikes = 0
        self.limit: int | None = None  # effective: the lowest up the tree
        self.limits: cgroup.Limit | None = None
        self.oom_prev: int | None = None
        self._oom_unclaimed_t: int | None = None
        self._prev_hwm: dict[int, int] = {}
        self._cg_peak_prev: int | None = None
        self._mev_reported: dict[str, int] | None = None  # memory.events counts already published
        self._mev_t = 0
        self.final = False  # the last detail of the run: publish what is pending
        self._psi: dict[str, Any] = {}
        self._psi_t = 0
        self._limits_t = 0

    def baseline(self) -> None:
        """The limit and OOM counter before sampling starts: later rises are news."""
        if self.cg is None:
            self.oom_prev = vmstat_oom_kill()
            return
        try:
            self.limits = self.cg.read_limits()
            self.limit = self.limits.bytes
            oom = self.cg.read_oom()
            self.oom_prev = oom.get("oom_kill", 0)
            self._mev_reported = None
            self._memory_events(oom, time.monotonic_ns())
        except (OSError, cgroup.CgroupError):
            pass

    def rebaseline_events(self) -> None:
        """Another cgroup from now on (--cgroup auto followed a restart): its counters are no news."""
        self.oom_prev = None
        self._mev_reported = None
        self._psi_t = 0
        self._limits_t = 0

    def forget(self, pid: int) -> None:
        self._prev_hwm.pop(pid, None)

    def read_procs(self, imax: dict[str, int], t_from: int, t: int) -> dict[str, Any]:
        """Status totals of the tree; an ``hwm_spike`` if VmHWM rose above the samples."""
        totals = dict.fromkeys(_TOTALS, 0)
        interval_hwms: list[int] = []
        nprocs = 0
        reset = self.reset_hwm
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
                    h.reset_hwm()
                    interval_hwms.append(hwm)
                except ProcfsError:
                    pass
            else:
                prev = self._prev_hwm.get(h.pid)
                if prev is not None and hwm > prev:
                    interval_hwms.append(hwm)  # it rose: the new peak lies in this interval
            self._prev_hwm[h.pid] = hwm
        body: dict[str, Any] = dict(
            procs=nprocs, pids=sorted(self.tree.procs)[:256], **totals, sample_max=imax.get(protocol.SERIES_RSS)
        )
        if interval_hwms and imax.get(protocol.SERIES_RSS) is not None:
            # One process: its HWM is the tree's peak. Several: the largest one
            # is a lower bound (their peaks need not coincide).
            kernel = sum(interval_hwms) if nprocs == 1 else max(interval_hwms)
            self._check_spike(protocol.SERIES_RSS, kernel, imax[protocol.SERIES_RSS], t_from, t)
        return body

    def read_cgroup(
        self, body: dict[str, Any], imax: dict[str, int], t_from: int, t: int, usage: int | None = None
    ) -> None:
        """Cgroup fields into ``body``; limit_change, hwm_spike and oom_kill events.
        ``usage``: the last tick's (the usage file is not read twice a millisecond apart).
        Raises :class:`~spikewatch.sampler.cgroup.CgroupGone` or OSError."""
        cg = self.cg
        assert cg is not None
        stat = cg.read_breakdown(usage)
        body.update(
            cg_usage=stat.get("usage"),
            cg_anon=stat.get("anon"),
            cg_file=stat.get("file"),
            cg_inactive_file=stat.get("inactive_file"),
            cg_working_set=stat.get("working_set"),
        )
        body["cg_limit"] = self.limit
        if t - self._limits_t >= _LIMITS_EVERY_NS or self.final:
            self._read_limits(body, t)
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
        body.update(
            cg_oom_kill=oom.get("oom_kill"),
            cg_oom=oom.get("oom", oom.get("under_oom")),
            cg_failcnt=oom.get("limit_hits"),
        )
        count = oom.get("oom_kill", 0)
        if self.oom_prev is not None and count > self.oom_prev:
            self._flush()
            self._event(
                t, protocol.OomKill(kind=protocol.EV_OOM_KILL, count=count - self.oom_prev, last_bytes=self._headline())
            )
            self._oom_unclaimed_t = t
        self.oom_prev = count
        self._memory_events(oom, t)
        if t - self._psi_t >= _PSI_EVERY_NS or self.final:
            # Once a second: the kernel recomputes the averages every 2 s, so ten reads a
            # second told nothing the tenth did not (~20 µs each, cold).
            self._psi_t = t
            psi = cg.read_psi()
            self._psi = (
                dict(
                    psi_some_avg10=psi.get("some_avg10"),
                    psi_full_avg10=psi.get("full_avg10"),
                    psi_some_total_us=int(psi.get("some_total", 0)),
                    psi_scope="system" if psi.get("system_wide") else "cgroup",
                )
                if psi
                else {}
            )
        body.update(self._psi)

    def _read_limits(self, body: dict[str, Any], t: int) -> None:
        """The effective limit (what bites first: a container's own cgroup is often
        "max" under a limited parent); ``limit_change`` when it moved. Once a second: a
        limit is a setting, rarely changed, and on v2 it is two files per ancestor."""
        assert self.cg is not None
        self._limits_t = t
        limits = self.cg.read_limits(after_stat=True)
        limit = limits.bytes
        body["cg_limit"] = limit
        self.limits = limits
        if limit != self.limit:
            self._event(
                t,
                protocol.LimitChange(
                    kind=protocol.EV_LIMIT_CHANGE,
                    old=self.limit,
                    new=limit,
                    limit_from=limits.source,
                    limit_kind=limits.kind,
                ),
            )
            self.limit = limit

    def _memory_events(self, oom: dict[str, int], t: int) -> None:
        """A ``memory_events`` event when memory.events counters rose (v1: failcnt as
        ``max``). ``high`` and ``max`` rise by thousands while usage sits at a limit:
        they are summed over at least a second; ``oom``/``oom_kill`` go out at once."""
        counts = {k: oom[k] for k in _MEMORY_EVENTS if k in oom}
        if self.cg is not None and self.cg.version == 1:
            counts["max"] = oom.get("limit_hits", 0)
        reported = self._mev_reported
        if reported is None:
            self._mev_reported, self._mev_t = counts, t  # the baseline: earlier counts are not news
            return
        rises = {k: v - reported.get(k, 0) for k, v in counts.items() if v > reported.get(k, 0)}
        if not rises:
            self._mev_t = t  # nothing pending: the next rise happens after now
            return
        urgent = "oom" in rises or "oom_kill" in rises
        if not urgent and not self.final and t - self._mev_t < _MEMORY_EVENTS_GAP_NS:
            return
        self._flush()
        ev = protocol.MemoryEvents(kind=protocol.EV_MEMORY_EVENTS, t_from=self._mev_t, totals=counts)
        cast("dict[str, int]", ev).update(rises)  # high, max, oom, oom_kill: whichever rose
        self._event(t, ev)
        self._mev_reported, self._mev_t = counts, t

    def refresh_host_oom(self) -> None:
        # Host-wide counter (other cgroups' OOM kills count too): only a fresh
        # baseline for telling whether a SIGKILL exit of ours was an OOM kill.
        self.oom_prev = vmstat_oom_kill()

    def oom_at_exit(self, pid: int, t: int, exit_info: dict[str, int]) -> bool:
        """Whether the exit of ``pid`` was an OOM kill (publishing ``oom_kill`` if
        the counter rose just now). It shows as a rise of the OOM counter around a
        SIGKILL exit (or an exit we could not see the status of, when the cgroup's
        counter says so)."""
        if not (exit_info.get("signal") == signal.SIGKILL or (not exit_info and self.cg is not None)):
            return False
        count = self._oom_count()
        if count is not None and self.oom_prev is not None and count > self.oom_prev:
            self._flush()
            self._event(
                t,
                protocol.OomKill(
                    kind=protocol.EV_OOM_KILL, pid=pid, count=count - self.oom_prev, last_bytes=self._headline()
                ),
            )
            self.oom_prev = count
            return True
        if self._oom_unclaimed_t is not None and t - self._oom_unclaimed_t < 1_000_000_000:
            self._oom_unclaimed_t = None  # the detail tier saw it first: this exit claims it
            return True
        return False

    def _oom_count(self) -> int | None:
        if self.cg is not None:
            try:
                return self.cg.read_oom().get("oom_kill", 0)
            except (OSError, cgroup.CgroupError):
                return None
        return vmstat_oom_kill()

    def _check_spike(self, series: str, kernel: int, sampled: int, t_from: int, t_to: int) -> None:
        if kernel > self.hwm_peak.get(series, -1):
            self.hwm_peak[series] = kernel
        if kernel - sampled > max(_HWM_ABS_NOISE, int(kernel * _HWM_REL_NOISE)):
            self.hwm_spikes += 1
            self._flush()
            self._event(
                t_to,
                protocol.HwmSpike(
                    kind=protocol.EV_HWM_SPIKE,
                    series=series,
                    bytes=kernel,
                    t_from=t_from,
                    t_to=t_to,
                    sampled_max=sampled,
                ),
            )
