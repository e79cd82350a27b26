"""spikewatch compare on synthesised recordings with a known truth (see compare_scenarios)."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
from click.testing import CliRunner
from spikewatch.analysis import compare_align
from spikewatch.analysis.cli import report as report_cmd
from spikewatch.analysis.compare import BEYOND, compare, compare_reports, load_run
from spikewatch.analysis.compare_cli import compare as compare_cmd
from spikewatch.analysis.compare_html import overlay, page
from spikewatch.analysis.compare_render import markdown
from spikewatch.analysis.reader import load
from spikewatch.analysis.synth import MiB

from . import compare_scenarios as cs
from .test_analysis_cli import _Refs

PER_REQUEST = 512 * 1024


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    d = tmp_path_factory.mktemp("compare")
    starts = {
        "base": cs.run(d / "base.rec", per_request=PER_REQUEST, seed=1),
        # twice the memory per in-flight request; sampling began earlier and the ramp ran 30 % longer
        "double": cs.run(d / "double.rec", per_request=2 * PER_REQUEST, seed=2, lead=2.5, stretch=1.3),
        "leak": cs.run(d / "leak.rec", per_request=PER_REQUEST, seed=7, soak_slope_mib_h=3600.0),
    }
    for seed in (3, 4, 5, 6):  # the same service again: other noise, other timing
        starts[f"same{seed}"] = cs.run(
            d / f"same{seed}.rec",
            per_request=PER_REQUEST,
            seed=seed,
            lead=0.2 + 0.4 * seed % 1.7,
            stretch=0.8 + 0.1 * seed,
        )
    loaded = {k: load_run(d / f"{k}.rec") for k in starts}
    for k, r in loaded.items():
        (d / f"{k}.json").write_text(json.dumps(r.report, default=str))
    return d, loaded, starts


def _row(rows, metric):
    return next(r for r in rows if r.metric == metric)


def test_a_known_per_request_change_is_measured_within_5_percent_and_beyond_noise(runs):
    _, r, _ = runs
    rows = compare_reports(r["base"].report, r["double"].report)
    for name in ("bytes_per_request", "phase.climb.bytes_per_request"):
        row = _row(rows, name)
        assert row.change == pytest.approx(PER_REQUEST, rel=0.05)
        assert row.verdict == BEYOND and row.direction == "worse"
        assert row.base_ci and row.new_ci
    # what has no interval says so instead of a verdict
    assert _row(rows, "peak").verdict == "no interval"
    assert _row(rows, "oom").verdict == "same"


@pytest.mark.parametrize("seed", [3, 4, 5, 6])
def test_the_same_service_twice_is_nothing_beyond_noise(runs, seed):
    _, r, _ = runs
    rows = compare_reports(r["base"].report, r[f"same{seed}"].report)
    assert [x.metric for x in rows if x.verdict == BEYOND] == []
    assert _row(rows, "bytes_per_request").verdict == "within noise"
    assert _row(rows, "soak.slope").verdict == "within noise"


def test_a_leaking_soak_is_beyond_noise_and_fails_soak_slope_gate(runs):
    d, r, _ = runs
    rows = compare_reports(r["base"].report, r["leak"].report)
    assert _row(rows, "soak.slope").verdict == BEYOND and _row(rows, "soak.slope").direction == "worse"
    res = CliRunner().invoke(
        compare_cmd, [str(d / "base.json"), str(d / "leak.json"), "-q", "--fail-on", "soak.slope>0"]
    )
    assert res.exit_code == 1 and "soak.slope>0: soak.slope is" in res.stderr
    res = CliRunner().invoke(
        compare_cmd, [str(d / "base.json"), str(d / "same3.json"), "-q", "--fail-on", "soak.slope>0"]
    )
    assert res.exit_code == 0, res.stderr


def test_gates_exit_1_exactly_when_crossed(runs):
    d, r, _ = runs
    base, new = str(d / "base.json"), str(d / "double.json")
    change = _row(compare_reports(r["base"].report, r["double"].report), "phase.climb.rss.max").relative
    below, above = f"{(change * 100) - 0.5:.1f}", f"{(change * 100) + 0.5:.1f}"
    res = CliRunner().invoke(compare_cmd, [base, new, "-q", "--fail-on", f"phase.climb.rss.max>+{below}%"])
    assert res.exit_code == 1
    line = res.stderr.splitlines()[1]
    assert "phase.climb.rss.max went from" in line and "MiB to" in line and f"> +{below}%" in line
    res = CliRunner().invoke(compare_cmd, [base, new, "-q", "--fail-on", f"phase.climb.rss.max>+{above}%"])
    assert res.exit_code == 0, res.stderr
    # several NEWs: any one crossing fails the comparison, and the message names it
    res = CliRunner().invoke(
        compare_cmd, [base, str(d / "same3.json"), new, "-q", "--fail-on", "bytes_per_request>+50%"]
    )
    assert res.exit_code == 1 and "double.json: bytes_per_request>+50%" in res.stderr and "same3" not in res.stderr


def test_report_baseline_takes_the_same_gates(runs):
    d, _, _ = runs
    rec = str(d / "double.rec")
    res = CliRunner().invoke(
        report_cmd, [rec, "-q", "--baseline", str(d / "base.json"), "--fail-on", "bytes_per_request>+50%"]
    )
    assert res.exit_code == 1 and "bytes_per_request went from" in res.stderr
    res = CliRunner().invoke(
        report_cmd, [rec, "-q", "--baseline", str(d / "base.json"), "--fail-on", "bytes_per_request>+150%"]
    )
    assert res.exit_code == 0, res.stderr
    res = CliRunner().invoke(report_cmd, [rec, "-q", "--fail-on", "peak>+10%"])
    assert res.exit_code == 2 and "--baseline" in res.stderr and "Traceback" not in res.stderr


def test_overlay_lines_up_phase_starts_not_wall_clock(runs):
    d, r, starts = runs
    names = ["base", "double", "same4"]
    srcs = [(n, load(d / f"{n}.rec").main, r[n].report) for n in names]
    ov = compare_align.align(srcs, buckets=4000)
    # the runs' own phase starts differ by seconds...
    assert starts["double"]["rush"] - starts["base"]["rush"] > 2.0
    keys = [s.key for s in ov.segments]
    assert keys == [compare_align.BEFORE, "boot", "climb", "rush", "soak", compare_align.AFTER]
    assert ov.segment("boot").x0 == 0.0
    # ...each segment is as wide as its longest run, and they follow one another
    assert ov.segment("climb").width == pytest.approx(
        max(p["duration_s"] for _, _, rep in srcs for p in rep["phases"] if p["name"] == "climb"), abs=1e-3
    )
    for a, b in zip(ov.segments[1:-1], ov.segments[2:]):
        assert b.x0 == pytest.approx(a.x0 + a.width)
    for tr in ov.traces:
        for seg in ov.segments[1:-1]:
            inside = tr.x[(tr.x >= seg.x0 - 1e-9) & (tr.x < seg.x0 + seg.width)]
            # every run's first sample of a phase sits at the phase's start on the shared axis
            assert inside.min() == pytest.approx(seg.x0, abs=0.005)
        # the burst (+40 MiB from 1.0 s to 1.5 s into 'rush') lands at the same x in every run
        rush = ov.segment("rush")
        hot = tr.x[tr.hi > 90 * MiB]
        hot = hot[(hot >= rush.x0) & (hot < rush.x0 + rush.width)]
        assert hot.min() == pytest.approx(rush.x0 + 1.0, abs=0.01)
        assert hot.max() == pytest.approx(rush.x0 + 1.5, abs=0.01)
    # min and max of every bucket are kept: the envelope reaches the recording's own extremes
    for (_, src, _), tr in zip(srcs, ov.traces):
        v = src.series["rss"].v
        assert tr.hi.max() == v.max() and tr.lo.min() == v.min()


def test_html_page_is_self_contained_with_overlay_and_tables(runs, tmp_path):
    d, r, _ = runs
    c = compare(r["base"], [r["double"]], ["bytes_per_request>+50%"])
    text = page(c)
    assert text.startswith("<!DOCTYPE html>")
    refs = _Refs()
    refs.feed(text)
    assert refs.refs == [] and refs.scripts >= 2  # nothing loads from anywhere: plotly.js is inline
    assert "Plotly.newPlot" in text
    assert "phase climb (ramp)" in text and "beyond noise (worse)" in text
    assert "FAIL --fail-on bytes_per_request&gt;+50%" in text
    data = json.loads(
        re.search(r'<script type="application/json" id="compare-json">(.*?)</script>', text, re.S).group(1)
    )
    assert data["failed"] and "bytes_per_request" in data["comparisons"][0]["beyond_noise"]
    # a report JSON whose recording is gone is tabled but not drawn, and the page says so
    lone = tmp_path / "lone.json"
    rep = dict(r["same3"].report, recording=str(tmp_path / "gone.rec"))
    lone.write_text(json.dumps(rep, default=str))
    c2 = compare(r["base"], [load_run(lone)])
    ov, notes = overlay(c2)
    assert [t.label for t in ov.traces] == ["base.rec"] and "not drawn" in notes[0]


def test_markdown_for_a_pull_request(runs):
    _, r, _ = runs
    md = markdown(compare(r["base"], [r["double"]]))
    assert md.startswith("## spikewatch compare")
    assert "| metric | base.rec | double.rec | change | relative | verdict |" in md
    assert "<details><summary>phase <b>climb</b> (ramp): 1 beyond noise</summary>" in md
    assert re.search(r"\| bytes_per_request \| .* \| beyond noise \(worse\) :red_circle: \|", md)


def test_cli_writes_every_output_and_takes_run_folders(runs, tmp_path):
    d, _, _ = runs
    for name in ("base", "double"):
        (tmp_path / name).mkdir()
        shutil.copy(d / f"{name}.rec", tmp_path / name / "recording")
    res = CliRunner().invoke(
        compare_cmd,
        [
            str(tmp_path / "base"),
            str(tmp_path / "double"),
            "--json",
            str(tmp_path / "c.json"),
            "--md",
            str(tmp_path / "c.md"),
            "--html",
            str(tmp_path / "c.html"),
        ],
        terminal_width=200,
    )
    assert res.exit_code == 0, res.output
    assert " ".join(res.output.split()).startswith(
        "double against base: 1 change(s) beyond noise: bytes per in-flight request +"
    )
    data = json.loads((tmp_path / "c.json").read_text())
    rows = {x["metric"]: x for x in data["comparisons"][0]["rows"]}
    assert rows["bytes_per_request"]["verdict"] == BEYOND and rows["peak"]["verdict"] == "no interval"
    assert (tmp_path / "c.md").read_text().startswith("## spikewatch compare")
    assert "<!DOCTYPE html>" in (tmp_path / "c.html").read_text()[:30]
    res = CliRunner().invoke(compare_cmd, [str(d / "base.json"), str(d / "double.json"), "--md", "-"])
    assert res.exit_code == 0 and res.output.startswith("## spikewatch compare")


@pytest.mark.parametrize(
    "content,why",
    [
        (b"\xff" * 64, "neither a report JSON nor a readable recording"),
        (b'{"hello": 1}', "not a spikewatch report"),
        (b"{not json", "not a report JSON"),
    ],
)
def test_bad_inputs_are_one_line_errors(runs, tmp_path, content, why):
    d, _, _ = runs
    bad = tmp_path / "bad"
    bad.write_bytes(content)
    res = CliRunner().invoke(compare_cmd, [str(d / "base.json"), str(bad)])
    assert res.exit_code == 2 and why in res.stderr and "Traceback" not in res.stderr  # bad input: exit 2
    res = CliRunner().invoke(compare_cmd, [str(d / "base.json"), str(d / "double.json"), "--fail-on", "peak>>+1"])
    assert res.exit_code == 2 and "--fail-on" in res.stderr


def test_envelope_of_a_report_without_phases_is_one_segment(tmp_path):
    from spikewatch.analysis.synth import Synth

    s = Synth()
    t = s.times(2)
    s.samples(t, rss=np.full(len(t), 10 * MiB))
    s.write(tmp_path / "x.rec")
    r = load_run(tmp_path / "x.rec")
    ov = compare_align.align([("x", load(tmp_path / "x.rec").main, r.report)])
    assert [s.key for s in ov.segments] == [compare_align.AFTER] and len(ov.traces) == 1


def test_overlay_line_breaks_between_segments(runs):
    d, r, _ = runs
    ov = compare_align.align([("base", load(d / "base.rec").main, r["base"].report)])
    (tr,) = ov.traces
    x, y = compare_align.polyline(tr)
    # one break per segment boundary the run has data on both sides of, nothing drawn across it
    assert int(np.isnan(x).sum()) == len(tr.breaks) == len(ov.segments) - 1
    assert np.array_equal(np.isnan(x), np.isnan(y))
    kept = ~np.isnan(x)
    assert len(x[kept]) == 2 * len(tr.x) and y[kept].max() == tr.hi.max()
