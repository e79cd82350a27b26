"""The console's tree PSS/USS field, fed by a real sampler on a real process that forks a
child sharing its 64 MiB heap (summed RSS counts that heap twice, PSS once)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from spikewatch.analysis.console.plain import status_line
from spikewatch.analysis.console.state import StreamState
from spikewatch.analysis.console.widgets import headroom_text
from spikewatch.sampler.units import format_bytes
from spikewatch.sampler.wire import protocol

from tests.support.forks import sample_forker_in_process

MiB = 1 << 20
PARENT, CHILD = 64, 32


def test_console_shows_the_trees_pss_and_uss(tmp_path: Path) -> None:
    state = StreamState(max_window_s=5)
    both: list[tuple[int, str, str]] = []  # pss of a sweep that read parent and child, the lines then

    def console(topic: str, body: Any, packed: bytes | None = None) -> None:
        # What a subscriber gets: the packed frame, decoded (the console's own path).
        decoded = protocol.unpack(packed) if packed is not None else dict(body)
        with state.lock:
            state.ingest("ep", topic, decoded, None)
            if topic == protocol.DETAIL and decoded.get("pss_procs") == 2:
                (src,) = state.sources.values()
                both.append((decoded["pss"], status_line(src, "rss", 0), headroom_text(src, "rss", 200).plain))

    assert sample_forker_in_process(tmp_path, [console], PARENT, CHILD, 0.5) == 0
    assert both, "no PSS sweep saw parent and child together"
    (src,) = state.sources.values()
    assert state.bad_messages == 0
    for pss, status, headroom in both:
        assert f"tree pss {format_bytes(pss)} (peak " in status and " uss " in status
        assert f"tree pss {format_bytes(pss)} (peak " in headroom
    assert src.peaks["pss"] == max(pss for pss, _, _ in both)
    assert src.peaks["pss"] <= src.peaks["rss"] - PARENT * MiB * 0.8  # the shared heap once
    assert CHILD * MiB <= src.peaks["uss"] <= src.peaks["pss"]
    # The tree is gone: no "now" figure from its last sweep.
    assert "tree pss" not in status_line(src, "rss", 0)


def test_a_malformed_body_is_counted_not_read() -> None:
    state = StreamState(max_window_s=1)
    hello = {**protocol.header(0, 1_000), "session": "s", "wall_ns": 0}
    bad = [
        (protocol.SAMPLES, {**protocol.header(1, 2_000), "dt": [0, 1], "series": {"rss": [5]}}),  # one value short
        (protocol.DETAIL, {"v": 1, "seq": 2, "t": "soon"}),
        (protocol.EVENT, {**protocol.header(3, 3_000)}),  # no kind
        (protocol.MARKER, {**protocol.header(4, 4_000), "kind": "note", "name": 7}),
    ]
    with state.lock:
        state.ingest("ep", protocol.HELLO, hello, None)
        for topic, body in bad:
            state.ingest("ep", topic, body, None)
        state.ingest("ep", protocol.DETAIL, {**protocol.header(5, 5_000), "pss": 3 * MiB, "uss": MiB}, None)
    (src,) = state.sources.values()
    assert state.bad_messages == len(bad)
    assert "rss" not in src.current and not src.events
    assert src.current["pss"] == 3 * MiB and src.current["uss"] == MiB
