"""Version 2 blocks in bulk: sample and detail columns as arrays, no object per sample."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from spikewatch.sampler.wire import blocks, protocol
from spikewatch.sampler.wire.recording import RecordingError, Salvage

from .builder import Builder, Ragged
from .tables import numeric

_DT = {1: "<i1", 2: "<i2", 4: "<i4", 8: "<i8"}


def np_ints(packed: list[Any]) -> np.ndarray:
    """:func:`blocks.unpack_ints` as an int64 array."""
    w, raw, exc = packed
    a = np.frombuffer(raw, dtype=_DT[w]).astype(np.int64)
    if exc:
        a[a == np.iinfo(_DT[w]).min] = np.array(exc, dtype=np.int64)
    return a


def sample_times(enc: list[Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A samples encoding's (sample times, batch sizes, each batch's head time)."""
    base, q, p, sizes_p, _shapes, _sids, dk_p, e_p, _series, ht_p = enc[:10]
    k = np.concatenate(([0], np.cumsum(np_ints(dk_p))))
    e = np_ints(e_p)
    t = base + (k * p + (np.cumsum(e) if len(enc) > 10 and enc[10] else e)) * q  # v3: deviations may be deltas
    sizes = np_ints(sizes_p)
    starts = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    return t, sizes, t[starts] + np_ints(ht_p) * q


def series_values(first: int, g: int, d_p: list[Any]) -> np.ndarray:
    """One series column from its first value, step ``g`` and packed deltas."""
    d = np_ints(d_p)
    v = np.empty(len(d) + 1, dtype=np.int64)
    v[0] = first
    np.cumsum(d * g if g != 1 else d, out=v[1:])
    v[1:] += first
    return v


def sparse_deltas(entry: list[Any], n: int) -> np.ndarray:
    """Version 4: a series stored as its moves and the gaps between them, as ``n - 1`` deltas."""
    vals, gaps = np_ints(entry[3]), np_ints(entry[5])
    at = np.cumsum(gaps) - 1
    if len(vals) != len(gaps) or (len(gaps) and (gaps.min() < 1 or at[-1] >= n - 1)):
        raise ValueError("a series move outside its block")
    d = np.zeros(n - 1, dtype=np.int64)
    d[at] = vals
    return d


def all_series(series_enc: list[Any], n: int) -> dict[str, np.ndarray]:
    """Every series of a block of ``n`` samples by name (version 4: one may be stored
    relative to another, and as its moves)."""
    out: dict[str, np.ndarray] = {}
    for entry in series_enc:
        name, first, g, d_p = entry[:4]
        if len(entry) > 5:
            d = sparse_deltas(entry, n)
            v = np.empty(n, dtype=np.int64)
            v[0] = first
            np.cumsum(d * g if g != 1 else d, out=v[1:])
            v[1:] += first
        else:
            v = series_values(first, g, d_p)
        ref = blocks.series_ref(entry)
        if ref >= 0:
            if blocks.series_ref(series_enc[ref]) >= 0 or series_enc[ref][0] not in out:
                raise ValueError("a series relative to a relative or later series")
            v += out[series_enc[ref][0]]
        out[name] = v
    return out


def block_columns(
    payload: bytes,
) -> tuple[list[tuple[str, dict[str, Any]]], np.ndarray | None, dict[str, np.ndarray], list[int], bool]:
    """A data block as (records with samples bodies reduced to their heads, sample times,
    series columns, batch sizes, uniform): ``uniform`` is False when batches differ in
    their series (then the records are whole bodies and the columns empty)."""
    import msgpack

    block = msgpack.unpackb(payload, raw=False, strict_map_key=False)
    topics = block["tp"]
    enc = block.get("s")
    if enc is not None and len(enc[4]) != 1:
        return blocks.decode_block(payload), None, {}, [], False
    groups = {ti: iter(blocks.decode_group(g)) for ti, g in block["g"]}
    names = [t[1:] if t.startswith("\x00") else t for t in topics]
    records = [(names[ti], next(groups[ti])) for ti in block["o"]]
    if enc is None:
        return records, None, {}, [], True
    shapes, series_enc = enc[4], enc[8]
    t, sizes, head_t_a = sample_times(enc)
    head_t = iter(head_t_a.tolist())
    for topic, body in records:
        if topic == protocol.SAMPLES and "dt" not in body:
            body["t"] = next(head_t)
    cols = all_series(series_enc, len(t))
    cols = {name: cols[name] for name in shapes[0]}
    return records, t, cols, sizes.tolist(), True


def v2_blocks(
    f: Any, path: Path, salvage: Salvage, expand: Any, builder: Any, default_only: Any, fast_builder: Any
) -> None:
    try:
        for fr in blocks.iter_frames(f, salvage):
            if fr.kind != blocks.KIND_DATA:
                continue
            try:
                if default_only():
                    import msgpack

                    if _fast_block(
                        msgpack.unpackb(fr.payload, raw=False, strict_map_key=False), fast_builder(), expand
                    ):
                        continue
                records, t, cols, sizes, uniform = block_columns(fr.payload)
            except Exception:  # whole by its checksum, yet not decodable: another writer version
                salvage.undecodable(fr)
                continue
            records = [(tp, expand(tp, b)) if tp == protocol.HELLO else (tp, b) for tp, b in records]
            if t is not None:
                owner = [builder(b, tp) for tp, b in records]
                heads = {id(o) for o, (tp, b) in zip(owner, records) if tp == protocol.SAMPLES and "dt" not in b}
                if len(heads) == 1:
                    b0 = next(o for o, (tp, b) in zip(owner, records) if tp == protocol.SAMPLES and "dt" not in b)
                    others = [(o, tp, b) for o, (tp, b) in zip(owner, records) if o is not b0]
                    mine = [(tp, b) for o, (tp, b) in zip(owner, records) if o is b0]
                    try:
                        b0.add_block(mine, t, cols, sizes)
                    except Ragged:
                        pass
                    else:
                        for o, tp, b in others:
                            o.add(tp, b)
                        continue
                # the hellos were expanded above (once: expanding twice would take them for keyframes)
                hellos = iter([b for tp, b in records if tp == protocol.HELLO])
                records = [
                    (tp, next(hellos) if tp == protocol.HELLO else b) for tp, b in blocks.decode_block(fr.payload)
                ]
            for tp, b in records:
                if isinstance(b, dict):
                    builder(b, tp).add(tp, b)
    except blocks.FormatError as exc:
        raise RecordingError(f"{path}: {exc}") from None


def _group_columns(enc: list[Any]) -> tuple[list[Any], list[list[int]], list[int], list[Any]]:
    """A v2 group as (keys, shapes, shape ids, values per key) without building a map per body."""
    keys, shapes, ids_p, cols = enc
    if any(col[0] > 2 for col in cols):  # version 3's column kinds: a few bodies a second, decoded in Python
        return keys, shapes, blocks.unpack_ints(ids_p), blocks.group_columns(enc)
    values: list[Any] = []
    for col in cols:
        if col[0] == 1:
            d = np_ints(col[2])
            if col[3] != 1:
                d = d * col[3]
            v = np.empty(len(d) + 1, dtype=np.int64)
            v[0] = col[1]
            np.cumsum(d, out=v[1:])
            v[1:] += col[1]
            values.append(v)
        elif col[0] == 2:
            values.append(np.full(col[2], col[1], dtype=np.int64) if blocks._is_int(col[1]) else [col[1]] * col[2])
        else:
            values.append(col[1])
    return keys, shapes, blocks.unpack_ints(ids_p), values


_SKIP_DETAIL = ("v", "seq")


def _fast_block(block: dict[str, Any], b: Builder, expand: Any) -> bool:
    """Take a v2 block of one source whose ``seq`` runs on from the last: sample and
    detail columns go in as arrays, without a Python object per sample or detail.
    False (nothing taken) when the block is not that simple."""
    enc = block.get("s")
    if b.last_seq < 0 or (enc is not None and (len(enc[4]) != 1 or not b.uniform)):
        return False
    topics = [t[1:] if t.startswith("\x00") else t for t in block["tp"]]
    groups = {}
    for ti, g in block["g"]:
        keys = g[0]
        if "src" in keys or "seq" not in keys:
            return False
        groups[ti] = _group_columns(g)
    order = block["o"]
    n = len(order)
    # seq in record order: consecutive from the last one seen, or the slow path
    seq_it = {}
    for ti, (keys, _shapes, ids, values) in groups.items():
        col = values[keys.index("seq")]
        if len(col) != len(ids):
            return False
        seq_it[ti] = iter(col.tolist() if isinstance(col, np.ndarray) else col)
    first = b.last_seq + 1
    for i, ti in enumerate(order):
        if next(seq_it[ti]) != first + i:
            return False
    if enc is not None:
        names = tuple(enc[4][0])
        if b.keys is not None and tuple(b.keys) != names:
            return False
    s = b.src
    b.last_seq = first + n - 1
    s.records += n
    for ti, (keys, shapes, ids, values) in groups.items():
        topic = topics[ti]
        if block["tp"][ti] == "\x00" + protocol.SAMPLES:
            _fast_samples(b, enc or [], len(ids))
            continue
        if topic == protocol.DETAIL and len(shapes) == 1:
            table: dict[str, np.ndarray] = {}
            for k, v in zip(keys, values):
                if k in _SKIP_DETAIL:
                    continue
                if k == "t":
                    table["t"] = np.asarray(v, dtype=np.int64)
                    continue
                arr = v.astype(np.float64) if isinstance(v, np.ndarray) else numeric(v)
                if arr is not None:
                    table[k] = arr
            if "t" in table and len(table["t"]):
                b._times(int(table["t"].min()))
                b._times(int(table["t"].max()))
                b.det_blocks.append(table)
            continue
        bodies = blocks.decode_group(block["g"][[g[0] for g in block["g"]].index(ti)][1])
        for body in bodies:
            if topic == protocol.HELLO:
                body = expand(topic, body)
                if not b.src.src and body.get("session"):
                    # a recording that began between hellos: its session comes from the first one
                    b.src.src = str(body["session"])
            b.add_plain(topic, body)
    return True


def _fast_samples(b: Builder, enc: list[Any], n_batches: int) -> None:
    shapes, series_enc = enc[4], enc[8]
    t, sizes, head_t = sample_times(enc)
    names = tuple(shapes[0])
    if b.keys is None:
        b.keys = dict.fromkeys(names).keys()
    if b.dt:
        b.dt_chunks.append(np.array(b.dt, dtype=np.int64))
        b.dt.clear()
    for name, v in all_series(series_enc, len(t)).items():
        if name not in b.vals:
            b.vals[name] = []
            b.val_chunks[name] = []
        b._flush_vals(name)
        b.val_chunks[name].append(v)
    b.batch_t0.extend(head_t.tolist())
    b.batch_n.extend(sizes.tolist())
    b.dt_chunks.append(t - np.repeat(head_t, sizes))
    b.src.batches += n_batches
    if len(t):
        lo, hi = int(head_t.min()), int(t.max())
        b.tmin = lo if b.tmin is None else min(b.tmin, lo)
        b.tmax = hi if b.tmax is None else max(b.tmax, hi)
