"""The journal thread stores the body the publisher hands it (no second unpack): the file
must hold exactly what storing the packed bytes would."""

from __future__ import annotations

from pathlib import Path

from spikewatch.sampler.wire import protocol
from spikewatch.sampler.wire.recording import iter_records
from spikewatch.sampler.wire.stream import Journal


def _messages() -> list[tuple[str, dict[str, object]]]:
    t0 = 5_000_000_000_000
    out: list[tuple[str, dict[str, object]]] = []
    seq = 0
    for b in range(12):
        times = [t0 + (b * 20 + i) * 1_000_000 + 37_000 + 1_000 * (i % 3) for i in range(20)]
        rss = [70 << 20 if (b * 20 + i) % 7 else (80 << 20) + 4096 * i for i in range(20)]
        out.append((protocol.SAMPLES, dict(protocol.samples_body(seq, times, {"rss": rss, "cg_usage": rss[::-1]}))))
        seq += 1
        if b % 5 == 4:
            t = times[-1]
            detail = {**protocol.header(seq, t), "procs": 1, "pids": [4242], "vm_hwm": 81 << 20, "cg_limit": None}
            out.append((protocol.DETAIL, detail))
            seq += 1
            fields = protocol.ProcStart(kind=protocol.EV_PROC_START, pid=4242, ppid=1, exe="/bin/x", cmdline=["x"])
            out.append((protocol.EVENT, dict(protocol.event_body(seq, t, fields))))
            seq += 1
            hello = {**protocol.header(seq, t), "session": "s1", "period_ns": 1_000_000, "counters": {"samples": b}}
            out.append((protocol.HELLO, hello))
            seq += 1
    return out


def test_journal_keeps_the_handed_body_as_the_packed_bytes_say(tmp_path: Path) -> None:
    msgs = _messages()
    for name, hand_body in (("packed", False), ("body", True)):
        j = Journal(tmp_path / f"{name}.journal")
        for topic, body in msgs:
            j.put(topic, protocol.pack(body), body if hand_body else None)
        j.close()
    from_packed = list(iter_records(tmp_path / "packed.journal"))
    from_body = list(iter_records(tmp_path / "body.journal"))
    assert len(from_packed) == len(msgs)
    assert from_body == from_packed
    assert (tmp_path / "body.journal").read_bytes()[:1] == b"\x89"  # format 2: the path under test
