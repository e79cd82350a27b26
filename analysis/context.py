"""The headline series of one source, with cheap window queries for the analyses."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .peaks import headline_series, series_arrays
from .reader import Source


@dataclass
class Ctx:
    src: Source
    name: str
    t: np.ndarray  # ns, sorted
    v: np.ndarray  # bytes

    @classmethod
    def of(cls, src: Source, name: str | None = None) -> Ctx:
        name = name or headline_series(src)
        arrs = series_arrays(src, name)
        if arrs is None:
            return cls(src, name, np.zeros(0, np.int64), np.zeros(0, np.int64))
        return cls(src, name, arrs[0], arrs[1])

    def window(self, a: int, b: int) -> slice:
        """Samples with a <= t <= b."""
        i = int(np.searchsorted(self.t, a, side="left"))
        j = int(np.searchsorted(self.t, b, side="right"))
        return slice(i, j)

    def values(self, a: int, b: int) -> np.ndarray:
        return self.v[self.window(a, b)]

    def _exact(self, a: int, b: int) -> Any:
        """A streamed run's exact figures over [a, b] when phase edges bound it (else None:
        the series is its envelope there)."""
        fig = self.src.stream
        return fig.window(self.name, a, b) if fig is not None else None

    def level(self, a: int, b: int) -> float | None:
        """Median in [a, b]: the level memory sat at, whatever spikes came and went."""
        acc = self._exact(a, b)
        if acc is not None:
            return float(acc.percentile_f(50))
        w = self.values(a, b)
        return float(np.median(w)) if len(w) else None

    def peak(self, a: int, b: int) -> tuple[int, int] | None:
        """(peak bytes, its t) in [a, b]."""
        acc = self._exact(a, b)
        if acc is not None:
            return acc.peak, acc.peak_t
        sl = self.window(a, b)
        w = self.v[sl]
        if not len(w):
            return None
        i = int(np.argmax(w))
        return int(w[i]), int(self.t[sl.start + i])

    def mean(self, a: int, b: int) -> float | None:
        acc = self._exact(a, b)
        if acc is not None:
            return acc.total / acc.count
        w = self.values(a, b)
        return float(w.mean()) if len(w) else None

    def rel(self, t: int | None) -> float | None:
        return None if t is None else round((t - self.src.t0) / 1e9, 6)
