"""The load-testing checklist: each item true, false or null (not enough evidence), with a reason."""

from __future__ import annotations

import os
import re
from typing import Any

from spikewatch.sampler import buildinfo
from spikewatch.sampler.units import format_bytes, format_duration_ns
from spikewatch.sampler.wire import protocol

from .phases import describe_growth
from .reader import Source

# Only when no executable could be read: a path under a build folder is a weak hint.
_DEBUG = re.compile(r"(^|/)(target/(\w+-)*debug|debug|Debug|cmake-build-debug|bin/Debug|build/debug|_build/debug)(/|$)")
_RELEASE = re.compile(
    r"(^|/)(target/(\w+-)*release|target/[\w-]+/release|release|Release|cmake-build-release|bin/Release|build/release|_build/prod)(/|$)"
)


def _build_evidence(src: Source) -> list[tuple[str, str, str]]:
    """(exe, profile, evidence) for every process whose executable was read: by the
    sampler (proc_start fields, ``build`` events), else here if the file still exists."""
    out: list[tuple[str, str, str]] = []
    read: set[Any] = set()  # pids (whatever type the recording holds)
    for ev in src.events_of(protocol.EV_PROC_START, protocol.EV_BUILD):
        if isinstance(ev.get("build"), str):
            out.append((str(ev.get("exe") or "?"), ev["build"], str(ev.get("build_evidence") or "")))
            read.add(ev.get("pid"))
    for ev in src.events_of(protocol.EV_PROC_START):
        exe = ev.get("exe")
        if ev.get("pid") in read or not isinstance(exe, str) or not os.path.isfile(exe):
            continue
        found = buildinfo.inspect(exe)  # a recording from an older sampler: read it now
        out.append((exe, found.profile, found.evidence + " (read at report time)"))
    return out


def release_build(src: Source) -> tuple[bool | None, str]:
    found = [e for e in _build_evidence(src) if e[1] != buildinfo.WRAPPER]
    for profile, answer, word in (
        (buildinfo.DEBUG, False, "a debug build"),
        (buildinfo.RELEASE, True, "a release build"),
    ):
        for exe, p, why in found:
            if p == profile:
                return answer, f"{exe} is {word}: {why}"
    if found and all(p == buildinfo.INTERPRETED for _, p, _ in found):
        return None, f"not a compiled build: {found[0][2]}"
    starts = src.events_of(protocol.EV_PROC_START)
    paths = []
    for ev in starts:
        exe = ev.get("exe") or ""
        cmd = ev.get("cmdline") or []
        paths.append(exe)
        paths.extend(c for c in cmd[:2] if isinstance(c, str) and "/" in c)
    for p in paths:
        if _DEBUG.search(p):
            return False, f"{p} lies under a debug build folder (the file itself could not be read)"
    for p in paths:
        if _RELEASE.search(p):
            return True, f"{p} lies under a release build folder (the file itself could not be read)"
    unknown = [e for e in found if e[1] == buildinfo.UNKNOWN]
    if unknown:
        return None, f"{unknown[0][0]}: {unknown[0][2]}"
    if not paths:
        return None, "no process start was recorded, so the executable is unknown"
    return None, f"the executable ({paths[0]}) could not be read and its path says nothing about the build profile"


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
            return (
                True,
                f"sampling began {format_duration_ns(max(late, 0))} after the process started (within one period)",
            )
        return (
            False,
            f"sampling began {format_duration_ns(late)} after the process started: the startup peak may be missing",
        )
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


def checklist(
    src: Source,
    phases: list[dict[str, Any]],
    limit: int | None,
    peak: int,
    kills: int,
    whole_growth: dict[str, Any] | None,
) -> tuple[dict[str, bool | None], dict[str, str]]:
    items = {
        "release_build": release_build(src),
        "startup_captured": startup_captured(src),
        "burst_tested": burst_tested(src, phases),
        "stabilized": stabilized(phases, whole_growth),
        "limited": limited(limit, peak, kills),
    }
    return {k: v[0] for k, v in items.items()}, {k: v[1] for k, v in items.items()}
