"""Membership refreshes that skip reading the members while no process was created
(the pid counter stands) still see a process that joins without a fork."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
from spikewatch.sampler.daemon import Sampler, SamplerConfig, Target
from spikewatch.sampler.wire import protocol

from tests.support.cgroups import needs_cgroup

MiB = 1 << 20


@pytest.mark.cgroup
@needs_cgroup
def test_a_process_moved_into_the_limit_cgroup_joins_without_a_fork(endpoints):
    mover = subprocess.Popen(["sleep", "60"])  # made before the run: joining creates no pid
    c = SamplerConfig(
        Target(argv=["sleep", "60"]),
        publish=endpoints["publish"],
        inlet=None,
        journal="",
        duration_ns=2_500_000_000,
        quiet=True,
        limit=64 * MiB,
    )
    s = Sampler(c)
    state: dict[str, Any] = {"moved_t": None, "seen_t": None}

    def listen(topic: str, body: Any, packed: bytes) -> None:
        if topic != protocol.DETAIL or s.cg is None:
            return
        if state["moved_t"] is None and body["t"] - s.origin_t > 400_000_000:
            Path(s.cg.info.dir, "cgroup.procs").write_text(str(mover.pid))
            state["moved_t"] = body["t"]
        elif state["moved_t"] is not None and state["seen_t"] is None and mover.pid in body["pids"]:
            state["seen_t"] = body["t"]
            mover.kill()  # out before the run ends, or its cgroup could not be removed

    s.listeners.append(listen)
    try:
        s.run()
    finally:
        mover.kill()
        mover.wait()
    assert state["moved_t"] is not None
    # The refresh a second, whatever the pid counter says (detail times: sampler time).
    assert state["seen_t"] is not None, "the moved process never joined"
    assert state["seen_t"] - state["moved_t"] <= 1_300_000_000
