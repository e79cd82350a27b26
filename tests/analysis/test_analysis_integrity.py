"""Partial means said: a report of a torn, damaged or cut-short recording says what it kept."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner
from spikewatch.analysis import reader
from spikewatch.analysis.cli import convert
from spikewatch.analysis.synth import MiB, Synth
from spikewatch.sampler.wire import blocks
from spikewatch.sampler.wire.recording import file_format, iter_records

from ..support.sampler import spawn_sample


def _synth(path, seconds=30, fmt=2):
    s = Synth()
    t = s.times(seconds)
    v = 100 * MiB + 4096 * (np.arange(len(t)) // 50)
    s.samples(t, rss=v)
    s.write(path, format=fmt)
    return len(t)


def _report(path, tmp_path):
    out = tmp_path / "r.json"
    res = subprocess.run(
        [sys.executable, "-m", "spikewatch", "report", str(path), "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    return res.stdout, json.loads(out.read_text())


@pytest.mark.parametrize("fmt", [1, 2])
def test_garbage_mid_file_is_reported_from_both_sides(tmp_path, fmt):
    p = tmp_path / "g.rec"
    n = _synth(p, fmt=fmt)
    data = p.read_bytes()
    mid = len(data) // 2
    p.write_bytes(data[:mid] + os.urandom(1024) + data[mid:])
    out, rep = _report(p, tmp_path)
    head = " ".join(out[: out.index("true peak")].split())
    assert head.startswith("partial recording:") and "damaged bytes" in head
    integ = rep["integrity"]
    assert not integ["complete"] and integ["format"] == fmt and len(integ["skipped"]) == 1
    gap = integ["skipped"][0]
    assert 5 < gap["t_before"] < gap["t_after"] < 25
    assert rep["duration_s"] > 29  # the far side of the damage is in the report
    assert n - (2000 if fmt == 2 else 100) <= rep["samples"]["count"] < n


def test_truncated_v2_says_torn_tail_and_early_stop(tmp_path):
    p = tmp_path / "t.rec"
    _synth(p)
    idx = blocks.read_index(p)
    cut = idx["blocks"][-3][0] + 50
    with open(p, "r+b") as f:
        f.truncate(cut)
    out, rep = _report(p, tmp_path)
    integ = rep["integrity"]
    assert integ["torn_tail_bytes"] == 50 and integ["writer_stopped_early"]
    head = " ".join(out[: out.index("true peak")].split())  # the lines before the headline
    assert head.startswith("partial recording:") and "torn record" in head and "stopped early" in head


def test_complete_recording_says_nothing(tmp_path):
    p = tmp_path / "ok.rec"
    _synth(p, seconds=5)
    out, rep = _report(p, tmp_path)
    assert rep["integrity"]["complete"] and not out.startswith("partial")


def test_sigkilled_sampler_journal_is_said(endpoints, sleeper, tmp_path):
    journal = tmp_path / "j.rec"
    p = spawn_sample(endpoints, "--pid", str(sleeper.pid), "--journal", str(journal))
    try:
        assert "journal" in p.stderr.readline()
        time.sleep(3.5)
    finally:
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
    assert file_format(journal) == 2
    rec = reader.load(journal)
    integ = rec.integrity
    assert integ["writer_stopped_early"] and not integ["complete"]
    assert rec.main.duration_s > 1.5  # everything but the open block (~1 s) was kept
    assert integ["hello_samples"] is not None


def test_convert_v1_to_v2(tmp_path):
    old, new = tmp_path / "old.rec", tmp_path / "new.rec"
    _synth(old, seconds=10, fmt=1)
    res = CliRunner().invoke(convert, [str(old), str(new)])
    assert res.exit_code == 0, res.output
    assert file_format(new) == 2 and os.path.getsize(new) * 5 < os.path.getsize(old)
    a, b = reader.load(old).main.series["rss"], reader.load(new).main.series["rss"]
    assert np.array_equal(a.v, b.v) and np.abs(a.t - b.t).max() <= 1000
    assert sum(1 for _ in iter_records(new)) == sum(1 for _ in iter_records(old))
    res = CliRunner().invoke(convert, [str(old), str(new)])
    assert res.exit_code != 0 and "exists" in res.output


def test_rotated_journal_is_one_run_and_retention_keeps_the_newest(endpoints, sleeper, tmp_path):
    base = tmp_path / "j" / "soak.journal"
    base.parent.mkdir()
    p = spawn_sample(
        endpoints,
        "--pid",
        str(sleeper.pid),
        "--journal",
        str(base),
        "--journal-rotate",
        "1s",
        "--journal-keep",
        "4s",
        "--duration",
        "7s",
    )
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    from spikewatch.sampler.wire.recording import segments_of

    segs = segments_of(base)
    assert 3 <= len(segs) <= 6, segs  # ~7 one-second segments, the oldest deleted after 4 s
    assert segs[0].name != "soak.journal.000001"
    for spec in (str(base), str(base.parent), str(base) + ".*"):
        rec = reader.load(spec)
        assert rec.integrity["files"] == [str(s) for s in segs]
        assert 2.0 <= rec.main.duration_s <= 6.5
        assert rec.main.series["rss"].t.size > 1500 and np.all(np.diff(rec.main.series["rss"].t) > 0)
    res = subprocess.run(
        [sys.executable, "-m", "spikewatch", "report", str(base) + ".*", "--json", "-"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["samples"]["count"] == rec.main.series["rss"].t.size


def test_journal_rotate_needs_units(endpoints, sleeper):
    res = subprocess.run(
        [sys.executable, "-m", "spikewatch", "sample", "--pid", str(sleeper.pid), "--journal-keep", "1h"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 2 and "--journal-rotate too" in res.stderr
    res = subprocess.run(
        [sys.executable, "-m", "spikewatch", "sample", "--pid", str(sleeper.pid), "--journal-rotate", "zz"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 2 and "neither a size" in res.stderr and "Traceback" not in res.stderr
