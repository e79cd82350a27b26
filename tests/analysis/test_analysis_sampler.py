"""The analyses on journals and recordings made by the real sampler on real processes."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from spikewatch.analysis import reader, report
from spikewatch.sampler.wire.recording import iter_records

from tests.conftest import free_port

MiB = 1 << 20
SIZES = (40, 80, 120)  # MiB, each held 250 ms

# Sends a note marker to the sampler's inlet, then allocates and touches SIZE MiB,
# holds it, frees it. Large bytes objects are mmapped by the allocator: freed at once.
PROGRAM = textwrap.dedent("""
    import sys, time
    from spikewatch.sampler.wire.client import InletClient
    inlet = InletClient(sys.argv[1])
    time.sleep(0.6)
    for mib in {sizes}:
        inlet.note(f"alloc {{mib}} MiB")
        time.sleep(0.05)
        x = b"\\1" * (mib << 20)
        time.sleep(0.25)
        del x
        time.sleep(0.5)
    inlet.close()
""").format(sizes=SIZES)


def sample(tmp_path, spikewatch_cmd, publish=None):
    journal = tmp_path / "run.journal"
    publish = publish or f"tcp://127.0.0.1:{free_port()}"
    inlet = f"tcp://127.0.0.1:{free_port()}"
    cmd = [
        *spikewatch_cmd,
        "sample",
        "--journal",
        str(journal),
        "--period",
        "1ms",
        "--publish",
        publish,
        "--inlet",
        inlet,
        "-q",
        "--",
        sys.executable,
        "-c",
        PROGRAM,
        inlet,
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=os.getcwd())
    assert res.returncode == 0, res.stderr
    return journal


def check_spikes(rep):
    spikes = rep["spikes"]
    assert rep["spikes_total"] == len(SIZES), [(s["t_start"], s["height_bytes"] / MiB) for s in spikes]
    for s, mib in zip(spikes, SIZES):
        assert s["height_bytes"] == pytest.approx(mib * MiB, abs=6 * MiB)
        assert 150 < s["duration_ms"] < 1500
        assert any(e.get("name") == f"alloc {mib} MiB" for e in s["near_events"]), s["near_events"]


@pytest.fixture(scope="module")
def journal(tmp_path_factory, spikewatch_cmd):
    return sample(tmp_path_factory.mktemp("real"), spikewatch_cmd)


def test_report_on_a_real_journal(journal):
    rec = reader.load(journal)
    src = rec.main
    assert src.series["rss"].v.max() > max(SIZES) * MiB
    rep = report.build_report(rec)
    check_spikes(rep)
    assert rep["headline_series"] == "rss"
    assert rep["peak_bytes"] == pytest.approx((max(SIZES) + 12) * MiB, abs=12 * MiB)
    # a 15 s scraper sees the whole run at most once or twice: it mostly misses the 120 MiB spike
    assert rep["scrape_view"]["15s"]["missed_fraction"] > 0.5
    assert rep["checklist"]["startup_captured"] is True
    assert rep["samples"]["count"] > 1000 and rep["samples"]["gaps"] == 0


def test_report_command_on_a_real_journal(journal, tmp_path, spikewatch_cmd):
    out_json, out_html = tmp_path / "r.json", tmp_path / "r.html"
    res = subprocess.run(
        [
            *spikewatch_cmd,
            "report",
            str(journal),
            "--json",
            str(out_json),
            "--html",
            str(out_html),
            "--fail-on",
            "spikes>2",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 1, res.stderr
    assert res.stdout.startswith("true peak ") and "spikes>2: spikes is 3" in res.stderr
    assert json.loads(out_json.read_text())["spikes_total"] == 3
    assert out_html.stat().st_size > 1_000_000


def test_record_matches_the_journal(tmp_path, spikewatch_cmd):
    publish = f"tcp://127.0.0.1:{free_port()}"
    out = tmp_path / "rec.rec"
    rec_proc = subprocess.Popen(
        [*spikewatch_cmd, "record", publish, "-o", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        # the recorder says it is recording once its sockets are set up; give connect a moment more
        assert rec_proc.stderr.readline().startswith("recording ")
        time.sleep(0.3)
        journal = sample(tmp_path, spikewatch_cmd, publish)
        # SIGTERM ends the recorder with what it has received: wait until the sampler's
        # final hello is on its disk (it writes every 0.2 s), however busy the machine.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (
            out.exists() and any(t == "hello" and b.get("final") for t, b in iter_records(out))
        ):
            time.sleep(0.1)
    finally:
        rec_proc.send_signal(signal.SIGTERM)
        stdout, stderr = rec_proc.communicate(timeout=30)
    assert rec_proc.returncode == 0, stderr
    assert "missed 0 message(s)" in stdout, stdout + stderr
    j = reader.load(journal).main
    r = reader.load(out).main
    assert r.src == j.src  # the session id from the hello
    # the subscriber may join a little late (ZeroMQ slow joiner); from then on it holds every sample
    jt, rt = j.series["rss"].t, r.series["rss"].t
    assert rt[0] - jt[0] < 500_000_000, "joined more than 0.5 s late"
    assert rt.tolist() == jt[jt >= rt[0]].tolist()
    check_spikes(report.build_report(reader.load(out)))
    assert sum(1 for t, _ in iter_records(out) if t == "marker") == len(SIZES)


@pytest.mark.cgroup
def test_oom_kill_under_a_limit(tmp_path, spikewatch_cmd):
    journal = tmp_path / "oom.journal"
    grow = (
        "import time\ntime.sleep(0.3)\nx = []\nfor i in range(60):\n    x.append(b'1' * (4 << 20)); time.sleep(0.01)\n"
    )
    res = subprocess.run(
        [
            *spikewatch_cmd,
            "sample",
            "--journal",
            str(journal),
            "--publish",
            f"tcp://127.0.0.1:{free_port()}",
            "--inlet",
            "off",
            "--limit",
            "64M",
            "-q",
            "--",
            sys.executable,
            "-c",
            grow,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode != 0, res.stderr  # the target was killed
    rep = report.build_report(reader.load(journal))
    assert rep["headline_series"] == "cg_usage" and rep["limit_bytes"] == 64 * MiB
    assert len(rep["oom_kills"]) == 1
    kill = rep["oom_kills"][0]
    assert kill["last_bytes"] > 56 * MiB  # memory sat at the limit just before
    assert rep["headroom"] < 0.1 and rep["checklist"]["limited"] is True
    assert rep["recommended_limit_bytes"] > 64 * MiB and "OOM kill" in rep["recommended_limit_reason"]
