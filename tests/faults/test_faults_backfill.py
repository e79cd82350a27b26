"""Late joiners: a recorder attached late still gets the startup peak, by seq, without holes or duplicates."""

from __future__ import annotations

import subprocess
import sys
import time
from collections import Counter

from spikewatch.sampler.wire import protocol
from spikewatch.sampler.wire.client import StreamSubscriber
from spikewatch.sampler.wire.recording import iter_records

from tests.support.sampler import sample_cmd
from tests.support.waiting import scaled

MiB = 1 << 20
STARTUP_PEAK = (
    "import time\n"
    "x = bytearray(120 << 20)\n"
    "for i in range(0, len(x), 4096): x[i] = 1\n"
    "time.sleep(0.4)\n"
    "del x\n"
    "time.sleep(60)\n"
)


def _seqs(path) -> list[int]:
    return [b["seq"] for t, b in iter_records(path)]


def _startup_peak_over(sub: StreamSubscriber, timeout: float = 30) -> bool:
    """Whether the live stream showed the peak, then memory back down, within ``timeout`` s."""
    peaked = False
    end = time.monotonic() + scaled(timeout)
    while time.monotonic() < end:
        msg = sub.recv(timeout_ms=200)
        if msg is None or msg[0] != protocol.SAMPLES:
            continue
        for v in msg[1]["series"]["rss"]:
            peaked = peaked or v > 100 * MiB
            if peaked and v < 60 * MiB:
                return True
    return False


def test_late_recorder_backfills_the_startup_peak(endpoints, tmp_path):
    journal, rec = tmp_path / "s.journal", tmp_path / "late.rec"
    # Watches the live stream from before the sampler binds, so the recorder below joins
    # once the peak is surely over (not a fixed while later).
    sub = StreamSubscriber([endpoints["publish"]])
    sampler = subprocess.Popen(
        [
            *sample_cmd(endpoints),
            "--history",
            endpoints["history"],
            "--history-window",
            "60s",
            "--journal",
            str(journal),
            "--duration",
            "60s",
            "--",
            sys.executable,
            "-c",
            STARTUP_PEAK,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert _startup_peak_over(sub), "no startup peak went by on the live stream"
        res = subprocess.run(
            [
                sys.executable,
                "-m",
                "spikewatch",
                "record",
                endpoints["publish"],
                "--history",
                endpoints["history"],
                "-o",
                str(rec),
                "--duration",
                "1s",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert res.returncode == 0, res.stderr
        assert "no backfill" not in res.stderr
        sampler.terminate()  # ends cleanly: the journal is complete for the comparison below
        sampler.wait(timeout=60)
    finally:
        sub.close()
        sampler.kill()
    got = _seqs(rec)
    dups = [s for s, n in Counter(got).items() if n > 1]
    assert not dups, f"duplicates {dups[:10]}"
    assert got[0] == 0, "the ring covered the whole run: the recording starts at the first message"
    assert sorted(got) == list(range(got[0], got[-1] + 1)), "no holes by seq"
    # Same messages as the sampler's own journal over that span.
    j = {b["seq"]: (t, b) for t, b in iter_records(journal)}
    recs = list(iter_records(rec))
    assert all(j[b["seq"]] == (t, b) for t, b in recs)
    rss = [v for t, b in recs if t == protocol.SAMPLES for v in b["series"]["rss"]]
    assert max(rss) > 100 * MiB, "the startup peak came through the backfill"
    assert rss[-1] < 60 * MiB
    assert "missed 0 message(s)" in res.stdout


def test_history_ring_is_bounded_by_time_and_size():
    from spikewatch.sampler.history import HistoryRing

    ring = HistoryRing(window_ns=1_000_000_000, max_bytes=10_000)
    for seq in range(5000):  # 5 s of messages every ms, 100 bytes each
        ring(protocol.SAMPLES, {"seq": seq, "t": seq * 1_000_000}, b"x" * 100)
    assert ring.nbytes <= 10_000 and len(ring) == 100  # size bound (100 x 100 B) beat the 1 s window
    assert [s for s, *_ in ring.snapshot()] == list(range(4900, 5000))
    assert ring.trimmed == 4900
    ring = HistoryRing(window_ns=1_000_000_000, max_bytes=1 << 30)
    for seq in range(5000):
        ring(protocol.SAMPLES, {"seq": seq, "t": seq * 1_000_000}, b"x" * 100)
    snap = ring.snapshot()
    assert snap[0][0] == 3999 and snap[-1][0] == 4999  # the last second (time bound)
    assert [s for s, *_ in ring.snapshot(since_seq=4990)] == list(range(4990, 5000))
