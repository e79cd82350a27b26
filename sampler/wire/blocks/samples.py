"""The sample columns of ``samples`` batches: times on the tick grid, series as
deltas over their common step (see the package docstring)."""

from __future__ import annotations

import marshal
import math
import operator
import struct
from bisect import bisect_right
from collections import Counter
from collections.abc import Callable, Mapping
from itertools import accumulate, compress, count
from typing import Any

from .ints import _INT64, pack_ints, unpack_ints
from .ints import is_int as _is_int


def clean_batch(body: Mapping[str, Any]) -> bool:
    """A ``samples`` body the columnar path can hold exactly (else it is stored as is)."""
    dt, series, t = body.get("dt"), body.get("series"), body.get("t")
    if not _is_int(t) or type(dt) is not list or not dt or type(series) is not dict:
        return False
    n = len(dt)
    for name, col in series.items():
        if type(name) is not str or type(col) is not list or len(col) != n:
            return False
    # every value an int (not a bool), within int64: the journal thread checks ~3000
    # values a second, so at C speed
    int64 = f"<{n}q"
    signs = b""
    for col in (dt, *series.values()):
        top = _top_bytes(col, n, int64)
        if top is None:
            return False
        signs = signs or top
    if not _is_int(t + dt[-1]):
        return False
    # the earliest sample's time within int64 too: when no offset is negative (no top
    # byte of theirs 0x80 or above) it lies between t and the last one's, both within
    return signs.isascii() or _is_int(t + min(dt))


_I32 = 1 << 31


def _top_bytes(col: list[Any], n: int, int64: str) -> bytes | None:
    """The most significant byte of each value of ``col`` (``n`` of them), little-endian
    two's complement, when every one is an int (not a bool, nor a subclass) within
    int64; else None."""
    last = col[-1]
    if type(last) is int and -_I32 <= last < _I32:
        # most columns (times within a batch, memory below 2 GiB): marshal's version 2
        # writes a list as 5 bytes, then an int within int32 as b"i" and 4 bytes, and
        # anything else otherwise (a bool as one byte, a larger int longer); read from
        # the start, n times b"i" five bytes apart are n such ints. Half the CPU of a
        # type pass and an int64 packing.
        try:
            raw = marshal.dumps(col, 2)
        except Exception:  # a value marshal cannot write: judged below
            raw = b""
        if len(raw) == 5 + 5 * n and raw[5::5] == b"i" * n:
            return raw[9::5]
    if operator.countOf(map(type, col), int) != n:
        return None
    try:
        packed = struct.pack(int64, *col)  # refuses a value beyond int64
    except struct.error:
        return None
    return packed[7::8]


def no_pause() -> None:
    pass


def encode_samples(
    batches: list[Mapping[str, Any]], quantum_ns: int, pause: Callable[[], None] = no_pause, ext: int = 0
) -> tuple[list[Any], list[dict[str, Any]]]:
    """The sample columns of clean batches, and each batch's other fields (its head).

    ``pause`` is called between steps of ~50 µs: the sampler's journal thread lets the
    GIL go there, so the sampling thread never waits for a whole block's encoding.

    The journal thread runs this once a second on ~1000 samples, so each column is
    made in as few passes as the format allows; the arithmetic is the format's
    (docs/recording.md), rewritten only where the integers are exactly equal."""
    q = quantum_ns
    sizes: list[int] = []
    shapes: dict[tuple[str, ...], int] = {}
    sids: list[int] = []
    cols: dict[str, list[int]] = {}
    heads: list[dict[str, Any]] = []
    half = q // 2
    # quantised on the absolute grid of q, so two files of one stream (journal and
    # recording) hold the very same times whatever their block boundaries
    base = (batches[0]["t"] + batches[0]["dt"][0] + half) // q * q
    ht: list[int] = []
    # u: each time in quanta from the block's first sample, ((t + d + half) // q * q - base) // q.
    # base is a multiple of q (B * q) and (y + m * q) // q == y // q + m for any integer m,
    # so that is (t + d + half - base) // q: one addition and one division a sample
    u: list[int] = []
    for b in batches:
        t = b["t"]
        dt = b["dt"]
        head = dict(b)
        del head["dt"], head["series"], head["t"]
        heads.append(head)
        # the batch time is quantised like its samples (so dt[0] stays 0) and kept as
        # its offset from the first sample, almost always 0: it costs nothing
        ht.append(((t + half) // q * q - (t + dt[0] + half) // q * q) // q)
        if q > 1:
            c = t + half - base
            u.extend([(d + c) // q for d in dt])
        else:  # q == 1 (lossless), or below 1 as before: t + d - base
            c = t - base
            u.extend([d + c for d in dt])
        sizes.append(len(dt))
        series = b["series"]
        sid = shapes.setdefault(tuple(series), len(shapes))  # a new shape takes the next id
        sids.append(sid)
        for name, col in series.items():
            have = cols.get(name)
            if have is None:
                cols[name] = list(col)
            else:
                have.extend(col)
    pause()
    # the tick grid: u = k*p + e, p the median of the forward steps (1 without any).
    # Taken from v, u less a grid of its mean step: v and its steps are small numbers
    # (Python keeps those made, none to allocate and free), u's steps are those plus step
    n = len(u)
    step = max(0, (u[-1] - u[0] + (n - 1) // 2) // (n - 1)) if n > 1 else 0  # rounded: p, most blocks
    v = list(map(operator.sub, u, range(0, n * step, step))) if step else u
    dv = list(map(operator.sub, v[1:], v))
    p = _byte_median(dv, step)
    if p is None:
        dv.sort()
        back = bisect_right(dv, -step)  # the steps that do not move forward come first
        p = dv[back + (len(dv) - back) // 2] + step if back < len(dv) else 1
    pause()
    h = p // 2
    # k = (u + h) // p, e = u - k * p. Without a missed tick in the block k is i + j
    # throughout (j from the first sample, 0 but for a late block start): then e is w, u
    # less its grid i * p (v when p is the mean step), less j * p, told by a min and a
    # max, and every step of k is 1 (no divisions, no k); else each sample as the format says
    w = v if p == step else list(map(operator.sub, u, range(0, n * p, p)))
    j = (w[0] + h) // p
    lo = j * p - h
    dk: list[int] | None = None
    if lo <= min(w) and max(w) < lo + p:
        e = w if j == 0 else [x - j * p for x in w]
        dk = [1] * (n - 1)
        dk_packed = [1, b"\x01" * (n - 1), []]  # pack_ints(dk): a byte each, none escaped
    else:
        k = [(x + h) // p for x in u]
        e = [x - kk * p for x, kk in zip(u, k)]
    # version 3: a loaded host's lateness drifts from tick to tick, so its deltas
    # compress better; an idle host's is independent noise, better kept as it is.
    # Both are tried on the compressor (~50 µs a block): a bit count misjudges them.
    e_delta = False
    if ext and len(e) > 1:
        # judged on the first 512 ticks: the block's own sample of the host's state
        de = [e[0], *map(operator.sub, e[1:512], e)]
        if _entropy(de) < _entropy(e[:512]):
            de.extend(map(operator.sub, e[512:], e[511:]))  # the rest of the deltas
            e, e_delta = de, True
    e_packed = pack_ints(e)
    pause()
    if dk is None:
        dk = list(map(operator.sub, k[1:], k))
        dk_packed = pack_ints(dk)
    series_enc = []
    ref_d: list[int] | None = None  # version 4: the first series' deltas, when every batch has every series
    ref_first = 0
    ref_at: list[int] | None = None
    for i, (name, vals) in enumerate(cols.items()):
        pause()
        first = vals[0]
        if vals[-1] == first and vals.count(first) == len(vals):
            # an idle target's memory: the same all block, told by one C pass. Its deltas
            # are all 0, and no series is cheaper relative to it (nor it to another), so
            # it is left out as a reference
            zeros = [0] * (len(vals) - 1)
            if ext >= 2 and zeros:
                series_enc.append([name, first, 1, pack_ints([]), -1, pack_ints([])])
            else:
                series_enc.append([name, first, 1, pack_ints(zeros)])
            continue
        d = list(map(operator.sub, vals[1:], vals))
        rel = False
        moves = list(filter(None, d))  # the ticks it moved on (a gcd over them is the gcd over all)
        # where the moves are, when found by a search each (a few of them: stored sparse)
        at = _places(d, moves) if ext >= 2 and len(moves) * 8 < len(d) else None
        if ref_d is not None:
            # the cgroup's usage moves with the process's rss on most ticks it moves at all:
            # its difference from rss is zero more often (judged on the zeros, at C speed)
            f = first - ref_first
            if at is not None and ref_at is not None:
                # both move on few ticks: the difference moves only where one of them does
                both = sorted({*at, *ref_at})
                r_d = [d[x] - ref_d[x] for x in both]
                r_moves = list(filter(None, r_d))
                r_at: list[int] | None = list(compress(both, r_d))
                r: list[int] | None = None  # not made: moving less still, it is stored sparse
            else:
                r = list(map(operator.sub, d, ref_d))
                r_moves = list(filter(None, r))
                r_at = None
            if (
                len(r_moves) < len(moves)
                and _INT64[0] <= min(r_moves, default=f)
                and max(r_moves, default=f) <= _INT64[1]
            ):
                if _INT64[0] <= f <= _INT64[1]:
                    first, rel, moves, at = f, True, r_moves, r_at
                    if r is not None:  # else d, its own, is read below for its length only
                        d = r
        elif ext >= 2 and i == 0 and len(shapes) == 1 and len(cols) > 1:
            ref_d, ref_first, ref_at = d, first, at
        g = math.gcd(*moves) or 1
        if ext >= 2 and len(moves) * 10 < len(d) * 3:
            # memory moves on a minority of ticks: the moves and the gaps between them
            # (as LZ runs, each stretch of zeros costs about as much as a move)
            if at is None:
                at = _places(d, moves) if len(moves) * 8 < len(d) else list(compress(count(), d))
            if g > 1:
                moves = [x // g for x in moves]
            entry = [name, first, g, pack_ints(moves), 0 if rel else -1, pack_ints(_gaps(at))]
        else:
            if g > 1:
                d = [x // g for x in d]
            entry = [name, first, g, pack_ints(d)]
            if rel:
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
        dk_packed,
        e_packed,
        series_enc,
        pack_ints(ht),
    ]
    if ext:
        enc.append(1 if e_delta else 0)
    return enc, heads


_UNSIGNED = bytes((b + 128) & 255 for b in range(256))  # an int8's byte to its rank
_UPTO = [bytes(range(r + 1)) for r in range(256)]  # the ranks up to r


def _byte_median(dv: list[int], step: int) -> int | None:
    """p from the steps of v, without sorting them, when each fits a byte and every one is
    forward (``step`` beyond 128: none of them at or below -step): the median is the
    least rank that more than half of them are at or below, found by halving the 256
    ranks, each count the bytes a translate leaves (C, ~1 µs). None: sort them."""
    m = len(dv)
    if step <= 128 or not m:
        return None
    try:
        ranks = struct.pack(f"<{m}b", *dv).translate(_UNSIGNED)
    except struct.error:
        return None
    half = m // 2
    lo, hi = 0, 255
    while lo < hi:
        mid = (lo + hi) // 2
        if m - len(ranks.translate(None, _UPTO[mid])) > half:
            hi = mid
        else:
            lo = mid + 1
    return lo - 128 + step


def _places(d: list[int], moves: list[int]) -> list[int]:
    """Where the nonzero values ``moves`` stand in ``d``: each is the first occurrence of
    its value after the one before (only zeros lie between), found at C speed; a few
    dozen searches cost less than numbering all ~1000 ticks."""
    at = []
    i = -1
    index = d.index
    for m in moves:
        i = index(m, i + 1)
        at.append(i)
    return at


def _gaps(at: list[int]) -> list[int]:
    return list(map(operator.sub, at, [-1, *at[:-1]]))


def series_deltas(entry: list[Any], n: int) -> list[int]:
    """A series entry's ``n - 1`` deltas, its step applied (versions 2-4)."""
    d = unpack_ints(entry[3])
    if len(entry) > 5:  # version 4: the moves, and the gaps between them
        dense = [0] * (n - 1)
        at = -1
        for gap, x in zip(unpack_ints(entry[5]), d, strict=True):
            at += gap
            if gap < 1 or at >= n - 1:
                raise ValueError("a series move outside its block")
            dense[at] = x
        d = dense
    g = entry[2]
    return [x * g for x in d] if g != 1 else d


def series_ref(entry: list[Any]) -> int:
    """The place of the series this one is relative to (version 4), or -1."""
    return entry[4] if len(entry) > 4 and entry[4] >= 0 else -1


def _entropy(xs: list[int]) -> float:
    """Bits the compressor's Huffman stage would need for these values (their
    order-0 entropy): within a few % of deflating them, at a fraction of the CPU
    (starting deflate alone costs ~0.2 ms here)."""
    n = len(xs)
    return n * math.log2(n) - sum(c * math.log2(c) for c in Counter(xs).values()) if n else 0.0


def decode_samples(enc: list[Any], heads: list[dict[str, Any]]) -> list[dict[str, Any]]:
    base, q, p, sizes_p, shapes, sids_p, dk_p, e_p, series_enc, ht_p = enc[:10]
    sizes = unpack_ints(sizes_p)
    k = list(accumulate(unpack_ints(dk_p), initial=0))
    e = unpack_ints(e_p)
    if len(enc) > 10 and enc[10]:  # version 3: deviations as deltas
        e = list(accumulate(e))
    times = [base + (kk * p + ee) * q for kk, ee in zip(k, e)]
    vals: dict[str, list[int]] = {}
    n = sum(sizes)
    for entry in series_enc:
        v = list(accumulate(series_deltas(entry, n), initial=entry[1]))
        ref = series_ref(entry)
        if ref >= 0:  # version 4: relative to the series at that place (never itself relative)
            if series_ref(series_enc[ref]) >= 0 or series_enc[ref][0] not in vals:
                raise ValueError("a series relative to a relative or later series")
            v = [a + b for a, b in zip(v, vals[series_enc[ref][0]], strict=True)]
        vals[entry[0]] = v
    cols = {name: iter(v) for name, v in vals.items()}
    sids = unpack_ints(sids_p)
    out = []
    pos = 0
    for head, n, sid, h in zip(heads, sizes, sids, unpack_ints(ht_p)):
        t = times[pos] + h * q
        body = dict(head)
        body["t"] = t
        body["dt"] = [x - t for x in times[pos : pos + n]]
        body["series"] = {name: [next(cols[name]) for _ in range(n)] for name in shapes[sid]}
        out.append(body)
        pos += n
    return out
