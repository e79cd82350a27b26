"""A filled min/max envelope chart in block characters, built with numpy and rich.

Every character column is one envelope bucket: the cells between the bucket's
min and max are filled in the bright colour, and the cells below its min in a
dark shade of it, so the chart reads as an area whose top edge is the
envelope. Eighth blocks (▁▂▃▄▅▆▇█) give each cell eight levels. The bucket
holding a 2 ms spike is a solid column up to the spike's height, whatever the
window; a column with data is never empty. The limit is a dashed line at its
height.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from rich.style import Style
from rich.text import Text
from spikewatch.sampler.units import format_bytes

from .envelope import minmax_envelope

EIGHTHS = 8  # levels per character cell
_BLOCKS = " ▁▂▃▄▅▆▇█"
LIMIT_GLYPH = "╌"
GUTTER = 11  # left margin for the value labels

# (band, fill below the min) per column: data, within 10 % of the limit, at or over it.
_PALETTES = (("green", "green4"), ("yellow", "yellow4"), ("red", "dark_red"))
STYLE_LIMIT = "red"
EMPTY, FILL, BAND = 0, 1, 2


@dataclass
class Frame:
    """What one chart draw showed: kept so tests and the bench can inspect it."""

    series: str
    t_start: int
    t_end: int
    mins: np.ndarray  # one entry per character column
    maxs: np.ndarray
    lo: float
    hi: float
    rows: int  # character rows
    limit: int | None

    @property
    def levels(self) -> int:
        """Vertical resolution: eighths of a cell."""
        return self.rows * EIGHTHS

    def level(self, value: float) -> int:
        """How many eighths, from the bottom, a column reaching ``value`` fills (at least 1)."""
        return int(value_level(value, self.lo, self.hi, self.levels))


def value_level(value: float | np.ndarray, lo: float, hi: float, levels: int) -> np.ndarray:
    """Filled height in eighths (1..levels) of ``value`` on an axis from ``lo`` to ``hi``."""
    scaled = (np.asarray(value, dtype=np.float64) - lo) / (hi - lo) * levels
    return np.clip(np.floor(scaled + 0.5), 1, levels).astype(np.int64)


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


def make_frame(
    t: np.ndarray, v: np.ndarray, series: str, t_start: int, t_end: int, columns: int, rows: int, limit: int | None
) -> Frame:
    """Envelope of ``(t, v)`` over ``[t_start, t_end]`` for a chart ``columns`` cells wide."""
    mins, maxs = minmax_envelope(t, v, t_start, t_end, max(1, columns))
    return frame_from_envelope(mins, maxs, series, t_start, t_end, rows, limit)


def frame_from_envelope(
    mins: np.ndarray, maxs: np.ndarray, series: str, t_start: int, t_end: int, rows: int, limit: int | None
) -> Frame:
    """A frame from ready-made buckets (one per character column)."""
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


def _heights(frame: Frame) -> tuple[np.ndarray, np.ndarray]:
    """Per column, in eighths from the bottom: the top of the data, and where the band starts."""
    valid = ~np.isnan(frame.maxs)
    top = np.where(valid, value_level(np.nan_to_num(frame.maxs), frame.lo, frame.hi, frame.levels), 0)
    # The band starts at the min's level and is at least one eighth tall.
    bottom = np.where(valid, value_level(np.nan_to_num(frame.mins), frame.lo, frame.hi, frame.levels) - 1, 0)
    return top, np.minimum(bottom, top - 1)


def envelope_matrix(frame: Frame) -> np.ndarray:
    """What each eighth shows, [eighth from the top, column]: EMPTY, FILL (below the min) or BAND."""
    top, bottom = _heights(frame)
    level = np.arange(frame.levels)[:, None]
    out = np.where(level < top[None, :], FILL, EMPTY)
    out[(level >= bottom[None, :]) & (level < top[None, :])] = BAND
    return out[::-1]


# Cell styles: 0 blank, then per palette (band, fill, fill on band), then the limit line.
_CELL_STYLES: list[str | Style | None] = [None]
for _band, _fill in _PALETTES:
    _CELL_STYLES += [_band, _fill, Style(color=_fill, bgcolor=_band)]
_LIMIT_STYLE = len(_CELL_STYLES)
_CELL_STYLES.append(STYLE_LIMIT)


def render_lines(frame: Frame) -> list[Text]:
    """The chart's text rows (without axis labels)."""
    rows, cols = frame.rows, len(frame.maxs)
    top, bottom = _heights(frame)
    palette = np.zeros(cols, dtype=np.int64)
    if frame.limit:
        peak = np.nan_to_num(frame.maxs)
        palette[peak >= 0.9 * frame.limit] = 1
        palette[peak >= frame.limit] = 2
    base = ((rows - 1 - np.arange(rows)) * EIGHTHS)[:, None]  # eighths below each row
    filled = np.clip(top[None, :] - base, 0, EIGHTHS)  # eighths with data in each cell, from its bottom
    dark = np.clip(bottom[None, :] - base, 0, EIGHTHS)  # of which below the band
    glyph = filled.copy()
    kind = np.zeros((rows, cols), dtype=np.int64)  # 0 blank, 1 band, 2 fill, 3 fill on band
    kind[filled > 0] = 1
    kind[(filled > 0) & (dark >= filled)] = 2
    # Dark below the min and bright above it in one full cell: a dark block on a bright ground.
    split = (filled == EIGHTHS) & (dark > 0) & (dark < filled)
    kind[split] = 3
    glyph[split] = dark[split]
    # (Dark, band and empty in one cell cannot be drawn: the band wins, as set above.)
    style = np.where(kind > 0, 1 + palette[None, :] * 3 + kind - 1, 0)
    chars = np.array(list(_BLOCKS))[glyph]
    if frame.limit and frame.lo <= frame.limit <= frame.hi:
        r = rows - 1 - min(rows - 1, int((frame.limit - frame.lo) / (frame.hi - frame.lo) * rows))
        empty = kind[r] == 0
        chars[r][empty] = LIMIT_GLYPH
        style[r][empty] = _LIMIT_STYLE
    lines = []
    for r in range(rows):
        text = Text()
        line = "".join(chars[r].tolist())
        bounds = np.flatnonzero(np.diff(style[r])) + 1
        start = 0
        for end in [*bounds.tolist(), cols]:
            text.append(line[start:end], _CELL_STYLES[style[r][start]])
            start = end
        lines.append(text)
    return lines


def render_chart(
    frame: Frame, window_label: str, right_label: str, marks: list[tuple[int, str, str]] | None = None
) -> Text:
    """Rows with value labels in a gutter, an axis row with event marks, then the time labels.

    ``marks`` are ``(t, glyph, style)`` placed under the column holding ``t``. They
    have their own row, so a mark never overwrites a letter of a label.
    """
    lines = render_lines(frame)
    rows, cols = frame.rows, len(frame.maxs)
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
    for t, glyph, style in marks or ():
        if frame.t_start <= t <= frame.t_end and span > 0:
            c = min(cols - 1, (t - frame.t_start) * cols // span)
            axis[c], styles[c] = glyph, style
    out.append(" " * (GUTTER - 1) + "└", "dim")
    start = 0
    for i in range(1, cols + 1):
        if i == cols or styles[i] != styles[start]:
            out.append("".join(axis[start:i]), styles[start] or "dim")
            start = i
    left, right = f"-{window_label}", right_label
    gap = max(1, cols - len(left) - len(right))
    out.append("\n" + " " * GUTTER + (left + " " * gap + right)[:cols], "dim")
    return out
