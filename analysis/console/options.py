"""Settings shared by the Textual app and the plain printer (no Textual import)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from spikewatch.sampler.wire import protocol

# The chart windows + and - step through.
WINDOWS_S: tuple[float, ...] = (5, 10, 30, 60, 300)


@dataclass
class ConsoleOptions:
    inlet: Sequence[str] = (protocol.DEFAULT_INLET,)  # where notes go (each one)
    window_s: float = 30.0
    series: str = "auto"  # the report headline's series (console.state.pick_series)
    fps: float = 15.0  # UI refreshes per second, at most
    limit: int | None = None  # overrides the limit the sampler reports
    title: str = "spikewatch console"
    duration_s: float | None = None  # stop by itself after this long
    # Per stream endpoint, in the same order: the sampler's history endpoint (or None),
    # asked once on connect so the window starts full (spikewatch.sampler.backfill).
    history: Sequence[str | None] = ()
    # ZeroMQ socket options for every socket (CURVE keys: spikewatch.sampler.wire.security.client_options).
    socket_options: Mapping[int, Any] = field(default_factory=dict)
    keys: str | None = None  # the --keys folder, named in handshake errors (spikewatch.sampler.wire.handshake)
    max_window_s: float = max(WINDOWS_S)  # the ring buffers hold this much (at 1 kHz)

    def __post_init__(self) -> None:
        self.max_window_s = max(self.max_window_s, self.window_s)
