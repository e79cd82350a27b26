import numpy as np
from spikewatch.analysis import checklist, reader
from spikewatch.analysis.synth import MiB, Synth
from spikewatch.sampler.wire import protocol


def source(tmp_path, **start):
    s = Synth()
    t = s.times(1)
    s.samples(t, rss=np.full(len(t), MiB))
    if start:
        s.event(int(start.pop("at", t[0])), protocol.EV_PROC_START, pid=1, **start)
    s.write(tmp_path / "c.rec")
    return reader.load(tmp_path / "c.rec").main


def test_release_build_from_the_executable_path(tmp_path):
    assert checklist.release_build(source(tmp_path, exe="/src/app/target/debug/app"))[0] is False
    assert (
        checklist.release_build(source(tmp_path, exe="/src/app/target/x86_64-unknown-linux-gnu/release/app"))[0] is True
    )
    assert checklist.release_build(source(tmp_path, exe="/b/cmake-build-debug/svc"))[0] is False
    v, why = checklist.release_build(source(tmp_path, exe="/usr/bin/python3.11", cmdline=["python3", "server.py"]))
    assert v is None and "python3.11" in why
    assert checklist.release_build(source(tmp_path))[0] is None


def test_startup_captured_against_the_process_start(tmp_path):
    t0 = Synth().t0
    assert checklist.startup_captured(source(tmp_path, at=t0, start_t=t0 - 500_000, launched=False))[0] is True
    v, why = checklist.startup_captured(source(tmp_path, at=t0, start_t=t0 - 3_000_000_000, launched=False))
    assert v is False and "after the process started" in why
    assert checklist.startup_captured(source(tmp_path, at=t0, launched=False))[0] is None


def test_release_build_from_evidence_read_in_the_executable(tmp_path):
    # The sampler's answer wins over the path: a debug build copied to a neutral path is debug.
    v, why = checklist.release_build(
        source(
            tmp_path,
            exe="/usr/local/bin/app",
            build="debug",
            build_evidence="overflow-check panic messages in the binary",
        )
    )
    assert v is False and why == "/usr/local/bin/app is a debug build: overflow-check panic messages in the binary"
    v, why = checklist.release_build(
        source(
            tmp_path,
            exe="/src/target/debug/app",
            build="release",
            build_evidence="a Rust binary without overflow-check panic messages",
        )
    )
    assert v is True and "without overflow-check" in why
    v, why = checklist.release_build(
        source(
            tmp_path,
            exe="/opt/x/bin/node",
            build="interpreted",
            build_evidence="node is an interpreter: not a compiled build",
        )
    )
    assert v is None and why.startswith("not a compiled build")
    # An executable the sampler could not tell (C without debug info), at a neutral path: null, saying why.
    v, why = checklist.release_build(
        source(
            tmp_path,
            exe="/nonexistent/app",
            build="unknown",
            build_evidence="its build profile cannot be told from the file",
        )
    )
    assert v is None and "cannot be told" in why


def test_release_build_from_a_later_build_event(tmp_path):
    s = Synth()
    t = s.times(1)
    s.samples(t, rss=np.full(len(t), MiB))
    s.event(int(t[0]), protocol.EV_PROC_START, pid=1, exe="/bin/sh", build="wrapper", build_evidence="sh starts it")
    s.event(int(t[0]), protocol.EV_PROC_START, pid=2, exe="/usr/local/bin/app")
    s.event(
        int(t[5]),
        protocol.EV_BUILD,
        pid=2,
        exe="/usr/local/bin/app",
        build="debug",
        build_evidence="debug info names the program's own sources (src/main.rs)",
    )
    s.write(tmp_path / "b.rec")
    v, why = checklist.release_build(reader.load(tmp_path / "b.rec").main)
    assert v is False and "src/main.rs" in why
