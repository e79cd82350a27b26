"""Messages missing from a stream, counted from ``seq`` and tolerant of reordering.

Every message of a sampler session carries the next number of one counter, so
a subscriber can tell what it missed. The one subtlety: a sampler may publish
a lower ``seq`` just after higher ones (a ``detail`` numbered before the events
it triggered). A plain "jump = loss" counter would report those as lost; here
a jump only marks the skipped numbers as pending, a late arrival clears its
number, and a hole counts as lost once its newest number is ``settle``
messages behind the newest seen. At the end of a stream, whatever is still
pending was lost too (:attr:`SeqGaps.missed`).

One counter serves the recorder, the live console and the report's reader;
a key per stream (endpoint and session) keeps several samplers apart.
Memory is bounded: a hole larger than ``max_pending`` counts as lost at once.
"""

from __future__ import annotations

from collections import deque

__all__ = ["SeqGaps"]


class SeqGaps:
    def __init__(self, settle: int = 200, max_pending: int = 100_000) -> None:
        self.settle = settle
        self.max_pending = max_pending
        self.last: dict[str, int] = {}  # newest seq per key
        self.lost = 0  # surely lost (settled) so far, all keys
        self._holes: dict[str, deque[tuple[int, set[int]]]] = {}  # key -> (highest number, still missing)
        self._lost_runs: list[tuple[str, int, int]] = []  # settled holes, as (key, first, last) runs

    def see(self, seq: int, key: str = "") -> int:
        """Record ``seq`` of stream ``key``; return how many numbers became surely lost just now."""
        last = self.last.get(key)
        if last is None:
            self.last[key] = seq
            return 0
        newly = 0
        if seq > last:
            hole = seq - last - 1
            if hole > self.max_pending:
                newly += hole
                self._lost_runs.append((key, last + 1, seq - 1))
            elif hole:
                self._holes.setdefault(key, deque()).append((seq - 1, set(range(last + 1, seq))))
            self.last[key] = last = seq
        else:
            for _, missing in self._holes.get(key, ()):
                missing.discard(seq)  # a late arrival (or a duplicate): not lost after all
        holes = self._holes.get(key)
        while holes and holes[0][0] < last - self.settle:
            missing = holes.popleft()[1]
            newly += len(missing)
            self._lost_runs.extend(_runs(key, missing))
        self.lost += newly
        return newly

    def last_seq(self, key: str = "") -> int | None:
        return self.last.get(key)

    @property
    def pending(self) -> int:
        """Numbers missing but recent enough that they may still arrive."""
        return sum(len(m) for holes in self._holes.values() for _, m in holes)

    @property
    def missed(self) -> int:
        """Everything missing, pending included: the count at the end of a stream."""
        return self.lost + self.pending

    def keys_with_gaps(self) -> list[str]:
        keys = {k for k, _, _ in self._lost_runs}
        keys.update(k for k, holes in self._holes.items() if any(m for _, m in holes))
        return sorted(keys)

    def gaps(self) -> list[tuple[str, int, int]]:
        """(key, first, last) of every run of missing numbers, pending included, in order."""
        out = list(self._lost_runs)
        for key, holes in self._holes.items():
            for _, missing in holes:
                out.extend(_runs(key, missing))
        return sorted(out, key=lambda g: (g[0], g[1]))


def _runs(key: str, numbers: set[int]) -> list[tuple[str, int, int]]:
    out: list[tuple[str, int, int]] = []
    for s in sorted(numbers):
        if out and s == out[-1][2] + 1:
            out[-1] = (key, out[-1][1], s)
        else:
            out.append((key, s, s))
    return out
