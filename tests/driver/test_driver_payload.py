"""Payload sizes follow their distribution, repeat with a seed, and are sliced, not allocated."""

from __future__ import annotations

import json
import math
import random
import statistics

from spikewatch.driver.payload import Payloads, sample_size
from spikewatch.driver.scenario import BodySpec, RequestSpec


def _sizes(spec: BodySpec, n: int, seed: int = 3) -> list[int]:
    rng = random.Random(seed)
    return [sample_size(spec, rng) for _ in range(n)]


def test_lognormal_sizes_have_the_median_sigma_and_cap() -> None:
    spec = BodySpec("lognormal", median=200_000, sigma=0.8, max=4_000_000)
    sizes = _sizes(spec, 20_000)
    assert abs(statistics.median(sizes) / 200_000 - 1) < 0.05
    logs = [math.log(s) for s in sizes if s < 4_000_000]
    assert abs(statistics.pstdev(logs) - 0.8) < 0.06
    assert max(sizes) <= 4_000_000
    capped = BodySpec("lognormal", median=200_000, sigma=2.0, max=1_000_000)
    assert max(_sizes(capped, 5000)) == 1_000_000  # the cap is hit, never passed


def test_uniform_fixed_and_empirical() -> None:
    u = _sizes(BodySpec("uniform", min=1000, max=3000), 10_000)
    assert min(u) >= 1000 and max(u) <= 3000 and abs(statistics.mean(u) - 2000) < 30
    assert set(_sizes(BodySpec("fixed", value=777), 100)) == {777}
    e = _sizes(BodySpec("empirical", sizes=(10, 10, 10, 5000)), 8000)
    assert set(e) == {10, 5000} and abs(e.count(5000) / len(e) - 0.25) < 0.03


def test_same_seed_same_sizes() -> None:
    spec = BodySpec("lognormal", median=1000, sigma=1.0, max=100_000)
    assert _sizes(spec, 500, seed=9) == _sizes(spec, 500, seed=9)
    assert _sizes(spec, 500, seed=9) != _sizes(spec, 500, seed=10)


def test_bodies_are_slices_of_one_buffer_and_json_is_valid() -> None:
    spec = BodySpec("uniform", min=16, max=50_000, content="json")
    raw = BodySpec("uniform", min=0, max=50_000)
    reqs = (RequestSpec("a", "POST", "/", body=spec), RequestSpec("b", "POST", "/", body=raw))
    p = Payloads(reqs, random.Random(1))
    for _ in range(200):
        parts, n = p.body(spec)
        data = b"".join(bytes(x) for x in parts)
        assert len(data) == n and 16 <= n <= 50_000
        assert isinstance(json.loads(data)["data"], str)
        assert parts[1].obj is p._json.obj  # a view into the one buffer: nothing copied
        parts, n = p.body(raw)
        assert len(parts) == 1 and parts[0].nbytes == n and parts[0].obj is p._random.obj
