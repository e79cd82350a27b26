"""Careful reads of /proc for one process, in the style of psutil's Linux module.

The hot loop only ever does ``os.pread(statm_fd, 64, 0)`` on a descriptor
opened here (see :func:`rss_from_statm`); everything else is for setup and the
detail tier. Facts this relies on (measured here; docs/architecture.md):

* a ``pread`` at offset 0 on a kept-open ``/proc/PID/statm`` returns fresh
  values every time, and keeps working across ``exec`` (the file looks up the
  task's current mm on every read);
* once the process has been reaped the read raises ``ESRCH``; while it is a
  zombie, statm reads all zeros.

Errors are :class:`ProcessGone` (nothing to sample any more) and
:class:`AccessDenied` (its message says what to do).
"""

from __future__ import annotations

import errno
import os
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PROC = "/proc"

# /proc/PID/status fields the detail tier wants (kB values, Threads a count).
STATUS_FIELDS: dict[bytes, str] = {
    b"RssAnon": "rss_anon",
    b"RssFile": "rss_file",
    b"RssShmem": "rss_shmem",
    b"VmHWM": "vm_hwm",
    b"VmRSS": "vm_rss",
    b"VmSwap": "vm_swap",
    b"Threads": "threads",
}


class ProcfsError(Exception):
    """Base of the errors below."""


class ProcessGone(ProcfsError):
    """The process does not exist (any more)."""

    def __init__(self, pid: int) -> None:
        super().__init__(f"no process {pid} (it has exited, or the pid is wrong; list processes with: ps -ef)")
        self.pid = pid


class AccessDenied(ProcfsError):
    """We may not read (or write) this process's /proc file."""

    def __init__(self, pid: int, what: str) -> None:
        super().__init__(
            f"permission denied reading {what} of process {pid}: run spikewatch as the same user as "
            "the target, or as root (reading another user's memory files needs CAP_SYS_PTRACE)"
        )
        self.pid = pid


def _wrap(exc: OSError, pid: int, what: str) -> ProcfsError:
    if exc.errno in (errno.ENOENT, errno.ESRCH):
        return ProcessGone(pid)
    if exc.errno in (errno.EACCES, errno.EPERM):
        return AccessDenied(pid, what)
    return ProcfsError(f"cannot read {what} of process {pid}: {exc.strerror}")


def _read(pid: int, name: str, size: int = 65536) -> bytes:
    path = f"{PROC}/{pid}/{name}"
    try:
        with open(path, "rb", buffering=0) as f:
            return f.read(size)
    except OSError as exc:
        raise _wrap(exc, pid, path) from None


# ---------------------------------------------------------------- kept-open files


def open_proc_file(pid: int, name: str) -> int:
    """A descriptor on /proc/PID/NAME for repeated ``pread`` at offset 0."""
    path = f"{PROC}/{pid}/{name}"
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise _wrap(exc, pid, path) from None


def rss_from_statm(data: bytes) -> int:
    """Resident bytes from a statm read (``size resident shared ...`` in pages)."""
    return int(data.split(None, 2)[1]) * PAGE_SIZE


_STATUS_LINE = re.compile(rb"^(" + b"|".join(STATUS_FIELDS) + rb"):[ \t]*(\d+)", re.MULTILINE)


def parse_status(data: bytes) -> dict[str, int]:
    """The fields of :data:`STATUS_FIELDS` from a /proc/PID/status read, in bytes
    (``threads`` as a count). Memory fields are absent for kernel threads and zombies."""
    # One regex pass in C over the ~55 lines (ten times a second a process), not a
    # Python loop a line.
    out: dict[str, int] = {}
    for key, value in _STATUS_LINE.findall(data):
        name = STATUS_FIELDS[key]
        out[name] = int(value) if name == "threads" else int(value) * 1024
    return out


# ---------------------------------------------------------------- stat


@dataclass(frozen=True)
class Stat:
    pid: int
    comm: str
    state: str  # R, S, D, Z, T, ...
    ppid: int
    starttime_ticks: int  # since boot, in clock ticks
    exit_code: int | None  # raw wait status, only meaningful for zombies (Linux 3.5+)


def parse_stat(pid: int, data: bytes) -> Stat:
    # comm may contain spaces and parentheses: split at the LAST ')'.
    lpar = data.index(b"(")
    rpar = data.rindex(b")")
    comm = data[lpar + 1 : rpar].decode(errors="replace")
    fields = data[rpar + 2 :].split()
    # fields[0] is field 3 (state); field N is fields[N - 3].
    exit_code = int(fields[52 - 3]) if len(fields) >= 52 - 2 else None
    return Stat(pid, comm, fields[0].decode(), int(fields[1]), int(fields[22 - 3]), exit_code)


def read_stat(pid: int) -> Stat:
    return parse_stat(pid, _read(pid, "stat"))


def boot_offset_ns() -> int:
    """CLOCK_BOOTTIME - CLOCK_MONOTONIC now (time spent suspended)."""
    return time.clock_gettime_ns(time.CLOCK_BOOTTIME) - time.monotonic_ns()


def start_time_mono_ns(st: Stat) -> int:
    """When the process started, on the monotonic clock (10 ms resolution:
    /proc counts clock ticks since boot, on the boot-time clock)."""
    boot_ns = st.starttime_ticks * 1_000_000_000 // CLOCK_TICKS
    return boot_ns - boot_offset_ns()


def wait_status_to_exit(status: int) -> dict[str, int]:
    """``{"code": n}`` or ``{"signal": n}`` from a raw wait status."""
    if os.WIFSIGNALED(status):
        return {"signal": os.WTERMSIG(status)}
    if os.WIFEXITED(status):
        return {"code": os.WEXITSTATUS(status)}
    return {}


# ---------------------------------------------------------------- identity


def exe(pid: int) -> str | None:
    """Path of the executable, None for kernel threads or when not allowed."""
    try:
        return os.readlink(f"{PROC}/{pid}/exe")
    except OSError:
        return None


def cmdline(pid: int) -> list[str]:
    data = _read(pid, "cmdline")
    if not data:
        return []
    return [a.decode(errors="replace") for a in data.rstrip(b"\0").split(b"\0")]


def all_pids() -> list[int]:
    return [int(d) for d in os.listdir(PROC) if d.isdigit()]


class LastPid:
    """The last pid the kernel handed out in our pid namespace: the last field of
    /proc/loadavg (threads count too: they take ids from the same counter). While it
    stands still no process was created, so no member could have joined by a fork; a
    kept-open descriptor makes each look one small pread. ``read()`` is None when the
    file cannot be read (then nothing may be concluded from it)."""

    def __init__(self, path: str = "/proc/loadavg") -> None:
        try:
            self._fd: int | None = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            self._fd = None

    def read(self) -> int | None:
        if self._fd is None:
            return None
        try:
            return int(os.pread(self._fd, 128, 0).rsplit(None, 1)[1])
        except (OSError, ValueError, IndexError):
            return None

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def exists(pid: int) -> bool:
    return os.path.exists(f"{PROC}/{pid}")


def ancestors(pid: int) -> list[int]:
    """Parent, grandparent, ... up to pid 1 (stops quietly at a vanished link)."""
    out: list[int] = []
    while pid > 1:
        try:
            pid = read_stat(pid).ppid
        except ProcfsError:
            break
        out.append(pid)
    return out


def ppid_map(pids: Iterable[int] | None = None) -> dict[int, int]:
    """{pid: ppid} for every process (one /proc/PID/stat read each, ~30 µs)."""
    out: dict[int, int] = {}
    for pid in all_pids() if pids is None else pids:
        try:
            out[pid] = read_stat(pid).ppid
        except (ProcfsError, ValueError, IndexError):
            continue
    return out


def descendants(root: int, parents: dict[int, int]) -> set[int]:
    """``root`` and everything below it in a ppid map."""
    kids: dict[int, list[int]] = {}
    for pid, ppid in parents.items():
        kids.setdefault(ppid, []).append(pid)
    out = {root}
    todo = [root]
    while todo:
        for child in kids.get(todo.pop(), ()):
            if child not in out:
                out.add(child)
                todo.append(child)
    return out


# ---------------------------------------------------------------- high-water mark


def _open_clear_refs(pid: int) -> int:
    """A write descriptor on ``/proc/PID/clear_refs``; -1 if the process is gone."""
    try:
        return os.open(f"{PROC}/{pid}/clear_refs", os.O_WRONLY | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ESRCH):
            return -1
        raise _wrap(exc, pid, f"{PROC}/{pid}/clear_refs") from None


def _write_reset(fd: int, pid: int) -> bool:
    """Write ``5`` (reset VmHWM to the current RSS); False if the process is gone."""
    try:
        os.write(fd, b"5")
        return True
    except OSError as exc:
        if exc.errno in (errno.ESRCH, errno.ENOENT):
            return False
        raise _wrap(exc, pid, f"{PROC}/{pid}/clear_refs") from None


def reset_hwm(pid: int) -> bool:
    """Reset VmHWM to the current RSS (write ``5`` to clear_refs); False if gone."""
    fd = _open_clear_refs(pid)
    if fd < 0:
        return False
    try:
        return _write_reset(fd, pid)
    finally:
        os.close(fd)


class ProcHandle:
    """Kept-open statm and status descriptors of one process."""

    __slots__ = ("pid", "statm_fd", "status_fd", "clear_refs_fd", "argv", "exe", "start_t", "ppid", "gone")

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.statm_fd = open_proc_file(pid, "statm")
        try:
            self.status_fd = open_proc_file(pid, "status")
        except ProcfsError:
            os.close(self.statm_fd)
            raise
        self.gone = False
        self.clear_refs_fd = -1  # opened by the first reset_hwm()
        try:
            st = read_stat(pid)
            self.ppid = st.ppid
            self.start_t: int | None = start_time_mono_ns(st)
        except ProcfsError:
            self.ppid, self.start_t = 0, None
        self.refresh_identity()

    def refresh_identity(self) -> None:
        try:
            self.argv = cmdline(self.pid)
        except ProcfsError:
            self.argv = []
        self.exe = exe(self.pid)

    def rss(self) -> int:
        try:
            return rss_from_statm(os.pread(self.statm_fd, 64, 0))
        except OSError as exc:
            raise _wrap(exc, self.pid, "statm") from None

    def status(self) -> dict[str, int]:
        try:
            return parse_status(os.pread(self.status_fd, 16384, 0))
        except OSError as exc:
            raise _wrap(exc, self.pid, "status") from None

    def reset_hwm(self) -> bool:
        """:func:`reset_hwm` through a kept-open descriptor (~13 µs instead of ~34 with
        the open and close, ten times a second); False if the process is gone."""
        if self.clear_refs_fd < 0:
            self.clear_refs_fd = _open_clear_refs(self.pid)
            if self.clear_refs_fd < 0:
                return False
        return _write_reset(self.clear_refs_fd, self.pid)

    def close(self) -> None:
        for fd in (self.statm_fd, self.status_fd, self.clear_refs_fd):
            try:
                if fd >= 0:
                    os.close(fd)
            except OSError:
                pass
        self.statm_fd = self.status_fd = self.clear_refs_fd = -1

    def __repr__(self) -> str:
        return f"ProcHandle({self.pid}, {' '.join(self.argv)[:60]!r})"
