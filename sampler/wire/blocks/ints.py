"""Small signed integers packed narrow (:func:`pack_ints`) and back.

The journal thread packs a dozen columns a second, several of ~1000 values, so the
common cases are told apart by what C does at once: struct packs a width or refuses
a value outside it, and the bytes of the int16 packing show which values need more
than a byte. The output is the format's, byte for byte (docs/recording.md)."""

from __future__ import annotations

import struct
import sys
from array import array
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
_SIGN = bytes(0 if b < 128 else 255 for b in range(256))  # a byte's int16 high byte
_NONZERO = bytes(0 if b == 0 else 1 for b in range(256))


def pack_ints(xs: list[int]) -> list[Any]:
    """Small signed integers in the narrowest width that holds 95 % of them;
    the rest are escaped (the width's smallest value marks them) and listed."""
    if not xs:
        return [1, b"", []]
    n = len(xs)
    # most columns fit a byte: struct checks the range as it packs (little-endian, as
    # the format is), and -128, the escape, is the only value packed as 0x80
    try:
        raw = struct.pack(f"<{n}b", *xs)
    except struct.error:
        pass
    else:
        if raw.find(b"\x80") < 0:
            return [1, raw, []]
    try:
        raw = struct.pack(f"<{n}h", *xs)
    except struct.error:
        return _pack_wide(xs)
    return _pack_short(xs, raw)


def _pack_short(xs: list[int], raw: bytes) -> list[Any]:
    """:func:`pack_ints` of values all within int16 (``raw``, their int16 packing)."""
    n = len(xs)
    lo, hi = raw[0::2], raw[1::2]
    # a value within a byte has for high byte its low byte's sign; any other differs there
    wide = (int.from_bytes(lo.translate(_SIGN), "little") ^ int.from_bytes(hi, "little")).to_bytes(n, "little")
    out = n - wide.count(0)
    minus = xs.count(-128) if lo.find(b"\x80") >= 0 else 0  # a byte's value, yet the escape
    if (out + minus) * 20 <= n:  # a byte wide, with the escaped listed
        # the bytes are the int16 packing's low bytes (a value within a byte is its own
        # low byte, -128 is 0x80) with the wide ones made the escape, found by a search
        # each: a twentieth of the values at most, cheaper than numbering them all
        main = bytearray(lo)
        at = []
        flags = wide.translate(_NONZERO)
        i = -1
        for _ in range(out):
            i = flags.find(1, i + 1)
            main[i] = 0x80
            at.append(i)
        if minus:
            i = -1
            for _ in range(minus):
                i = xs.index(-128, i + 1)
                at.append(i)
            at.sort()
        return [1, bytes(main), [xs[i] for i in at]]
    # -32768, the escape of two bytes, is the only value packed as 00 80 (hi holds the 80s)
    low = xs.count(-(1 << 15)) if hi.find(b"\x80") >= 0 else 0
    if low * 20 <= n:  # escaped as itself: the same bytes
        return [2, raw, [-(1 << 15)] * low]
    return [4, struct.pack(f"<{n}i", *xs), []]


def _pack_wide(xs: list[int]) -> list[Any]:
    """:func:`pack_ints` of values not all within int16 (or not all integers)."""
    lo, hi = min(xs), max(xs)
    if lo < _INT64[0] or hi > _INT64[1]:
        raise OverflowError("integer outside int64")
    n = len(xs)
    for w in (1, 2, 4, 8):
        code, esc, top = _WIDTHS[w]
        if esc < lo and hi <= top:
            return [w, struct.pack(f"<{n}{code}", *xs), []]
        out = sum(1 for x in xs if not esc < x <= top)
        if out * 20 <= n or w == 8:
            main = [x if esc < x <= top else esc for x in xs]
            return [w, struct.pack(f"<{n}{code}", *main), [x for x in xs if not esc < x <= top]]
    raise AssertionError("unreachable")


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
