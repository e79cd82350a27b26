"""Messages missing from a stream, counted from ``seq`` and tolerant of reordering.

A sampler may publish a message with a lower ``seq`` just after higher ones
(e.g. a detail whose number was taken before the events it triggered). A plain
"jump = loss" counter reports those as lost; here a jump only marks the skipped
numbers as missing, and a late arrival clears its number again. What is still
missing at the end (or, live, far enough behind the newest number) was lost.
"""

from __future__ import annotations

from dataclasses import dataclass, field

MAX_TRACKED = 100_000  # missing numbers remembered per key; a larger hole is lost for good


@dataclass
class GapCounter:
    last: dict[str, int] = field(default_factory=dict)
    missing: dict[str, set[int]] = field(default_factory=dict)
    overflow: int = 0
    overflow_gaps: list[tuple[str, int, int]] = field(default_factory=list)

    def see(self, key: str, seq: int) -> None:
        last = self.last.get(key)
        if last is None:
            self.last[key] = seq
            return
        if seq == last + 1:
            self.last[key] = seq
        elif seq > last + 1:
            if seq - last - 1 > MAX_TRACKED:
                self.overflow += seq - last - 1
                self.overflow_gaps.append((key, last + 1, seq - 1))
            else:
                self.missing.setdefault(key, set()).update(range(last + 1, seq))
            self.last[key] = seq
        else:
            m = self.missing.get(key)
            if m:
                m.discard(seq)  # a late arrival (or a duplicate): not lost after all

    @property
    def missed(self) -> int:
        return self.overflow + sum(len(m) for m in self.missing.values())

    def settled(self, behind: int = 200) -> int:
        """Missing numbers at least ``behind`` messages older than the newest: surely lost."""
        n = self.overflow
        for key, m in self.missing.items():
            edge = self.last[key] - behind
            n += sum(1 for s in m if s < edge)
        return n

    def gaps(self) -> list[tuple[str, int, int]]:
        """(key, first, last) of every run of missing numbers, in order."""
        out = list(self.overflow_gaps)
        for key, m in self.missing.items():
            run: list[int] = []
            for s in sorted(m):
                if run and s != run[-1] + 1:
                    out.append((key, run[0], run[-1]))
                    run = []
                run.append(s)
            if run:
                out.append((key, run[0], run[-1]))
        return sorted(out, key=lambda g: (g[0], g[1]))
