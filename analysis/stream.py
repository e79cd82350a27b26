"""Read a version 2 recording in one streaming pass, in memory bounded by the chart.

Blocks are decoded one at a time into numpy columns and handed, a few tens of
thousands of samples at a time, to the incremental analyses of
:mod:`~spikewatch.analysis.streamacc` and :mod:`~spikewatch.analysis.spikestream`
(exact peak and its time, mean, p99, scrape view, spikes, sampling gaps). What the
rest of the report reads from a :class:`Source` is kept bounded too:

* each series becomes its min/max envelope (at most ``ENVELOPE_BUCKETS`` buckets:
  every bucket's lowest and highest sample, at their times), so charts, phase peaks
  and the soak trend see every extreme, while medians and means over a phase are
  taken on those points (approximate, where the in-memory path is exact);
* details keep every k-th row (k doubling as the run grows) and load telemetry is
  merged pairwise over time (counts summed, levels averaged, maxima kept);
* hellos: the first and the last few (their counters bound the run).

A recording with ``src`` tags (several samplers in one file) is not streamed:
:class:`NotStreamable` sends the caller back to the in-memory reader.
"""

from __future__ import annotations

import gc
from collections import deque
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
from spikewatch.sampler.wire import blocks, protocol
from spikewatch.sampler.wire.recording import RecordingError, Salvage
from spikewatch.sampler.wire.seqgaps import SeqGaps

from .builder import next_seq
from .loadmerge import coarsen, merge_sources
from .peaks import _DETAIL_TIME, DETAIL_SERIES
from .rawcols import RawCols, plain_column, seq_all, seq_layout
from .source import Recording, Series, Source
from .spikestream import SpikeAcc
from .streamacc import Envelope, ScrapeAcc
from .streamcols import LoadBins, Rows, count_ints, decode_samples
from .streamfig import Figures
from .tables import columns

ENVELOPE_BUCKETS = 16384
FEED_SAMPLES = 1 << 15  # samples gathered before the analyses see them: each bulk decode (~64 k) goes on as one chunk
DETAIL_ROWS = 4096
LOAD_ROWS = 8192
HELLOS_KEPT = 8
MARKER_LAG_NS = 5_000_000_000  # how far a marker may trail the samples of its moment on file


# detail fields read on every row (the rest only on the rows kept): the detail series'
# exact stats, and the limit in force at the end
_DETAIL_NEEDED = frozenset(("t", "cg_limit", "threads", "pss_t", *DETAIL_SERIES))


class NotStreamable(Exception):
    """This recording needs the in-memory reader (several sources in one file)."""


class _StreamSource:
    def __init__(self, figures: Figures, sink: Any = None) -> None:
        self.src = Source("")
        self.fig = figures
        self.sink = sink
        self.pend_t: list[np.ndarray] = []
        self.pend_v: dict[str, list[np.ndarray]] = {}
        self.pending = 0
        self.samples_seen = 0
        self.det = RawCols()
        self.threads_last = float("nan")
        self.rows = Rows(DETAIL_ROWS if sink is None else 1 << 62)
        self.loads: list[dict[str, Any]] = []
        # [hello, samples at or before it]: the first and last few
        self.first_hellos: list[list[Any]] = []
        self.last_hellos: deque[list[Any]] = deque(maxlen=HELLOS_KEPT)
        self.enc_pend: list[list[Any]] = []  # blocks' sample columns, decoded in bulk
        self.enc_key: Any = None
        self.cur = 0  # the pending block a record belongs to
        self.hello_fix: list[tuple[list[Any], int, int]] = []
        self.last_full: deque[dict[str, Any] | None] = deque(maxlen=HELLOS_KEPT)  # keyframe of each late hello
        self.bins = LoadBins(LOAD_ROWS if sink is None else 1 << 62)
        self.last_seq = -2
        self.seq_cache: dict[bytes, dict[int, tuple[list[int], int, list[Any] | None]]] = {}
        self.gaps = SeqGaps()
        self.tmin: int | None = None
        self.tmax: int | None = None

    # -- bookkeeping -------------------------------------------------------
    def seqs(self, seqs: list[Any]) -> None:
        last = self.last_seq
        for seq in seqs:
            last = next_seq(self.gaps, last, seq)
        self.last_seq = last

    def horizon(self) -> int | None:
        """Samples and details older than this are past every marker still to come."""
        return None if self.tmax is None else self.tmax - MARKER_LAG_NS

    def times(self, lo: int, hi: int) -> None:
        self.tmin = lo if self.tmin is None or lo < self.tmin else self.tmin
        self.tmax = hi if self.tmax is None or hi > self.tmax else self.tmax

    # -- samples -----------------------------------------------------------
    def samples(self, t: np.ndarray, cols: dict[str, np.ndarray]) -> None:
        if not len(t):
            return
        if set(cols) != set(self.pend_v) and self.pending:
            self.flush()
        self.pend_t.append(t)
        for name, v in cols.items():
            self.pend_v.setdefault(name, []).append(v)
        self.pending += len(t)
        self.samples_seen += len(t)
        if self.pending >= FEED_SAMPLES:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        t = np.concatenate(self.pend_t) if len(self.pend_t) > 1 else self.pend_t[0]
        fig = self.fig
        if self.sink is not None:
            self.sink(t, {n: np.concatenate(p) if len(p) > 1 else p[0] for n, p in self.pend_v.items()})
            self.pend_t, self.pend_v, self.pending = [], {}, 0
            return
        mono = len(t) < 2 or not bool((t[1:] < t[:-1]).any())  # times in order: each analysis may skip its check
        only = self._headline_known()
        for name in list(fig.scrape):
            if only is not None and name != only:  # not the headline: its scrape view and spikes go unused
                del fig.scrape[name], fig.spikes[name]
        for name, parts in self.pend_v.items():
            v = np.concatenate(parts) if len(parts) > 1 else parts[0]
            if name not in fig.envelope:
                fig.envelope[name] = Envelope(ENVELOPE_BUCKETS)
            heavy = only is None or name == only
            if heavy and name not in fig.scrape and not fig.envelope[name].first:
                fig.scrape[name] = ScrapeAcc(fig.scrape_intervals)
                fig.spikes[name] = SpikeAcc(name)
                for ev in self.src.events:
                    fig.spikes[name].event(ev)
            keep = v >= 0  # a missing reading inside a batch
            tt, vv = (t, v) if keep.all() else (t[keep], v[keep])
            fig.feed(name, tt, vv, self.horizon(), mono=mono)
            if name in fig.scrape:
                fig.scrape[name].feed(tt, vv)
                fig.spikes[name].feed(tt, vv, mono)
            fig.envelope[name].feed(tt, vv, mono)
        self.pend_t, self.pend_v, self.pending = [], {}, 0

    def _headline_known(self) -> str | None:
        """The headline series when it is already certain: under a memory limit it is the
        cgroup's usage (:func:`trees.choose`), so only that one needs a scrape view and spikes."""
        if "cg_usage" not in self.pend_v:
            return None
        for h, _n in self.first_hellos:
            if (h.get("cgroup") or {}).get("limit"):
                return "cg_usage"
        last = self.rows.last or {}
        lim = last.get("cg_limit")
        return "cg_usage" if lim is not None and len(lim) and not np.isnan(lim).all() else None

    # -- the slower records ------------------------------------------------
    def details(self, table: dict[str, np.ndarray]) -> None:
        """A detail table from a record decoded whole (the rare path)."""
        if "t" not in table or not len(table["t"]):
            return
        self.flush_details()
        self._take_details(table)

    def flush_details(self) -> None:
        if not self.det.n:
            return
        table = self.det.table()
        if table:
            self._take_details(table)

    def _take_details(self, table: dict[str, np.ndarray]) -> None:
        self.times(int(table["t"].min()), int(table["t"].max()))
        self.rows.add(table)
        th = table.get("threads")
        if th is not None and len(th):  # thread-count jumps, on every row (spikes name them)
            prev = np.r_[self.threads_last, th[:-1]]
            jump = np.abs(np.nan_to_num(th - prev))
            from .spikes import SpikeParams

            for i in np.flatnonzero(jump >= SpikeParams.thread_jump)[: 10_000 - len(self.fig.thread_jumps)]:
                self.fig.thread_jumps.append((int(table["t"][i]), int(prev[i]), int(th[i])))
            self.threads_last = float(th[-1])
        for name in DETAIL_SERIES:
            col = table.get(name)
            if col is None:
                continue
            tcol = table.get(_DETAIL_TIME.get(name, "t"), table["t"])
            t = np.where(np.isnan(tcol), table["t"], tcol) if tcol.dtype.kind == "f" else tcol
            ok = ~np.isnan(col)
            if ok.any():
                self.fig.feed(name, t[ok].astype(np.int64), col[ok].astype(np.int64), self.horizon(), gaps=False)

    def record(self, topic: str, body: dict[str, Any]) -> None:
        t = body.get("t")
        if isinstance(t, int):
            self.times(t, t)
        s = self.src
        if topic == protocol.EVENT:
            s.events.append(body)
            for acc in self.fig.spikes.values():
                acc.event(body)
        elif topic == protocol.MARKER:
            s.markers.append(body)
            if body.get("kind") in (protocol.PHASE_START, protocol.PHASE_END) and isinstance(t, int):
                self.fig.mark(t)
        elif topic == protocol.LOAD:
            self.loads.append(body)
            if len(self.loads) > LOAD_ROWS and self.sink is None:
                self.loads = coarsen(self.loads)
                self.fig.load_merged *= 2
        elif topic == protocol.HELLO:
            if not s.src and body.get("session"):
                s.src = str(body["session"])  # a recording that began between hellos: the first one names it
            entry: list[Any] = [body, None]  # its count of samples so far: known once they are decoded
            if isinstance(t, int):
                self.hello_fix.append((entry, self.cur, t))
            if len(self.first_hellos) < HELLOS_KEPT:
                self.first_hellos.append(entry)
            else:
                self.last_hellos.append(entry)
                if blocks.REF not in body:
                    self.last_full.append(None)
        elif topic == protocol.DETAIL:
            tb = columns([body])
            if tb:
                self.details(tb)
        elif topic == protocol.SAMPLES:
            dt, series = body.get("dt"), body.get("series")
            if dt and isinstance(t, int) and isinstance(series, dict):
                tt = t + np.asarray(dt, dtype=np.int64)
                s.batches += 1
                self.times(int(tt.min()), int(tt.max()))
                for name, col in series.items():
                    if len(col) == len(tt):
                        try:
                            v = np.asarray([-1 if x is None else x for x in col], dtype=np.int64)
                        except (TypeError, ValueError, OverflowError):
                            continue
                        self.samples(tt, {name: v})

    # -- a whole block -----------------------------------------------------
    def block(self, payload: bytes, expand: blocks.HelloExpander) -> None:
        block = msgpack.unpackb(payload, raw=False, strict_map_key=False)
        tps = block["tp"]
        enc = block.get("s")
        for _ti, g in block["g"]:
            if "src" in g[0]:
                raise NotStreamable
        if enc is not None and len(enc[4]) != 1:  # batches differ in their series: record by record
            recs = blocks.decode_block(payload)
            self.seqs([b.get("seq") for _, b in recs])
            self.src.records += len(recs)
            self.decode_pending()
            self.cur = 0
            for tp, b in recs:
                self.record(tp, expand(tp, b))
                if tp == protocol.HELLO:
                    self.decode_pending()  # its count: the samples recorded before it
            return
        order = block["o"]
        n_rec = len(order)
        if not self._seq_runs_on(order, block["g"]):
            self.seqs(seq_all(order, block["g"]))
        self.src.records += n_rec
        if enc is not None:
            key = (tuple(enc[4][0]), enc[1])
            if self.enc_pend and key != self.enc_key:
                self.decode_pending()
            self.enc_key = key
            self.enc_pend.append(enc)
            self.src.batches += count_ints(enc[3])
        self.cur = len(self.enc_pend) - 1 if enc is not None else len(self.enc_pend)
        for ti, g in block["g"]:
            raw = tps[ti]
            if raw == "\x00" + protocol.SAMPLES:
                continue  # their samples came through ``enc``
            topic = raw[1:] if raw.startswith("\x00") else raw
            if topic == protocol.DETAIL and len(g[1]) == 1:
                self._detail_group(g)
                continue
            if topic == protocol.LOAD and len(g[1]) == 1 and self.bins.take(g):
                continue
            for body in blocks.decode_group(g):
                if topic == protocol.HELLO:
                    self.hello(body, expand)
                else:
                    self.record(topic, body)
        if len(self.enc_pend) >= 64:
            self.decode_pending()

    def _seq_runs_on(self, order: bytes, groups: list[Any]) -> bool:
        """The block's seq, in record order, runs on from the last one (the common case),
        judged on the encoded columns: a group's seq column is then the deltas of its
        records' places in ``order``, which blocks of one interleaving share."""
        if self.last_seq < 0:
            return False
        want = self.seq_cache.get(order)
        if want is None:
            if len(self.seq_cache) > 256:  # a few kB each: interleavings recur, but not all of a day's
                self.seq_cache.clear()
            want = self.seq_cache[order] = seq_layout(order)
        first = self.last_seq + 1
        if len(groups) != len(want):
            return False
        for ti, g in groups:
            w = want.get(ti)
            keys = g[0]
            if w is None or "seq" not in keys:
                return False
            i = keys.index("seq")
            col = g[3][i]
            if col[0] == 1:
                if col[1] != first + w[0][0] or col[3] != w[1] or col[2] != w[2]:
                    return False
            elif plain_column(g[3], i) != [first + x for x in w[0]]:
                return False
        self.last_seq = first + len(order) - 1
        return True

    def decode_pending(self) -> None:
        """The samples of the blocks read so far, in bulk; then the hellos among them learn
        how many samples came before them."""
        if not self.enc_pend:
            for entry, _j, _ht in self.hello_fix:
                entry[1] = self.samples_seen
            self.hello_fix = []
            return
        t, cols, offs, head = decode_samples(self.enc_pend)
        before = self.samples_seen
        for entry, j, ht in self.hello_fix:
            inside = 0
            if j < len(self.enc_pend):
                inside = int(np.searchsorted(t[offs[j] : offs[j + 1]], ht, side="right"))
            entry[1] = before + int(offs[j]) + inside
        self.hello_fix = []
        self.enc_pend = []
        if len(t):
            self.times(min(head, int(t.min())), int(t.max()))
        self.samples(t, cols)

    def _detail_group(self, g: list[Any]) -> None:
        keys, _shapes, ids_p, cols = g
        n = count_ints(ids_p)
        whole = self.rows.wants(
            self.rows.seen + self.det.n, n
        )  # a row the kept table holds: every column; else what is summed
        self.det.add(keys, cols, n, None if whole else _DETAIL_NEEDED)
        if self.det.n >= 1024:
            self.flush_details()

    def hello(self, body: dict[str, Any], expand: blocks.HelloExpander) -> None:
        """A hello; past the first few, a stored delta is expanded only if it stays among the last."""
        if len(self.first_hellos) < HELLOS_KEPT or blocks.REF not in body:
            body = expand(protocol.HELLO, body)
            self.record(protocol.HELLO, body)
            return
        self.record(protocol.HELLO, body)
        self.last_full.append(expand.full.get(body[blocks.REF]))

    def finish(self) -> Source:
        self.decode_pending()
        self.flush()
        self.flush_details()
        s = self.src
        fig = self.fig
        for acc in fig.spikes.values():
            acc.finish()
        for name in list(fig.held):
            fig.feed(name, np.zeros(0, np.int64), np.zeros(0, np.int64), None)
        fig.stats = {name: segs.whole() for name, segs in fig.segs.items()}
        for name, env in fig.envelope.items():
            s.series[name] = Series(name, *env.points())
        s.details = self.rows.table()
        fig.detail_stride = self.rows.stride
        s.load_records = merge_sources(sorted(self.loads + self.bins.records(), key=lambda b: b.get("t", 0)))
        s.load = columns(s.load_records)
        s.events.sort(key=lambda e: e.get("t", 0))
        s.markers.sort(key=lambda e: e.get("t", 0))
        late = []
        for (h, n), full in zip(self.last_hellos, self.last_full):
            if blocks.REF in h:  # expanded now, against the full hello it was stored against
                exp = blocks.HelloExpander()
                if full is not None:
                    exp.full = {h[blocks.REF]: full}
                h = exp(protocol.HELLO, h)
            late.append((h, n))
        kept = self.first_hellos + late
        s.hellos = [h for h, _ in kept]
        fig.hello_samples = {id(h): n for h, n in kept if n is not None}
        if not s.src:
            s.src = "main"
        if self.bins.tmin is not None and self.bins.tmax is not None:
            self.times(self.bins.tmin, self.bins.tmax)
        s.t0 = self.tmin or 0
        s.t_end = self.tmax or s.t0
        s.seq_missed = self.gaps.missed
        s.seq_gaps = [(a, b) for _, a, b in self.gaps.gaps()]
        fig.t0, fig.t_end = s.t0, s.t_end
        s.stream = fig
        return s


def load_streaming(
    paths: list[Path], salvages: list[Salvage], sink: Any = None, scrape_intervals: tuple[float, ...] | None = None
) -> Recording:
    """One run from version 2 files in one pass; :class:`NotStreamable` when it needs the other reader.
    With ``sink``, the samples go there and details and telemetry are kept whole (an export)."""
    fig = Figures()
    if scrape_intervals:
        fig.scrape_intervals = tuple(scrape_intervals)
    st = _StreamSource(fig, sink)
    expand = blocks.HelloExpander()
    # Each block unpacks into ~600 short-lived lists and none form a cycle: the collector's
    # passes over them (and, every few hundred blocks, over every object of the process) cost
    # ~10 % of a day's report and find nothing to free.
    collecting = gc.isenabled()
    gc.disable()
    try:
        _read(paths, salvages, st, expand)
    finally:
        if collecting:
            gc.enable()
    src = st.finish()
    sources = {src.src: src} if src.records else {}
    return Recording(paths[0] if len(paths) == 1 else paths[0].parent, sources)


def _read(paths: list[Path], salvages: list[Salvage], st: _StreamSource, expand: blocks.HelloExpander) -> None:
    for path, salvage in zip(paths, salvages):
        with open(path, "rb") as f:
            try:
                for fr in blocks.iter_frames(f, salvage):
                    if fr.kind != blocks.KIND_DATA:
                        continue
                    try:
                        st.block(fr.payload, expand)
                    except NotStreamable:
                        raise
                    except Exception:  # whole by its checksum, yet not decodable: another writer version
                        salvage.undecodable(fr)
            except blocks.FormatError as exc:
                raise RecordingError(f"{path}: {exc}") from None
