"""Maps as columns (:func:`encode_group`), integers among them as deltas, packed
narrow by :mod:`.ints`."""

from __future__ import annotations

import math
import operator
from array import array
from collections.abc import Mapping
from itertools import accumulate, repeat
from typing import Any

from .ints import _INT64, _LITTLE, pack_ints, unpack_ints

_INT_ONLY = {int}


# ------------------------------------------------------------ generic groups


# Version 4's derived floats: (column, numerator, denominator, factor) with the column
# exactly ``numerator * factor / denominator`` (a driver's rate: completions over its interval)
DERIVED = (("rate", "completed", "interval_ns", 1e9),)
_EXACT = 1 << 53


def encode_group(bodies: list[Mapping[Any, Any]], ext: int = 0) -> list[Any]:
    """Maps as columns: ``[keys, shapes (key numbers), shape ids, columns (one a key)]``.

    A column is ``[0, values]`` or, when every value is an int64, ``[1, first,
    packed deltas / g, g]`` (times, counters and sequence numbers move by little,
    memory figures by whole pages) or ``[2, value, count]`` when it never changes.
    ``ext`` 1 (version 3) adds kinds 3-6; 2 (version 4) kind 7 and integers relative
    to a twin column (see :func:`_relative`).
    """
    shapes: dict[tuple[Any, ...], int] = {}
    ids = [shapes.setdefault(tuple(b), len(shapes)) for b in bodies]  # a new shape takes the next id
    cols: dict[Any, list[Any]] = {}
    if len(shapes) == 1:  # every body has the same keys: a column a key, no lookup a value
        cols = {k: [b[k] for b in bodies] for k in next(iter(shapes))}
    else:
        for b in bodies:
            for k, v in b.items():
                col = cols.get(k)
                if col is None:
                    cols[k] = [v]
                else:
                    col.append(v)
    keys = list(cols)
    at = {k: i for i, k in enumerate(keys)}
    vals = list(cols.values())
    if not ext:
        return [keys, [[at[k] for k in s] for s in shapes], pack_ints(ids), [_encode_column(v) for v in vals]]
    # relative integer columns only where every body has every key, so two
    # columns line up body for body; a column referred to stays self-contained
    n = len(vals)
    ints = [False] * n
    wide = [False] * n
    own: list[tuple[int, int, int, list[int]] | None] = [None] * n
    enc: list[list[Any]] = []
    for i, v in enumerate(vals):
        m = len(v)
        # _all_ints(v), the same value throughout (most of a detail's columns) told first
        if m < 2 or operator.countOf(map(type, v), int) != m:
            enc.append(_encode_column_ext(v, None, ext))
            continue
        if v.count(v[0]) == m:
            if _INT64[0] <= v[0] <= _INT64[1]:
                ints[i] = True
                enc.append([2, v[0], m])
            else:
                enc.append(_encode_column_ext(v, None, ext))
            continue
        if not (_INT64[0] <= min(v) and max(v) <= _INT64[1]):
            enc.append(_encode_column_ext(v, None, ext))
            continue
        ints[i] = True
        d = list(map(operator.sub, v[1:], v))
        g = math.gcd(*d)  # not 0: v is not constant
        if not (_INT64[0] <= min(d) and max(d) <= _INT64[1]):
            enc.append([0, v])
        elif max(map(abs, d)) // g < 128:
            # steps that fit a byte (seq, counters, memory in pages) stay plain deltas:
            # nothing is cheaper, and the journal thread saves the search
            enc.append(_delta_column(v, d, g))
        else:
            wide[i] = True
            mine = own[i] = _int_modes(v, -1, v, d)
            col = _int_column(-1, 1, v) if mine is not None and mine[2] == 1 else None
            enc.append(col if col is not None else _delta_column(v, d, g))
    if len(shapes) == 1:
        _relative(vals, enc, ints, wide, own, at.get("t"), ext >= 2)
        if ext >= 2:
            _derived(vals, enc, ints, at)
    elif ext >= 2:
        # columns line up body for body where their keys are in the same shapes (a
        # detail with its pss figures now and then): relative within each such set
        in_shapes: dict[Any, list[int]] = {k: [] for k in keys}
        for j, sh in enumerate(shapes):
            for k in sh:
                in_shapes[k].append(j)
        sig: dict[tuple[int, ...], list[int]] = {}
        for i, k in enumerate(keys):
            sig.setdefault(tuple(in_shapes[k]), []).append(i)
        for idx in sig.values():
            if len(idx) > 1:
                sub_at = {keys[i]: n for n, i in enumerate(idx)}
                sub_enc = [enc[i] for i in idx]
                _relative(
                    [vals[i] for i in idx],
                    sub_enc,
                    [ints[i] for i in idx],
                    [wide[i] for i in idx],
                    [own[i] for i in idx],
                    sub_at.get("t"),
                    True,
                )
                _derived([vals[i] for i in idx], sub_enc, [ints[i] for i in idx], sub_at)
                for n, i in enumerate(idx):
                    enc[i] = _renumber(sub_enc[n], idx)
    return [keys, [[at[k] for k in s] for s in shapes], pack_ints(ids), enc]


def _relative(
    vals: list[list[Any]],
    enc: list[list[Any]],
    ints: list[bool],
    wide: list[bool],
    own: list[tuple[int, int, int, list[int]] | None],
    t_at: int | None,
    twins: bool,
) -> None:
    """Wide integer columns relative to ``t`` or the integer column before them, when
    that takes fewer bits; with ``twins`` (version 4) also any integer column relative
    to an earlier one that starts or ends on the same value (a detail's ``cg_peak`` beside its
    ``cg_usage``, ``sample_max`` beside ``vm_hwm``) when cheaper than its own deltas.
    A column referred to stays self-contained."""
    relative: set[int] = set()
    used: set[int] = set()
    last_int: int | None = None
    ends: dict[Any, list[int]] = {}
    if twins:
        for i, v in enumerate(vals):
            if ints[i]:
                ends.setdefault(v[0], []).append(i)
                if v[-1] != v[0]:
                    ends.setdefault(v[-1], []).append(i)
    for i, v in enumerate(vals):
        if not ints[i]:
            continue
        prev, last_int = last_int, i
        if i in used:
            continue
        if wide[i]:
            refs = [r for r in (t_at, prev) if r is not None and r != i and ints[r] and r not in relative]
            best = own[i]
        elif not twins or enc[i][0] == 2:
            continue  # narrow and constant: nothing to try
        else:
            refs, best = [], None
        if twins and enc[i][0] != 2:
            mine = [r for r in dict.fromkeys(ends.get(v[0], []) + ends.get(v[-1], [])) if r < i and r not in relative]
            if mine:
                refs += mine
                if best is None:
                    best = (_step_bits(v), -1, 0, v)
        for r in dict.fromkeys(refs):
            c = _int_modes(v, r, vals[r]) if wide[i] else _twin(v, r, vals[r])
            if c is not None and (best is None or c[0] < best[0]):
                best = c
        if best is not None and best[1] >= 0:
            col = _int_column(*best[1:])
            if col is not None:
                enc[i] = col
                relative.add(i)
                used.add(best[1])


def _renumber(col: list[Any], cols: list[int]) -> list[Any]:
    """A column made within a subset of the columns, its references to the whole."""
    if col[0] == 5 and col[1] >= 0:
        return [5, cols[col[1]], *col[2:]]
    if col[0] == 7:
        return [7, cols[col[1]], cols[col[2]], col[3]]
    return col


def _step_bits(y: list[int]) -> int:
    """Bits of the deltas of ``y`` over their common step, and of its first value
    (a bit length is its absolute value's, and g divides every delta exactly)."""
    d = list(map(operator.sub, y[1:], y))
    g = math.gcd(*d) or 1
    return sum(map(int.bit_length, d if g == 1 else [x // g for x in d])) + y[0].bit_length() // 4


def _twin(v: list[int], ref: int, rv: list[int]) -> tuple[int, int, int, list[int]] | None:
    y = list(map(operator.sub, v, rv))
    if not (_INT64[0] <= min(y) and max(y) <= _INT64[1]):
        return None
    return (_step_bits(y), ref, 0, y)


def _derived(vals: list[list[Any]], enc: list[list[Any]], ints: list[bool], at: Mapping[Any, int]) -> None:
    """Kind 7: ``[7, numerator column, denominator column, factor]`` for a float column
    that is exactly numerator * factor / denominator in every body (:data:`DERIVED`)."""
    for key, num, den, factor in DERIVED:
        i, a, b = at.get(key), at.get(num), at.get(den)
        if i is None or a is None or b is None or not (ints[a] and ints[b]):
            continue
        v, n, d = vals[i], vals[a], vals[b]
        if all(
            type(x) is float and 0 < abs(q) < _EXACT and abs(p) < _EXACT and _same_float(x, p * factor / q)
            for x, p, q in zip(v, n, d)
        ):
            enc[i] = [7, a, b, factor]


def _same_float(a: float, b: float) -> bool:
    return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)


def all_int64(vals: list[Any]) -> bool:
    """Every value an int (not a bool) within int64: at C speed (the journal thread runs it a lot)."""
    return bool(vals) and set(map(type, vals)) == _INT_ONLY and _INT64[0] <= min(vals) and max(vals) <= _INT64[1]


def _all_ints(vals: list[Any]) -> bool:
    return len(vals) > 1 and all_int64(vals)


def _encode_column(vals: list[Any]) -> list[Any]:
    if _all_ints(vals):
        d = list(map(operator.sub, vals[1:], vals))
        if _INT64[0] <= min(d) and max(d) <= _INT64[1]:
            g = math.gcd(*d)
            if g == 0:  # the same value throughout
                return [2, vals[0], len(vals)]
            return _delta_column(vals, d, g)
    return [0, vals]


def _delta_column(vals: list[int], d: list[int], g: int) -> list[Any]:
    """Kind 1 of ``vals`` from its deltas ``d`` (within int64) and their gcd ``g`` (not 0)."""
    if g > 1:  # memory figures move in whole pages
        d = [x // g for x in d]
    return [1, vals[0], pack_ints(d), g]


def _int_modes(
    vals: list[int], ref: int, rv: list[int], d: list[int] | None = None
) -> tuple[int, int, int, list[int]] | None:
    """The cheaper of deltas (mode 0) and offsets from the first (mode 1) of
    ``vals`` less the column ``ref`` (-1: none): (bits, ref, mode, y); ``d``: the
    deltas of ``vals`` when ref is -1 and they are at hand."""
    y = vals if ref < 0 else list(map(operator.sub, vals, rv))
    if ref >= 0 and not (_INT64[0] <= min(y) and max(y) <= _INT64[1]):
        return None
    # the bits (a bit length is the absolute value's) summed straight off C iterators: a
    # detail group tries ~17 of these on columns of ~11 values, where building lists and
    # calling helpers is the cost
    rest = y[1:]
    bit_length = int.bit_length
    b0 = sum(map(bit_length, d if d is not None else map(operator.sub, rest, y)))
    b1 = sum(map(bit_length, map(operator.sub, rest, repeat(y[0]))))
    return (b0, ref, 0, y) if b0 <= b1 else (b1, ref, 1, y)


def _int_column(ref: int, mode: int, y: list[int]) -> list[Any] | None:
    d = [b - a for a, b in zip(y, y[1:])] if mode == 0 else [x - y[0] for x in y[1:]]
    if not (_INT64[0] <= min(d) and max(d) <= _INT64[1]):
        return None
    g = math.gcd(*d) or 1
    if g > 1:
        d = [x // g for x in d]
    return [5, ref, mode, y[0], pack_ints(d), g]


def _encode_column_ext(vals: list[Any], own: tuple[int, int, int, list[int]] | None, ext: int = 1) -> list[Any]:
    """Version 3's columns: integers also as offsets from their first value (a
    noisy figure: latencies) or (see :func:`encode_group`) relative to another
    column (a wall clock beside ``t``, a p99 beside its p90), whichever takes the
    fewest bits; floats as XOR with the previous value, bytes transposed; maps as
    a nested group; an unchanging string, bool or nil once."""
    n = len(vals)
    if n > 1:
        v0 = vals[0]
        if own is not None:  # wide integers: own is their _int_modes
            if own[2] == 1:
                col = _int_column(-1, 1, vals)
                if col is not None:
                    return col
            return _encode_column(vals)
        t0 = type(v0)
        if t0 is float and all(type(x) is float for x in vals):
            return _decimal_column(vals) or [4, _pack_floats(vals)]
        if t0 is dict and all(type(x) is dict for x in vals):
            return [3, encode_group(vals, ext=ext)]
        if (v0 is None or t0 in (str, bool)) and all(type(x) is t0 and x == v0 for x in vals):
            return [2, v0, n]
    return _encode_column(vals)


def _decimal_column(vals: list[float]) -> list[Any] | None:
    """Floats that are short decimals (a mean rounded to 3 places): ``[6, places,
    first, packed deltas]`` of the integers ``m`` with ``m / 10**places`` the very
    float (the decoder divides the same way, so this is exact)."""
    n = len(vals)
    x0 = vals[0]
    if n > 2 and vals.count(x0) == n and (x0 != 0 or all(math.copysign(1.0, x) > 0 for x in vals)):
        # the same float throughout (a pressure average of 0.0): equal and not zeros of two
        # signs, they are one value, judged as a pair of it; its deltas all 0
        col = _decimal_column([x0, x0])
        if col is not None:
            col[3] = pack_ints([0] * (n - 1))
        return col
    if not all(math.isfinite(x) and abs(x) < 1e15 for x in vals):
        return None
    for places in range(7):
        scale = 10**places
        ms = [round(x * scale) for x in vals]
        if all(m / scale == x and (x != 0 or math.copysign(1.0, x) > 0) for m, x in zip(ms, vals)):
            d = [b - a for a, b in zip(ms, ms[1:])]
            if _INT64[0] <= min(ms) and max(ms) <= _INT64[1] and _INT64[0] <= min(d) and max(d) <= _INT64[1]:
                return [6, places, ms[0], pack_ints(d)]
            return None
    return None


def _pack_floats(vals: list[float]) -> bytes:
    """Exact float64 bits, each XORed with the one before (a slowly moving figure
    shares its sign, exponent and top mantissa bits), bytes transposed so the
    compressor sees the zero planes as runs."""
    u = array("Q")
    u.frombytes(array("d", vals).tobytes())
    x = array("Q", [u[0]])
    x.extend(b ^ a for a, b in zip(u, u[1:]))
    if not _LITTLE:
        x.byteswap()
    raw = x.tobytes()
    return b"".join(raw[i::8] for i in range(8))


def _unpack_floats(raw: bytes) -> list[float]:
    n = len(raw) // 8
    if n * 8 != len(raw):
        raise ValueError("float column of a length not a multiple of 8")
    inter = bytearray(len(raw))
    for i in range(8):
        inter[i::8] = raw[i * n : (i + 1) * n]
    x = array("Q")
    x.frombytes(bytes(inter))
    if not _LITTLE:
        x.byteswap()
    u = array("Q", accumulate(x, operator.xor))
    d = array("d")
    d.frombytes(u.tobytes())
    return d.tolist()


def group_columns(enc: list[Any]) -> list[list[Any]]:
    """A group's values, one list a key (every column kind, versions 2 and 3)."""
    cols = enc[3]
    out: list[list[Any]] = [[] for _ in cols]
    later = []
    derived = []
    for i, col in enumerate(cols):
        kind = col[0]
        if kind == 1:
            d = unpack_ints(col[2])
            if col[3] != 1:
                d = [x * col[3] for x in d]
            out[i] = list(accumulate(d, initial=col[1]))
        elif kind == 2:
            out[i] = [col[1]] * col[2]
        elif kind == 0:
            out[i] = col[1]
        elif kind == 3:
            out[i] = decode_group(col[1])
        elif kind == 4:
            out[i] = _unpack_floats(col[1])
        elif kind == 6:
            scale = 10 ** col[1]
            out[i] = [m / scale for m in accumulate(unpack_ints(col[3]), initial=col[2])]
        elif kind == 5:
            if col[1] >= 0:
                later.append(i)  # relative to a column decoded in this pass
                continue
            out[i] = _int_values(col)
        elif kind == 7:
            derived.append(i)  # from two columns decoded in this pass
        else:
            raise ValueError(f"unknown column kind {kind}")
    for i in later:
        ref = cols[i][1]
        if cols[ref][0] == 5 and cols[ref][1] >= 0 or cols[ref][0] == 7:
            raise ValueError("a column relative to a relative or derived column")
        out[i] = [a + b for a, b in zip(_int_values(cols[i]), out[ref], strict=True)]
    for i in derived:
        _, a, b, factor = cols[i]
        if cols[a][0] == 7 or cols[b][0] == 7:
            raise ValueError("a column derived from a derived column")
        out[i] = [p * factor / q for p, q in zip(out[a], out[b], strict=True)]
    return out


def _int_values(col: list[Any]) -> list[int]:
    _, _, mode, first, packed, g = col
    d = unpack_ints(packed)
    if g != 1:
        d = [x * g for x in d]
    return list(accumulate(d, initial=first)) if mode == 0 else [first, *(first + x for x in d)]


def decode_group(enc: list[Any]) -> list[dict[Any, Any]]:
    keys, shapes, ids_packed, _ = enc
    ids = unpack_ints(ids_packed)
    values = [iter(v) for v in group_columns(enc)]
    keyed = [[(keys[i], values[i]) for i in s] for s in shapes]
    return [{k: next(it) for k, it in keyed[i]} for i in ids]
