"""The console against a real ``spikewatch sample`` sampling a real process."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from spikewatch.analysis.console.app import ConsoleApp
from spikewatch.analysis.console.options import ConsoleOptions

from tests.support.cgroups import require_memory_cgroup
from tests.support.sampler import spawn_sample, stop_sampler
from tests.support.waiting import scaled

from .test_console_app import screen_text, until

MiB = 1 << 20
pytestmark = pytest.mark.timeout(scaled(90))

# Waits for a trigger file, then holds 80 MiB (written, so resident) for 5 ms.
CHILD = """
import os, sys, time
trigger = sys.argv[1]
while not os.path.exists(trigger):
    time.sleep(0.01)
buf = b"x" * (80 << 20)
time.sleep(0.005)
del buf
open(trigger + ".done", "w").close()
time.sleep(30)
"""


async def test_console_shows_a_real_spike_notes_and_a_marker_from_mark(
    endpoints, spikewatch_cmd, tmp_path: Path
) -> None:
    trigger = tmp_path / "go"
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(CHILD))
    app = ConsoleApp([endpoints["publish"]], ConsoleOptions(inlet=[endpoints["inlet"]], window_s=10))
    sampler = spawn_sample(
        endpoints, "--no-journal", "--quiet", "--duration", "60s", "--", sys.executable, str(script), str(trigger)
    )
    try:
        async with app.run_test(size=(130, 32)) as pilot:
            await until(
                pilot,
                lambda: (
                    bool(app.panels)
                    and next(iter(app.panels.values())).src.session is not None
                    and next(iter(app.panels.values())).src.current.get("rss", 0) > 0
                ),
                timeout=30,
            )
            panel = next(iter(app.panels.values()))
            baseline = panel.src.current["rss"]
            trigger.touch()
            await until(pilot, lambda: (tmp_path / "go.done").exists(), timeout=30)
            await until(
                pilot,
                lambda: panel.chart.frame is not None and np.nanmax(panel.chart.frame.maxs) >= baseline + 75 * MiB,
                timeout=15,
            )
            frame = panel.chart.frame
            top = np.nanmax(frame.maxs)
            # The spike stays narrow (touching 80 MiB takes ~35 ms, longer on a busy host;
            # a bucket here is ~40 ms), and memory is back down afterwards.
            assert np.count_nonzero(frame.maxs >= baseline + 40 * MiB) <= 15
            await until(pilot, lambda: panel.src.current["rss"] < baseline + 20 * MiB)
            assert panel.src.peaks["rss"] >= top
            # A note from the n key goes to the sampler's inlet and comes back stamped.
            await pilot.press("n", *"warm", "enter")
            subprocess.run(
                [*spikewatch_cmd, "mark", "cache warmed", "--inlet", endpoints["inlet"]],
                check=True,
                capture_output=True,
                timeout=30,
            )
            notes = lambda: {e.text for e in panel.src.events if e.kind == "note"}  # noqa: E731
            await until(pilot, lambda: {"✎ warm", "✎ cache warmed"} <= notes())
            await until(pilot, lambda: "✎ warm" in screen_text(app))  # (long lines may wrap)
            text = screen_text(app)
            assert "stream gaps 0" in text
            await until(pilot, lambda: panel.src.achieved_hz is not None, timeout=10)
            assert panel.src.achieved_hz > 200  # health is fed from the sampler's counters
    finally:
        stop_sampler(sampler)


# Grows 8 MiB at a time past a 64 MiB limit once the console is listening.
GROW = """
import os, sys, time
while not os.path.exists(sys.argv[1]):
    time.sleep(0.01)
chunks = []
for i in range(40):
    chunks.append(b"\\x01" * (8 << 20))
    time.sleep(0.02)
print("survived", flush=True)
"""


@pytest.mark.cgroup
async def test_oom_kill_under_a_real_limit_raises_the_banner(endpoints, tmp_path: Path) -> None:
    require_memory_cgroup()
    trigger = tmp_path / "go"
    script = tmp_path / "grow.py"
    script.write_text(textwrap.dedent(GROW))
    app = ConsoleApp([endpoints["publish"]], ConsoleOptions(inlet=[endpoints["inlet"]], series="cg_usage"))
    sampler = spawn_sample(
        endpoints,
        "--no-journal",
        "--quiet",
        "--limit",
        "64M",
        "--duration",
        "60s",
        "--",
        sys.executable,
        str(script),
        str(trigger),
    )
    try:
        async with app.run_test(size=(130, 32)) as pilot:
            await until(
                pilot, lambda: bool(app.panels) and next(iter(app.panels.values())).src.session is not None, timeout=30
            )
            panel = next(iter(app.panels.values()))
            assert panel.src.limit == 64 * MiB  # from the sampler's hello
            trigger.touch()
            await until(pilot, lambda: app.query_one("#oom").has_class("shown"), timeout=30)
            # The banner is updated and shown at once; the screen draws it on a later
            # refresh (a while later on a slow, emulated CPU): wait for it there.
            await until(pilot, lambda: "OOM KILL" in screen_text(app), timeout=10)
            text = screen_text(app)
            assert "OOM KILL" in text and "limit 64.0 MiB" in text
            assert panel.src.peaks["cg_usage"] >= 56 * MiB
            assert "headroom" in text
        out, err = sampler.communicate(timeout=30)
        assert "survived" not in out
    finally:
        if sampler.poll() is None:
            sampler.kill()
            sampler.communicate(timeout=5)


async def test_console_starts_from_history_and_speaks_curve(endpoints, spikewatch_cmd, tmp_path: Path) -> None:
    from spikewatch.sampler.wire.security import client_options

    keys = tmp_path / "keys"
    made = subprocess.run([*spikewatch_cmd, "keys", str(keys)], capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    sampler = spawn_sample(
        endpoints,
        "--history",
        endpoints["history"],
        "--keys",
        str(keys),
        "--no-journal",
        "--quiet",
        "--duration",
        "60s",
        "--",
        sys.executable,
        "-c",
        "import time; time.sleep(60)",
    )
    try:
        from spikewatch.sampler.wire.client import StreamSubscriber

        # Some history to replay: 3 s from when sampling starts (a busy host can spend a
        # second or more starting the sampler's Python), so more than 2 s precede our join.
        with StreamSubscriber([endpoints["publish"]], socket_options=client_options(keys)) as first:
            assert first.recv(timeout_ms=30_000) is not None, "the sampler never started"
        time.sleep(3)
        # Without keys the stream stays closed to us.
        stranger = ConsoleApp([endpoints["publish"]])
        async with stranger.run_test(size=(100, 24)) as pilot:
            await pilot.pause(1.5)
            assert not stranger.panels
        joined_wall = time.time_ns()
        app = ConsoleApp(
            [endpoints["publish"]],
            ConsoleOptions(
                inlet=[endpoints["inlet"]],
                history=[endpoints["history"]],
                socket_options=client_options(keys),
                window_s=10,
            ),
        )
        async with app.run_test(size=(120, 30)) as pilot:
            await until(
                pilot, lambda: bool(app.panels) and next(iter(app.panels.values())).src.anchor is not None, timeout=30
            )
            src = next(iter(app.panels.values())).src
            with app.stream.lock:
                first_t = int(src.rings["rss"].window(0, 1 << 62)[0][0])
                first_wall = src.to_wall(first_t)
            assert first_wall < joined_wall - 2_000_000_000  # samples from before we joined
            assert src.gaps == 0  # history + live without a hole or a duplicate counted as one
            await pilot.press("n", *"curve", "enter")  # the inlet speaks CURVE too
            await until(pilot, lambda: any(e.text == "✎ curve" for e in src.events))
    finally:
        stop_sampler(sampler)
