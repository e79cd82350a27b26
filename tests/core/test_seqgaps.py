"""The one sequence-gap counter (recorder, console and report all use it)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from spikewatch.sampler.wire.seqgaps import SeqGaps


def test_counts_gaps_per_key():
    g = SeqGaps()
    assert [g.see(s, "a") for s in (0, 1, 2, 5, 6)] == [0, 0, 0, 0, 0]  # pending, not yet settled
    assert g.see(10, "b") == 0
    assert g.missed == 2 and g.gaps() == [("a", 3, 4)] and g.keys_with_gaps() == ["a"]
    assert g.last_seq("a") == 6 and g.last_seq("b") == 10 and g.last_seq("c") is None


def test_reordered_messages_are_not_counted_as_lost():
    g = SeqGaps()
    for s in [0, 1, 3, 4, 2, 5, 9, 10, 6, 7]:  # 2 and 6, 7 arrive late; 8 never does
        g.see(s, "a")
    assert g.missed == 1 and g.gaps() == [("a", 8, 8)] and g.lost == 0
    for s in range(11, 300):
        g.see(s, "a")
    assert g.lost == 1 and g.pending == 0 and g.gaps() == [("a", 8, 8)]
    g.see(5, "b")
    g.see(5, "b")  # a duplicate is neither lost nor new
    assert g.missed == 1


def test_live_settling_reports_each_loss_once_and_bounds_memory():
    g = SeqGaps(settle=10, max_pending=10_000)
    for seq in [1, 2, 4, 3, 5, 6]:  # 3 came late: not lost
        g.see(seq)
    newly = [g.see(seq) for seq in range(9, 30)]  # 7 and 8 never come
    assert g.lost == 2 and newly.count(2) == 1 and sum(newly) == 2 and not g.pending
    assert g.see(100_000) == 100_000 - 29 - 1  # a huge hole counts at once, bounded memory
    assert g.gaps()[-1] == ("", 30, 99_999)


@given(st.lists(st.integers(0, 400), min_size=1, max_size=300))
def test_missed_is_exactly_the_numbers_never_seen(seqs):
    # Within the settling window every late arrival is forgiven: the count is exact.
    g = SeqGaps(settle=1000)
    for s in seqs:
        g.see(s)
    first = seqs[0]
    seen = set(seqs)
    # Numbers below the first one seen are before our time, not lost.
    never = {n for n in range(first, max(seqs) + 1) if n not in seen}
    assert g.missed == len(never)
    assert {n for _, a, b in g.gaps() for n in range(a, b + 1)} == never


@given(st.lists(st.integers(0, 400), min_size=1, max_size=300))
def test_a_late_arrival_after_settling_is_still_counted_once(seqs):
    g = SeqGaps(settle=20)
    lost_so_far = 0
    for s in seqs:
        g.see(s)
        assert g.lost >= lost_so_far  # what was reported lost is never taken back
        lost_so_far = g.lost
    never = {n for n in range(seqs[0], max(seqs) + 1) if n not in set(seqs)}
    assert g.missed >= len(never)
