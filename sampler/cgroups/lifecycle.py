"""Cgroups of our own: creating a limited one (``--limit``), moving processes in,
starting a command inside from its first instruction, removing it, and sweeping
what samplers that died left behind.

To run a command inside a limited cgroup from its first instruction, use
:func:`spawn_in` (or :func:`join_argv` to build the argv yourself): a tiny
``sh`` writes its own pid into ``cgroup.procs`` and then ``exec``s the command,
so the pid stays the same and no ``preexec_fn`` runs in a threaded parent.
"""

from __future__ import annotations

import errno
import itertools
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .discovery import cgroup_of_pid, memory_hierarchy
from .files import CgroupError, CgroupInfo
from .memory import MemoryCgroup

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
    limit_bytes: int,
    name: str | None = None,
    *,
    root: Path | str = "/",
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
        log(
            f"spikewatch: removed {len(swept)} empty cgroup(s) left by samplers that died: "
            + ", ".join(str(d) for d in swept)
        )
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


def spawn_in(
    cg: MemoryCgroup | CgroupInfo, argv: Sequence[str], *, stop_before_exec: bool = False, **popen_kwargs: Any
) -> subprocess.Popen[Any]:
    """Start ``argv`` inside ``cg`` from its first instruction (see :func:`join_argv`);
    ``popen_kwargs`` go to subprocess.Popen unchanged."""
    return subprocess.Popen(join_argv(cg, argv, stop_before_exec=stop_before_exec), **popen_kwargs)
