"""Columnar tables (``t`` plus one float64 column per numeric field) from message bodies."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def numeric(col: list[Any]) -> np.ndarray | None:
    """A float64 column (None as NaN), or None for text, nested or boolean values."""
    try:
        arr = np.array(col, dtype=np.float64)  # None becomes NaN
    except (TypeError, ValueError):
        vals = [x for x in col if x is not None]
        if not vals or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in vals):
            return None  # text or nested: not a numeric column
        return np.array([float("nan") if x is None else x for x in col], dtype=np.float64)
    first = next((x for x in col if x is not None), None)
    if isinstance(first, bool) or arr.ndim != 1:  # lists of equal length (pids) are not a column either
        return None
    return arr


def columns(bodies: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
    """A columnar table from maps: ``t`` (int64) plus a float64 column per numeric key."""
    if not bodies:
        return {}
    # distinct key sets are few (messages of one kind look alike): find the numeric keys from them
    keys: dict[str, None] = {}
    seen: set[tuple[str, ...]] = set()
    for b in bodies:
        ks = tuple(b)
        if ks in seen:
            continue
        seen.add(ks)
        for k in ks:
            if k not in keys and k not in ("v", "seq", "t"):
                keys[k] = None
    out: dict[str, np.ndarray] = {"t": np.array([b.get("t", 0) for b in bodies], dtype=np.int64)}
    for k in keys:
        arr = numeric([b.get(k) for b in bodies])
        if arr is not None:
            out[k] = arr
    order = np.argsort(out["t"], kind="stable")
    if np.any(order != np.arange(len(order))):
        out = {k: v[order] for k, v in out.items()}
    return out


def concat_tables(tables: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Columnar tables one after another (a key missing from one is NaN there), sorted by ``t``."""
    tables = [t for t in tables if t and len(t.get("t", ()))]
    if not tables:
        return {}
    if len(tables) == 1:
        out = tables[0]
    else:
        keys: dict[str, None] = {}
        for tb in tables:
            keys.update(dict.fromkeys(tb))
        out = {}
        for k in keys:
            shapes = {tb[k].shape[1:] for tb in tables if k in tb}
            if len(shapes) != 1:
                continue  # nested values of different lengths: not one column
            tail = shapes.pop()
            parts = [tb[k] if k in tb else np.full((len(tb["t"]), *tail), np.nan) for tb in tables]
            out[k] = np.concatenate(parts).astype(np.int64 if k == "t" else np.float64)
    order = np.argsort(out["t"], kind="stable")
    if np.any(order != np.arange(len(order))):
        out = {k: v[order] for k, v in out.items()}
    return out
