"""A frozen copy of the block encoder as it was before issue 18 made it cheaper (main at
f336754: codec.encode_block, samples.encode_samples and clean_batch, columns.encode_group
and its helpers), docstrings and comments dropped. test_blocks_encode_same.py asserts the
optimised encoder writes these very bytes; never edit this file to make that test pass."""
# ruff: noqa

from __future__ import annotations

import math
import operator
import sys
from array import array
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

import msgpack

VERSION = 4
SAMPLES = "samples"
QUANTUM_NS = 2000
_LITTLE = sys.byteorder == "little"
_INT64 = (-(1 << 63), (1 << 63) - 1)
_INT_ONLY = {int}
_WIDTHS = {
    1: ("b", -128, 127),
    2: ("h", -(1 << 15), (1 << 15) - 1),
    4: ("i", -(1 << 31), (1 << 31) - 1),
    8: ("q", -(1 << 63), (1 << 63) - 1),
}
DERIVED = (("rate", "completed", "interval_ns", 1e9),)
_EXACT = 1 << 53


def pack_ints(xs: list[int]) -> list[Any]:
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


def is_int(x: Any) -> TypeGuard[int]:
    return type(x) is int and _INT64[0] <= x <= _INT64[1]


def encode_group(bodies: list[Mapping[Any, Any]], ext: int = 0) -> list[Any]:
    shapes: dict[tuple[Any, ...], int] = {}
    ids: list[int] = []
    cols: dict[Any, list[Any]] = {}
    for b in bodies:
        ks = tuple(b)
        sid = shapes.setdefault(ks, len(shapes))  # a new shape takes the next id
        ids.append(sid)
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
    n = len(vals)
    ints = [False] * n
    wide = [False] * n
    own: list[tuple[int, int, int, list[int]] | None] = [None] * n
    enc: list[list[Any]] = []
    for i, v in enumerate(vals):
        if not _all_ints(v):
            enc.append(_encode_column_ext(v, None, ext))
            continue
        ints[i] = True
        d = list(map(operator.sub, v[1:], v[:-1]))
        g = math.gcd(*d)
        if g == 0:
            enc.append([2, v[0], len(v)])
        elif max(map(abs, d)) // g < 128 or not (_INT64[0] <= min(d) and max(d) <= _INT64[1]):
            enc.append(_encode_column(v))
        else:
            wide[i] = True
            own[i] = _int_modes(v, -1, v)
            enc.append(_encode_column_ext(v, own[i], ext))
    if len(shapes) == 1:
        _relative(vals, enc, ints, wide, own, at.get("t"), ext >= 2)
        if ext >= 2:
            _derived(vals, enc, ints, at)
    elif ext >= 2:
        sig: dict[tuple[int, ...], list[int]] = {}
        for i, k in enumerate(keys):
            sig.setdefault(tuple(j for j, sh in enumerate(shapes) if k in sh), []).append(i)
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
        refs = [r for r in (t_at, last_int) if r is not None and r != i and ints[r] and r not in relative]
        last_int = i
        if i in used:
            continue
        if not wide[i]:
            refs = []
        best = own[i] if wide[i] else None
        if twins and enc[i][0] != 2:
            mine = [r for r in dict.fromkeys(ends.get(v[0], []) + ends.get(v[-1], [])) if r < i and r not in relative]
            if mine:
                refs += mine
                if best is None:
                    best = (_step_bits(v, None), -1, 0, v)
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
    if col[0] == 5 and col[1] >= 0:
        return [5, cols[col[1]], *col[2:]]
    if col[0] == 7:
        return [7, cols[col[1]], cols[col[2]], col[3]]
    return col


def _step_bits(v: list[int], rv: list[int] | None) -> int:
    y = v if rv is None else list(map(operator.sub, v, rv))
    d = list(map(operator.sub, y[1:], y[:-1]))
    g = math.gcd(*d) or 1
    return sum(int.bit_length(abs(x) // g) for x in d) + int.bit_length(abs(y[0])) // 4


def _twin(v: list[int], ref: int, rv: list[int]) -> tuple[int, int, int, list[int]] | None:
    y = list(map(operator.sub, v, rv))
    if not (_INT64[0] <= min(y) and max(y) <= _INT64[1]):
        return None
    return (_step_bits(v, rv), ref, 0, y)


def _derived(vals: list[list[Any]], enc: list[list[Any]], ints: list[bool], at: Mapping[Any, int]) -> None:
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
    return bool(vals) and set(map(type, vals)) == _INT_ONLY and _INT64[0] <= min(vals) and max(vals) <= _INT64[1]


def _all_ints(vals: list[Any]) -> bool:
    return len(vals) > 1 and all_int64(vals)


def _encode_column(vals: list[Any]) -> list[Any]:
    if _all_ints(vals):
        d = [b - a for a, b in zip(vals, vals[1:])]
        if _INT64[0] <= min(d) and max(d) <= _INT64[1]:
            g = math.gcd(*d)
            if g == 0:  # the same value throughout
                return [2, vals[0], len(vals)]
            if g > 1:  # memory figures move in whole pages
                d = [x // g for x in d]
            return [1, vals[0], pack_ints(d), g]
    return [0, vals]


def _bits(d: list[int]) -> int:
    return sum(map(int.bit_length, map(abs, d)))


def _int_modes(vals: list[int], ref: int, rv: list[int]) -> tuple[int, int, int, list[int]] | None:
    y = vals if ref < 0 else [a - b for a, b in zip(vals, rv)]
    if ref >= 0 and not (_INT64[0] <= min(y) and max(y) <= _INT64[1]):
        return None
    b0 = _bits([b - a for a, b in zip(y, y[1:])])
    b1 = _bits([x - y[0] for x in y[1:]])
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
    u = array("Q")
    u.frombytes(array("d", vals).tobytes())
    x = array("Q", [u[0]])
    x.extend(b ^ a for a, b in zip(u, u[1:]))
    if not _LITTLE:
        x.byteswap()
    raw = x.tobytes()
    return b"".join(raw[i::8] for i in range(8))


def clean_batch(body: Mapping[str, Any]) -> bool:
    dt, series, t = body.get("dt"), body.get("series"), body.get("t")
    if not _is_int(t) or type(dt) is not list or not dt or type(series) is not dict:
        return False
    n = len(dt)
    if not all_int64(dt) or not _is_int(t + dt[-1]) or not _is_int(t + min(dt)):
        return False
    for name, col in series.items():
        if type(name) is not str or type(col) is not list or len(col) != n or not all_int64(col):
            return False
    return True


def no_pause() -> None:
    pass


def encode_samples(
    batches: list[Mapping[str, Any]], quantum_ns: int, pause: Callable[[], None] = no_pause, ext: int = 0
) -> tuple[list[Any], list[dict[str, Any]]]:
    q = quantum_ns
    times: list[int] = []
    sizes: list[int] = []
    shapes: dict[tuple[str, ...], int] = {}
    sids: list[int] = []
    cols: dict[str, list[int]] = {}
    heads: list[dict[str, Any]] = []
    half = q // 2
    base = (batches[0]["t"] + batches[0]["dt"][0] + half) // q * q
    ht: list[int] = []
    for b in batches:
        t = b["t"]
        head = {k: v for k, v in b.items() if k != "dt" and k != "series"}
        tq = (t + half) // q * q
        del head["t"]
        heads.append(head)
        first = (t + b["dt"][0] + half) // q * q
        ht.append((tq - first) // q)
        times.extend([t + d for d in b["dt"]])
        sizes.append(len(b["dt"]))
        series = b["series"]
        ks = tuple(series)
        sid = shapes.setdefault(ks, len(shapes))  # a new shape takes the next id
        sids.append(sid)
        for name, col in series.items():
            c = cols.get(name)
            if c is None:
                cols[name] = list(col)
            else:
                c.extend(col)
    pause()
    u = [(x + half) // q * q - base for x in times] if q > 1 else [x - base for x in times]
    if q > 1:
        u = [x // q for x in u]
    if len(u) > 1:
        steps = sorted(b - a for a, b in zip(u, u[1:]) if b > a)
        p = steps[len(steps) // 2] if steps else 1
    else:
        p = 1
    pause()
    k = [(x + p // 2) // p for x in u]
    e = [x - kk * p for x, kk in zip(u, k)]
    e_delta = False
    if ext and len(e) > 1:
        d = [e[0], *map(operator.sub, e[1:], e[:-1])]
        if _entropy(d[:512]) < _entropy(e[:512]):
            e, e_delta = d, True
    e_packed = pack_ints(e)
    pause()
    dk = [b - a for a, b in zip(k, k[1:])]
    series_enc = []
    ref_d: list[int] | None = None  # version 4: the first series' deltas, when every batch has every series
    ref_first = 0
    for i, (name, vals) in enumerate(cols.items()):
        pause()
        d = [b - a for a, b in zip(vals, vals[1:])]
        first = vals[0]
        rel = False
        if ref_d is not None:
            r = list(map(operator.sub, d, ref_d))
            f = first - ref_first
            if r.count(0) > d.count(0) and _INT64[0] <= min(r, default=f) and max(r, default=f) <= _INT64[1]:
                if _INT64[0] <= f <= _INT64[1]:
                    d, first, rel = r, f, True
        elif ext >= 2 and i == 0 and len(shapes) == 1 and len(cols) > 1:
            ref_d, ref_first = d, first
        g = math.gcd(*d) or 1 if d else 1
        if g > 1:
            d = [x // g for x in d]
        entry = [name, first, g, pack_ints(d)]
        nz = len(d) - d.count(0)
        if ext >= 2 and nz * 10 < len(d) * 3:
            at = [i for i, x in enumerate(d) if x]
            entry = [name, first, g, pack_ints([d[i] for i in at]), 0 if rel else -1, pack_ints(_gaps(at))]
        elif rel:
            entry.append(0)
        series_enc.append(entry)
    pause()
    enc = [
        base,
        q,
        p,
        pack_ints(sizes),
        [list(s) for s in shapes],
        pack_ints(sids),
        pack_ints(dk),
        e_packed,
        series_enc,
        pack_ints(ht),
    ]
    if ext:
        enc.append(1 if e_delta else 0)
    return enc, heads


def _gaps(at: list[int]) -> list[int]:
    return list(map(operator.sub, at, [-1, *at[:-1]]))


def _entropy(xs: list[int]) -> float:
    n = len(xs)
    return n * math.log2(n) - sum(c * math.log2(c) for c in Counter(xs).values()) if n else 0.0


def encode_block(
    records: list[tuple[str, Mapping[str, Any]]],
    quantum_ns: int = QUANTUM_NS,
    pause: Callable[[], None] = no_pause,
    version: int = VERSION,
    sides: list[bytes] | None = None,
) -> bytes:
    ext = 0 if version <= 2 else 1 if version == 3 else 2
    topics: dict[str, int] = {}
    order = bytearray()
    groups: dict[int, list[Mapping[str, Any]]] = {}
    batches: list[Mapping[str, Any]] = []
    for topic, body in records:
        clean = topic == SAMPLES and clean_batch(body)
        key = topic if not clean else "\x00" + SAMPLES  # clean batches are their own group
        ti = topics.get(key)
        if ti is None:
            ti = topics[key] = len(topics)
            if ti > 255:
                raise ValueError("more than 256 topics in one block")
        order.append(ti)
        if clean:
            batches.append(body)
        else:
            groups.setdefault(ti, []).append(body)
    if batches:
        try:
            s, heads = encode_samples(batches, quantum_ns, pause, ext)
        except OverflowError:  # differences beyond int64 (never from a sampler): store the batches as they are
            return _encode_plain(records, ext)
    block: dict[str, Any] = {"tp": list(topics), "o": bytes(order)}
    if batches:
        block["s"] = s
        if sides is not None:
            sides.append(s[7][1])
        groups[topics["\x00" + SAMPLES]] = list(heads)
    g = []
    for ti, bodies in groups.items():
        pause()
        g.append([ti, encode_group(bodies, ext)])
    block["g"] = g
    return msgpack.packb(block, use_bin_type=True)


def _encode_plain(records: list[tuple[str, Mapping[str, Any]]], ext: int) -> bytes:
    topics: dict[str, int] = {}
    order = bytearray()
    groups: dict[int, list[Mapping[str, Any]]] = {}
    for topic, body in records:
        ti = topics.setdefault(topic, len(topics))
        order.append(ti)
        groups.setdefault(ti, []).append(body)
    return msgpack.packb(
        {"tp": list(topics), "o": bytes(order), "g": [[ti, encode_group(b, ext)] for ti, b in groups.items()]},
        use_bin_type=True,
    )


_is_int = is_int
