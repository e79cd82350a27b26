"""The effective limit: a cgroup whose own limit is unlimited under a limited parent
(how containers and pods nest) reports the parent's limit, and the report's headroom
and recommended limit use it. Runs on the host's v1 controller (hierarchical_memory_limit)
and in the live v2 lane (lowest memory.max / memory.high up the tree)."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from spikewatch.analysis import reader, report
from spikewatch.sampler import cgroup as cgm
from spikewatch.sampler.wire import protocol

from tests.support.cgroups import needs_cgroup, nested
from tests.support.sampler import MiB, Stream, run_sample, write_script

pytestmark = [pytest.mark.cgroup, needs_cgroup]


@pytest.fixture
def parent():
    cg = cgm.create_limited(96 * MiB, f"swtest-eff-{time.monotonic_ns()}")
    yield cg
    cgm.remove(cg)


def test_unlimited_child_reports_the_parents_limit(parent) -> None:
    inner = nested(parent, "pod")
    leaf = inner / "container"
    if parent.version == 2:
        (inner / "cgroup.subtree_control").write_text("+memory")
    leaf.mkdir()
    with cgm.MemoryCgroup(cgm.resolve(str(leaf))) as cg:
        assert cg.read_limit() is None  # its own: unlimited
        lim = cg.read_limits()
        assert lim == cgm.Limit(96 * MiB, None, parent.info.path, "max")
        assert cg.read_effective_limit() == 96 * MiB
        # A tighter limit nearer the leaf wins, and says where it is.
        limit_file = "memory.max" if cg.version == 2 else "memory.limit_in_bytes"
        (inner / limit_file).write_text(str(80 * MiB))
        assert cg.read_limits() == cgm.Limit(80 * MiB, None, parent.info.path + "/pod", "max")
        if cg.version == 2:
            # memory.high throttles before memory.max kills: the lower one bites first.
            (parent.info.dir / "memory.high").write_text(str(72 * MiB))
            assert cg.read_limits() == cgm.Limit(72 * MiB, None, parent.info.path, "high")
            (leaf / "memory.max").write_text(str(64 * MiB))
            assert cg.read_limits() == cgm.Limit(64 * MiB, 64 * MiB, parent.info.path + "/pod/container", "max")


def test_sampler_reports_headroom_against_the_inherited_limit(parent, tmp_path, endpoints) -> None:
    inner = nested(parent, "app")
    script = write_script(
        tmp_path,
        "hold.py",
        """
        import time
        x = b"\\x01" * (40 << 20)
        print("held", flush=True)
        time.sleep(30)
    """,
    )
    info = cgm.resolve(str(inner))
    child = cgm.spawn_in(info, [sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    journal = tmp_path / "eff.journal"
    try:
        assert child.stdout.readline().strip() == "held"
        res = run_sample(endpoints, "--cgroup", str(inner), "--duration", "1s", "--journal", str(journal))
        assert res.returncode == 0, res.stderr
    finally:
        child.kill()
        child.wait()
    s = Stream.from_journal(journal)
    hello = s.topic(protocol.HELLO)[-1]["cgroup"]
    assert hello["limit"] == 96 * MiB and hello["limit_own"] is None
    assert hello["limit_from"] == parent.info.path and hello["limit_kind"] == "max"
    assert all(d["cg_limit"] == 96 * MiB for d in s.topic(protocol.DETAIL))
    assert not s.events(protocol.EV_LIMIT_CHANGE)
    rep = report.build_report(reader.load(journal))
    assert rep["limit_bytes"] == 96 * MiB
    assert rep["limit_from"] == parent.info.path and rep["limit_kind"] == "max"
    assert rep["headroom"] is not None and 0.3 < rep["headroom"] < 0.65  # ~40+ MiB of 96
    assert rep["recommended_limit_bytes"] is not None
