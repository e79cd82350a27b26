"""Small groups (details, load telemetry) of many blocks, decoded one numpy pass a column.

A day at 1 kHz is ~86,000 blocks, each with a few details and load intervals: decoding
their columns block by block into Python lists cost more than all the samples. Here a
block's group is kept as it came off the file (its column encodings) and, once a flush's
worth is gathered, each column is decoded over all those blocks at once: deltas joined
and summed in one segmented cumulative sum, constants repeated, short decimals divided.

The table is exactly :meth:`.streamcols.Cols.table`'s on the same values (``t`` as int64,
the rest as :func:`.tables.numeric` makes them); anything this path does not know
(nested maps, text, booleans, an odd ``t``) goes the old way, value by value.
:func:`seq_layout` and :func:`seq_all` serve the streamed reader's seq check on a block's groups.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from itertools import accumulate
from operator import itemgetter
from typing import Any

import numpy as np
from spikewatch.sampler.wire import blocks

from .packed import ints_many, segmented_cumsum, segmented_packs
from .tables import numeric

_SKIP = ("t", "v", "seq")
_EXACT = 1 << 53  # integers a float64 holds exactly: a decimal column divides like Python above this


class Cols:
    """Columns of small groups gathered as lists over many blocks, numpy once per flush."""

    def __init__(self) -> None:
        self.cols: dict[str, list[Any]] = {}
        self.n = 0

    def add(self, keys: list[str], cols: list[list[Any]], n: int) -> None:
        for k, c in zip(keys, cols):
            got = self.cols.get(k)
            if got is None:
                got = self.cols[k] = [None] * self.n
            got.extend(c)
        self.n += n
        for got in self.cols.values():
            if len(got) < self.n:
                got.extend([None] * (self.n - len(got)))

    def table(self) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        if not self.n or "t" not in self.cols:
            return out
        try:
            out["t"] = np.array(self.cols["t"], dtype=np.int64)
        except (TypeError, ValueError, OverflowError):
            return out
        for k, c in self.cols.items():
            if k in ("t", "v", "seq"):
                continue
            arr = numeric(c)
            if arr is not None:
                out[k] = arr
        self.cols, self.n = {}, 0
        if len(out["t"]) > 1 and np.any(np.diff(out["t"]) < 0):
            order = np.argsort(out["t"], kind="stable")
            out = {k: v[order] for k, v in out.items()}
        return out


class _Slow(Exception):
    """This flush needs the value-by-value path."""


class _Layout:
    """What blocks of one key list share: where each key is, and which keys are taken."""

    __slots__ = ("keys", "at", "taken", "takes", "flush")

    def __init__(
        self, keys: list[str], at: dict[str, int], only: Collection[str] | None, drop: Collection[str]
    ) -> None:
        self.keys = keys
        self.at = at  # shared by the layouts of one key list
        self.taken = [k for k in keys if (only is None or k in only) and k not in drop]
        self.takes = frozenset(self.taken)
        self.flush = -1  # the last flush that had a block of this layout


class RawCols:
    """Groups of one shape gathered as their encodings; :meth:`table` decodes them in bulk."""

    def __init__(self) -> None:
        self.lays: list[_Layout] = []  # per block
        self.colss: list[list[Any]] = []  # per block: its column encodings
        self.ns: list[int] = []
        self.n = 0
        self.order: dict[str, None] = {}  # keys taken, in the order they first came
        self._layouts: dict[tuple[Any, ...], _Layout] = {}
        self._ats: dict[tuple[str, ...], dict[str, int]] = {}
        self._flushes = 0
        self.slow = Cols()  # rows the value-by-value path holds (a table it could not make)

    def add(
        self, keys: list[str], cols: list[Any], n: int, only: Collection[str] | None = None, drop: Collection[str] = ()
    ) -> None:
        """One block's group of ``n`` bodies; the keys taken: those in ``only`` (default all) not in ``drop``
        (both constants: they are told apart by identity)."""
        tk = tuple(keys)
        sig = (tk, id(only), id(drop))
        lay = self._layouts.get(sig)
        if lay is None:
            at = self._ats.get(tk)
            if at is None:
                at = self._ats[tk] = {k: i for i, k in enumerate(keys)}
            lay = self._layouts[sig] = _Layout(keys, at, only, drop)
        if lay.flush != self._flushes:
            lay.flush = self._flushes
            self.order.update(dict.fromkeys(lay.taken))
        self.lays.append(lay)
        self.colss.append(cols)
        self.ns.append(n)
        self.n += n

    def table(self) -> dict[str, np.ndarray]:
        if not self.n:
            return {}
        if not self.slow.n:
            try:
                out = self._fast()
            except _Slow:
                pass
            else:
                self._reset()
                if len(out["t"]) > 1 and np.any(np.diff(out["t"]) < 0):
                    order = np.argsort(out["t"], kind="stable")
                    out = {k: v[order] for k, v in out.items()}
                return out
        for lay, cols, n in zip(self.lays, self.colss, self.ns):
            vals = blocks.group_columns([lay.keys, [], [], cols])
            self.slow.add(lay.taken, [vals[lay.at[k]] for k in lay.taken], n)
        self._reset()
        return self.slow.table()

    def _reset(self) -> None:
        self.lays, self.colss, self.ns, self.n, self.order = [], [], [], 0, {}
        self._flushes += 1
        if len(self._layouts) > 64:
            self._layouts, self._ats = {}, {}

    # -- the bulk pass -------------------------------------------------------
    def _fast(self) -> dict[str, np.ndarray]:
        if "t" not in self.order:
            raise _Slow
        self._m = np.array(self.ns, dtype=np.int64)
        self._ends = list(accumulate(self.ns))
        self._total = self.n
        at0 = self.lays[0].at
        distinct = set(self.lays)
        self._one = at0 if all(lay.at is at0 for lay in distinct) else None
        self._distinct = distinct
        self._ints: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # key -> (int values, which rows are ints)
        self._busy: set[str] = set()  # keys being decoded (a column referring back to one: the slow path)
        self._whole: dict[int, list[Any]] = {}  # block -> every column as values (the few blocks sparse keys need)
        t, t_ok, _f = self._decode(self._encs("t", True), want_float=False)
        if not (t_ok is True or t_ok.all()):
            raise _Slow
        out: dict[str, np.ndarray] = {"t": t}
        for k in self.order:
            if k in _SKIP:
                continue
            arr = self._column(k)
            if arr is not None:
                out[k] = arr
        return out

    def _encs(self, k: str, taken: bool) -> list[Any]:
        """Key ``k``'s encoding in each block (None where the block lacks it or, with ``taken``,
        does not take it)."""
        at = self._one
        if at is not None:
            i = at.get(k)
            if i is None:
                return [None] * len(self.colss)
            encs = list(map(itemgetter(i), self.colss))
            if not taken or all(k in lay.takes for lay in self._distinct):
                return encs
            return [e if k in lay.takes else None for e, lay in zip(encs, self.lays)]
        out = []
        for lay, cols in zip(self.lays, self.colss):
            i = lay.at.get(k)
            out.append(None if i is None or (taken and k not in lay.takes) else cols[i])
        return out

    def _ints_of(self, k: str) -> tuple[np.ndarray, np.ndarray]:
        """Key ``k`` in every block as int64, with a mask of the rows that are integers."""
        got = self._ints.get(k)
        if got is not None:
            return got
        if k in self._busy:
            raise _Slow
        self._busy.add(k)
        vals, isint, _f = self._decode(self._encs(k, False), want_float=False)
        self._busy.discard(k)
        self._ints[k] = (vals, isint)
        return vals, isint

    def _column(self, k: str) -> np.ndarray | None:
        encs = self._encs(k, True)
        have = [j for j, c in enumerate(encs) if c is not None]
        if len(have) * 8 <= len(encs):  # a few blocks (a detail row kept now and then): value by value
            return self._sparse(k, encs, have)
        try:
            vals, isint, fl = self._decode(encs, want_float=True)
        except _Slow:
            return self._listed(k, encs)
        if fl is None:
            out = np.full(self._total, np.nan)
        else:
            out = fl
        if isint is True:
            return vals.astype(np.float64)
        out[isint] = vals[isint].astype(np.float64)
        return out

    def _decode(self, encs: list[Any], want_float: bool) -> tuple[np.ndarray, Any, np.ndarray | None]:
        """(int64 values, which rows are ints (True: all), float values or None)."""
        m = self._m
        total = self._total
        kinds = [-1 if c is None else c[0] for c in encs] if None in encs else list(map(itemgetter(0), encs))
        present = set(kinds)
        if present - {-1, 1, 2, 4, 5, 6, 7}:
            raise _Slow
        if not want_float and (4 in present or 6 in present or 7 in present):
            raise _Slow
        if present == {1}:  # the common case: integer deltas in every block
            _k, firsts, packs, g = zip(*encs)
            if sum(len(pk[1]) // pk[0] for pk in packs) != total - len(encs):
                raise ValueError("a column of another length than its group")
            return segmented_packs(np.array(firsts, dtype=np.int64), packs, m, g), True, None
        vals = np.zeros(total, dtype=np.int64)
        isint: Any = np.zeros(total, dtype=bool)
        fl = None
        karr = np.array(kinds) if len(present) > 1 else None
        for kind in present:
            if kind == -1:
                continue
            rows: Any
            if karr is None:
                sel, sub, ms, rows = np.arange(len(encs)), encs, m, slice(None)
            else:
                picked = karr == kind
                sel = np.flatnonzero(picked)
                sub = [encs[j] for j in sel.tolist()]
                ms = m[sel]
                rows = np.repeat(picked, m)
            if kind == 1:
                _k, firsts, packs, g = zip(*sub)
                d = ints_many(packs)
                if len(d) != total - len(encs) and karr is None:
                    raise ValueError("a column of another length than its group")
                if g.count(1) != len(g):
                    d = d * np.repeat(np.array(g, dtype=np.int64), ms - 1)
                vals[rows] = segmented_cumsum(np.array(firsts, dtype=np.int64), d, ms)
                isint[rows] = True
            elif kind == 2:
                v = list(map(itemgetter(1), sub))
                types = set(map(type, v))
                if types == {int}:
                    vals[rows] = np.repeat(np.array(v, dtype=np.int64), ms)
                    isint[rows] = True
                elif types != {type(None)}:  # text or booleans: value by value; nil: NaN
                    raise _Slow
            elif kind == 5:
                vals[rows] = self._relative(sel, sub, ms)
                isint[rows] = True
            else:
                if fl is None:
                    fl = np.full(total, np.nan)
                if kind == 7:
                    fl[rows] = self._derived(sel, sub, ms)
                else:
                    fl[rows] = _decimals(sub, ms) if kind == 6 else np.concatenate([_floats(c[1]) for c in sub])
        if present == {1} or present == {2} and isint.all() or present == {5}:
            isint = True
        return vals, isint, fl

    def _relative(self, sel: np.ndarray, sub: list[Any], ms: np.ndarray) -> np.ndarray:
        """Kind 5: deltas (mode 0) or offsets (mode 1) from the first value, plus another
        column of the block when it refers to one."""
        _k, refs, modes, firsts, packs, g = zip(*sub)
        d = ints_many(packs)
        if len(d) != int(ms.sum()) - len(sub):
            raise ValueError("a column of another length than its group")
        if g.count(1) != len(g):
            d = d * np.repeat(np.array(g, dtype=np.int64), ms - 1)
        first = np.array(firsts, dtype=np.int64)
        mode = np.array(modes, dtype=np.int64)
        y = segmented_cumsum(first, d, ms)
        if np.any(mode != 0):  # offsets from the first value
            off = np.repeat(first, ms)
            later = np.ones(len(off), dtype=bool)
            later[np.concatenate(([0], np.cumsum(ms)[:-1]))] = False
            off[later] += d
            y = np.where(np.repeat(mode == 0, ms), y, off)
        if all(r < 0 for r in refs):
            return y
        # blocks whose column is relative to another column: add that one (as ints, every row)
        by_key: dict[str, list[int]] = {}
        for i, (j, r) in enumerate(zip(sel.tolist(), refs)):
            if r >= 0:
                by_key.setdefault(self.lays[j].keys[r], []).append(i)
        for rk, idx in by_key.items():
            rv, rint = self._ints_of(rk)
            mine = np.zeros(len(sub), dtype=bool)
            mine[idx] = True
            blk = np.zeros(len(self.colss), dtype=bool)
            blk[sel[idx]] = True
            glob = np.repeat(blk, self._m)
            if not (rint is True or rint[glob].all()):
                raise _Slow
            y[np.repeat(mine, ms)] += rv[glob]
        return y

    def _derived(self, sel: np.ndarray, sub: list[Any], ms: np.ndarray) -> np.ndarray:
        """Kind 7 (version 4): numerator * factor / denominator, two integer columns of the block."""
        out = np.empty(int(ms.sum()))
        mine_rows = np.repeat(np.arange(len(sub)), ms)
        by: dict[tuple[str, str, float], list[int]] = {}
        for i, (j, c) in enumerate(zip(sel.tolist(), sub)):
            keys = self.lays[j].keys
            by.setdefault((keys[c[1]], keys[c[2]], c[3]), []).append(i)
        for (ka, kb, factor), idx in by.items():
            (na, ia), (nb, ib) = self._ints_of(ka), self._ints_of(kb)
            blk = np.zeros(len(self.colss), dtype=bool)
            blk[sel[idx]] = True
            glob = np.repeat(blk, self._m)
            if not ((ia is True or ia[glob].all()) and (ib is True or ib[glob].all())):
                raise _Slow
            out[np.isin(mine_rows, idx)] = na[glob].astype(np.float64) * factor / nb[glob].astype(np.float64)
        return out

    def _sparse(self, k: str, encs: list[Any], have: list[int]) -> np.ndarray | None:
        out = np.full(self._total, np.nan)
        ends = self._ends
        for j in have:
            v = self._whole_of(j)[self.lays[j].at[k]]
            if not all(x is None or type(x) is int or type(x) is float for x in v):
                # every other row is None: whether the column is numeric shows on these rows alone
                rows: list[Any] = [None]
                for i in have:
                    rows.extend(self._whole_of(i)[self.lays[i].at[k]])
                return None if numeric(rows) is None else self._listed(k, encs)
            if len(v) != self.ns[j]:
                raise ValueError("a column of another length than its group")
            out[ends[j] - len(v) : ends[j]] = v
        return out

    def _whole_of(self, j: int) -> list[Any]:
        """Every column of block ``j`` as values (decoded once: its kept rows want most of them)."""
        got = self._whole.get(j)
        if got is None:
            got = self._whole[j] = blocks.group_columns([self.lays[j].keys, [], [], self.colss[j]])
        return got

    def _listed(self, k: str, encs: list[Any]) -> np.ndarray | None:
        """Key ``k`` value by value (text, booleans, nested maps): :func:`numeric` on the list."""
        vals: list[Any] = []
        for lay, cols, n, c in zip(self.lays, self.colss, self.ns, encs):
            if c is None:
                vals.extend([None] * n)
            elif c[0] == 0:
                vals.extend(c[1])
            elif c[0] == 2:
                vals.extend([c[1]] * c[2])
            else:
                vals.extend(blocks.group_columns([lay.keys, [], [], cols])[lay.at[k]])
        return numeric(vals)


def plain_column(cols: list[Any], i: int) -> list[Any]:
    """Column ``i`` of a group as plain values (any kind), decoding no other column unless it refers to one."""
    col = cols[i]
    kind = col[0]
    if kind == 0:
        return list(col[1])
    if kind == 1:
        d = blocks.unpack_ints(col[2])
        g = col[3]
        return list(accumulate(d if g == 1 else [x * g for x in d], initial=col[1]))
    if kind == 2:
        return [col[1]] * col[2]
    if kind == 5:
        _, ref, mode, first, packed, step = col
        d = blocks.unpack_ints(packed)
        if step != 1:
            d = [x * step for x in d]
        y = list(accumulate(d, initial=first)) if mode == 0 else [first, *(first + x for x in d)]
        if ref < 0:
            return y
        rc = cols[ref]
        if rc[0] == 1 or (rc[0] == 2 and type(rc[1]) is int) or (rc[0] == 5 and rc[1] < 0):
            return [a + b for a, b in zip(y, plain_column(cols, ref), strict=True)]
    return blocks.group_columns([[], [], [], cols])[i]


def _decimals(sub: list[Any], ms: np.ndarray) -> np.ndarray:
    """Kind 6: integers over a power of ten, divided as Python divides them (exact below 2**53)."""
    _k, places, firsts, packs = zip(*sub)
    d = ints_many(packs)
    if len(d) != int(ms.sum()) - len(sub):
        raise ValueError("a column of another length than its group")
    if not 0 <= min(places) <= max(places) <= 22:  # 10**places exact as a float64 up to 22
        raise _Slow
    mvals = segmented_cumsum(np.array(firsts, dtype=np.int64), d, ms)
    if len(mvals) and int(np.abs(mvals).max()) >= _EXACT:
        raise _Slow
    scale = np.repeat(np.array([10.0**x for x in places]), ms)
    return mvals.astype(np.float64) / scale


def _floats(raw: bytes) -> np.ndarray:
    """Kind 4: float64 bits XORed with the previous value, bytes transposed."""
    n = len(raw) // 8
    if n * 8 != len(raw):
        raise ValueError("float column of a length not a multiple of 8")
    u = np.frombuffer(raw, dtype=np.uint8).reshape(8, n).T.copy().view("<u8").ravel()
    return np.bitwise_xor.accumulate(u).view("<f8").astype(np.float64)


def seq_layout(order: bytes) -> dict[int, tuple[list[int], int, list[Any] | None]]:
    """Per topic: its records' places in ``order``, and how their deltas are stored (a
    consecutive seq at those places stores exactly these)."""
    places: dict[int, list[int]] = {}
    for i, ti in enumerate(order):
        places.setdefault(ti, []).append(i)
    out = {}
    for ti, pl in places.items():
        d = [b - a for a, b in zip(pl, pl[1:])]
        g = math.gcd(*d) or 1 if d else 1
        out[ti] = (pl, g, blocks.pack_ints([x // g for x in d]) if d else None)
    return out


def seq_all(order: bytes, groups: list[Any]) -> list[Any]:
    """Every record's seq in record order (None where a group has none)."""
    its = {}
    for ti, g in groups:
        keys, _shapes, ids_p, _cols = g
        n = len(ids_p[1]) // ids_p[0]
        col = plain_column(g[3], keys.index("seq")) if "seq" in keys else []
        its[ti] = iter(col if len(col) == n else [None] * n)
    return [next(its[ti]) for ti in order]
