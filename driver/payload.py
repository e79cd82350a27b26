"""Request bodies: sizes from a distribution, bytes sliced from one buffer made once.

A load generator that allocates a fresh multi-MiB body per request measures its own
allocator as much as the service. Bodies here are zero-copy ``memoryview`` slices of a
buffer generated at start (random bytes, or JSON-safe characters wrapped in a tiny
JSON envelope), at random offsets so the server cannot dedupe them.
"""

from __future__ import annotations

import math
import random

from .scenario import BodySpec, RequestSpec

JSON_PREFIX = b'{"data":"'
JSON_SUFFIX = b'"}'
_ALNUM = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
_TO_ALNUM = bytes(_ALNUM[i % len(_ALNUM)] for i in range(256))


def sample_size(spec: BodySpec, rng: random.Random) -> int:
    """One body size in bytes drawn from ``spec``'s distribution."""
    d = spec.dist
    if d == "fixed":
        return spec.value
    if d == "uniform":
        return rng.randint(spec.min, spec.max)
    if d == "lognormal":
        if spec.sigma == 0:
            return min(spec.median, spec.max)
        return min(spec.max, int(rng.lognormvariate(math.log(spec.median), spec.sigma)))
    return rng.choice(spec.sizes)


class Payloads:
    """Bodies for a request mix: ``parts(spec)`` -> (buffers to write, total length)."""

    def __init__(self, requests: tuple[RequestSpec, ...], rng: random.Random) -> None:
        self.rng = rng
        largest = max((r.body.largest for r in requests if r.body is not None), default=0)
        # Slack beyond the largest body gives varied offsets; capped so the driver stays small.
        size = largest + min(max(largest, 1 << 20), 16 << 20) if largest else 0
        raw = rng.randbytes(size) if size else b""
        self._random = memoryview(raw)
        self._json = (
            memoryview(raw.translate(_TO_ALNUM))
            if any(r.body is not None and r.body.content == "json" for r in requests)
            else memoryview(b"")
        )
        self._size = size

    def body(self, spec: BodySpec) -> tuple[list, int]:
        n = sample_size(spec, self.rng)
        if spec.content == "json":
            inner = max(0, n - len(JSON_PREFIX) - len(JSON_SUFFIX))
            off = self.rng.randint(0, self._size - inner)
            return [JSON_PREFIX, self._json[off : off + inner], JSON_SUFFIX], inner + len(JSON_PREFIX) + len(
                JSON_SUFFIX
            )
        off = self.rng.randint(0, self._size - n)
        return [self._random[off : off + n]], n
