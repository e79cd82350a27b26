import html.parser
import json
import re

import numpy as np
import pyarrow.csv
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from spikewatch.analysis import failon, reader, report
from spikewatch.analysis.cli import export
from spikewatch.analysis.cli import report as report_cmd
from spikewatch.analysis.synth import MiB

from . import scenarios

DESIGN_KEYS = {
    "version",
    "samples",
    "series",
    "headline_series",
    "peak_bytes",
    "peak_source",
    "limit_bytes",
    "recommended_limit_bytes",
    "scrape_view",
    "spikes",
    "phases",
    "oom_kills",
    "checklist",
}


@pytest.fixture(scope="module")
def spiky(tmp_path_factory):
    path = tmp_path_factory.mktemp("rec") / "spiky.rec"
    scenarios.spiky(path)
    return path


def test_json_has_every_design_key(spiky, tmp_path):
    out = tmp_path / "r.json"
    res = CliRunner().invoke(report_cmd, [str(spiky), "--json", str(out), "-q"])
    assert res.exit_code == 0, res.output
    rep = json.loads(out.read_text())
    assert DESIGN_KEYS <= set(rep)
    assert {"count", "achieved_hz", "gaps", "overruns"} <= set(rep["samples"])
    for st in rep["series"].values():
        assert {"peak_bytes", "peak_t", "mean_bytes", "p99_bytes"} <= set(st)
    assert set(rep["scrape_view"]) == {"15s", "30s", "60s"}
    for sv in rep["scrape_view"].values():
        assert {"max_bytes", "missed_fraction", "hit_probability"} <= set(sv)
    for s in rep["spikes"]:
        assert {"t_start", "duration_ms", "height_bytes", "baseline_bytes", "phase", "near_events"} <= set(s)
    for p in rep["phases"]:
        assert {"name", "kind", "t_start", "t_end", "peak_bytes", "mean_bytes"} <= set(p)
    assert set(rep["checklist"]) == {"release_build", "startup_captured", "burst_tested", "stabilized", "limited"}
    assert all(v in (True, False, None) for v in rep["checklist"].values())
    assert set(rep["checklist_reasons"]) == set(rep["checklist"])
    assert rep["peak_source"] in ("sampled", "hwm")


class _Refs(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.refs = []
        self.scripts = 0

    def handle_starttag(self, tag, attrs):
        if tag == "script":
            self.scripts += 1
        for k, v in attrs:
            if k in ("src", "href", "data", "poster", "srcset", "action") and v:
                self.refs.append((tag, k, v))


def test_html_is_self_contained_and_shows_every_phase(spiky, tmp_path):
    out = tmp_path / "r.html"
    res = CliRunner().invoke(report_cmd, [str(spiky), "--html", str(out), "-q"])
    assert res.exit_code == 0, res.output
    text = out.read_text()
    p = _Refs()
    p.feed(text)
    # no element loads anything: no src/href at all, so nothing from the network
    assert p.refs == [] and p.scripts >= 2
    assert not re.search(r"<(script|link|img|iframe)[^>]+(src|href)\s*=", text)
    assert "@import" not in text.split("<script")[0]
    # plotly.js is inline (its bundle mentions URLs for map tiles and geo data: unused here, never loaded)
    assert "Plotly.newPlot" in text and len(text) > 3_000_000
    for name in ("first", "second"):
        assert f"{name} (steady)" in text  # phase bands on the chart
        assert f"<td>{name}</td>" in text  # and rows in the phase table
    assert "Checklist" in text and "what a 15s scrape saw" in text and "cache warmed" in text
    rep = json.loads(re.search(r"<script type='application/json' id='report-json'>(.*?)</script>", text, re.S).group(1))
    assert rep["spikes_total"] == 5


def test_terminal_summary_leads_with_the_peak_and_the_scrape(spiky):
    res = CliRunner().invoke(report_cmd, [str(spiky)], terminal_width=160)
    assert res.exit_code == 0, res.output
    first = res.output.strip().splitlines()[0]
    assert first.startswith("true peak 350.") and "a 15s scrape would have shown 150." in first


@pytest.mark.parametrize(
    "expr,code",
    [
        ("peak>400MiB", 0),
        ("peak>300MiB", 1),
        ("oom>0", 0),
        ("spikes>4", 1),
        ("spikes>=6", 0),
        ("scrape_missed>60%", 0),
        ("scrape_missed>50%", 1),
        ("scrape_missed_60s>=40%", 1),
        ("growth>10MiB/h", 1),
        ("headroom<20%", 1),
        ("peak>1GiB,oom>0", 0),
        ("peak>1GiB,spikes>1", 1),
    ],
)
def test_fail_on_exit_codes(spiky, expr, code):
    res = CliRunner().invoke(report_cmd, [str(spiky), "-q", "--fail-on", expr])
    assert res.exit_code == code, res.output + res.stderr
    if code:
        assert "FAILED" in res.stderr


@pytest.mark.parametrize("expr", ["peak>>3", "peak>lots", "growth>10MiB", "headroom<20", "nonsense>1", "oom>0.5", ""])
def test_malformed_fail_on_is_a_usage_error(spiky, expr):
    if not expr:
        assert failon.parse_all([""]) == []
        return
    res = CliRunner().invoke(report_cmd, [str(spiky), "-q", "--fail-on", expr])
    assert res.exit_code == 2
    assert "--fail-on" in res.stderr and "Traceback" not in res.stderr


def test_failed_conditions_say_why(spiky):
    rep = report.build_report(reader.load(spiky))
    failed = failon.check(rep, ["peak>100MiB", "oom>0", "headroom<20%"])
    assert failed[0].startswith("peak>100MiB: peak is 350.")
    assert failed[1].startswith("headroom<20%: cannot be checked")
    assert len(failed) == 2


def test_bad_recordings_are_clear_errors(tmp_path):
    junk = tmp_path / "junk"
    junk.write_bytes(b"\xff" * 64)
    res = CliRunner().invoke(report_cmd, [str(junk)])
    assert res.exit_code == 2 and "cannot read" in res.stderr and "Traceback" not in res.stderr
    res = CliRunner().invoke(report_cmd, [str(tmp_path / "missing")])
    assert res.exit_code == 2


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_export_tables_open_with_pyarrow(spiky, tmp_path, fmt):
    res = CliRunner().invoke(export, [str(spiky), "--format", fmt, "-o", str(tmp_path / "x")])
    assert res.exit_code == 0, res.output
    read = pq.read_table if fmt == "parquet" else pyarrow.csv.read_csv
    samples = read(tmp_path / "x" / f"samples.{fmt}")
    assert samples.num_rows == 60_000 and {"t_ns", "t_s", "rss"} <= set(samples.column_names)
    assert max(samples.column("rss").to_pylist()) == pytest.approx(350 * MiB, abs=MiB)
    details = read(tmp_path / "x" / f"details.{fmt}")
    assert details.num_rows == 600 and "threads" in details.column_names
    markers = read(tmp_path / "x" / f"markers.{fmt}")
    assert "cache warmed" in markers.column("name").to_pylist()
    assert not (tmp_path / "x" / f"events.{fmt}").exists()  # no events in this recording: no empty table


def test_report_file_api_for_the_runner(spiky, tmp_path):
    from spikewatch.analysis.report import report_file

    rep = report_file(spiky, json_path=tmp_path / "r.json", html_path=tmp_path / "r.html", intervals_s=(15,))
    assert set(rep["scrape_view"]) == {"15s"}
    assert json.loads((tmp_path / "r.json").read_text())["peak_bytes"] == rep["peak_bytes"]
    assert (tmp_path / "r.html").read_text().startswith("<!DOCTYPE html>")
    assert failon.check(rep, ["oom>0"]) == []


def test_html_page_escapes_what_the_recording_says(tmp_path):
    """Phase names and notes come from whoever drove the load: the page shows them as text."""
    from spikewatch.analysis.synth import Synth
    from spikewatch.sampler.wire import protocol

    hostile = "<img src=x onerror=alert(1)>"
    S = 1_000_000_000
    s = Synth()
    t = s.times(4)
    s.samples(t, rss=(100 * MiB + (t - t[0]) // 1000).astype("int64"))
    s.phase(int(t[0]), int(t[0]) + 2 * S, hostile, "steady")
    s.marker(int(t[0]) + S, protocol.NOTE, hostile)
    rec = tmp_path / "hostile.rec"
    s.write(rec)
    rep = report.report_file(rec, html_path=tmp_path / "r.html", intervals_s=(15,))
    page = (tmp_path / "r.html").read_text()
    embedded = re.search(r"<script type='application/json' id='report-json'>(.*?)</script>", page, re.S)
    assert embedded
    # Inside the JSON script element markup is inert (only "</" could end it, and it is escaped).
    assert hostile not in page.replace(embedded.group(0), "")
    assert "&lt;img src=x onerror=alert(1)&gt;" in page  # the phases table, as text
    assert json.loads(embedded.group(1))["phases"][0]["name"] == hostile == rep["phases"][0]["name"]


def test_phase_labels_are_staggered_so_none_overlap():
    from spikewatch.analysis.html import stagger

    # Three 2 s phases early in a 600 s run (each label ~15 s wide on an 800 px chart), then one far away.
    starts, labels = [10.0, 12.0, 14.0, 300.0], ["boot (startup)", "warm (steady)", "climb (ramp)", "soak (soak)"]
    rows = stagger(starts, labels, 600.0)
    assert rows[:3] == [0, 1, 2] and rows[3] == 0
    # A row is reused as soon as the label before in it has ended; none overlap in any row.
    rng = np.random.default_rng(3)
    starts = sorted(rng.uniform(0, 600, 40).tolist())
    labels = [f"phase{i} (steady)" for i in range(40)]
    rows = stagger(starts, labels, 600.0, plot_px=800)
    width = (len(labels[0]) * 0.62 * 11 + 8) * 600.0 / 800
    for row in set(rows):
        xs = sorted(x for x, r in zip(starts, rows) if r == row)
        assert all(b - a >= width for a, b in zip(xs, xs[1:]))
    assert max(rows) < 10
