"""Several senders' load telemetry becomes the load the service saw."""

from __future__ import annotations

from spikewatch.analysis.loadmerge import merge_sources

TICK = 100_000_000


def _msg(t: int, src: str, in_flight: int, completed: int, big: int) -> dict:
    return {
        "t": t,
        "interval_ns": TICK,
        "source": src,
        "in_flight": in_flight,
        "completed": completed,
        "rate": completed * 10.0,
        "errors": {"http_503": 1} if completed == 7 else {},
        "endpoints": {"big": {"in_flight": big, "in_flight_mean": float(big), "completed": completed}},
    }


def test_one_sender_is_left_alone() -> None:
    recs = [_msg(i * TICK, "a", 3, 5, 3) for i in range(1, 5)]
    assert merge_sources(recs) is recs


def test_levels_add_up_and_counts_are_kept_once() -> None:
    recs = []
    for i in range(1, 11):
        recs.append(_msg(i * TICK, "drive h1:1", 4, 5, 4))
        recs.append(_msg(i * TICK + 37_000_000, "drive h2:9", 6, 7, 6))  # another host, out of phase
    recs.append(_msg(11 * TICK, "drive h1:1", 4, 5, 4))
    merged = merge_sources(recs)
    assert len(merged) == 11  # on the ticks of one sender
    assert all(m["in_flight"] == 10 and m["endpoints"]["big"]["in_flight"] == 10 for m in merged)
    assert all(abs(m["endpoints"]["big"]["in_flight_mean"] - 10) < 1e-6 for m in merged)
    # every request once: nothing lost, nothing counted twice
    assert sum(m["completed"] for m in merged) == sum(r["completed"] for r in recs)
    assert sum(m["endpoints"]["big"]["completed"] for m in merged) == sum(r["completed"] for r in recs)
    assert sum(m["errors"].get("http_503", 0) for m in merged) == 10


def test_messages_stamped_together_after_a_stall_are_averaged_not_added() -> None:
    recs = [_msg(i * TICK, "a", 2, 1, 2) for i in range(1, 6)]
    recs += [_msg(2 * TICK + 10, "b", 3, 1, 3), _msg(3 * TICK - 5, "b", 3, 1, 3), _msg(3 * TICK - 5, "b", 3, 1, 3)]
    merged = merge_sources(recs)
    assert [m["endpoints"]["big"]["in_flight_mean"] for m in merged] == [5, 5, 5, 5, 5]
    assert sum(m["completed"] for m in merged) == 8


def test_a_sender_that_went_quiet_stops_counting() -> None:
    recs = [_msg(i * TICK, "a", 2, 1, 2) for i in range(1, 20)] + [_msg(TICK + 1, "b", 50, 1, 50)]
    merged = merge_sources(recs)
    assert merged[1]["in_flight"] == 52 and merged[-1]["in_flight"] == 2
