"""The load-testing checklist: each item true, false or null (not enough evidence), with a reason."""

from __future__ import annotations

import re
from typing import Any

from spikewatch.sampler.wire import protocol
from spikewatch.sampler.units import format_bytes, format_duration_ns

from .phases import describe_growth
from .reader import Source

_DEBUG = re.compile(r"(^|/)(target/(\w+-)*debug|debug|Debug|cmake-build-debug|bin/Debug|build/debug|_build/debug)(/|$)")
_RELEASE = re.compile(r"(^|/)(target/(\w+-)*release|target/[\w-]+/release|release|Release|cmake-build-release|bin/Release|build/release|_build/prod)(/|$)")


def release_build(src: Source) -> tuple[bool | None, str]:
    starts = src.events_of(protocol.EV_PROC_START)
    paths = []
    for ev in starts:
        exe = ev.get("exe") or ""
        cmd = ev.get("cmdline") or []
        paths.append(exe)
        paths.extend(c for c in cmd[:2] if isinstance(c, str) and "/" in c)
    for p in paths:
        if _DEBUG.search(p):
            return False, f"{p} lies under a debug build folder"
    for p in paths:
        if _RELEASE.search(p):
            return True, f"{p} lies under a release build folder"
    if not paths:
        return None, "no process start was recorded, so the executable is unknown"
    return None, f"the path ({paths[0]}) says nothing about the build profile"


def startup_captured(src: Source) -> tuple[bool | None, str]:
    period = src.period_ns or 1_000_000
    first = min((int(s.t[0]) for s in src.series.values() if len(s)), default=None)
    if first is None:
        return False, "the recording holds no samples"
    starts = src.events_of(protocol.EV_PROC_START)
    for ev in starts:
        if ev.get("launched"):
            return True, "the sampler launched the process itself and sampled from its first moment"
    known = [ev for ev in starts if isinstance(ev.get("start_t"), int)]
    if known:
        st = int(known[0]["start_t"])
        late = first - st
        if late <= period:
            return True, f"sampling began {format_duration_ns(max(late, 0))} after the process started (within one period)"
        return False, f"sampling began {format_duration_ns(late)} after the process started: the startup peak may be missing"
    if starts:
        return None, "the process start time is unknown"
    for h in src.hellos:
        for tg in h.get("targets") or []:
            if tg.get("kind") == "launch":
                return True, "the sampler launched the target"
    return None, "no process start was recorded: the target may have been running before sampling began"


def burst_tested(src: Source, phases: list[dict[str, Any]]) -> tuple[bool | None, str]:
    bursts = [p for p in phases if p["kind"] in ("burst", "spike")]
    if bursts:
        n = sum(p.get("burst_count") or 0 for p in bursts)
        if n:
            return True, f"{n} burst(s) in {len(bursts)} burst phase(s)"
        return False, "a burst phase ran but no burst could be found in it"
    if not phases:
        return None, "no phase markers: the load that was applied is unknown"
    return False, "no burst phase among " + ", ".join(p["name"] for p in phases)


def stabilized(phases: list[dict[str, Any]], whole: dict[str, Any] | None) -> tuple[bool | None, str]:
    soaks = [p for p in phases if p["kind"] == "soak" and p.get("growth")]
    g = soaks[-1]["growth"] if soaks else None
    where = f"soak '{soaks[-1]['name']}'" if soaks else "the whole recording"
    if g is None:
        return None, "no soak phase long enough to judge the trend"
    desc = f"{describe_growth(g)} over {where} after warm-up"
    if g["stabilized"] is True:
        return True, desc
    if g["stabilized"] is False:
        return False, desc + ": still growing"
    return None, desc + ": too uncertain to call"


def limited(limit: int | None, peak: int, kills: int) -> tuple[bool | None, str]:
    if not limit:
        return False, "no memory limit was in force (run with --limit, or sample a limited cgroup)"
    msg = f"limit {format_bytes(limit)}, peak {format_bytes(peak)} ({(limit - peak) / limit:.0%} headroom)"
    if kills:
        msg += f", {kills} OOM kill(s)"
    return True, msg


def checklist(src: Source, phases: list[dict[str, Any]], limit: int | None, peak: int, kills: int,
              whole_growth: dict[str, Any] | None) -> tuple[dict[str, bool | None], dict[str, str]]:
    items = {
        "release_build": release_build(src),
        "startup_captured": startup_captured(src),
        "burst_tested": burst_tested(src, phases),
        "stabilized": stabilized(phases, whole_growth),
        "limited": limited(limit, peak, kills),
    }
    return {k: v[0] for k, v in items.items()}, {k: v[1] for k, v in items.items()}
