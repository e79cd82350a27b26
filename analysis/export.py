"""Export a recording as tables for pandas, DuckDB or a notebook (Parquet or CSV).

Tables (one file each, a ``src`` column when the recording holds several samplers):

* ``samples``: ``t_ns``, ``t_s`` (seconds from the start), one column per series
  (series sampled together share rows; otherwise long form ``series``, ``value``);
* ``details``, ``load``: ``t_ns``, ``t_s`` plus every numeric field;
* ``events``, ``markers``: ``t_ns``, ``t_s``, ``kind``, ``name``, then the other
  fields (nested values as JSON text).
"""

from __future__ import annotations

import csv
import json
import os
from typing import Any

import numpy as np

from .reader import Recording, Source


def _samples(src: Source) -> dict[str, np.ndarray]:
    series = [s for s in src.series.values() if len(s)]
    if not series:
        return {}
    first = series[0]
    if all(len(s) == len(first) and np.array_equal(s.t, first.t) for s in series[1:]):
        cols = {"t_ns": first.t, "t_s": (first.t - src.t0) / 1e9}
        cols.update({s.name: s.v for s in series})
        return cols
    t = np.concatenate([s.t for s in series])
    return {
        "t_ns": t,
        "t_s": (t - src.t0) / 1e9,
        "series": np.concatenate([np.full(len(s), s.name, dtype=object) for s in series]),
        "value": np.concatenate([s.v for s in series]),
    }


def _numeric(src: Source, table: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    if not table:
        return {}
    out = {"t_ns": table["t"], "t_s": (table["t"] - src.t0) / 1e9}
    out.update({k: v for k, v in table.items() if k != "t"})
    return out


def _records(src: Source, bodies: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    if not bodies:
        return {}
    keys: dict[str, None] = {}
    for b in bodies:
        for k in b:
            if k not in ("v", "seq", "t", "kind", "name", "src"):
                keys[k] = None
    out: dict[str, np.ndarray] = {
        "t_ns": np.array([int(b.get("t", 0)) for b in bodies], dtype=np.int64),
        "kind": np.array([str(b.get("kind", "")) for b in bodies], dtype=object),
        "name": np.array([str(b.get("name", "")) if b.get("name") is not None else "" for b in bodies], dtype=object),
    }
    out["t_s"] = (out["t_ns"] - src.t0) / 1e9
    for k in keys:
        # one type per column: nested or mixed values become JSON text
        out[k] = np.array(
            [
                None if b.get(k) is None else json.dumps(b[k], default=str) if not isinstance(b[k], str) else b[k]
                for b in bodies
            ],
            dtype=object,
        )
    return out


def tables(rec: Recording) -> dict[str, list[tuple[str, dict[str, np.ndarray]]]]:
    """Per table name: [(src, columns)] for every source that has rows."""
    out: dict[str, list[tuple[str, dict[str, np.ndarray]]]] = {
        k: [] for k in ("samples", "details", "events", "markers", "load")
    }
    for name, src in rec.sources.items():
        for tname, cols in (
            ("samples", _samples(src)),
            ("details", _numeric(src, src.details)),
            ("events", _records(src, src.events)),
            ("markers", _records(src, src.markers)),
            ("load", _numeric(src, src.load)),
        ):
            if cols:
                out[tname].append((name, cols))
    return out


def _merge(parts: list[tuple[str, dict[str, np.ndarray]]], with_src: bool) -> dict[str, np.ndarray]:
    names: dict[str, None] = {}
    for _, cols in parts:
        names.update(dict.fromkeys(cols))
    merged: dict[str, np.ndarray] = {}
    if with_src:
        merged["src"] = np.concatenate([np.full(len(next(iter(c.values()))), s, dtype=object) for s, c in parts])
    for n in names:
        chunks = []
        for _, cols in parts:
            rows = len(next(iter(cols.values())))
            chunks.append(cols[n] if n in cols else np.full(rows, None, dtype=object))
        merged[n] = np.concatenate(chunks) if len(chunks) > 1 else chunks[0]
    return merged


class SamplesSink:
    """The ``samples`` table written chunk by chunk as a streamed run is read (bounded memory):
    a Parquet row group or a run of CSV rows per chunk. The columns are those of the first
    chunk; a run whose series change midway is refused (:class:`NotStreamable`) before the
    in-memory export takes over."""

    def __init__(self, out_dir: str | os.PathLike[str], fmt: str) -> None:
        self.path = os.path.join(os.fspath(out_dir), f"samples.{fmt}")
        self.fmt = fmt
        self.names: list[str] | None = None
        self.rows = 0
        self.t0: int | None = None
        self._w: Any = None
        self._f: Any = None

    def __call__(self, t: np.ndarray, cols: dict[str, np.ndarray]) -> None:
        from .stream import NotStreamable

        if self.names is None:
            self.names = list(cols)
        if list(cols) != self.names:
            self.close()
            raise NotStreamable
        if self.t0 is None:
            self.t0 = int(t[0])  # corrected to the run's own start when the run is read (see finish)
        table = {"t_ns": t, **cols}
        if self.fmt == "parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            batch = pa.table({k: pa.array(v) for k, v in table.items()})
            if self._w is None:
                self._w = pq.ParquetWriter(self.path + ".raw", batch.schema)
            self._w.write_table(batch)
        else:
            if self._f is None:
                self._f = open(self.path + ".raw", "w", newline="")
            csv.writer(self._f).writerows(zip(*[_csv_col(v) for v in table.values()]))
        self.rows += len(t)

    def close(self) -> None:
        if self._w is not None:
            self._w.close()
        if self._f is not None:
            self._f.close()
        self._w = self._f = None

    def finish(self, t0: int) -> tuple[str, int] | None:
        """Add ``t_s`` (seconds from the run's start, known only at the end) while copying the chunks over."""
        self.close()
        raw = self.path + ".raw"
        if not self.rows or self.names is None:
            return None
        if self.fmt == "parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            pf = pq.ParquetFile(raw)
            w = None
            for i in range(pf.num_row_groups):
                tb = pf.read_row_group(i)
                t = tb.column("t_ns").to_numpy()
                tb = tb.add_column(1, "t_s", pa.array((t - t0) / 1e9))
                if w is None:
                    w = pq.ParquetWriter(self.path, tb.schema)
                w.write_table(tb)
            if w is not None:
                w.close()
        else:
            with open(raw, newline="") as src, open(self.path, "w", newline="") as dst:
                out = csv.writer(dst)
                out.writerow(["t_ns", "t_s", *self.names])
                for row in csv.reader(src):
                    out.writerow([row[0], repr((int(row[0]) - t0) / 1e9), *row[1:]])
        os.unlink(raw)
        return self.path, self.rows


def export_run(
    path: str | os.PathLike[str], out_dir: str | os.PathLike[str], fmt: str = "parquet"
) -> dict[str, tuple[str, int]]:
    """Export a run (a file, segments, a folder or glob): a version 2 run in one streaming pass
    whose samples go straight to their table, else loaded whole (:func:`export_recording`)."""
    from .reader import load

    sink = SamplesSink(out_dir, fmt)
    rec = load(path, stream=True, sink=sink)
    if rec.main.stream is None:  # not streamable (several samplers, version 1): the whole run in memory
        return export_recording(rec, out_dir, fmt)
    written = export_recording(rec, out_dir, fmt, samples=False)
    done = sink.finish(rec.main.t0)
    if done is not None:
        written = {"samples": done, **written}
    return written


def export_recording(
    rec: Recording, out_dir: str | os.PathLike[str], fmt: str = "parquet", samples: bool = True
) -> dict[str, tuple[str, int]]:
    """Write every non-empty table; return {table: (path, rows)}."""
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq
    written: dict[str, tuple[str, int]] = {}
    multi = len(rec.sources) > 1
    for tname, parts in tables(rec).items():
        if not parts or (tname == "samples" and not samples):
            continue
        cols = _merge(parts, multi)
        rows = len(next(iter(cols.values())))
        path = os.path.join(os.fspath(out_dir), f"{tname}.{fmt}")
        if fmt == "parquet":
            arrays = {}
            for k, v in cols.items():
                arrays[k] = pa.array(v.tolist() if v.dtype == object else v)
            pq.write_table(pa.table(arrays), path)
        else:
            with open(path, "w", newline="") as f:
                w = csv.writer(f)
                w.writerow(list(cols))
                # column-wise to text, then rows: no per-cell Python formatting of floats beyond repr
                text_cols = [_csv_col(v) for v in cols.values()]
                w.writerows(zip(*text_cols))
        written[tname] = (path, rows)
    return written


def _csv_col(v: np.ndarray) -> list[str]:
    if v.dtype == object:
        return ["" if x is None else str(x) for x in v.tolist()]
    if np.issubdtype(v.dtype, np.floating):
        return ["" if np.isnan(x) else repr(x) for x in v.tolist()]
    return [str(x) for x in v.tolist()]
