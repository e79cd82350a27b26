"""Packed integer columns (:func:`blocks.pack_ints` lists) of many blocks as one numpy array.

A block stores a column as its first value and packed deltas; many blocks' worth is
decoded at once: the packed bytes joined, one running sum restarted at every block.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .v2decode import np_ints


def ints_many(packs: Sequence[list[Any]]) -> np.ndarray:
    """Several :func:`blocks.pack_ints` lists as one int64 array (one numpy pass when they share a width)."""
    w = packs[0][0]
    ws, raws, excs = zip(*packs)
    if ws.count(w) == len(ws) and not any(excs):
        return np.frombuffer(b"".join(raws), dtype=NP_DT[w]).astype(np.int64)
    if len(packs) < 8:
        return np.concatenate([np_ints(pk) for pk in packs])
    # widths differ (a block with a big step): one pass per width, then the escapes block by block
    widths = np.array([pk[0] for pk in packs], dtype=np.int64)
    lens = np.array([len(pk[1]) for pk in packs], dtype=np.int64) // widths
    out = np.empty(int(lens.sum()), dtype=np.int64)
    for wd in set(widths.tolist()):
        raw = b"".join(pk[1] for pk in packs if pk[0] == wd)
        out[np.repeat(widths == wd, lens)] = np.frombuffer(raw, dtype=NP_DT[wd])
    ends = np.cumsum(lens).tolist()
    for j, pk in enumerate(packs):
        if pk[2]:
            seg = out[ends[j] - int(lens[j]) : ends[j]]
            seg[seg == np.iinfo(NP_DT[pk[0]]).min] = np.array(pk[2], dtype=np.int64)
    return out


NP_DT = {1: "<i1", 2: "<i2", 4: "<i4", 8: "<i8"}


def segmented_cumsum(first: np.ndarray, d: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Per block j of ``m[j]`` values: ``first[j]`` then running sums of its ``m[j] - 1`` deltas in ``d``."""
    total = int(m.sum())
    ends = np.cumsum(m)
    starts = ends - m
    full = np.empty(total, dtype=np.int64)
    mask = np.ones(total, dtype=bool)
    mask[starts] = False
    full[mask] = d
    # one running sum over every block: at each block's start, the step from the previous
    # block's last value to this block's first (int64 wraps alike both ways, so it stays exact)
    cd = np.concatenate(([0], np.cumsum(d)))
    nd = ends - np.arange(1, len(m) + 1)  # deltas up to each block's end
    last = first + (cd[nd] - cd[nd - (m - 1)])
    full[starts] = first - np.concatenate(([0], last[:-1]))
    return np.cumsum(full, out=full)


def segmented_packs(
    first: np.ndarray, packs: Sequence[list[Any]], m: np.ndarray, steps: Sequence[int] | None = None
) -> np.ndarray:
    """:func:`segmented_cumsum` of blocks whose deltas are :func:`blocks.pack_ints` lists (times
    ``steps``, one a block), without an array of the deltas alone: each block's packed deltas
    are joined behind an empty slot for its first value, so they land where they belong."""
    w = packs[0][0]
    ws, raws, excs = zip(*packs)
    if ws.count(w) != len(ws) or not m.all():
        d = ints_many(packs)
        if steps is not None and steps.count(1) != len(steps):
            d = d * np.repeat(np.array(steps, dtype=np.int64), m - 1)
        return segmented_cumsum(first, d, m)
    slot = bytes(w)
    full = np.frombuffer(slot + slot.join(raws), dtype=NP_DT[w]).astype(np.int64)
    if len(full) != int(m.sum()):
        raise ValueError("a column of another length than its group")
    ends = np.cumsum(m)
    starts = ends - m
    if any(excs):  # values too wide for the block's width: escaped, listed beside it
        esc = np.iinfo(NP_DT[w]).min
        for j, ex in enumerate(excs):
            if ex:
                seg = full[int(starts[j]) + 1 : int(ends[j])]
                seg[seg == esc] = np.array(ex, dtype=np.int64)
    return _running(full, first, starts, m, steps)


def _running(
    full: np.ndarray, first: np.ndarray, starts: np.ndarray, m: np.ndarray, steps: Sequence[int] | None
) -> np.ndarray:
    """Each block's values from ``full``: its deltas behind an empty slot at ``starts``."""
    if steps is not None and steps.count(1) != len(steps):
        full *= np.repeat(np.array(steps, dtype=np.int64), m)
    # each block's slot: the step from the previous block's last value to this block's first
    # (int64 wraps alike both ways, so the running sum stays exact)
    last = first + np.add.reduceat(full, starts)
    full[starts] = first - np.concatenate(([0], last[:-1]))
    return np.cumsum(full, out=full)


def segmented_moves(
    first: np.ndarray, vals: Sequence[list[Any]], gaps: Sequence[list[Any]], m: np.ndarray, steps: Sequence[int]
) -> np.ndarray:
    """Version 4's sparse series (each block's moves and the gaps between them) of many blocks,
    as :func:`segmented_packs` makes the dense ones."""
    k = np.array([len(g[1]) // g[0] for g in gaps], dtype=np.int64)
    if [len(v[1]) // v[0] for v in vals] != k.tolist() or not m.all():
        raise ValueError("a series move outside its block")
    moves, gap = ints_many(vals), ints_many(gaps)
    total = int(m.sum())
    starts = np.cumsum(m) - m
    full = np.zeros(total, dtype=np.int64)
    if len(gap):
        run = np.cumsum(gap)
        before = np.concatenate(([0], np.cumsum(k)[:-1]))
        at = (
            run
            - np.repeat(
                np.where(k > 0, run[np.minimum(before, len(run) - 1)] - gap[np.minimum(before, len(run) - 1)], 0), k
            )
            - 1
        )
        if gap.min() < 1 or bool((at >= np.repeat(m - 1, k)).any()):
            raise ValueError("a series move outside its block")
        full[np.repeat(starts, k) + 1 + at] = moves
    return _running(full, first, starts, m, steps)
