"""A target for journal-size runs: 5-40 MiB bursts held 5-200 ms, a few a second.

spikewatch sample --limit 512M --journal /tmp/spiky.journal --duration 60s -- python bench/spiky_target.py
"""

from __future__ import annotations

import random
import time

rng = random.Random(1)
keep = bytearray(30 << 20)  # a baseline the bursts sit on
while True:
    burst = bytearray(rng.randint(5, 40) << 20)
    burst[::4096] = b"\x01" * len(burst[::4096])  # touch every page so RSS moves
    time.sleep(rng.uniform(0.005, 0.2))
    del burst
    time.sleep(rng.uniform(0.05, 0.5))
