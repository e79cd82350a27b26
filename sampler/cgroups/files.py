"""What a memory cgroup is made of, on v1 and v2: file names, errors, the
value types, and the parsers of the files' formats.

* v1: ``memory.usage_in_bytes``, ``memory.stat`` (total_* keys when
  hierarchical), ``memory.limit_in_bytes``, ``memory.max_usage_in_bytes``
  (resettable by writing 0, only when we own the cgroup), ``memory.oom_control``
  (``oom_kill``, ``under_oom``), ``memory.failcnt``.
* v2: ``memory.current``, ``memory.stat``, ``memory.max``, ``memory.high``,
  ``memory.peak`` (5.19+; per-descriptor reset since 6.12 by writing to our own
  open fd), ``memory.events`` (``oom``, ``oom_kill``, ``max``, ``high``),
  ``memory.pressure``. The root cgroup has only ``memory.stat`` (and pressure).

docs/cgroups.md says what each kernel offers and what spikewatch does with it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

# v1 reports "unlimited" as PAGE_COUNTER_MAX rounded to pages (9223372036854771712
# with 4 KiB pages); anything this large is no limit.
_V1_UNLIMITED = 1 << 62

_FILES = {
    1: {
        "usage": "memory.usage_in_bytes",
        "stat": "memory.stat",
        "limit": "memory.limit_in_bytes",
        "peak": "memory.max_usage_in_bytes",
        "oom": "memory.oom_control",
        "failcnt": "memory.failcnt",
    },
    2: {
        "usage": "memory.current",
        "stat": "memory.stat",
        "limit": "memory.max",
        "peak": "memory.peak",
        "events": "memory.events",
        "psi": "memory.pressure",
    },
}

# v1 memory.stat name -> the v2 name used everywhere in spikewatch.
_V1_STAT_NAMES = {
    "rss": "anon",
    "cache": "file",
    "shmem": "shmem",
    "mapped_file": "file_mapped",
    "dirty": "file_dirty",
    "writeback": "file_writeback",
    "swap": "swap",
    "inactive_anon": "inactive_anon",
    "active_anon": "active_anon",
    "inactive_file": "inactive_file",
    "active_file": "active_file",
    "unevictable": "unevictable",
    "rss_huge": "anon_thp",
    "pgfault": "pgfault",
    "pgmajfault": "pgmajfault",
    "workingset_refault_anon": "workingset_refault_anon",
    "workingset_refault_file": "workingset_refault_file",
}


class CgroupError(Exception):
    """A cgroup problem, with a message that says what to do about it."""


class CgroupGone(CgroupError):
    """The cgroup was removed while we held it open."""


@dataclass(frozen=True)
class CgroupInfo:
    version: int  # 1 or 2
    path: str  # path inside the hierarchy, e.g. "/process_api/abc"
    dir: Path  # absolute directory, e.g. /sys/fs/cgroup/memory/process_api/abc

    @property
    def usage_file(self) -> Path:
        """memory.usage_in_bytes (v1) or memory.current (v2): what the hot loop reads."""
        return self.dir / _FILES[self.version]["usage"]

    @property
    def v2_root(self) -> bool:
        """The root of a cgroup v2 hierarchy: the kernel keeps no memory.current (nor
        max, peak, events) there, only memory.stat; usage is summed from it."""
        return self.version == 2 and not self.usage_file.exists() and (self.dir / "memory.stat").exists()

    def has_memory(self) -> bool:
        return self.usage_file.exists() or self.v2_root


@dataclass(frozen=True)
class Limit:
    """The memory limit that bites first, and where it comes from.

    A container's or pod's own cgroup is often unlimited (``max``) while its
    parent carries the limit: ``own`` alone would report no limit at all.
    """

    bytes: int | None  # the lowest limit of this cgroup and its ancestors; None: none anywhere
    own: int | None  # this cgroup's own memory.max (v2) / memory.limit_in_bytes (v1)
    source: str | None  # hierarchy path of the cgroup whose limit ``bytes`` is
    kind: str | None  # "max" (OOM kill past it) or "high" (v2 memory.high: reclaimed and throttled)


def _parse_kv(data: bytes) -> dict[str, int]:
    """``key value`` lines (memory.stat, memory.events, memory.oom_control) as a dict."""
    words = data.split()
    if len(words) % 2 == 0:
        # ten times a second, 40-80 lines: a C-level pass, not a Python loop a line
        try:
            return dict(zip(map(bytes.decode, words[::2]), map(int, words[1::2]), strict=True))
        except ValueError:
            pass  # a value that is not an integer: the careful way below skips its line
    out: dict[str, int] = {}
    for line in data.decode().splitlines():
        key, _, value = line.partition(" ")
        try:
            out[key] = int(value)
        except ValueError:
            continue
    return out


def normalise_stat(raw: dict[str, int], version: int) -> dict[str, int]:
    """memory.stat under the v2 names; v1 takes the ``total_*`` keys when there are
    any (they include descendants, use_hierarchy=1; the plain keys do not)."""
    if version != 1:
        return dict(raw)
    hier = any(k.startswith("total_") for k in raw)
    out = {}
    for v1name, name in _V1_STAT_NAMES.items():
        value = raw.get("total_" + v1name if hier else v1name)
        if value is not None:
            out[name] = value
    return out


# The detail tier wants four keys of memory.stat's 40-80: one regex pass in C finds
# them (~5 µs) where the whole dict took ~35 µs of Python, ten times a second.
_BREAKDOWN = {
    1: re.compile(
        rb"^(total_rss|total_cache|total_inactive_file|rss|cache|inactive_file|hierarchical_memory_limit) (\d+)$",
        re.MULTILINE,
    ),
    2: re.compile(rb"^(anon|file|inactive_file) (\d+)$", re.MULTILINE),
}


def parse_breakdown(data: bytes, version: int) -> tuple[dict[str, int], int | None]:
    """From a memory.stat read: ``anon``, ``file`` and ``inactive_file`` as
    :func:`normalise_stat` names them (v1: the ``total_*`` keys when hierarchical), and
    v1's ``hierarchical_memory_limit`` (None on v2 or when absent)."""
    found = {k.decode(): int(v) for k, v in _BREAKDOWN[version].findall(data)}
    limit = found.pop("hierarchical_memory_limit", None)
    return normalise_stat(found, version), limit


def _root_usage(stat: dict[str, int]) -> int:
    """What memory.current would say at the v2 root: user pages (anon, file), kernel
    memory ("kernel", 5.18+, or its parts before) and network buffers, from memory.stat."""
    kernel = stat.get("kernel")
    if kernel is None:
        kernel = sum(stat.get(k, 0) for k in ("kernel_stack", "pagetables", "percpu", "slab", "vmalloc"))
    return stat.get("anon", 0) + stat.get("file", 0) + kernel + stat.get("sock", 0)


def _parse_psi(data: bytes) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in data.decode().splitlines():
        kind, *fields = line.split()
        for f in fields:
            k, _, v = f.partition("=")
            try:
                out[f"{kind}_{k}"] = float(v)
            except ValueError:
                continue
    return out
