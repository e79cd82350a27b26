"""Launching the command to sample: started stopped before its first instruction,
released once sampling runs, reaped with its exit status, sent our signals."""

from __future__ import annotations

import functools
import os
import shutil
import signal
import subprocess

from . import procfs
from .config import SamplerError

# The launched command first stops itself; we SIGCONT it once sampling runs.
# If the sampler dies before that, the orphaned process group gets SIGHUP.
_LAUNCH_SHIM = 'kill -STOP $$; exec "$@"'
# The same behind ``setpriv --pdeathsig TERM``: the death signal is armed before
# the shell stops, so it covers the whole run, held or released. $PPID is read
# by sh after setpriv's prctl: if the sampler (our $1) died before the signal
# was armed, we were already reparented and must not stop and wait forever.
_LAUNCH_SHIM_PDEATH = '[ "$PPID" = "$1" ] || exit 125; shift; kill -STOP $$; exec "$@"'


@functools.cache
def _setpriv() -> str | None:
    """setpriv (util-linux) if it knows --pdeathsig (2.33+), else None; probed once."""
    path = shutil.which("setpriv")
    if path is None:
        return None
    try:
        out = subprocess.run([path, "--help"], capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return path if "--pdeathsig" in out else None


def launch_argv(argv: list[str]) -> tuple[list[str], bool]:
    """The shim around ``argv`` and whether it dies with us (False without setpriv)."""
    setpriv = _setpriv()
    if setpriv is None:
        return ["/bin/sh", "-c", _LAUNCH_SHIM, "spikewatch-launch", *argv], False
    return [
        setpriv,
        "--pdeathsig",
        "TERM",
        "--",
        "/bin/sh",
        "-c",
        _LAUNCH_SHIM_PDEATH,
        "spikewatch-launch",
        str(os.getpid()),
        *argv,
    ], True


class Launched:
    """``argv`` behind a tiny sh that stops itself before exec. Until
    :meth:`release` nothing of the program has run, so it can be moved into a
    cgroup (every byte it touches is charged there) and its first samples taken
    before its first instruction.

    Where setpriv is installed it gets a parent-death signal (SIGTERM), so a
    SIGKILLed sampler leaves no command running unobserved (``dies_with_sampler``).
    The kernel sends that signal when the *thread* that forked it exits, not the
    process: construct this on the main thread (``Sampler.setup`` runs there in
    ``spikewatch sample``), or on one that outlives the command. No preexec_fn
    (prctl in the child) because the sampler may already run ZeroMQ threads.
    """

    def __init__(self, argv: list[str]) -> None:
        shim, self.dies_with_sampler = launch_argv(argv)
        try:
            self.popen = subprocess.Popen(shim, process_group=0)
        except OSError as exc:
            raise SamplerError(f"cannot start {argv[0]!r}: {exc.strerror}") from None
        self.pid = self.popen.pid
        _, status = os.waitpid(self.pid, os.WUNTRACED)
        if not os.WIFSTOPPED(status):
            self.popen.returncode = -1  # reaped by waitpid above
            raise SamplerError(f"the launch shell for {argv[0]!r} exited before it could be sampled")
        self.held = True  # stopped, waiting for release()

    @property
    def running(self) -> bool:
        return self.popen.returncode is None

    def release(self) -> bool:
        """Let it run (once); False if it was not held."""
        if not self.held:
            return False
        self.held = False
        os.kill(self.pid, signal.SIGCONT)
        return True

    def reap(self) -> dict[str, int] | None:
        """Its exit (``code`` or ``signal``) if it has ended since the last call, else None."""
        if self.popen.returncode is not None:
            return None
        try:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            pid, status = self.pid, 0
        if pid == 0:
            return None
        info = procfs.wait_status_to_exit(status)
        self.popen.returncode = info.get("code", -info.get("signal", 0))
        return info

    def signal(self, sig: int) -> None:
        if self.popen.returncode is None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def kill(self, timeout: float | None = 5) -> None:
        """SIGKILL and wait, so no orphan outlives a failed setup or the sampler."""
        if self.popen.returncode is None:
            self.signal(signal.SIGKILL)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
