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
    assert checklist.release_build(source(tmp_path, exe="/src/app/target/x86_64-unknown-linux-gnu/release/app"))[0] is True
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
