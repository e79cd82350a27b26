"""What the reader salvaged of a partial or damaged recording, as the report says it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from spikewatch.sampler.wire.recording import Salvage

from .source import Recording


def integrity(rec: Recording, s: Salvage) -> dict[str, Any]:
    """What was salvaged, as the report says it: ``complete`` and one sentence per loss."""
    notes: list[str] = []
    src = rec.sources and rec.main
    t0 = src.t0 if src else 0

    def rel(t: int | None) -> str:
        return "?" if t is None else f"{(t - t0) / 1e9:.1f} s"

    if s.torn_tail_bytes:
        notes.append(
            f"the file ends in a torn record ({s.torn_tail_bytes:,} bytes unread): its writer stopped mid-write"
        )
    for g in s.skipped:
        notes.append(
            f"damaged bytes {g['from_byte']:,}-{g['to_byte']:,} skipped "
            f"({g['to_byte'] - g['from_byte']:,} bytes, between {rel(g['t_before'])} and {rel(g['t_after'])}); "
            "read on after them"
        )
    stopped_early = False
    hello_samples = file_samples = None
    if src:
        hellos = [h for h in src.hellos if isinstance(h.get("counters"), dict)]
        final = any(h.get("final") for h in src.hellos)
        if s.format == 2 and s.closed is False and not final:
            stopped_early = True
        elif s.format == 1 and hellos and "final" in hellos[-1] and not final:
            stopped_early = True
        if stopped_early:
            notes.append(
                f"the writer stopped early (killed, or the disk filled): no closing record; "
                f"the file ends at {rel(src.t_end)}"
            )
        ser = src.series.get("rss") or next(iter(src.series.values()), None)
        if len(hellos) >= 2 and ser is not None and len(ser):
            h0, h1 = hellos[0], hellos[-1]
            c0, c1 = h0["counters"].get("samples"), h1["counters"].get("samples")
            if isinstance(c0, int) and isinstance(c1, int):
                hello_samples = c1 - c0
                n_ser = len(ser)
                fig = src.stream
                if fig is not None and id(h0) in fig.hello_samples and id(h1) in fig.hello_samples:
                    # streamed: the samples counted at each hello as the pass went by
                    file_samples = fig.hello_samples[id(h1)] - fig.hello_samples[id(h0)]
                    n_ser = fig.stats[ser.name].count if ser.name in fig.stats else n_ser
                else:
                    i0, i1 = np.searchsorted(ser.t, [int(h0.get("t", 0)), int(h1.get("t", 0))], side="right")
                    file_samples = int(i1 - i0)
                slack = 2 * max(1, src.batches and n_ser // max(src.batches, 1)) + 2
                if hello_samples - file_samples > slack:
                    notes.append(
                        f"the sampler counted {hello_samples:,} samples between its first and last hello "
                        f"in this file; the file holds {file_samples:,} "
                        f"({hello_samples - file_samples:,} missing)"
                    )
            lost = h1["counters"].get("journal_lost") or 0
            errs = h1["counters"].get("journal_errors") or 0
            if errs or lost:
                notes.append(f"the sampler's journal reported {errs} write error(s), {lost:,} records lost")
    return {
        "format": s.format,
        "complete": not notes,
        "bytes": s.bytes_total,
        "torn_tail_bytes": s.torn_tail_bytes,
        "skipped": [
            dict(
                g,
                bytes=g["to_byte"] - g["from_byte"],
                t_before=None if g["t_before"] is None else round((g["t_before"] - t0) / 1e9, 3),
                t_after=None if g["t_after"] is None else round((g["t_after"] - t0) / 1e9, 3),
            )
            for g in s.skipped
        ],
        "writer_stopped_early": stopped_early,
        "hello_samples": hello_samples,
        "file_samples": file_samples,
        "notes": notes,
    }


def merge_salvages(files: list[Path], salvages: list[Salvage]) -> Salvage:
    """One account of what several segments lost (damage is named by file and byte)."""
    if len(salvages) == 1:
        return salvages[0]
    out = Salvage(max(s.format for s in salvages))
    for f, s in zip(files, salvages):
        out.bytes_total += s.bytes_total
        out.torn_tail_bytes += s.torn_tail_bytes  # only the last segment should have one
        out.skipped.extend(dict(g, file=f.name) for g in s.skipped)
        out.blocks += s.blocks
        out.records += s.records
    out.closed = salvages[-1].closed
    out.format = salvages[-1].format
    return out
