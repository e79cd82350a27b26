"""Columns of many version 2 blocks at once, and the bounded tables a streamed run keeps.

* :func:`decode_samples`: the sample columns of consecutive blocks in one numpy pass
  (each block's deltas joined, one cumulative sum restarted at every block);
* small groups (details, load telemetry) are gathered by :class:`.rawcols.RawCols`;
* :class:`Rows`: every k-th detail row, k doubling as the run grows (the last row always);
* :class:`LoadBins`: load telemetry merged into bins of k intervals, k doubling likewise.
"""

from __future__ import annotations

from itertools import accumulate
from typing import Any

import numpy as np
from spikewatch.sampler.wire import blocks

from .loadmerge import COUNTS, LEVELS, MAXIMA
from .packed import ints_many, segmented_cumsum, segmented_moves, segmented_packs
from .rawcols import RawCols
from .tables import concat_tables
from .v2decode import np_ints, sparse_deltas


def count_ints(packed: list[Any]) -> int:
    """How many ints a :func:`blocks.pack_ints` list holds, without unpacking it."""
    return len(packed[1]) // packed[0]


def pycol(col: list[Any]) -> list[Any]:
    """One column of a small group as a list (cheaper than numpy for a few values)."""
    if col[0] == 1:
        d = blocks.unpack_ints(col[2])
        g = col[3]
        return list(accumulate(d if g == 1 else [x * g for x in d], initial=col[1]))
    if col[0] == 2:
        return [col[1]] * col[2]
    return list(col[1])


def bin_column(k: str, c: np.ndarray, starts: np.ndarray, last: np.ndarray) -> np.ndarray:
    """Column ``k`` over bins beginning at ``starts``: counts add, maxima keep the largest, levels average."""
    ok = ~np.isnan(c)
    n_ok = np.add.reduceat(ok, starts)
    if k in COUNTS or k == "interval_ns":
        val = np.add.reduceat(np.where(ok, c, 0.0), starts)
    elif k in MAXIMA:
        val = np.fmax.reduceat(c, starts)
    elif k == "seq":
        return c[last]
    else:
        val = np.add.reduceat(np.where(ok, c, 0.0), starts) / np.maximum(n_ok, 1)
    return np.where(n_ok > 0, val, np.nan)


def decode_samples(encs: list[list[Any]]) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray, int]:
    """The ``s`` columns of consecutive blocks (same series and quantum) in bulk:
    (times, series columns, offset of each block's first sample, earliest batch head time)."""
    q = encs[0][1]
    m = np.array([count_ints(e[7]) for e in encs], dtype=np.int64)  # e: one deviation per sample
    periods = [e[2] for e in encs]  # the tick grid's step: a block's median step, so it may differ by a quantum
    p: Any = periods[0] if len(set(periods)) == 1 else np.repeat(np.array(periods, dtype=np.int64), m)
    offs = np.concatenate(([0], np.cumsum(m)))
    k = segmented_packs(np.zeros(len(encs), np.int64), [e[6] for e in encs], m)
    base = np.repeat(np.array([e[0] for e in encs], dtype=np.int64), m)
    dev = ints_many([e[7] for e in encs])
    delta = np.array([bool(len(e) > 10 and e[10]) for e in encs])
    if delta.any():  # version 3: a block's deviations may be stored as deltas
        starts = offs[:-1]
        run = np.cumsum(dev)
        run = run - np.repeat(run[starts] - dev[starts], m)
        dev = run if delta.all() else np.where(np.repeat(delta, m), run, dev)
    t = k  # base + (k * p + dev) * q, in place
    t *= p
    t += dev
    t *= q
    t += base
    cols: dict[str, np.ndarray] = {}
    for i, name in enumerate(encs[0][4][0]):
        ser = [e[8][i] if len(e[8]) > i and e[8][i][0] == name else next(x for x in e[8] if x[0] == name) for e in encs]
        firsts = np.array([x[1] for x in ser], dtype=np.int64)
        g = [x[2] for x in ser]
        if all(len(x) > 5 for x in ser):  # version 4: stored as their moves
            cols[name] = segmented_moves(firsts, [x[3] for x in ser], [x[5] for x in ser], m, g)
        elif any(len(x) > 5 for x in ser):  # version 4: some stored as their moves
            d = np.concatenate([sparse_deltas(x, int(mj)) if len(x) > 5 else np_ints(x[3]) for x, mj in zip(ser, m)])
            if len(d) != int(m.sum()) - len(ser):
                raise ValueError("a series of another length than its block")
            if g.count(1) != len(g):
                d = d * np.repeat(np.array(g, dtype=np.int64), m - 1)
            cols[name] = segmented_cumsum(firsts, d, m)
        else:
            cols[name] = segmented_packs(firsts, [x[3] for x in ser], m, g)
        rel = np.array([blocks.series_ref(x) >= 0 for x in ser])
        if rel.any():  # version 4: a series relative to another (the block's first)
            refs = {
                (e[8][x[4]][0], blocks.series_ref(e[8][x[4]])) for e, x in zip(encs, ser) if blocks.series_ref(x) >= 0
            }
            ref, its_ref = refs.pop() if len(refs) == 1 else ("", 0)
            if ref not in cols or its_ref >= 0:
                raise ValueError("a series relative to a relative or later series")
            cols[name] += np.where(np.repeat(rel, m), cols[ref], 0)
    # the first batch's head may sit before its first sample (the rest are later anyway)
    head = int(t[0]) + int(np_ints(encs[0][9]).min()) * q if len(t) else 0
    return t, cols, offs, head


_LOAD_DROP = ("errors", "source")  # not columns of the bins


def _values(g: list[Any], key: str) -> list[Any]:
    """One column of a group as a list (any kind)."""
    col = g[3][g[0].index(key)]
    if col[0] == 0:
        return list(col[1])
    if col[0] == 2:
        return [col[1]] * col[2]
    return blocks.group_columns(g)[g[0].index(key)]


def _quiet(g: list[Any]) -> bool:
    """No interval of the block had an error."""
    col = g[3][g[0].index("errors")]
    if col[0] == 3:  # maps as a nested group: with no keys, every one is empty
        return not col[1][0]
    return not any(_values(g, "errors"))


class LoadBins:
    """Load telemetry of one sender without endpoints or errors, as columns, merged into
    bins of ``stride`` consecutive intervals (doubling as the run grows): counts add,
    levels average, maxima keep the largest (:mod:`.loadmerge`'s rules)."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.stride = 1
        self.pend = RawCols()
        self._plans: dict[tuple[str, ...], tuple[bool, int, list[str]]] = {}
        self.rest: dict[str, np.ndarray] = {}  # rows short of a whole bin, for the next flush
        self.out: list[dict[str, np.ndarray]] = []  # bins as columns (t last of each, counts summed…)
        self.held = 0
        self.source: Any = None
        self.tmin: int | None = None
        self.tmax: int | None = None

    def take(self, g: list[Any]) -> bool:
        """A block's load group, unless it has endpoints, errors or another source (False:
        the caller takes its records one by one). Its columns wait undecoded for the flush."""
        keys, _shapes, ids_p, cols = g
        tk = tuple(keys)
        plan = self._plans.get(tk)
        if plan is None:  # per key list: where t is, and which of errors and source to check, in key order
            if len(self._plans) > 64:
                self._plans.clear()
            at = sorted((keys.index(k), k) for k in ("errors", "source") if k in keys)
            ok = "endpoints" not in keys and "t" in keys
            plan = self._plans[tk] = (ok, keys.index("t") if ok else -1, [k for _, k in at])
        ok, ti, checks = plan
        if not ok:
            return False
        n = count_ints(ids_p)
        for key in checks:
            if key == "errors" and not _quiet(g):
                return False
            if key == "source":
                src = _values(g, "source")
                if len(set(map(str, src))) != 1 or (self.source is not None and src[0] != self.source):
                    return False
                self.source = src[0]
        t = cols[ti]
        if not (t[0] in (1, 5) or (t[0] == 2 and type(t[1]) is int)):  # else: are they all ints?
            tv = _values(g, "t")
            if len(tv) != n or not all(type(x) is int for x in tv):
                return False
        self.pend.add(keys, cols, n, drop=_LOAD_DROP)
        if self.pend.n >= 4096:
            self._flush(False)
        return True

    def _flush(self, final: bool) -> None:
        table = self.pend.table()
        if table:
            lo, hi = int(table["t"].min()), int(table["t"].max())
            self.tmin = lo if self.tmin is None else min(self.tmin, lo)
            self.tmax = hi if self.tmax is None else max(self.tmax, hi)
        if self.rest:
            table = concat_tables([self.rest, table]) if table else self.rest
        self.rest = {}
        if not table:
            return
        cols = {k: v.astype(np.float64) for k, v in table.items()}
        n = len(cols["t"])
        whole = n if final else n // self.stride * self.stride
        if whole == 0:
            return
        starts = np.arange(0, whole, self.stride)
        last = np.minimum(starts + self.stride, whole) - 1
        binned: dict[str, np.ndarray] = {"t": cols["t"][last]}
        for k, c in cols.items():
            if k in ("t", "v"):
                continue
            binned[k] = bin_column(k, c[:whole], starts, last)
        self.out.append(binned)
        self.held += len(starts)
        if whole < n:
            self.rest = {k: (c[whole:].astype(np.int64) if k == "t" else c[whole:]) for k, c in cols.items()}
        while self.held > self.cap:
            self._halve()

    def _halve(self) -> None:
        """Twice the stride: neighbouring bins merged pairwise, in bulk."""
        whole = concat_tables([{**tb, "t": tb["t"].astype(np.int64)} for tb in self.out])
        cols = {k: v.astype(np.float64) for k, v in whole.items()}
        n = len(cols["t"])
        starts = np.arange(0, n, 2)
        last = np.minimum(starts + 2, n) - 1
        merged: dict[str, np.ndarray] = {"t": cols["t"][last]}
        for k, c in cols.items():
            if k not in ("t", "v"):
                merged[k] = bin_column(k, c, starts, last)
        self.out = [merged]
        self.held = len(starts)
        self.stride *= 2

    def records(self) -> list[dict[str, Any]]:
        self._flush(True)
        if not self.out:
            return []
        table = concat_tables([{**tb, "t": tb["t"].astype(np.int64)} for tb in self.out])
        names = list(table)
        fields = []
        for k in names:
            c = table[k]
            if k == "t" or (k not in LEVELS and np.all(np.isnan(c) | (c == np.round(c)))):
                fields.append([None if x != x else int(x) for x in c.tolist()])
            else:
                fields.append([None if x != x else x for x in c.tolist()])
        out = []
        for row in zip(*fields):
            rec: dict[str, Any] = {"v": 1, "errors": {}}
            if self.source is not None:
                rec["source"] = self.source
            rec.update((k, x) for k, x in zip(names, row) if x is not None)
            out.append(rec)
        return out


class Rows:
    """Every ``stride``-th detail row; the stride doubles whenever ``cap`` rows are held."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.stride = 1
        self.seen = 0
        self.kept: list[dict[str, np.ndarray]] = []
        self.kept_idx: list[np.ndarray] = []
        self.held = 0
        self.last: dict[str, np.ndarray] | None = None

    def add(self, table: dict[str, np.ndarray]) -> None:
        n = len(table["t"])
        idx = np.arange(self.seen, self.seen + n)
        self.seen += n
        self.last = {k: v[-1:] for k, v in table.items()}
        m = idx % self.stride == 0
        if m.any():
            self.kept.append({k: v[m] for k, v in table.items()})
            self.kept_idx.append(idx[m])
            self.held += int(m.sum())
        if len(self.kept) > 64:  # one table, not one a flush
            keys = list(dict.fromkeys(k for tb in self.kept for k in tb))
            self.kept = [
                {
                    k: np.concatenate([tb[k] if k in tb else np.full(len(tb["t"]), np.nan) for tb in self.kept])
                    for k in keys
                }
            ]
            self.kept_idx = [np.concatenate(self.kept_idx)]
        while self.held > self.cap:
            self.stride *= 2
            out, out_idx, held = [], [], 0
            for tb, ix in zip(self.kept, self.kept_idx):
                m = ix % self.stride == 0
                if m.any():
                    out.append({k: v[m] for k, v in tb.items()})
                    out_idx.append(ix[m])
                held += int(m.sum())
            self.kept, self.kept_idx, self.held = out, out_idx, held

    def wants(self, start: int, n: int) -> bool:
        """Whether any of rows ``start`` .. ``start + n - 1`` would be kept at the current stride."""
        return n > 0 and (start + n - 1) // self.stride * self.stride >= start

    def table(self) -> dict[str, np.ndarray]:
        parts = list(self.kept)
        last_kept = next((int(ix[-1]) for ix in reversed(self.kept_idx) if len(ix)), -1)
        if self.last is not None and self.seen - 1 != last_kept:
            parts.append(self.last)  # the last row always: the limit in force at the end
        return concat_tables(parts)
