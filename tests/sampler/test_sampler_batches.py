"""The samples batches on the detail tier's grid: each detail comes right after the
batch of the same tick, what is due goes out together every batch period (by default
two detail intervals per wake-up of ZeroMQ's I/O thread), and every sample is in
exactly one batch and one detail interval."""

from __future__ import annotations

import time
from typing import Any

import pytest
from spikewatch.sampler.daemon import Sampler, SamplerConfig, Target
from spikewatch.sampler.wire import protocol


def _run(endpoints: dict[str, str], pid: int, **config: Any) -> tuple[Sampler, list[tuple[str, dict[str, Any]]]]:
    c = SamplerConfig(
        Target(pid=pid), publish=endpoints["publish"], inlet=None, journal="", duration_ns=700_000_000, quiet=True
    )
    for k, v in config.items():
        setattr(c, k, v)
    s = Sampler(c)
    seen: list[tuple[str, dict[str, Any]]] = []
    s.listeners.append(lambda topic, body, packed: seen.append((topic, dict(body))))
    s.listeners.append(lambda topic, body, packed: _sent_at.append(time.monotonic_ns()))
    assert s.run() == 0
    return s, seen


_sent_at: list[int] = []


def _bursts(seen: list[tuple[str, dict[str, Any]]]) -> list[list[str]]:
    """The topics of each publish: listeners are called back to back for one
    (µs apart), and publishes are ticks apart (ms)."""
    out: list[list[str]] = []
    at = _sent_at[-len(seen) :]
    for i, (topic, _) in enumerate(seen):
        if i == 0 or at[i] - at[i - 1] > 500_000:
            out.append([])
        out[-1].append(topic)
    return out


def test_default_batch_goes_out_with_two_details(endpoints, sleeper):
    s, seen = _run(endpoints, sleeper.pid)
    assert [b["seq"] for _, b in seen] == list(range(len(seen)))
    hello = next(b for t, b in seen if t == protocol.HELLO)
    assert hello["batch_period_ns"] == 200_000_000 == 2 * hello["detail_period_ns"]
    # Two detail intervals a publish (events, an overrun on a busy host, go out at once
    # with what was held: never more than two, and most carry two).
    per_burst = [b.count(protocol.DETAIL) for b in _bursts(seen)]
    assert max(per_burst) == 2 and per_burst.count(2) >= 2, per_burst
    details = [i for i, (t, _) in enumerate(seen) if t == protocol.DETAIL]
    batches = [b for t, b in seen if t == protocol.SAMPLES]
    assert len(details) >= 5
    # Every detail comes right after the batch of its tick (the run's final detail,
    # after the last batch went out, may have none); events (an overrun on a busy
    # host) go out between bursts, never between a batch and its detail.
    assert all(seen[i - 1][0] == protocol.SAMPLES for i in details[:-1])
    assert len(batches) <= len(details)
    times = [t for b in batches for t in protocol.sample_times(b)]
    assert len(times) == s.samples == len(set(times))
    # Each detail's sample_max covers the batch just before it (read before that batch
    # was taken: the open batch counts), and every batch since the previous detail.
    prev = 0
    for i in details[:-1]:
        since = [max(b["series"]["rss"]) for t, b in seen[prev:i] if t == protocol.SAMPLES]
        assert seen[i][1]["sample_max"] == max(since)
        prev = i


@pytest.mark.parametrize("batch_ms", [20, 250])
def test_other_batch_periods(endpoints, sleeper, batch_ms):
    s, seen = _run(endpoints, sleeper.pid, batch_ns=batch_ms * 1_000_000)
    batches = [b for t, b in seen if t == protocol.SAMPLES]
    details = [b for t, b in seen if t == protocol.DETAIL]
    times = [t for b in batches for t in protocol.sample_times(b)]
    assert len(times) == s.samples == len(set(times))
    # Details stay every 100 ms whatever the batch period; each is preceded by the
    # batch holding the samples up to it, so batches are at least as many.
    assert len(details) >= 5 and len(batches) >= len(details)
    if batch_ms == 20:
        assert len(batches) >= 3 * len(details)
    assert next(b for t, b in seen if t == protocol.HELLO)["batch_period_ns"] == batch_ms * 1_000_000
