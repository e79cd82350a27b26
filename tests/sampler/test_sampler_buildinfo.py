"""The build profile read from the executable: hand-made ELF files, real C builds,
scripts, and the sampler putting the answer on the stream."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from spikewatch.sampler import buildinfo
from spikewatch.sampler.wire import protocol

from tests.support.sampler import Stream, run_sample


def elf(sections: dict[str, bytes], *, compress: tuple[str, ...] = ()) -> bytes:
    """A minimal ELF64 little-endian file with these sections (names in .shstrtab)."""
    names = b"\0"
    name_off = {}
    for n in [*sections, ".shstrtab"]:
        name_off[n] = len(names)
        names += n.encode() + b"\0"
    body = bytearray(b"\x7fELF" + bytes([2, 1, 1]) + bytes(57))
    headers = [struct.pack("<IIQQQQIIQQ", 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)]
    for n, data in [*sections.items(), (".shstrtab", names)]:
        flags = buildinfo.SHF_ALLOC if n.startswith(".rodata") else 0
        if n in compress:
            data = struct.pack("<IIQQ", 1, 0, len(data), 1) + zlib.compress(data)
            flags |= buildinfo.SHF_COMPRESSED
        off = len(body)
        body += data
        headers.append(struct.pack("<IIQQQQIIQQ", name_off[n], 1, flags, 0, off, len(data), 0, 0, 1, 0))
    shoff = len(body)
    for h in headers:
        body += h
    struct.pack_into("<Q", body, 0x28, shoff)
    struct.pack_into("<HHH", body, 0x3A, 64, len(headers), len(headers) - 1)
    return bytes(body)


RUST_RODATA = b"RUST_BACKTRACE\0src/main.rs\0called `Option::unwrap()` on a `None` value\0"


def write(tmp_path: Path, name: str, data: bytes) -> str:
    p = tmp_path / name
    p.write_bytes(data)
    p.chmod(0o755)
    return str(p)


def test_rust_signals_in_hand_made_elf_files(tmp_path):
    debug = write(tmp_path, "a", elf({".rodata": RUST_RODATA + b"attempt to add with overflow\0"}))
    assert buildinfo.inspect(debug) == buildinfo.BuildEvidence(
        "debug", "overflow-check panic messages in the binary ('attempt to add with overflow')"
    )
    # Overflow checks off, but debug info names the program's own sources (compressed, as `-C
    # debuginfo` with zlib leaves it); the standard library's absolute paths do not count.
    own = elf(
        {".rodata": RUST_RODATA, ".debug_str": b"\0/rustc/abc/library/core/src/fmt/mod.rs\0src/main.rs/@/x1\0"},
        compress=(".debug_str",),
    )
    ev = buildinfo.inspect(write(tmp_path, "b", own))
    assert ev.profile == "debug" and "src/main.rs" in ev.evidence
    # Release: a .debug_str from the standard library alone (as Debian's std ships) is no signal,
    # nor is src/main.rs in .rodata (panic locations exist in release builds too).
    rel = elf(
        {
            ".rodata": RUST_RODATA,
            ".debug_info": b"\1\2\3",
            ".debug_str": b"\0library/std/src/lib.rs\0/usr/src/rustc-1.63.0\0clang LLVM (rustc version 1.63.0)\0",
        }
    )
    ev = buildinfo.inspect(write(tmp_path, "c", rel))
    assert ev.profile == "release" and "without overflow-check" in ev.evidence


@pytest.mark.parametrize(
    "data, says",
    [
        (b"", "is not an ELF file"),
        (b"\x7fELF\x02\x01\x01" + bytes(20), "is not an ELF file"),  # too short for a header
        (b"\x7fELF\x07\x01\x01" + bytes(60), "unknown ELF class 7"),
    ],
)
def test_broken_files_answer_unknown_with_a_reason(tmp_path, data, says):
    ev = buildinfo.inspect(write(tmp_path, "x", data))
    assert ev.profile == "unknown" and says in ev.evidence


def test_truncated_section_table_is_a_clear_unknown(tmp_path):
    data = elf({".rodata": RUST_RODATA})
    ev = buildinfo.inspect(write(tmp_path, "t", data[:-30]))
    assert ev.profile == "unknown" and "truncated section header" in ev.evidence


def test_scripts_and_interpreters_are_not_compiled_builds(tmp_path):
    script = write(tmp_path, "serve", b"#!/usr/bin/env python3\nprint('hi')\n")
    assert buildinfo.inspect(script) == buildinfo.BuildEvidence(
        "interpreted", "a script run by python3: not a compiled build"
    )
    assert buildinfo.inspect(sys.executable).profile == "interpreted"
    assert buildinfo.inspect("/usr/bin/node").profile == "interpreted"  # by name, present or not
    assert buildinfo.inspect("/bin/sh").profile == "wrapper"
    assert "No such file" in buildinfo.inspect(str(tmp_path / "missing")).evidence


@pytest.fixture(scope="module")
def c_builds(tmp_path_factory) -> dict[str, str]:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler (cc) on PATH")
    d = tmp_path_factory.mktemp("c")
    (d / "prog.c").write_text(
        "#include <stdio.h>\n#include <stdlib.h>\n#include <unistd.h>\n"
        'int main(int argc, char **argv) { if (argc > 1) sleep(atoi(argv[1])); puts("hi"); return 0; }\n'
    )
    out = {}
    for name, flags in {"O0g": ["-O0", "-g"], "O2g": ["-O2", "-g"], "O0": ["-O0"], "O2": ["-O2"]}.items():
        subprocess.run([cc, *flags, str(d / "prog.c"), "-o", str(d / name)], check=True)
        out[name] = str(d / name)
    return out


def test_c_programs_tell_their_profile_only_with_debug_info(c_builds):
    ev = buildinfo.inspect(c_builds["O0g"])
    if ev.profile == "unknown":
        pytest.skip(f"this compiler does not record its flags in the debug info: {ev.evidence}")
    assert ev.profile == "debug" and "-O0" in ev.evidence
    ev = buildinfo.inspect(c_builds["O2g"])
    assert ev.profile == "release" and "-O2" in ev.evidence
    # Without -g nothing in the file says how it was compiled.
    for name in ("O0", "O2"):
        ev = buildinfo.inspect(c_builds[name])
        assert ev.profile == "unknown" and "cannot be told" in ev.evidence


def test_the_sampler_reads_the_launched_command_and_its_children(tmp_path, endpoints, c_builds):
    if buildinfo.inspect(c_builds["O0g"]).profile != "debug":
        pytest.skip("this compiler does not record its flags in the debug info")
    journal = tmp_path / "j"
    # The launched shell is a wrapper; the C program it starts is read in the background.
    res = run_sample(endpoints, "--journal", str(journal), "--", "/bin/sh", "-c", f"{c_builds['O0g']} 1 >/dev/null")
    assert res.returncode == 0, res.stderr
    s = Stream.from_journal(journal)
    start = s.events(protocol.EV_PROC_START)[0]
    assert start["launched"] is True and start["build"] == "wrapper"
    builds = s.events(protocol.EV_BUILD)
    assert any(
        b["build"] == "debug" and b["exe"] == c_builds["O0g"] and "-O0" in b["build_evidence"] for b in builds
    ), builds
    # The release build, launched directly: the answer rides on its proc_start.
    res = run_sample(endpoints, "--journal", str(tmp_path / "k"), "--", c_builds["O2g"])
    assert res.returncode == 0, res.stderr
    start = Stream.from_journal(tmp_path / "k").events(protocol.EV_PROC_START)[0]
    assert start["build"] == "release" and "-O2" in start["build_evidence"]


def test_module_runs_by_hand(c_builds):
    out = subprocess.run(
        [sys.executable, "-m", "spikewatch.sampler.buildinfo", c_builds["O2g"]],
        capture_output=True,
        text=True,
        check=True,
        cwd=os.getcwd(),
    )
    assert '"build": "release"' in out.stdout
