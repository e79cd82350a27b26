"""Multi-process targets: which figure tells a tree's memory truly, and how much RSS counts twice.

Summed over a tree, RSS counts a shared copy-on-write page once per process
that maps it: a 300 MiB parent with a forked child shows ~600 MiB before the
child has allocated anything. Two figures count each page once: the cgroup's
usage (charged per page, whoever touched it; sampled every tick) and the
tree's PSS (``Pss`` of smaps_rollup, shared pages split between the processes
mapping them; read by the sampler every few hundred ms, period in
``pss_period_ns``). docs/trees.md says what each series means.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from spikewatch.sampler.units import format_bytes

from .reader import Source

PSS = "pss"
USS = "uss"
MiB = 1 << 20
# Summed RSS counting shared pages at most this much too high (or 5 % of its
# peak) is kept as the headline for its 1 ms resolution: a helper process that
# comes and goes shares only a few MiB of libraries.
_SMALL_DOUBLE_COUNT = 8 * MiB
_SMALL_SHARE = 0.05


def _col(src: Source, name: str) -> np.ndarray | None:
    col = src.details.get(name)
    if col is None:
        return None
    ok = ~np.isnan(col)
    return col[ok] if ok.any() else None


def max_procs(src: Source) -> int:
    """The most processes the tree had at once (per detail interval and PSS sweep)."""
    best = 0
    for name in ("procs", "pss_procs"):
        col = _col(src, name)
        if col is not None:
            best = max(best, int(col.max()))
    return best


def pss_period_s(src: Source) -> float | None:
    """The typical (median) period of the PSS readings."""
    col = _col(src, "pss_period_ns")
    return None if col is None else round(float(np.median(col)) / 1e9, 3)


def double_count(src: Source) -> dict[str, Any] | None:
    """The PSS sweep where summed RSS exceeded PSS the most: {bytes, procs, t}
    (bytes of shared pages counted more than once), or None without PSS readings."""
    d = src.details
    if "pss" not in d or "pss_rss" not in d:
        return None
    rss, pss = d["pss_rss"], d["pss"]
    ok = ~(np.isnan(rss) | np.isnan(pss))
    if "pss_procs" in d and (ok & (d["pss_procs"] > 1)).any():
        ok &= d["pss_procs"] > 1  # a lone process shares only libraries, with processes outside the tree
    if not ok.any():
        return None
    extra = np.where(ok, rss - pss, -np.inf)
    i = int(np.argmax(extra))
    procs = d.get("pss_procs")
    t = d.get("pss_t")
    return {
        "bytes": int(extra[i]),
        "procs": int(procs[i]) if procs is not None and not np.isnan(procs[i]) else None,
        "t": int(t[i]) if t is not None and not np.isnan(t[i]) else int(d["t"][i]),
    }


def choose(src: Source, has: Any) -> tuple[str, str]:
    """(headline series, why) for ``src``; ``has(name)`` says whether a series has data.

    Under a limit: the cgroup's usage (what the limit applies to). A tree of
    several processes: the cgroup's usage when there is one, else the tree's
    PSS, never summed RSS (it counts shared pages per process). One process:
    its RSS."""
    n = max_procs(src)
    limit = src.limit_bytes
    if limit is not None:
        for name in ("cg_usage", "cg_working_set"):
            if has(name):
                return name, f"{name}: the memory limit applies to the cgroup, which charges each page once"
    dc = double_count(src) if n > 1 else None
    rss = src.series.get("rss")
    rss_peak = int(rss.v.max()) if rss is not None and len(rss) else 0
    if dc is not None and dc["bytes"] <= max(_SMALL_DOUBLE_COUNT, _SMALL_SHARE * rss_peak) and has("rss"):
        return "rss", (
            f"rss: the tree had up to {n} processes, but summed rss counted only "
            f"{format_bytes(max(dc['bytes'], 0))} of shared pages twice (within 5 %), and it is "
            "sampled every tick"
        )
    if n > 1:
        if has("cg_usage"):
            return "cg_usage", (
                f"cg_usage: the tree had up to {n} processes, and the cgroup charges each page once "
                "(summed rss counts pages shared after a fork once per process)"
            )
        if has(PSS):
            per = pss_period_s(src)
            every = f" (read every {per:g} s: a spike shorter than that can fall between two readings)" if per else ""
            return PSS, (
                f"pss: the tree had up to {n} processes and no cgroup; its PSS splits shared pages between "
                f"the processes that map them, so it counts each once{every}; summed rss counts them once "
                "per process"
            )
        if has("rss"):
            return "rss", (
                f"rss: the tree had up to {n} processes but the recording has no PSS readings (sampler "
                "without them, or --pss-budget 0): summed rss counts shared pages once per process, "
                "an upper bound"
            )
    if has("rss"):
        return "rss", "rss: one process (no pages counted twice)" if n <= 1 else "rss"
    return "", ""


def summary(src: Source, headline: str, rss_peak: int | None) -> dict[str, Any] | None:
    """The report's ``tree`` block for a tree of more than one process, else None."""
    n = max_procs(src)
    if n <= 1:
        return None
    dc = double_count(src)
    pss = _col(src, PSS)
    out: dict[str, Any] = {
        "max_procs": n,
        "rss_peak_bytes": rss_peak,
        "pss_peak_bytes": int(pss.max()) if pss is not None else None,
        "pss_period_s": pss_period_s(src),
        "rss_double_count_bytes": dc["bytes"] if dc else None,
        "double_count_procs": dc["procs"] if dc else None,
        "double_count_t": src.rel(dc["t"]) if dc else None,
        "hwm_note": hwm_note(headline),
    }
    return out


def hwm_note(headline: str) -> str:
    """What the kernel's high-water marks can say about a tree."""
    if headline.startswith("cg_"):
        return (
            "kernel high-water marks: the cgroup's peak (max_usage_in_bytes / memory.peak) is the tree's true "
            "peak, so a spike between two samples is still counted"
        )
    return (
        "kernel high-water marks: each process's VmHWM counts its shared pages as its own, so their sum "
        "over-counts a tree; only their largest is a sure lower bound, and no kernel peak exists for PSS: "
        "sample inside a cgroup (--limit, --cgroup) for an exact tree peak"
    )


def describe(tree: dict[str, Any] | None) -> str | None:
    """One line for the terminal and HTML summaries: how much summed RSS counts twice."""
    if not tree:
        return None
    n = tree["max_procs"]
    dc = tree.get("rss_double_count_bytes")
    if dc is None:
        return f"{n} processes: summed rss counts their shared pages once per process (no PSS readings to say how much)"
    procs = tree.get("double_count_procs") or n
    return (
        f"shared pages counted in {procs} processes: +{format_bytes(max(dc, 0))} in summed rss "
        f"(rss peak {format_bytes(tree.get('rss_peak_bytes'))}, tree pss peak {format_bytes(tree.get('pss_peak_bytes'))})"
    )
