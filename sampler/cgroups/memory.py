"""Reading one memory cgroup through kept-open descriptors.

The hot loop only ever calls ``os.pread(cg.usage_fd, 64, 0)`` (the v2 root, which
has no usage file, :meth:`MemoryCgroup.read_usage`); everything else here is for
the detail tier (~100 ms) or for setup.
"""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

from .discovery import _cgroup2_mounts, _join, _no_memory_here
from .files import (
    _FILES,
    _V1_UNLIMITED,
    CgroupError,
    CgroupGone,
    CgroupInfo,
    Limit,
    _parse_kv,
    _parse_psi,
    _root_usage,
    normalise_stat,
    parse_breakdown,
)


class MemoryCgroup:
    """Kept-open files of one memory cgroup."""

    info: CgroupInfo
    usage_fd: int  # for the hot loop: os.pread(usage_fd, 64, 0)
    owned: bool  # created by us: we may reset its peak and must remove it
    peak_resettable: bool  # read_peak() is since the last reset_peak(), not since creation
    v2_root: bool  # the root of a v2 hierarchy: usage from memory.stat, no usage_fd
    psi_scope: str | None  # "cgroup", "system" (v1 falls back to /proc/pressure) or None

    def __init__(
        self,
        info: CgroupInfo,
        *,
        owned: bool = False,
        allow_peak_reset: bool | None = None,
        root: Path | str = "/",
    ) -> None:
        """``allow_peak_reset`` (default: ``owned``) lets a v1 cgroup's
        max_usage_in_bytes be reset; that reset is visible to everyone reading
        it, so only behind an explicit flag for cgroups we merely watch. v2
        resets only our own descriptor's view and is always allowed."""
        self.info = info
        self.owned = owned
        self.version = info.version
        self._root = Path(root)
        self._fds: dict[str, int] = {}
        self._stat_raw: dict[str, int] | None = None
        self._v1_source: tuple[int, str | None] | None = None  # (limit, whose): found once per value
        names = _FILES[info.version]
        self.v2_root = info.v2_root
        try:
            # The v2 root has no usage file: the hot loop calls read_usage() instead.
            self.usage_fd = -1 if self.v2_root else self._open("usage", names["usage"])
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ENOTDIR):
                raise CgroupError(_no_memory_here(info.dir, None)) from None
            raise CgroupError(f"cannot open {info.dir / names['usage']}: {exc.strerror} (run as root?)") from None
        for key in ("stat", "limit", "oom", "failcnt", "events"):
            if key in names:
                self._try_open(key, names[key])
        self.peak_resettable = False
        if info.version == 2:
            # Writing to our own memory.peak descriptor (6.12+) restarts the
            # peak for that descriptor: readers that never wrote still see the
            # peak since creation, so we may do it for cgroups we merely watch.
            # (Descriptors that ever wrote share one watermark that each write
            # lowers: two resetting watchers take spikes from each other.)
            # Older kernels make the file read-only, and 5.19- have none at all.
            # The file's mode says which: 0444 before 6.12, 0644 since (kernfs
            # shows the write op as a mode bit; root would bypass it on open).
            peak = info.dir / names["peak"]
            fd = -1
            try:
                if os.stat(peak).st_mode & 0o222:
                    fd = os.open(peak, os.O_RDWR | os.O_CLOEXEC)
                    self._fds["peak"] = fd
                    self.peak_resettable = self._write_peak()
            except OSError:
                pass
            if not self.peak_resettable:
                if fd >= 0:
                    os.close(fd)
                    del self._fds["peak"]
                self._try_open("peak", names["peak"])
        else:
            may_reset = owned if allow_peak_reset is None else allow_peak_reset
            self._try_open("peak", names["peak"], os.O_RDWR if may_reset else os.O_RDONLY)
            self.peak_resettable = may_reset and "peak" in self._fds and self._fd_writable("peak")
        self._open_limit_files()
        self.psi_scope = None
        if info.version == 2 and self._try_open("psi", names["psi"]):
            self.psi_scope = "cgroup"
        elif info.version == 1 and (mirror := self._unified_mirror()) is not None:
            if self._try_open("psi", str(mirror / "memory.pressure")):
                self.psi_scope = "cgroup"
        if self.psi_scope is None and self._try_open("psi", str(self._root / "proc/pressure/memory")):
            self.psi_scope = "system"

    def _unified_mirror(self) -> Path | None:
        """On a hybrid host, the cgroup v2 directory holding exactly this v1
        cgroup's processes: v2 keeps per-cgroup pressure even without the memory
        controller. Only trusted when it holds the same (non-empty) process set,
        as systemd arranges for its units."""
        mine = set(self.pids())
        if not mine:
            return None
        for m in _cgroup2_mounts(self._root):
            d = _join([m], self.info.path)
            if d is None or not (d.dir / "memory.pressure").exists():
                continue
            try:
                theirs = {int(x) for x in (d.dir / "cgroup.procs").read_text().split()}
            except (OSError, ValueError):
                continue
            if theirs == mine:
                return d.dir
        return None

    def _open(self, key: str, name: str, flags: int = os.O_RDONLY) -> int:
        path = name if name.startswith("/") else self.info.dir / name
        fd = os.open(path, flags | os.O_CLOEXEC)
        self._fds[key] = fd
        return fd

    def _try_open(self, key: str, name: str, flags: int = os.O_RDONLY) -> bool:
        try:
            self._open(key, name, flags)
            return True
        except OSError:
            if flags != os.O_RDONLY:
                return self._try_open(key, name)
            return False

    def _fd_writable(self, key: str) -> bool:
        return (fcntl.fcntl(self._fds[key], fcntl.F_GETFL) & os.O_ACCMODE) == os.O_RDWR

    def _read(self, key: str) -> bytes | None:
        fd = self._fds.get(key)
        if fd is None:
            return None
        try:
            return os.pread(fd, 65536, 0)
        except OSError as exc:
            if exc.errno in (errno.ENODEV, errno.ENOENT, errno.ESTALE):
                raise CgroupGone(f"cgroup {self.info.dir} was removed") from None
            raise

    def read_usage(self) -> int:
        if self.v2_root:
            return _root_usage(_parse_kv(self._read("stat") or b""))
        return int(self._read("usage") or b"0")

    def read_stat(self, usage: int | None = None) -> dict[str, int]:
        """Normalised to v2 names: anon, file, inactive_file, active_file, shmem, ...,
        plus ``usage`` and ``working_set`` (usage - inactive_file, floored at 0:
        what the kubelet evicts on). ``usage``: one just read (the sampler's last
        tick), so the usage file is not read again."""
        raw = _parse_kv(self._read("stat") or b"")
        self._stat_raw = raw  # read_limits(after_stat=True) on v1 reads no second memory.stat
        if self.v2_root:
            usage = _root_usage(raw)
        elif usage is None:
            usage = self.read_usage()
        out = normalise_stat(raw, self.version)
        out["usage"] = usage
        out["working_set"] = max(0, usage - out.get("inactive_file", 0))
        return out

    def read_breakdown(self, usage: int | None = None) -> dict[str, int]:
        """The part of :meth:`read_stat` the detail tier publishes, the same values:
        ``anon``, ``file``, ``inactive_file``, ``usage`` and ``working_set``."""
        if self.v2_root:
            return self.read_stat(usage)  # its usage is summed from the whole file
        out, hier_limit = parse_breakdown(self._read("stat") or b"", self.version)
        if self.version == 1:
            # what read_limits(after_stat=True) takes from this same read
            self._stat_raw = {} if hier_limit is None else {"hierarchical_memory_limit": hier_limit}
        if usage is None:
            usage = self.read_usage()
        out["usage"] = usage
        out["working_set"] = max(0, usage - out.get("inactive_file", 0))
        return out

    def read_limit(self) -> int | None:
        """None when unlimited."""
        data = (self._read("limit") or b"").strip()
        if not data or data == b"max":
            return None
        value = int(data)
        return None if value >= _V1_UNLIMITED else value

    def read_effective_limit(self) -> int | None:
        """The tightest limit of this cgroup and its ancestors (what will actually bite)."""
        return self.read_limits().bytes

    def read_limits(self, *, after_stat: bool = False) -> Limit:
        """The effective limit: v2 the lowest memory.max or memory.high of this cgroup
        and its ancestors, v1 the kernel's hierarchical_memory_limit (``after_stat``:
        from the memory.stat that :meth:`read_stat` has just read). Raises CgroupGone."""
        own = self.read_limit()
        if self.version == 1:
            raw = self._stat_raw if after_stat and self._stat_raw is not None else None
            if raw is None:
                raw = _parse_kv(self._read("stat") or b"")
            hier = raw.get("hierarchical_memory_limit")
            value = None if hier is None or hier >= _V1_UNLIMITED else hier
            if value is None or value == own:
                return Limit(own, own, self.info.path if own is not None else None, "max" if own is not None else None)
            return Limit(value, own, self._v1_limit_source(value), "max")
        best: tuple[int, str, str] | None = None
        for hpath, key in self._limit_files:
            try:
                data = os.pread(self._fds[key], 64, 0).strip()
            except OSError as exc:
                if key.startswith("max@0") and exc.errno in (errno.ENODEV, errno.ENOENT):
                    raise CgroupGone(f"cgroup {self.info.dir} was removed") from None
                continue
            if not data or data == b"max":
                continue
            value = int(data)
            kind = "high" if key.startswith("high@") else "max"
            # Lowest wins; at a tie the nearer cgroup and memory.max (the kill) first.
            if best is None or value < best[0]:
                best = (value, hpath, kind)
        if best is None:
            return Limit(None, own, None, None)
        return Limit(best[0], own, best[1], best[2])

    def _open_limit_files(self) -> None:
        """v2: keep memory.max and memory.high of this cgroup and every ancestor
        open (up to the mount's root, which has neither), nearest first."""
        self._limit_files: list[tuple[str, str]] = []
        if self.version != 2:
            return
        d, hpath, depth = self.info.dir, self.info.path, 0
        while (d / "memory.max").exists():
            for name in ("max", "high"):
                key = f"{name}@{depth}"
                if depth == 0 and name == "max" and "limit" in self._fds:
                    self._fds[key] = os.dup(self._fds["limit"])
                elif not self._try_open(key, str(d / f"memory.{name}")):
                    continue
                self._limit_files.append((hpath, key))
            if d.parent == d:
                break
            d, depth = d.parent, depth + 1
            hpath = hpath.rsplit("/", 1)[0] or "/"

    def _v1_limit_source(self, value: int) -> str | None:
        """The nearest v1 cgroup (this one or an ancestor) whose own limit is ``value``."""
        cached = self._v1_source
        if cached is not None and cached[0] == value:
            return cached[1]
        d, hpath, found = self.info.dir.parent, self.info.path, None
        hpath = hpath.rsplit("/", 1)[0] or "/"
        while (d / "memory.limit_in_bytes").exists():
            try:
                if int((d / "memory.limit_in_bytes").read_text()) == value:
                    found = hpath
                    break
            except (OSError, ValueError):
                break
            if d.parent == d or hpath == "/":
                break
            d, hpath = d.parent, hpath.rsplit("/", 1)[0] or "/"
        self._v1_source = (value, found)
        return found

    def read_peak(self) -> int | None:
        """Highest usage since the last reset_peak() when ``peak_resettable``,
        else since the cgroup was created (or someone else's reset); None when
        the kernel has no peak file. Even unresettable, it still tells of a
        spike: when it grew since the previous detail tick, usage reached that
        new value somewhere in the interval."""
        data = self._read("peak")
        return int(data) if data else None

    def reset_peak(self) -> bool:
        """Start a new peak interval; False when this kernel/cgroup can't."""
        return self.peak_resettable and self._write_peak()

    def _write_peak(self) -> bool:
        fd = self._fds.get("peak")
        if fd is None:
            return False
        try:
            if self.version == 1:
                os.pwrite(fd, b"0\n", 0)
            else:
                # Any non-empty write resets this descriptor's peak; writing
                # back what it reads keeps a captured file tree intact too.
                os.pwrite(fd, os.pread(fd, 64, 0) or b"0\n", 0)
            return True
        except OSError as exc:
            if exc.errno in (errno.ENODEV, errno.ENOENT):
                raise CgroupGone(f"cgroup {self.info.dir} was removed") from None
            return False

    def read_oom(self) -> dict[str, int]:
        """Counters: oom_kill; v1 under_oom and failcnt; v2 oom, max, high, oom_group_kill.
        ``limit_hits`` (v1 failcnt, v2 max events) rises while usage sits at the
        limit: the early warning before an OOM kill."""
        if self.version == 1:
            out = _parse_kv(self._read("oom") or b"")
            out.pop("oom_kill_disable", None)
            fail = self._read("failcnt")
            out["failcnt"] = int(fail) if fail else 0
            out.setdefault("oom_kill", 0)
            out.setdefault("under_oom", 0)
            out["limit_hits"] = out["failcnt"]
        else:
            out = _parse_kv(self._read("events") or b"")
            for k in ("low", "high", "max", "oom", "oom_kill"):
                out.setdefault(k, 0)
            out["limit_hits"] = out["max"]
        return out

    def read_psi(self) -> dict[str, float] | None:
        """Memory pressure (some_avg10, ..., full_total); ``system_wide`` is 1.0 when
        it is /proc/pressure/memory because the cgroup has no pressure file (v1)."""
        data = self._read("psi")
        if not data:
            return None
        out = _parse_psi(data)
        out["system_wide"] = 1.0 if self.psi_scope == "system" else 0.0
        return out

    def pids(self, recursive: bool = False) -> list[int]:
        """Processes in this cgroup (and its descendants when ``recursive``)."""
        dirs = [self.info.dir]
        if recursive:
            dirs = [Path(d) for d, _, _ in os.walk(self.info.dir)]
        out: list[int] = []
        for d in dirs:
            try:
                out.extend(int(x) for x in (d / "cgroup.procs").read_text().split())
            except FileNotFoundError:
                continue
        return out

    def exists(self) -> bool:
        return self.info.has_memory()

    def close(self) -> None:
        for fd in self._fds.values():
            try:
                os.close(fd)
            except OSError:
                pass
        self._fds.clear()
        self.usage_fd = -1

    def __enter__(self) -> MemoryCgroup:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"MemoryCgroup(v{self.version}, {self.info.dir}, owned={self.owned})"
