"""Was this executable built for release? Evidence read from the file itself.

Read once per executable, never in the hot loop (the daemon does it before it
launches a command, or in a helper thread). Standard library only: the ELF
section headers are parsed with :mod:`struct`, and only the few sections that
carry a signal are read (compressed ones through :mod:`zlib`).

Signals, as measured on Rust builds here:

* overflow-check panic messages ("attempt to add with overflow", in ``.rodata``)
  are compiled into debug builds only; a release profile with
  ``overflow-checks = true`` defeats this signal;
* debug info naming the program's own sources (a relative path such as
  ``src/main.rs`` among the strings of ``.debug_str`` / ``.debug_line_str``)
  appears in debug builds only. The mere presence of ``.debug_info`` is *not* a
  signal: Debian's Rust standard library ships with debug info (naming
  ``library/std/src/lib.rs`` and the like), so release binaries built there carry one;
* for C and C++ built by GCC with ``-g``, the compiler's command line is in the
  debug info (``DW_AT_producer``): ``-O0`` or no ``-O`` is a debug build. Without
  debug info a C program's profile cannot be told.

Interpreters (python, node, java, ...) and scripts are "not a compiled build".
"""

from __future__ import annotations

import collections
import json
import os
import queue
import re
import struct
import subprocess
import sys
import threading
import zlib
from dataclasses import dataclass
from typing import BinaryIO

DEBUG = "debug"
RELEASE = "release"
UNKNOWN = "unknown"
INTERPRETED = "interpreted"
WRAPPER = "wrapper"  # a shell or launcher whose child is the real service

_INTERPRETERS = re.compile(
    r"^(python|pypy|node|nodejs|java|ruby|perl|php|bun|deno|dotnet|mono|erl|beam\.smp|Rscript|lua|luajit|elixir|julia)"
    r"[0-9.]*(-[\w.]+)?$"
)
_WRAPPERS = re.compile(
    r"^(sh|bash|dash|zsh|ash|busybox|env|setpriv|timeout|nice|ionice|taskset|tini|dumb-init|su|sudo)$"
)

OVERFLOW_MESSAGES = (
    b"attempt to add with overflow",
    b"attempt to subtract with overflow",
    b"attempt to multiply with overflow",
)
_RUST_MARKS = (b"RUST_BACKTRACE", b"rust_panic", b"/rustc/")
# A relative source path, as rustc and compilers name the program's own files;
# dependencies' are absolute (~/.cargo/registry/..., /usr/share/cargo/registry/...), and so
# is the standard library's, except Debian's: relative to /usr/src/rustc-VERSION, under
# library/ (library/std/src/lib.rs), which is therefore never counted as the program's.
_OWN_SOURCE = re.compile(rb"\0(?!library/)((?:[A-Za-z0-9_][\w.+-]*/)*[\w.+-]+\.(?:rs|c|cc|cpp|cxx|zig))(?:\0|/@/)")
_GNU_PRODUCER = re.compile(rb"\0(GNU (?:C|C\+\+|Fortran|Go)[^\0]{0,2000})\0")
_OPT_FLAG = re.compile(rb"(?:^| )-O([0-3sgz]|fast)?(?= |$)")

_MAX_SECTION = 256 << 20  # a larger section is skipped: reading it is not worth the pause
SHF_ALLOC = 0x2
SHF_COMPRESSED = 0x800
SHT_NOBITS = 8


class BuildInfoError(Exception):
    """The file is not a readable executable; the message says why."""


@dataclass(frozen=True)
class BuildEvidence:
    """``profile`` is one of debug, release, unknown, interpreted, wrapper; ``evidence`` says why."""

    profile: str
    evidence: str

    def fields(self) -> dict[str, str]:
        """The additive ``proc_start`` / ``build`` event fields."""
        return {"build": self.profile, "build_evidence": self.evidence}


@dataclass(frozen=True)
class _Section:
    name: str
    type: int
    flags: int
    offset: int
    size: int


def _elf_sections(f: BinaryIO, path: str) -> tuple[list[_Section], str]:
    """Section headers of an ELF file and its byte order (``<`` or ``>``)."""
    ident = f.read(64)
    if len(ident) < 52 or ident[:4] != b"\x7fELF":
        raise BuildInfoError(f"{path} is not an ELF file")
    klass, data = ident[4], ident[5]
    if klass not in (1, 2) or data not in (1, 2):
        raise BuildInfoError(f"{path}: unknown ELF class {klass} or byte order {data}")
    e = "<" if data == 1 else ">"
    if klass == 2:
        (shoff,) = struct.unpack_from(e + "Q", ident, 0x28)
        shentsize, shnum, shstrndx = struct.unpack_from(e + "HHH", ident, 0x3A)
        fmt, need = e + "IIQQQQIIQQ", 64
    else:
        (shoff,) = struct.unpack_from(e + "I", ident, 0x20)
        shentsize, shnum, shstrndx = struct.unpack_from(e + "HHH", ident, 0x2E)
        fmt, need = e + "IIIIIIIIII", 40
    if shoff == 0:
        return [], e  # no section headers (some packers strip them): nothing to read
    if shentsize < need:
        raise BuildInfoError(f"{path}: section header entries of {shentsize} bytes (expected {need})")

    def header(i: int) -> tuple[int, ...]:
        f.seek(shoff + i * shentsize)
        raw = f.read(need)
        if len(raw) < need:
            raise BuildInfoError(f"{path}: truncated section header {i}")
        return struct.unpack(fmt, raw)

    first = header(0)
    if shnum == 0:  # more than 0xff00 sections: the real count is in section 0
        shnum = first[5]
    if shstrndx == 0xFFFF:
        shstrndx = first[6]
    if not 0 < shnum <= 1 << 16 or shstrndx >= shnum:
        raise BuildInfoError(f"{path}: implausible section table ({shnum} sections, names in {shstrndx})")
    raw = [header(i) for i in range(shnum)]
    names_hdr = raw[shstrndx]
    f.seek(names_hdr[4])
    names = f.read(min(names_hdr[5], 1 << 20))
    out = []
    for h in raw:
        end = names.find(b"\0", h[0])
        name = names[h[0] : end if end >= 0 else None].decode("ascii", "replace")
        out.append(_Section(name, h[1], h[2], h[4], h[5]))
    return out, e


def _read_section(f: BinaryIO, s: _Section, e: str, klass64: bool) -> bytes:
    if s.type == SHT_NOBITS or s.size == 0 or s.size > _MAX_SECTION:
        return b""
    f.seek(s.offset)
    data = f.read(s.size)
    if not s.flags & SHF_COMPRESSED:
        return data
    # Elf_Chdr: ch_type then (64-bit) a reserved word, ch_size, ch_addralign.
    hdr = 24 if klass64 else 12
    if len(data) < hdr:
        return b""
    (ch_type,) = struct.unpack_from(e + "I", data, 0)
    if ch_type != 1:  # only zlib is in the standard library (2 is zstd)
        return b""
    try:
        return zlib.decompressobj().decompress(data[hdr:], _MAX_SECTION)
    except zlib.error:
        return b""


def _elf_evidence(path: str) -> BuildEvidence:
    with open(path, "rb") as f:
        sections, e = _elf_sections(f, path)
        f.seek(4)
        klass64 = f.read(1) == b"\x02"
        by_name = {s.name: s for s in sections}
        rodata = b"".join(
            _read_section(f, s, e, klass64) for s in sections if s.name.startswith(".rodata") and s.flags & SHF_ALLOC
        )
        strings = b"\0" + b"\0".join(
            _read_section(f, by_name[n], e, klass64) for n in (".debug_str", ".debug_line_str") if n in by_name
        )
    rust = any(m in rodata for m in _RUST_MARKS)
    overflow = [m.decode() for m in OVERFLOW_MESSAGES if m in rodata]
    own = sorted({m.group(1).decode("ascii", "replace") for m in _OWN_SOURCE.finditer(strings)})
    if rust:
        if overflow:
            return BuildEvidence(DEBUG, f"overflow-check panic messages in the binary ('{overflow[0]}')")
        if own:
            return BuildEvidence(DEBUG, f"debug info names the program's own sources ({_few(own)})")
        return BuildEvidence(
            RELEASE, "a Rust binary without overflow-check panic messages or debug info naming its own sources"
        )
    producers = [m.group(1) for m in _GNU_PRODUCER.finditer(strings)]
    if producers:
        levels = {_opt_level(p) for p in producers}
        shown = producers[0].decode("ascii", "replace")[:120]
        if "0" in levels:
            return BuildEvidence(DEBUG, f"compiled without optimisation (debug info records: {shown})")
        return BuildEvidence(RELEASE, f"compiled with -O{max(levels)} (debug info records: {shown})")
    if own:
        return BuildEvidence(
            UNKNOWN, f"debug info names the program's own sources ({_few(own)}) but not the optimisation level"
        )
    return BuildEvidence(
        UNKNOWN,
        "an executable without debug info recording how it was compiled: "
        "its build profile cannot be told from the file",
    )


def _opt_level(producer: bytes) -> str:
    flags = _OPT_FLAG.findall(producer)
    if not flags:
        return "0"  # GCC's default is -O0
    last = flags[-1].decode()
    return "1" if last == "" else last  # plain -O is -O1


def _few(names: list[str]) -> str:
    return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def inspect(path: str, name: str | None = None) -> BuildEvidence:
    """The build profile of the executable at ``path`` (``name``: the path it was
    started as, when ``path`` is ``/proc/PID/exe``) with its evidence.

    Never raises: a file that cannot be read answers ``unknown`` saying why."""
    base = os.path.basename(name or path)
    if _INTERPRETERS.match(base):
        return BuildEvidence(INTERPRETED, f"{base} is an interpreter: not a compiled build")
    if _WRAPPERS.match(base):
        return BuildEvidence(WRAPPER, f"{base} starts the service; its own build says nothing")
    try:
        with open(path, "rb") as f:
            head = f.read(256)
        if head.startswith(b"#!"):
            words = head[2:].split(b"\n", 1)[0].split()
            if words and os.path.basename(words[0]) == b"env" and len(words) > 1:
                words = words[1:]
            interp = os.path.basename(words[0]).decode("utf-8", "replace") if words else "?"
            return BuildEvidence(INTERPRETED, f"a script run by {interp}: not a compiled build")
        return _elf_evidence(path)
    except BuildInfoError as exc:
        return BuildEvidence(UNKNOWN, str(exc))
    except OSError as exc:
        return BuildEvidence(UNKNOWN, f"cannot read {path}: {exc.strerror or exc}")


class BuildProbe:
    """Inspects the executables of processes that joined the tree, in a child
    process: a regular expression over megabytes of debug strings holds the GIL
    for tens of milliseconds, which the sampling thread must never wait for.

    ``submit`` is cheap (a queue put); ``results`` hands back what is done. Each
    distinct executable is read once."""

    def __init__(self) -> None:
        self._todo: queue.SimpleQueue[tuple[int, str] | None] = queue.SimpleQueue()
        self._done: collections.deque[tuple[int, str, BuildEvidence]] = collections.deque()
        self._known: dict[str, BuildEvidence] = {}
        self._thread: threading.Thread | None = None

    def submit(self, pid: int, exe: str) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="spikewatch-buildinfo", daemon=True)
            self._thread.start()
        self._todo.put((pid, exe))

    def results(self) -> list[tuple[int, str, BuildEvidence]]:
        out = []
        while self._done:
            out.append(self._done.popleft())
        return out

    def close(self) -> None:
        if self._thread is not None:
            self._todo.put(None)

    def _run(self) -> None:
        while True:
            item = self._todo.get()
            if item is None:
                return
            pid, exe = item
            ev = self._known.get(exe)
            if ev is None:
                ev = _inspect_apart(f"/proc/{pid}/exe", exe)
                if ev.profile != UNKNOWN or not ev.evidence.startswith("cannot read"):
                    self._known[exe] = ev
            self._done.append((pid, exe, ev))


def _inspect_apart(path: str, name: str) -> BuildEvidence:
    """:func:`inspect` in a child interpreter (see :class:`BuildProbe`)."""
    try:
        out = subprocess.run(
            [sys.executable, "-m", __name__, path, name],
            capture_output=True,
            timeout=60,
            check=False,
            stdin=subprocess.DEVNULL,
        )
        d = json.loads(out.stdout)
        return BuildEvidence(str(d["build"]), str(d["build_evidence"]))
    except (OSError, subprocess.SubprocessError, ValueError, KeyError, TypeError) as exc:
        return BuildEvidence(UNKNOWN, f"cannot inspect {name}: {exc}")


if __name__ == "__main__":
    # python -m ...buildinfo PATH [NAME]: one JSON line (used by BuildProbe, handy by hand).
    if not 2 <= len(sys.argv) <= 3:
        sys.exit("usage: python -m spikewatch.sampler.buildinfo EXECUTABLE [NAME]")
    print(json.dumps(inspect(sys.argv[1], sys.argv[2] if len(sys.argv) == 3 else None).fields()))
