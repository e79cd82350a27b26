"""A braille line chart of a min/max envelope, built with numpy and rich.

Each character cell holds 2×4 braille dots; every dot column is one envelope
bucket, drawn as a vertical stroke from the bucket's min to its max. So the
bucket holding a 2 ms spike reaches the spike's full height, whatever the
window. The limit is a dotted line at its height.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from rich.text import Text

from spikewatch.sampler.units import format_bytes

from .envelope import minmax_envelope

# Bit of each dot in a braille cell, [dot row from top][dot column].
_BITS = np.array([[0x01, 0x08], [0x02, 0x10], [0x04, 0x20], [0x40, 0x80]], dtype=np.int64)
GUTTER = 11  # left margin for the value labels

STYLE_DATA = "green"
STYLE_NEAR = "yellow"  # within 10 % of the limit
STYLE_OVER = "bold red"  # at or above the limit
STYLE_LIMIT = "red"
_STYLES = ("", STYLE_DATA, STYLE_NEAR, STYLE_OVER, STYLE_LIMIT)


@dataclass
class Frame:
    """What one chart draw showed: kept so tests and the bench can inspect it."""

    series: str
    t_start: int
    t_end: int
    mins: np.ndarray  # one entry per dot column (two per character)
    maxs: np.ndarray
    lo: float
    hi: float
    rows: int  # character rows
    limit: int | None

    @property
    def dot_rows(self) -> int:
        return self.rows * 4

    def level(self, value: float) -> int:
        """Dot row (0 = bottom) at which ``value`` is drawn."""
        return value_level(value, self.lo, self.hi, self.dot_rows)


def value_level(value: float | np.ndarray, lo: float, hi: float, dot_rows: int):
    scaled = (np.asarray(value, dtype=np.float64) - lo) / (hi - lo) * (dot_rows - 1)
    return np.clip(np.floor(scaled + 0.5), 0, dot_rows - 1).astype(np.int64) if np.ndim(value) \
        else int(min(max(np.floor(scaled + 0.5), 0), dot_rows - 1))


def y_range(mins: np.ndarray, maxs: np.ndarray, limit: int | None) -> tuple[float, float]:
    """Axis range: the data with a margin, and the limit when it is near enough to matter."""
    if np.all(np.isnan(maxs)):
        top = float(limit or 1)
        return 0.0, top
    dmin, dmax = float(np.nanmin(mins)), float(np.nanmax(maxs))
    if limit and limit <= 2 * dmax:
        dmax = max(dmax, float(limit))
    span = max(dmax - dmin, dmax * 0.02, 1.0)
    return max(0.0, dmin - 0.05 * span), dmax + 0.05 * span


def make_frame(t: np.ndarray, v: np.ndarray, series: str, t_start: int, t_end: int,
               columns: int, rows: int, limit: int | None) -> Frame:
    """Envelope of ``(t, v)`` over ``[t_start, t_end]`` for a chart ``columns`` cells wide."""
    mins, maxs = minmax_envelope(t, v, t_start, t_end, max(1, columns) * 2)
    return frame_from_envelope(mins, maxs, series, t_start, t_end, rows, limit)


def frame_from_envelope(mins: np.ndarray, maxs: np.ndarray, series: str, t_start: int, t_end: int,
                        rows: int, limit: int | None) -> Frame:
    """A frame from ready-made buckets (two per character column)."""
    lo, hi = y_range(mins, maxs, limit)
    return Frame(series, t_start, t_end, mins, maxs, lo, hi, max(1, rows), limit)


def hold_gaps(mins: np.ndarray, maxs: np.ndarray, max_gap: int) -> tuple[np.ndarray, np.ndarray]:
    """Carry each bucket's last level over up to ``max_gap`` empty buckets after it.

    For a slow series (the working set comes with ``detail``, ~10 Hz) drawn in
    buckets narrower than its period, so it reads as a step line rather than
    dots. Buckets with data are untouched, so no peak moves or grows.
    """
    valid = ~np.isnan(maxs)
    if max_gap <= 0 or valid.all() or not valid.any():
        return mins, maxs
    idx = np.where(valid, np.arange(len(maxs)), -1)
    last = np.maximum.accumulate(idx)
    fill = ~valid & (last >= 0) & (np.arange(len(maxs)) - last <= max_gap)
    # Hold the level the previous bucket ended near: its min..max range is not repeated.
    src = last[fill]
    mins, maxs = mins.copy(), maxs.copy()
    mins[fill] = maxs[fill] = maxs[src]
    return mins, maxs


def dot_matrix(frame: Frame) -> np.ndarray:
    """Boolean dots [dot row from top, dot column]: one min..max stroke per column."""
    rows = frame.dot_rows
    valid = ~np.isnan(frame.maxs)
    low = np.where(valid, value_level(np.nan_to_num(frame.mins), frame.lo, frame.hi, rows), 1)
    high = np.where(valid, value_level(np.nan_to_num(frame.maxs), frame.lo, frame.hi, rows), 0)
    # Join neighbouring strokes so a step reads as a line, not two floating dots;
    # this only lengthens strokes towards a neighbour, it never lowers a max.
    both = valid[1:] & valid[:-1]
    prev_low, prev_high = low[:-1].copy(), high[:-1].copy()
    low[1:] = np.where(both & (prev_high < low[1:]), prev_high, low[1:])
    high[1:] = np.where(both & (prev_low > high[1:]), prev_low, high[1:])
    level = np.arange(rows)[:, None]
    dots = (level >= low[None, :]) & (level <= high[None, :])
    return dots[::-1]


def render_lines(frame: Frame) -> list[Text]:
    """The chart's text rows (without axis labels)."""
    dots = dot_matrix(frame)
    rows, cols = frame.rows, len(frame.maxs) // 2
    cells = dots.reshape(rows, 4, cols, 2)
    codes = (cells * _BITS[None, :, None, :]).sum(axis=(1, 3))
    has_data = codes > 0
    # Colour by how close each cell column's max comes to the limit.
    style = np.zeros((rows, cols), dtype=np.int64)
    cell_max = np.fmax(frame.maxs[0::2], frame.maxs[1::2])
    col_style = np.ones(cols, dtype=np.int64)
    if frame.limit:
        col_style[cell_max >= 0.9 * frame.limit] = 2
        col_style[cell_max >= frame.limit] = 3
    style[has_data] = np.broadcast_to(col_style, (rows, cols))[has_data]
    if frame.limit and frame.lo <= frame.limit <= frame.hi:
        from_top = frame.dot_rows - 1 - frame.level(frame.limit)
        r, d = divmod(from_top, 4)
        codes[r] |= _BITS[d, 0] | _BITS[d, 1]
        style[r][~has_data[r]] = 4
    lines = []
    for r in range(rows):
        text = Text()
        chars = "".join(map(chr, (codes[r] + 0x2800).tolist()))
        bounds = np.flatnonzero(np.diff(style[r])) + 1
        start = 0
        for end in [*bounds.tolist(), cols]:
            text.append(chars[start:end], _STYLES[style[r][start]] or None)
            start = end
        lines.append(text)
    return lines


def render_chart(frame: Frame, window_label: str, right_label: str,
                 marks: list[tuple[int, str, str]] = ()) -> Text:
    """Rows with value labels in a gutter, then an axis row with event marks.

    ``marks`` are ``(t, glyph, style)`` placed under the column holding ``t``.
    """
    lines = render_lines(frame)
    rows, cols = frame.rows, len(frame.maxs) // 2
    labels = {0: frame.hi, rows - 1: frame.lo}
    if rows >= 5:
        labels[rows // 2] = frame.lo + (frame.hi - frame.lo) * (1 - (rows // 2) / max(1, rows - 1))
    out = Text(no_wrap=True, overflow="crop")
    for r, line in enumerate(lines):
        label = format_bytes(labels[r]) if r in labels else ""
        out.append(f"{label:>{GUTTER - 2}} ┤", "dim")
        out.append_text(line)
        out.append("\n")
    axis = [" "] * cols
    styles: list[str | None] = [None] * cols
    span = frame.t_end - frame.t_start
    for t, glyph, style in marks:
        if frame.t_start <= t <= frame.t_end and span > 0:
            c = min(cols - 1, (t - frame.t_start) * cols // span)
            axis[c], styles[c] = glyph, style
    left, right = f"-{window_label}", right_label
    for i, ch in enumerate(left[:cols]):
        if axis[i] == " ":
            axis[i] = ch
    for i, ch in enumerate(right[-cols:]):
        j = cols - len(right[-cols:]) + i
        if axis[j] == " ":
            axis[j] = ch
    out.append(" " * (GUTTER - 1) + "└", "dim")
    start = 0
    for i in range(1, cols + 1):
        if i == cols or styles[i] != styles[start]:
            out.append("".join(axis[start:i]), styles[start] or "dim")
            start = i
    return out
