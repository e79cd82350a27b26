import numpy as np
import pytest
from spikewatch.analysis import reader, report
from spikewatch.analysis.synth import MiB, Synth
from spikewatch.sampler.wire import protocol

from . import scenarios


def test_known_spikes_counts_heights_phases_and_causes(tmp_path):
    _, truth = scenarios.spiky(tmp_path / "sp.rec")
    rep = report.build_report(reader.load(tmp_path / "sp.rec"))
    spikes = rep["spikes"]
    assert rep["spikes_total"] == len(truth), [(s["t_start"], s["height_bytes"]) for s in spikes]
    for s, (st, h, ln) in zip(spikes, truth):
        assert s["t_start"] == pytest.approx(st, abs=0.002)
        assert s["height_bytes"] == pytest.approx(h, abs=1 * MiB)
        assert s["duration_ms"] == pytest.approx(ln * 1000, abs=2)
        assert s["phase"] == ("first" if st < 30 else "second")
    near = {s["t_start"]: [e.get("name") for e in s["near_events"]] for s in spikes}
    assert "cache warmed" in near[spikes[1]["t_start"]]
    assert any("threads 8 -> 24" == n for n in near[spikes[3]["t_start"]])
    # the 50 MiB step at 30 s is a new level, not a spike
    assert not any(29 < s["t_start"] < 31 for s in spikes)
    assert rep["peak_bytes"] == pytest.approx(350 * MiB, abs=1 * MiB)


def test_hwm_spike_between_samples_is_the_peak(tmp_path):
    s = Synth()
    t = s.times(20)
    s.samples(t, rss=np.full(len(t), 100 * MiB))
    s.event(
        int(t[10_000]),
        protocol.EV_HWM_SPIKE,
        series="rss",
        bytes=180 * MiB,
        t_from=int(t[9_999]),
        t_to=int(t[10_000]),
        sampled_max=100 * MiB,
    )
    s.write(tmp_path / "h.rec")
    rep = report.build_report(reader.load(tmp_path / "h.rec"))
    assert rep["peak_bytes"] == 180 * MiB and rep["peak_source"] == "hwm"
    assert rep["series"]["rss"]["sampled_peak_bytes"] == 100 * MiB
    assert rep["spikes_total"] == 1 and rep["spikes"][0]["source"] == "hwm"
    assert rep["spikes"][0]["height_bytes"] == 80 * MiB
    # the scrape view compares against the true (kernel) peak
    assert rep["scrape_view"]["15s"]["missed_fraction"] == pytest.approx(1 - 100 / 180, abs=1e-3)


def test_headline_is_the_limited_series(tmp_path):
    s = Synth(series=("rss", "cg_usage"), limit=256 * MiB)
    t = s.times(5)
    s.samples(t, rss=np.full(len(t), 100 * MiB), cg_usage=np.full(len(t), 150 * MiB))
    s.event(int(t[3000]), protocol.EV_OOM_KILL, pid=77, count=1)
    s.write(tmp_path / "l.rec")
    rep = report.build_report(reader.load(tmp_path / "l.rec"))
    assert rep["headline_series"] == "cg_usage" and rep["peak_bytes"] == 150 * MiB
    assert rep["limit_bytes"] == 256 * MiB and rep["headroom"] == pytest.approx(106 / 256, abs=1e-4)
    assert rep["oom_kills"] == [{"t": 3.0, "pid": 77, "last_bytes": 150 * MiB, "max_bytes_1s_before": 150 * MiB}]
    # after an OOM kill the need is above the limit: recommend from the limit up
    assert rep["recommended_limit_bytes"] >= 1.25 * 256 * MiB
    assert rep["checklist"]["limited"] is True
    s2 = Synth()
    s2.samples(t, rss=np.full(len(t), 100 * MiB))
    s2.write(tmp_path / "n.rec")
    rep2 = report.build_report(reader.load(tmp_path / "n.rec"))
    assert rep2["headline_series"] == "rss" and rep2["limit_bytes"] is None and rep2["headroom"] is None
    assert rep2["checklist"]["limited"] is False
    assert rep2["recommended_limit_bytes"] == 128 * MiB  # 100 MiB * 1.25 rounded up to 16 MiB steps
