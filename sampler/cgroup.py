"""Memory cgroups, v1 and v2, behind one small interface.

* The hot loop only ever calls ``os.pread(cg.usage_fd, 64, 0)``; everything
  else here is for the detail tier (~100 ms) or for setup.
* v1: ``memory.usage_in_bytes``, ``memory.stat`` (total_* keys when
  hierarchical), ``memory.limit_in_bytes``, ``memory.max_usage_in_bytes``
  (resettable by writing 0, only when we own the cgroup), ``memory.oom_control``
  (``oom_kill``, ``under_oom``), ``memory.failcnt``.
* v2: ``memory.current``, ``memory.stat``, ``memory.max``, ``memory.peak``
  (5.19+; per-descriptor reset since 6.12 by writing to our own open fd),
  ``memory.events`` (``oom``, ``oom_kill``, ``max``, ``high``), ``memory.pressure``.

Every lookup takes ``root`` (default ``/``): the directory that stands for the
file-system root, so ``/proc`` is ``root/proc`` and a mount point ``/sys/fs/cgroup``
from mountinfo is ``root/sys/fs/cgroup``. Tests point it at captured file trees
to exercise the v2 code on real file contents without a v2 memory controller.

To run a command inside a limited cgroup from its first instruction, use
:func:`spawn_in` (or :func:`join_argv` to build the argv yourself): a tiny
``sh`` writes its own pid into ``cgroup.procs`` and then ``exec``s the command,
so the pid stays the same and no ``preexec_fn`` runs in a threaded parent.
"""

from __future__ import annotations

import errno
import fcntl
import itertools
import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

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


# ---------------------------------------------------------------- discovery


@dataclass(frozen=True)
class _Mount:
    version: int
    root: str  # the hierarchy path mounted there (mountinfo field 4)
    point: Path  # where it is mounted, prefixed by the lookup's ``through`` (default ``root``)


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo.
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and i + 4 <= len(field) and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def _under(root: Path, absolute: str) -> Path:
    return Path(root) / absolute.lstrip("/")


def _mountinfo(root: Path, pid: int | str, through: Path | None) -> Iterator[tuple[str, list[str], str, Path]]:
    """(fstype, super options, hierarchy path mounted, mount point under ``through``)
    of every line of ``root/proc/PID/mountinfo``. Raises OSError."""
    text = (root / f"proc/{pid}/mountinfo").read_text()
    base = root if through is None else through
    for line in text.splitlines():
        pre, sep, post = line.partition(" - ")
        if not sep:
            continue
        fields, tail = pre.split(), post.split()
        if len(fields) < 5 or len(tail) < 3:
            continue
        yield tail[0], tail[2].split(","), _unescape(fields[3]), _under(base, _unescape(fields[4]))


def _mounts(root: Path | str = "/", *, pid: int | str = "self", through: Path | None = None) -> list[_Mount]:
    """Every memory-capable cgroup mount in process ``pid``'s mount namespace (ours by
    default), v2 (with memory enabled) before v1.

    Mount points are joined under ``through`` (default ``root``): ``/proc/PID/root``
    reaches them as that process's own mount namespace shows them.
    """
    root = Path(root)
    try:
        entries = list(_mountinfo(root, pid, through))
    except OSError as exc:
        raise CgroupError(f"cannot read {root / f'proc/{pid}/mountinfo'}: {exc.strerror}") from None
    v1: list[_Mount] = []
    v2: list[_Mount] = []
    for fstype, superopts, mroot, point in entries:
        if fstype == "cgroup" and "memory" in superopts:
            v1.append(_Mount(1, mroot, point))
        elif fstype == "cgroup2":
            try:
                controllers = (point / "cgroup.controllers").read_text().split()
            except OSError:
                continue
            if "memory" in controllers:
                v2.append(_Mount(2, mroot, point))
    # The kernel binds the memory controller to one hierarchy only; if a v2
    # mount offers it, v1 cannot have it (and vice versa) — but prefer v2.
    chosen = v2 or v1
    # Mounts of the whole hierarchy first: they can see every cgroup.
    return sorted(chosen, key=lambda m: (m.root != "/", -len(m.root)))


def _cgroup2_mounts(root: Path | str = "/") -> list[_Mount]:
    """Every cgroup2 mount, memory controller or not."""
    try:
        return [_Mount(2, mroot, point) for fstype, _, mroot, point in _mountinfo(Path(root), "self", None)
                if fstype == "cgroup2"]
    except OSError:
        return []


def memory_hierarchy(*, root: Path | str = "/") -> tuple[int, Path] | None:
    """(version, mount point) of the memory controller, or None when there is none."""
    mounts = _mounts(root)
    if not mounts:
        return None
    return mounts[0].version, mounts[0].point


def _join(mounts: list[_Mount], path: str) -> CgroupInfo | None:
    """The directory of hierarchy ``path``, through the mount whose root covers it."""
    best: tuple[_Mount, str] | None = None
    for m in mounts:
        mroot = m.root.rstrip("/")
        if path == m.root or path.startswith(mroot + "/") or mroot == "":
            rel = path[len(mroot):].lstrip("/")
            if ".." in rel.split("/"):
                continue  # "/../x" (outside a cgroup namespace) is not below a mount of "/"
            if best is None or len(m.root) > len(best[0].root):
                best = (m, rel)
    if best is None:
        return None
    m, rel = best
    return CgroupInfo(m.version, path, m.point / rel if rel else m.point)


def _read_proc_cgroup(root: Path, pid: int | str) -> str:
    cgfile = root / f"proc/{pid}/cgroup"
    try:
        return cgfile.read_text()
    except FileNotFoundError:
        raise CgroupError(f"no process {pid} (nothing at {cgfile})") from None
    except OSError as exc:
        raise CgroupError(f"cannot read {cgfile}: {exc.strerror}") from None


def _memory_path(text: str, version: int) -> str | None:
    """The memory cgroup path in a /proc/PID/cgroup text (v1: the memory line; v2: ``0::``)."""
    for line in text.splitlines():
        hid, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if version == 1 and hid != "0" and "memory" in controllers.split(","):
            return path
        if version == 2 and hid == "0" and controllers == "":
            return path
    return None


def cgroup_of_pid(pid: int | str, *, root: Path | str = "/") -> CgroupInfo | None:
    """The memory cgroup ``pid`` belongs to (from /proc/PID/cgroup and mountinfo).

    None when there is no memory controller or the cgroup is outside what our
    mounts show (e.g. a path with "/.." from another cgroup namespace; see
    :func:`cgroup_seen_by` for those). Raises CgroupError when the process does not exist.
    """
    mounts = _mounts(root)
    if not mounts:
        return None
    path = _memory_path(_read_proc_cgroup(Path(root), pid), mounts[0].version)
    if path is None or "/.." in path or not path.startswith("/"):
        return None
    info = _join(mounts, path)
    if info is None or not info.dir.is_dir():
        return None
    return info


def _reachable(mounts: list[_Mount], path: str | None) -> CgroupInfo | None:
    if not mounts or path is None or not path.startswith("/"):
        return None
    info = _join(mounts, path)
    if info is None or not info.has_memory():
        return None
    return info


def cgroup_seen_by(pid: int | str, *, root: Path | str = "/") -> CgroupInfo:
    """The memory cgroup process ``pid`` lives in (its container's, for a containerised
    service), as a directory this process can open. For ``--cgroup auto``.

    Through our own cgroup mounts when they show it: on a plain host that is the
    directory :func:`cgroup_of_pid` gives. Otherwise through the process's own mount
    namespace: ``/proc/PID/root/<its cgroup mount point>/<rel>`` — how a sidecar,
    whose cgroup namespace and mounts show only its own cgroup, reaches the app
    container's. /proc/PID/cgroup and /proc/PID/mountinfo both show cgroup paths
    relative to *our* cgroup namespace (the app's may read ``/../cri-containerd-….scope``),
    so the two compare whatever namespaces the process is in. The result's ``path``
    is the hierarchy path as /proc/PID/cgroup shows it to us.

    Raises CgroupError (no such process; no permission to follow /proc/PID/root;
    no memory controller; the cgroup reachable through neither mount namespace).
    """
    root = Path(root)
    text = _read_proc_cgroup(root, pid)
    try:
        ours = _mounts(root)
    except CgroupError:
        ours = []
    info = _reachable(ours, _memory_path(text, ours[0].version) if ours else None)
    if info is not None:
        return info
    # Not under our mounts: look from inside the process's own mount namespace.
    through = root / f"proc/{pid}/root"
    try:
        os.stat(through)  # following the link takes the kernel's ptrace access check
    except FileNotFoundError:
        raise CgroupError(f"no process {pid} (it exited)") from None
    except PermissionError:
        raise CgroupError(
            f"no permission to follow {through} into process {pid}'s mount namespace, where its "
            f"memory cgroup is mounted (this sampler's own cgroup mounts do not show it): run as root "
            f"with CAP_SYS_PTRACE (Kubernetes: securityContext.capabilities.add: [SYS_PTRACE]) "
            f"or as the same user as process {pid}"
        ) from None
    except OSError as exc:
        raise CgroupError(f"cannot follow {through}: {exc.strerror}") from None
    try:
        theirs = _mounts(root, pid=pid, through=through)
    except CgroupError:
        if not (root / f"proc/{pid}").exists():
            raise CgroupError(f"no process {pid} (it exited)") from None
        raise
    if not ours and not theirs:
        raise CgroupError(
            f"no memory cgroup controller is mounted, neither here nor in process {pid}'s mount "
            "namespace (cgroup v1 'memory', or cgroup v2 with 'memory' in cgroup.controllers)"
        )
    version = (theirs or ours)[0].version
    path = _memory_path(text, version)
    shown = "; ".join(text.split())
    if path is None:
        raise CgroupError(
            f"process {pid} is in no cgroup v{version} memory cgroup (its /proc/{pid}/cgroup: {shown})"
        )
    info = _reachable(theirs, path)
    if info is not None:
        return info
    where = ", ".join(f"{m.root} at {m.point}" for m in theirs) or "none"
    raise CgroupError(
        f"the memory cgroup of process {pid} ({path!r} in its /proc/{pid}/cgroup: {shown}) is not "
        f"reachable: this sampler's cgroup mounts do not show it, nor do the cgroup mounts in its own "
        f"mount namespace (memory mounts there: {where}). Mount the cgroup fs in its container "
        "(Docker and Kubernetes do), or give the directory with --cgroup PATH"
    )


def resolve(path: str, *, root: Path | str = "/") -> CgroupInfo:
    """An absolute directory, or a path relative to the memory hierarchy's root."""
    mounts = _mounts(root)
    if not mounts:
        raise CgroupError(
            "no memory cgroup controller is mounted (neither cgroup v1 'memory' nor "
            "cgroup v2 with 'memory' in cgroup.controllers)"
        )
    top = mounts[0].point
    p = Path(os.path.normpath(path)) if path else Path(".")
    if p.is_absolute():
        # A directory inside a mount point is taken as such; any other absolute
        # path is a hierarchy path like systemd's "/system.slice/x.service".
        for m in mounts:
            try:
                rel = p.relative_to(m.point)
            except ValueError:
                continue
            rels = "" if str(rel) == "." else str(rel)
            hpath = "/" + "/".join(filter(None, (m.root.strip("/"), rels)))
            info = CgroupInfo(m.version, hpath, p)
            break
        else:
            # A memory cgroup directory seen through another mount, e.g. a
            # sidecar reading the app container's cgroup via /proc/PID/root:
            # its own files say which version it is.
            for version in (2, 1):
                if (p / _FILES[version]["usage"]).exists() and (p / "cgroup.procs").exists():
                    return CgroupInfo(version, str(p), p)
            if p.is_dir() and (p / "cgroup.procs").exists():
                raise CgroupError(
                    f"{p} is a cgroup of another controller, not of memory; "
                    f"memory cgroups are under {top} (list them with ls {top})"
                )
            info = _join(mounts, "/" + str(p).strip("/"))
    else:
        info = _join(mounts, "/" + path.strip("/"))
    if info is None or not info.dir.is_dir() or not info.has_memory():
        where = info.dir if info is not None else path
        raise CgroupError(_no_memory_here(Path(where), top))
    return info


def _no_memory_here(d: Path, top: Path | None) -> str:
    """Why ``d`` is no memory cgroup, and what to do about it.

    The usual v2 case: a cgroup whose parent does not hand the memory controller
    down (no +memory in the parent's cgroup.subtree_control), so it has no
    memory.* files; every ancestor on the way needs it."""
    listing = f"; list them with ls {top}" if top is not None else ""
    if not (d / "cgroup.procs").exists() or not (d / "cgroup.controllers").exists():
        return f"no memory cgroup at {d}{listing}"
    missing: list[Path] = []
    parent = d.parent
    while (parent / "cgroup.subtree_control").exists():
        try:
            enabled = (parent / "cgroup.subtree_control").read_text().split()
        except OSError:
            break
        if "memory" in enabled:
            break
        missing.append(parent)
        if parent.parent == parent or not (parent / "cgroup.controllers").exists():
            break
        parent = parent.parent
    if not missing:
        return f"no memory cgroup at {d}{listing}"
    steps = "; ".join(f"echo +memory > {p / 'cgroup.subtree_control'}" for p in reversed(missing))
    return (
        f"{d} has no memory controller: its parent {d.parent} does not enable it for its children "
        f"(no +memory in {d.parent / 'cgroup.subtree_control'}); enable it with: {steps} "
        "(cgroup v2 refuses that for a cgroup that holds processes itself: move them into a child first; "
        "under systemd, MemoryAccounting=yes on the unit or slice does it)"
    )


def unit_cgroup(unit: str, *, root: Path | str = "/", systemctl: str = "systemctl") -> CgroupInfo:
    """The memory cgroup of a systemd unit (``systemctl show -p ControlGroup``).

    On v1 hosts systemd mirrors a unit's cgroup into the memory hierarchy only
    when it accounts memory for it; otherwise the unit's main process tells us
    which memory cgroup it is in.
    """
    try:
        proc = subprocess.run(
            [systemctl, "show", "-p", "ControlGroup", "-p", "LoadState", "-p", "MainPID", "--", unit],
            capture_output=True, text=True, timeout=10,
        )
    except FileNotFoundError:
        raise CgroupError(f"--unit needs systemd, but {systemctl!r} is not installed; use --cgroup PATH or --pid N") from None
    except subprocess.TimeoutExpired:
        raise CgroupError(f"'{systemctl} show {unit}' did not answer within 10 s; is systemd running?") from None
    if proc.returncode != 0:
        why = (proc.stderr or proc.stdout).strip().splitlines()
        raise CgroupError(
            f"cannot ask systemd about unit {unit!r}: {why[0] if why else 'exit ' + str(proc.returncode)} "
            "(is systemd running as PID 1? otherwise use --cgroup PATH or --pid N)"
        )
    props = dict(line.partition("=")[::2] for line in proc.stdout.splitlines() if "=" in line)
    if props.get("LoadState") == "not-found":
        raise CgroupError(f"systemd has no unit {unit!r}; list them with: systemctl list-units --type=service")
    cgpath = props.get("ControlGroup", "")
    if not cgpath:
        raise CgroupError(
            f"unit {unit!r} has no cgroup (it is not running); start it with systemctl start {unit}"
        )
    try:
        return resolve(cgpath, root=root)
    except CgroupError:
        pid = int(props.get("MainPID") or 0)
        if pid > 0:
            info = cgroup_of_pid(pid, root=root)
            if info is not None:
                return info
        hier = memory_hierarchy(root=root)
        raise CgroupError(
            f"unit {unit!r} is in {cgpath}, but there is no memory cgroup for it"
            + (f" under {hier[1]}" if hier else " (no memory controller)")
            + f"; enable memory accounting: systemctl set-property {unit} MemoryAccounting=yes"
        ) from None


# ---------------------------------------------------------------- reading


def _parse_kv(data: bytes) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in data.decode().splitlines():
        key, _, value = line.partition(" ")
        try:
            out[key] = int(value)
        except ValueError:
            continue
    return out


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
            # peak for that descriptor only: invisible to anyone else, so we
            # may do it for cgroups we merely watch. Older kernels make the
            # file read-only, and 5.19- have none at all.
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

    def read_stat(self) -> dict[str, int]:
        """Normalised to v2 names: anon, file, inactive_file, active_file, shmem, ...,
        plus ``usage`` and ``working_set`` (usage - inactive_file, floored at 0:
        what the kubelet evicts on)."""
        raw = _parse_kv(self._read("stat") or b"")
        usage = _root_usage(raw) if self.v2_root else self.read_usage()
        if self.version == 1:
            # total_* include descendants (use_hierarchy=1); plain keys do not.
            hier = any(k.startswith("total_") for k in raw)
            out = {}
            for v1name, name in _V1_STAT_NAMES.items():
                value = raw.get("total_" + v1name if hier else v1name)
                if value is not None:
                    out[name] = value
        else:
            out = dict(raw)
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

    def read_limits(self) -> Limit:
        """The effective limit: v2 the lowest memory.max or memory.high of this cgroup
        and its ancestors, v1 the kernel's hierarchical_memory_limit. Raises CgroupGone."""
        own = self.read_limit()
        if self.version == 1:
            raw = _parse_kv(self._read("stat") or b"")
            hier = raw.get("hierarchical_memory_limit")
            value = None if hier is None or hier >= _V1_UNLIMITED else hier
            if value is None or value == own:
                return Limit(own, own, self.info.path if own is not None else None,
                             "max" if own is not None else None)
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
        cached = getattr(self, "_v1_source", None)
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


# ---------------------------------------------------------------- creating

_counter = itertools.count(1)


def _swap_enabled(root: Path) -> bool:
    try:
        return len((root / "proc/swaps").read_text().splitlines()) > 1
    except OSError:
        return False


def _write(path: Path, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def _perm_help(where: Path) -> str:
    return (
        f"no permission to create a memory cgroup under {where}: run as root, or from a "
        "delegated cgroup (e.g. systemd-run --user --scope -p Delegate=yes spikewatch ...)"
    )


# Names we give cgroups: children of create_limited, and the v2 leaf we move into.
_OURS = re.compile(r"spikewatch-([0-9]+)-(?:[0-9]+|self)")
_SWEEP_MAX = 64  # per call: a directory full of leftovers must not delay startup


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists, someone else's
        return True
    except OverflowError:  # not a pid at all: not ours to judge
        return True
    return True


def sweep_stale(parent: Path) -> list[Path]:
    """Remove the empty ``spikewatch-<pid>-<n>`` / ``-self`` cgroups in ``parent``
    whose sampler ``<pid>`` is gone (it was SIGKILLed before it could rmdir them).

    Only rmdir, which the kernel refuses (EBUSY) for a cgroup holding processes
    or child cgroups: nothing is ever killed, a busy one is left as it is. A live
    ``<pid>`` (maybe reused, maybe a sampler still starting) keeps its cgroups.
    Bounded and quiet; never raises. Returns what was removed.
    """
    swept: list[Path] = []
    try:
        names = sorted(os.listdir(parent))
    except OSError:
        return swept
    for name in names:
        if len(swept) >= _SWEEP_MAX:
            break
        m = _OURS.fullmatch(name)
        if m is None or int(m.group(1)) == os.getpid() or _pid_alive(int(m.group(1))):
            continue
        d = parent / name
        try:
            if (d / "cgroup.procs").read_text().split():
                continue  # still in use: leave it (and whatever runs there) alone
            os.rmdir(d)
        except OSError:
            continue  # EBUSY (filled meanwhile, or has children), gone, not a cgroup: skip
        swept.append(d)
    return swept


def create_limited(
    limit_bytes: int, name: str | None = None, *, root: Path | str = "/",
    log: Callable[[str], None] | None = None,
) -> MemoryCgroup:
    """A new child cgroup of ``limit_bytes`` under our own memory cgroup (v2 if the
    memory controller is on v2, else v1), owned=True; CgroupError says what to do.

    ``name`` defaults to ``spikewatch-<pid>-<n>``. Swap is not allowed past the
    limit (v1 memsw / v2 swap.max), so the limit bites like a container's does.
    Empty leftovers of dead samplers beside it are removed first
    (:func:`sweep_stale`); ``log`` hears which.
    """
    root = Path(root)
    if limit_bytes <= 0:
        raise CgroupError(f"a memory limit must be positive, not {limit_bytes}")
    parent = cgroup_of_pid("self", root=root)  # /proc/self: our own, under any root
    if parent is None:
        hier = memory_hierarchy(root=root)
        if hier is None:
            raise CgroupError(
                "--limit needs a memory cgroup controller, and this host has none mounted "
                "(cgroup v1 'memory' or cgroup v2 with 'memory' in cgroup.controllers); "
                "run without --limit, or on a host with memory cgroups"
            )
        raise CgroupError(f"cannot find our own memory cgroup under {hier[1]}; run without --limit")
    name = name or f"spikewatch-{os.getpid()}-{next(_counter)}"
    if "/" in name or name in ("", ".", ".."):
        raise CgroupError(f"bad cgroup name {name!r}")
    if parent.version == 2:
        parent = _v2_home(parent)
    swept = sweep_stale(parent.dir)
    if swept and log is not None:
        log(f"spikewatch: removed {len(swept)} empty cgroup(s) left by samplers that died: "
            + ", ".join(str(d) for d in swept))
    child = parent.dir / name
    try:
        os.mkdir(child)
    except FileExistsError:
        raise CgroupError(f"cgroup {child} already exists; remove it with rmdir {child}") from None
    except PermissionError:
        raise CgroupError(_perm_help(parent.dir)) from None
    except OSError as exc:
        if exc.errno == errno.EROFS:
            raise CgroupError(_perm_help(parent.dir) + " (the cgroup file system is read-only here)") from None
        raise CgroupError(f"cannot create {child}: {exc.strerror}") from None
    info = CgroupInfo(parent.version, parent.path.rstrip("/") + "/" + name, child)
    try:
        if parent.version == 1:
            _write(child / "memory.limit_in_bytes", str(limit_bytes))
            # A parent with oom_kill_disable=1 would hand it down: the service
            # would hang at the limit instead of being OOM-killed as in production.
            try:
                _write(child / "memory.oom_control", "0")
            except OSError:
                pass
            if _swap_enabled(root) and (child / "memory.memsw.limit_in_bytes").exists():
                _write(child / "memory.memsw.limit_in_bytes", str(limit_bytes))
        else:
            _write(child / "memory.max", str(limit_bytes))
            if (child / "memory.swap.max").exists():
                _write(child / "memory.swap.max", "0")
        cg = MemoryCgroup(info, owned=True, root=root)
    except (OSError, CgroupError) as exc:
        _rmdir_retry(child, 2.0)
        raise CgroupError(f"cannot set a {limit_bytes}-byte limit on {child}: {exc}") from None
    return cg


def _self_leaf_name() -> str:
    return f"spikewatch-{os.getpid()}-self"


def _v2_home(ours: CgroupInfo) -> CgroupInfo:
    """The v2 cgroup under which limited children go: our own, with +memory in
    its subtree_control.

    cgroup v2 lets a non-root cgroup either hold processes or hand controllers
    to children, not both. When we are alone in our cgroup (the usual case under
    ``systemd-run --scope -p Delegate=yes``), we move ourselves into a leaf
    ``spikewatch-<pid>-self`` first, as container runtimes do; when others share
    it, CgroupError says how to give spikewatch a cgroup of its own.
    """
    if ours.dir.name == _self_leaf_name():  # moved there by an earlier call
        ours = CgroupInfo(2, ours.path.rsplit("/", 1)[0] or "/", ours.dir.parent)
    d = ours.dir
    controllers = (d / "cgroup.controllers").read_text().split()
    if "memory" not in controllers:
        raise CgroupError(
            f"the memory controller is not delegated to {d}; enable it in the parent "
            f"(echo +memory > {d.parent / 'cgroup.subtree_control'}) or run from a cgroup "
            "that has it: systemd-run --scope -p Delegate=yes spikewatch ..."
        )
    if "memory" in (d / "cgroup.subtree_control").read_text().split():
        return ours
    procs = {int(x) for x in (d / "cgroup.procs").read_text().split()}
    if procs and ours.path != "/":
        others = sorted(procs - {os.getpid()})
        if others:
            raise CgroupError(
                f"cannot give children of {d} their own memory limit: it also holds processes "
                f"{others[:5]} (cgroup v2 lets only leaf cgroups hold processes); run spikewatch "
                "in a cgroup of its own: systemd-run --scope -p Delegate=yes spikewatch ..."
            )
        leaf = d / _self_leaf_name()
        try:
            leaf.mkdir(exist_ok=True)
            _write(leaf / "cgroup.procs", str(os.getpid()))
        except OSError as exc:
            raise CgroupError(f"{_perm_help(d)} ({exc.strerror} on {leaf})") from None
    _enable_v2_memory(d)
    return ours


def _enable_v2_memory(parent: Path) -> None:
    # The caller has checked that memory is delegated to parent and not yet enabled below it.
    try:
        _write(parent / "cgroup.subtree_control", "+memory")
    except OSError as exc:
        if exc.errno == errno.EBUSY:
            raise CgroupError(
                f"cannot enable +memory in {parent}/cgroup.subtree_control: it holds processes "
                "(cgroup v2 lets only leaf cgroups hold processes); run spikewatch from its own "
                "cgroup, e.g. systemd-run --scope -p Delegate=yes spikewatch ..."
            ) from None
        raise CgroupError(_perm_help(parent)) from None


def move_pid(pid: int, cg: MemoryCgroup) -> None:
    """Move process ``pid`` (all its threads) into ``cg``."""
    try:
        _write(cg.info.dir / "cgroup.procs", str(pid))
    except OSError as exc:
        if exc.errno == errno.ESRCH:
            raise CgroupError(f"no process {pid} to move into {cg.info.dir}") from None
        if exc.errno in (errno.EACCES, errno.EPERM):
            raise CgroupError(f"no permission to move {pid} into {cg.info.dir}: run as root") from None
        raise CgroupError(f"cannot move {pid} into {cg.info.dir}: {exc.strerror}") from None


def _rmdir_retry(d: Path, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        try:
            os.rmdir(d)
            return True
        except FileNotFoundError:
            return True
        except OSError as exc:
            if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                return False
            time.sleep(0.01)


def remove(cg: MemoryCgroup, timeout: float = 5.0) -> None:
    """Kill what is left inside, then rmdir (retrying while the kernel lets go).

    Never raises for a cgroup that is already gone; raises CgroupError when it
    cannot be removed within ``timeout``.
    """
    cg.close()
    top = cg.info.dir
    if not top.is_dir():
        return
    if os.getpid() in cg.pids(recursive=True):
        raise CgroupError(f"refusing to remove {top}: this process is inside it")
    deadline = time.monotonic() + timeout
    # Bottom-up: children made inside (by the service itself) go first.
    dirs = sorted((Path(d) for d, _, _ in os.walk(top)), key=lambda p: len(p.parts), reverse=True)
    for d in dirs:
        kill_file = d / "cgroup.kill"  # v2, 5.14+: kills every process atomically
        while True:
            try:
                pids = [int(x) for x in (d / "cgroup.procs").read_text().split()]
            except FileNotFoundError:
                pids = []
            except OSError:
                pids = []
            if not pids:
                break
            if kill_file.exists():
                try:
                    _write(kill_file, "1")
                except OSError:
                    pass
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            if time.monotonic() > deadline:
                raise CgroupError(f"processes {pids} in {d} did not die within {timeout:.0f} s")
            time.sleep(0.005)
        if not _rmdir_retry(d, max(0.0, deadline - time.monotonic())):
            if d.exists():
                raise CgroupError(f"cannot remove {d}; remove it by hand with rmdir {d}")


# ---------------------------------------------------------------- launching

_JOIN_SCRIPT = 'echo $$ > "$1" || exit 126; shift; exec "$@"'
# The same, stopping itself after joining: the caller opens /proc/PID files
# while nothing has run yet, then sends SIGCONT (see wait_stopped).
_JOIN_STOP_SCRIPT = 'echo $$ > "$1" || exit 126; shift; kill -STOP $$; exec "$@"'


def join_argv(cg: MemoryCgroup | CgroupInfo, argv: Sequence[str], *, stop_before_exec: bool = False) -> list[str]:
    """``argv`` wrapped so that the process enters ``cg`` before it execs the command.

    ``/bin/sh`` (about 1 MiB, so the cgroup's peak stays the service's own)
    writes its own pid into cgroup.procs, then execs ``argv`` (PATH lookup
    included), keeping the pid: every byte the command ever touches is charged
    to ``cg``. Exit status 126 with a message on stderr if joining failed.

    With ``stop_before_exec`` the shell stops itself (SIGSTOP) once inside:
    call :func:`wait_stopped`, open the pid's /proc files and the cgroup's, then
    ``os.kill(pid, signal.SIGCONT)`` — the first sample precedes the exec. If
    the caller dies meanwhile, the kernel's orphaned-process-group rule sends
    SIGHUP + SIGCONT, and the stopped shell exits.
    """
    info = cg.info if isinstance(cg, MemoryCgroup) else cg
    if not argv:
        raise CgroupError("nothing to run")
    script = _JOIN_STOP_SCRIPT if stop_before_exec else _JOIN_SCRIPT
    return ["/bin/sh", "-c", script, "spikewatch-join", str(info.dir / "cgroup.procs"), *argv]


def wait_stopped(pid: int, timeout: float = 10.0) -> bool:
    """Wait until ``pid`` is stopped (state T); False if it exited or timed out.

    Reads /proc/PID/stat rather than waitpid(WUNTRACED), which would consume the
    stop notification behind subprocess.Popen's back."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                state = f.read().rsplit(b")", 1)[1].split()[0]
        except (OSError, IndexError):
            return False
        if state in (b"T", b"t"):
            return True
        if state in (b"Z", b"X"):
            return False
        time.sleep(0.0005)
    return False


def preexec_join(cg: MemoryCgroup | CgroupInfo):  # -> Callable[[], None]
    """A ``preexec_fn`` that moves the forked child into ``cg`` (writing 0 means
    "the writer itself"). Not for threaded parents (pyzmq has threads): prefer
    :func:`join_argv`."""
    info = cg.info if isinstance(cg, MemoryCgroup) else cg
    procs = str(info.dir / "cgroup.procs")

    def _join() -> None:
        fd = os.open(procs, os.O_WRONLY)
        try:
            os.write(fd, b"0")
        finally:
            os.close(fd)

    return _join


def spawn_in(
    cg: MemoryCgroup | CgroupInfo, argv: Sequence[str], *, stop_before_exec: bool = False, **popen_kwargs: Any
) -> subprocess.Popen:
    """Start ``argv`` inside ``cg`` from its first instruction (see :func:`join_argv`);
    ``popen_kwargs`` go to subprocess.Popen unchanged."""
    return subprocess.Popen(join_argv(cg, argv, stop_before_exec=stop_before_exec), **popen_kwargs)
