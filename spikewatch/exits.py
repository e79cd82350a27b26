"""One set of exit statuses and one error style for every ``spikewatch`` command.

| status | meaning |
|---|---|
| 0 | passed (or a recorder/sampler stopped normally, Ctrl-C included) |
| 1 | a threshold or gate failed (``--fail-on``, scenario ``[thresholds]``, service died mid-run) |
| 2 | bad usage or input (options, scenario file, recording that cannot be read), nothing ran |
| 3 | runtime failure: target not ready, nothing sent or recorded, I/O or endpoint failure |
| 130 | ``run``/``demo``/``drive`` interrupted before the end (what was kept is written) |

Errors are one line naming the path or endpoint and the reason, never a traceback.
Only the standard library and click: ``spikewatch sample`` imports this.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import click

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_RUNTIME, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


class BadInput(click.ClickException):
    """Bad usage or input found before anything ran (exit 2)."""

    exit_code = EXIT_USAGE


class RuntimeFailure(click.ClickException):
    """The command could not do its job: I/O, an endpoint, a target that never came (exit 3)."""

    exit_code = EXIT_RUNTIME


def reason(exc: BaseException) -> str:
    """The short human reason of an OSError ('No space left on device'), else str(exc)."""
    if isinstance(exc, OSError):
        if exc.strerror:
            return exc.strerror
        if exc.errno:
            return os.strerror(exc.errno)
    return str(exc) or type(exc).__name__


def io_failure(action: str, path: str | os.PathLike[str], exc: BaseException) -> RuntimeFailure:
    """``cannot write out/r.json: No such file or directory`` as an exit-3 error."""
    return RuntimeFailure(f"cannot {action} {os.fspath(path)}: {reason(exc)}")


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A temporary name beside ``path`` to write to; renamed onto ``path`` only when the
    block ends without an exception, removed otherwise. A reader (or a crash) never sees a
    0-byte or half-written file under the final name."""
    final = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".part", dir=final.parent or ".")
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp makes 0600; a report is as readable as any file the user writes.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)
        os.replace(tmp_path, final)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        raise


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "w", **kwargs: object) -> Iterator[IO[Any]]:
    """``open(path, mode)`` through :func:`atomic_path` (flushed and fsynced before the rename)."""
    with atomic_path(path) as tmp, open(tmp, mode, **kwargs) as f:  # type: ignore[call-overload]
        yield f
        f.flush()
        os.fsync(f.fileno())


def write_text_atomic(path: str | os.PathLike[str], text: str, what: str = "write") -> None:
    """Write ``text`` to ``path`` atomically; an OSError becomes one exit-3 line naming the path."""
    try:
        with atomic_open(path, "w", encoding="utf-8") as f:
            f.write(text)
    except OSError as exc:
        raise io_failure(what, path, exc) from None


def refuse_existing(path: str | os.PathLike[str], option: str, override: str) -> None:
    """A recording or output that already exists would be merged into or mixed with the
    new one: refuse it, naming the option that says otherwise."""
    p = Path(path)
    if p.is_dir() and any(p.iterdir()) or p.is_file() and p.stat().st_size > 0:
        kind = "folder" if p.is_dir() else "file"
        raise BadInput(f"{option}: {p} already exists (a {kind} from an earlier run); give a new name, or {override}")


def check_output(path: str | None, option: str) -> None:
    """Fail before a long analysis or run, not after it, when an output file cannot be written."""
    if not path or path == "-":
        return
    p = Path(path)
    if p.is_dir():
        raise BadInput(f"{option}: {path} is a folder; give a file name")
    folder = p.parent
    if not folder.resolve().is_dir():
        raise RuntimeFailure(f"cannot write {path}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise RuntimeFailure(f"cannot write {path}: folder {folder} is not writable")


class SignalStop:
    """A stop request a signal handler may set. ``threading.Event.set`` in a handler
    deadlocks when the signal lands while the main thread is inside ``wait()`` on that same
    event (they share one lock; seen in ``console --plain`` about one SIGTERM in three on a
    busy host): here ``set`` only assigns a flag and ``wait`` polls it every 20 ms."""

    def __init__(self) -> None:
        self._set = False

    def set(self, *_: object) -> None:
        self._set = True

    def is_set(self) -> bool:
        return self._set

    def wait(self, timeout: float) -> bool:
        end = time.monotonic() + timeout
        while not self._set:
            left = end - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(left, 0.02))
        return True
