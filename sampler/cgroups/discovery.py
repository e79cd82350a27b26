"""Finding memory cgroups: the mounts (ours, or another mount namespace's through
/proc/PID/root), the cgroup of a process, a path given by the user, a systemd unit.

Every lookup takes ``root`` (default ``/``): the directory that stands for the
file-system root, so ``/proc`` is ``root/proc`` and a mount point ``/sys/fs/cgroup``
from mountinfo is ``root/sys/fs/cgroup``. Tests point it at captured file trees
to exercise the v2 code on real file contents without a v2 memory controller.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .files import _FILES, CgroupError, CgroupInfo


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
        return [
            _Mount(2, mroot, point)
            for fstype, _, mroot, point in _mountinfo(Path(root), "self", None)
            if fstype == "cgroup2"
        ]
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
            rel = path[len(mroot) :].lstrip("/")
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
        raise CgroupError(f"process {pid} is in no cgroup v{version} memory cgroup (its /proc/{pid}/cgroup: {shown})")
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
            info: CgroupInfo | None = CgroupInfo(m.version, hpath, p)
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
            capture_output=True,
            text=True,
            timeout=10,
        )
    except FileNotFoundError:
        raise CgroupError(
            f"--unit needs systemd, but {systemctl!r} is not installed; use --cgroup PATH or --pid N"
        ) from None
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
        raise CgroupError(f"unit {unit!r} has no cgroup (it is not running); start it with systemctl start {unit}")
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
