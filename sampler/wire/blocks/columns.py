"""Integer columns: small signed integers packed narrow (:func:`pack_ints`), and
maps as columns (:func:`encode_group`), integers among them as deltas."""

from __future__ import annotations

import math
import sys
from array import array
from collections.abc import Iterator, Mapping
from itertools import accumulate
from typing import Any, TypeGuard

_LITTLE = sys.byteorder == "little"
_INT64 = (-(1 << 63), (1 << 63) - 1)
# widths for pack_ints: array type code, smallest value (the escape), largest
_WIDTHS = {
    1: ("b", -128, 127),
    2: ("h", -(1 << 15), (1 << 15) - 1),
    4: ("i", -(1 << 31), (1 << 31) - 1),
    8: ("q", -(1 << 63), (1 << 63) - 1),
}


def pack_ints(xs: list[int]) -> list[Any]:
    """Small signed integers in the narrowest width that holds 95 % of them;
    the rest are escaped (the width's smallest value marks them) and listed."""
    if not xs:
        return [1, b"", []]
    lo, hi = min(xs), max(xs)
    if lo < _INT64[0] or hi > _INT64[1]:
        raise OverflowError("integer outside int64")
    for w in (1, 2, 4, 8):
        code, esc, top = _WIDTHS[w]
        if esc < lo and hi <= top:
            a = array(code, xs)
            return [w, a.tobytes() if _LITTLE else _swap(a), []]
        out = sum(1 for x in xs if not esc < x <= top)
        if out * 20 <= len(xs) or w == 8:
            main = [x if esc < x <= top else esc for x in xs]
            a = array(code, main)
            return [w, a.tobytes() if _LITTLE else _swap(a), [x for x in xs if not esc < x <= top]]
    raise AssertionError("unreachable")


def _swap(a: array[int]) -> bytes:
    b = array(a.typecode, a)
    b.byteswap()
    return b.tobytes()


def unpack_ints(packed: list[Any]) -> list[int]:
    w, raw, exc = packed
    code, esc, _ = _WIDTHS[w]
    a = array(code)
    a.frombytes(raw)
    if not _LITTLE:
        a.byteswap()
    xs = a.tolist()
    if exc:
        it = iter(exc)
        xs = [next(it) if x == esc else x for x in xs]
    return xs


def is_int(x: Any) -> TypeGuard[int]:
    return type(x) is int and _INT64[0] <= x <= _INT64[1]


# ------------------------------------------------------------ generic groups


def encode_group(bodies: list[Mapping[Any, Any]]) -> list[Any]:
    """Maps as columns: ``[keys, shapes (key numbers), shape ids, columns (one a key)]``.

    A column is ``[0, values]`` or, when every value is an int64, ``[1, first,
    packed deltas / g, g]`` (times, counters and sequence numbers move by little,
    memory figures by whole pages) or ``[2, value, count]`` when it never changes.
    """
    shapes: dict[tuple[Any, ...], int] = {}
    ids: list[int] = []
    cols: dict[Any, list[Any]] = {}
    for b in bodies:
        ks = tuple(b)
        sid = shapes.get(ks)
        if sid is None:
            sid = shapes[ks] = len(shapes)
        ids.append(sid)
        for k, v in b.items():
            col = cols.get(k)
            if col is None:
                cols[k] = [v]
            else:
                col.append(v)
    keys = list(cols)
    at = {k: i for i, k in enumerate(keys)}
    return [keys, [[at[k] for k in s] for s in shapes], pack_ints(ids), [_encode_column(v) for v in cols.values()]]


def _encode_column(vals: list[Any]) -> list[Any]:
    if len(vals) > 1 and all(is_int(x) for x in vals):
        d = [b - a for a, b in zip(vals, vals[1:])]
        if _INT64[0] <= min(d) and max(d) <= _INT64[1]:
            g = math.gcd(*d)
            if g == 0:  # the same value throughout
                return [2, vals[0], len(vals)]
            if g > 1:  # memory figures move in whole pages
                d = [x // g for x in d]
            return [1, vals[0], pack_ints(d), g]
    return [0, vals]


def decode_group(enc: list[Any]) -> list[dict[Any, Any]]:
    keys, shapes, ids_packed, cols = enc
    ids = unpack_ints(ids_packed)
    values: list[Iterator[Any]] = []
    for col in cols:
        if col[0] == 1:
            d = unpack_ints(col[2])
            if col[3] != 1:
                d = [x * col[3] for x in d]
            values.append(iter(accumulate(d, initial=col[1])))
        elif col[0] == 2:
            values.append(iter([col[1]] * col[2]))
        else:
            values.append(iter(col[1]))
    keyed = [[(keys[i], values[i]) for i in s] for s in shapes]
    return [{k: next(it) for k, it in keyed[i]} for i in ids]
