"""The Textual console driven by its test pilot against real PUB sockets."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import pytest
import zmq
from spikewatch.analysis.console.app import ConsoleApp, ConsoleOptions
from spikewatch.sampler.wire import protocol

from tests.conftest import free_port
from tests.support.waiting import scaled

from .publisher import Publisher

MiB = 1 << 20
pytestmark = pytest.mark.timeout(60)


def ep() -> str:
    return f"tcp://127.0.0.1:{free_port()}"


async def until(pilot, cond: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + scaled(timeout)
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await pilot.pause(0.05)


def screen_text(app: ConsoleApp) -> str:
    return "\n".join(strip.text for strip in app.screen._compositor.render_strips())


def only_panel(app: ConsoleApp):
    (panel,) = app.panels.values()
    return panel


def ready(app: ConsoleApp) -> bool:
    """A panel exists, its sampler's hello arrived (up to 1 s after joining) and it has drawn."""
    return bool(app.panels) and only_panel(app).src.session is not None and only_panel(app).chart.frame is not None


async def test_a_2ms_spike_reaches_full_height_in_its_column() -> None:
    endpoint = ep()
    with Publisher(endpoint, baseline=100 * MiB) as pub:
        app = ConsoleApp([endpoint], ConsoleOptions(window_s=10))
        async with app.run_test(size=(120, 30)) as pilot:
            await until(pilot, lambda: ready(app))
            # Scheduled ahead: the publisher may already have sent samples up to 'now'.
            a, b = pub.spike(180 * MiB, 2_000_000, delay_ns=100_000_000)
            chart = only_panel(app).chart
            # A frame ends at its last bucket's end, up to one bucket past the newest sample:
            # wait for a frame drawn once the newest sample is past the spike.
            await until(
                pilot,
                lambda: (
                    chart.frame.t_end - (chart.frame.t_end - chart.frame.t_start) // len(chart.frame.maxs)
                    > b + 50_000_000
                ),
            )
            frame = chart.frame
            assert np.nanmax(frame.maxs) == 180 * MiB
            spike_cols = np.flatnonzero(frame.maxs == 180 * MiB)
            assert 1 <= len(spike_cols) <= 2  # 2 ms in a 10 s window: one column (two at a border)
            span = frame.t_end - frame.t_start
            assert abs(int(spike_cols[0]) - (a - frame.t_start) * len(frame.maxs) // span) <= 1
            assert np.nanmin(frame.mins) == 100 * MiB
            # Drawn: the spike's column is filled, in the band colour, from the baseline up to
            # the spike's level, and nothing above it.
            from spikewatch.analysis.console.chart import BAND, EIGHTHS, EMPTY, envelope_matrix

            cells = envelope_matrix(frame)
            col = cells[::-1, spike_cols[0]]  # eighths from the bottom
            top, base = frame.level(180 * MiB), frame.level(100 * MiB)
            assert top - base > 2 * EIGHTHS  # the spike spans cells on this axis
            assert (col[base:top] == BAND).all() and (col[top:] == EMPTY).all()
            # Peak and limit in the headroom line; sampler health is shown.
            text = screen_text(app)
            assert "peak 180.0 MiB" in text and "limit 256.0 MiB" in text, text
            assert "stream gaps 0" in text
            src = only_panel(app).src
            assert src.draw_lag.count > 0 and src.draw_lag.last < 5_000_000_000


async def test_oom_kill_shows_a_banner_and_events_are_listed() -> None:
    endpoint = ep()
    with Publisher(endpoint) as pub:
        # rss: the series the hwm_spike below is about (the default, auto, would pick cg_usage here).
        app = ConsoleApp([endpoint], ConsoleOptions(series="rss"))
        async with app.run_test(size=(140, 30)) as pilot:
            await until(pilot, lambda: bool(app.panels))
            assert not app.query_one("#oom").has_class("shown")
            pub.marker(protocol.PHASE_START, "burst")
            pub.send(
                protocol.LOAD,
                interval_ns=1_000_000_000,
                rate=1234.0,
                in_flight=17,
                errors={"timeout": 3},
                lat_p99_ns=42_000_000,
            )
            pub.event(protocol.EV_HWM_SPIKE, series="rss", bytes=300 * MiB, t_from=0, t_to=1, sampled_max=100 * MiB)
            pub.event(protocol.EV_OOM_KILL, pid=4242, count=1, last_bytes=256 * MiB)
            await until(pilot, lambda: app.query_one("#oom").has_class("shown"))
            await until(pilot, lambda: "in flight 17" in screen_text(app))
            # The event list dates its lines by the sampler's hello (sent every second).
            await until(pilot, lambda: "hwm_spike" in screen_text(app))
            text = screen_text(app)
            assert "OOM KILL" in text and "pid 4242" in text
            assert "phase burst" in text and "1234 req/s" in text and "errors 3" in text
            assert "p99 42.0 ms" in text
            assert "hwm_spike" in text  # the list wraps long lines; the whole line is:
            assert any(e.text.startswith("hwm_spike rss 300.0 MiB") for e in only_panel(app).src.events)
            # The kernel's high-water mark counts as the peak though no sample saw it.
            assert "peak 300.0 MiB" in text


async def test_pause_freezes_the_chart_until_resumed() -> None:
    endpoint = ep()
    with Publisher(endpoint) as pub:
        app = ConsoleApp([endpoint], ConsoleOptions(window_s=5))
        async with app.run_test(size=(100, 24)) as pilot:
            await until(pilot, lambda: app.panels and only_panel(app).chart.frame is not None)
            await pilot.press("p")
            chart = only_panel(app).chart
            await pilot.pause(0.2)
            frozen_end, frozen_max = chart.frame.t_end, np.nanmax(chart.frame.maxs)
            pub.spike(500 * MiB, 5_000_000)
            await pilot.pause(1.0)
            assert "PAUSED" in screen_text(app)
            assert chart.frame.t_end == frozen_end and np.nanmax(chart.frame.maxs) == frozen_max
            # Changing the window while paused redraws the same moment.
            await pilot.press("minus")
            await pilot.pause(0.2)
            assert chart.frame.t_end == frozen_end
            assert 5_000_000_000 <= chart.frame.t_end - chart.frame.t_start < 5_100_000_000  # 5 s is the shortest
            await pilot.press("p")
            await until(pilot, lambda: chart.frame.t_end > frozen_end and np.nanmax(chart.frame.maxs) == 500 * MiB)


async def test_window_and_series_keys() -> None:
    endpoint = ep()
    # batches every 200 ms, not 20: the pilot waits for the app to go idle after each key
    with Publisher(endpoint, batch_ns=200_000_000) as pub:
        app = ConsoleApp([endpoint], ConsoleOptions(window_s=30, series="rss"))  # "s" cycles from rss
        async with app.run_test(size=(100, 24)) as pilot:
            await until(pilot, lambda: bool(app.panels))
            await pilot.press("plus")
            assert app.view.window_ns == 60_000_000_000
            await pilot.press("minus", "minus", "minus", "minus")
            assert app.view.window_ns == 5_000_000_000  # stops at the shortest
            await pilot.press("s")
            assert app.view.series == "cg_usage"
            await until(pilot, lambda: "window 5s  series cg_usage" in screen_text(app))
            await until(pilot, lambda: only_panel(app).chart.frame.series == "cg_usage")
            # The working set comes with detail messages (~10 Hz): drawn as a held step line.
            for i in range(10):
                pub.send(protocol.DETAIL, cg_working_set=(90 + i) * MiB, cg_limit=256 * MiB)
                await pilot.pause(0.1)
            await pilot.press("s")
            assert app.view.series == "cg_working_set"
            await until(
                pilot,
                lambda: (
                    only_panel(app).chart.frame.series == "cg_working_set"
                    and np.nanmax(only_panel(app).chart.frame.maxs) == 99 * MiB
                ),
            )
            frame = only_panel(app).chart.frame
            drawn = np.flatnonzero(~np.isnan(frame.maxs))
            assert len(drawn) > 10 and np.all(np.diff(drawn) == 1)  # ~1 s of a 5 s window: continuous, not dots


async def test_note_key_sends_a_marker_to_the_inlet() -> None:
    endpoint, inlet = ep(), ep()
    ctx = zmq.Context.instance()
    pull = ctx.socket(zmq.PULL)
    pull.setsockopt(zmq.LINGER, 0)
    pull.bind(inlet)
    try:
        # batches every 200 ms, not 20: the pilot waits for the app to go idle after each key
        with Publisher(endpoint, batch_ns=200_000_000):
            app = ConsoleApp([endpoint], ConsoleOptions(inlet=[inlet]))
            async with app.run_test(size=(100, 24)) as pilot:
                await pilot.press("n")
                await pilot.press(*"cache warmed")
                await pilot.press("enter")
                await pilot.pause(0.2)
                assert pull.poll(5000), "no marker arrived at the inlet"
                topic, body = protocol.validate_inlet(pull.recv_multipart())
                assert topic == protocol.MARKER
                assert body["kind"] == protocol.NOTE and body["name"] == "cache warmed"
                assert app.notes_sent == ["cache warmed"]
                # The box is closed again and keys are back to the app.
                await pilot.press("p")
                assert app.paused
    finally:
        pull.close()


async def test_several_samplers_get_a_panel_each() -> None:
    eps = [ep(), ep(), ep()]
    # batches every 200 ms, not 20: the pilot waits for the app to go idle after each key
    pubs = [Publisher(e, baseline=(i + 1) * 100 * MiB, batch_ns=200_000_000).start() for i, e in enumerate(eps)]
    try:
        app = ConsoleApp(eps)
        async with app.run_test(size=(120, 45)) as pilot:
            await until(pilot, lambda: len(app.panels) == 3 and all(p.src.session for p in app.panels.values()))
            sessions = {p.src.session for p in app.panels.values()}
            assert sessions == {p.session for p in pubs}
            await until(pilot, lambda: all(p.chart.frame is not None for p in app.panels.values()))
            by_session = {p.src.session: p for p in app.panels.values()}
            for i, pub in enumerate(pubs):
                assert np.nanmax(by_session[pub.session].chart.frame.maxs) == (i + 1) * 100 * MiB
            # The height is shared: all three on screen at once, none squashed.
            await until(pilot, lambda: all(p.region.height >= 10 for p in app.panels.values()))
            assert max(p.region.bottom for p in app.panels.values()) <= 45 - 1  # above the footer
            await pilot.press("z")
            assert sum(p.display for p in app.panels.values()) == 1
            await pilot.press("z", "z", "z")
            assert all(p.display for p in app.panels.values())
    finally:
        for p in pubs:
            p.stop()


async def test_stream_gaps_are_counted_and_listed() -> None:
    endpoint = ep()
    with Publisher(endpoint) as pub:
        app = ConsoleApp([endpoint])
        async with app.run_test(size=(120, 24)) as pilot:
            await until(pilot, lambda: bool(app.panels) and only_panel(app).src.messages > 3)
            pub.skip_seq(7)
            await until(pilot, lambda: "stream gaps 7" in screen_text(app))
            assert "stream gap: 7" in screen_text(app)


async def test_duration_option_ends_the_app_by_itself() -> None:
    app = ConsoleApp([ep()], ConsoleOptions(duration_s=0.3))
    async with app.run_test(size=(80, 20)) as pilot:
        await until(pilot, lambda: not app.is_running, timeout=10)
    assert app.return_code == 0


async def test_a_restarted_sampler_gets_a_new_panel_and_the_old_one_says_ended() -> None:
    endpoint = ep()
    app = ConsoleApp([endpoint])
    async with app.run_test(size=(120, 40)) as pilot:
        with Publisher(endpoint) as first:
            await until(pilot, lambda: len(app.panels) == 1 and only_panel(app).src.session == first.session)
        with Publisher(endpoint) as second:
            await until(pilot, lambda: len(app.panels) == 2)
            old, new = app.panels.values()
            assert new.src.session == second.session and old.src.ended and not new.src.ended
            await until(pilot, lambda: "ended" in screen_text(app))
