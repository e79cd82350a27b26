"""The --fail-on grammar, old and new forms side by side, and gates that hold exactly when crossed."""

from __future__ import annotations

import pytest
from spikewatch.analysis import failon
from spikewatch.analysis.synth import MiB

# (expression, metric, kind, value, against): every form that existed before relative gates, unchanged
OLD = [
    ("peak>400MiB", "peak", "size", 400 * MiB, None),
    ("p99 >= 1GiB", "p99", "size", 1024 * MiB, None),
    ("recommended<512M", "recommended", "size", 512 * MiB, None),
    ("growth>10MiB/h", "growth", "rate", 10 * MiB, None),
    ("headroom<20%", "headroom", "percent", 0.2, None),
    ("oom>0", "oom", "count", 0, None),
    ("spikes>=6", "spikes", "count", 6, None),
    ("gaps!=0", "gaps", "count", 0, None),
    ("scrape_missed>50%", "scrape_missed", "percent", 0.5, None),
    ("scrape_missed_60s>=40%", "scrape_missed_60s", "percent", 0.4, None),
]
NEW = [
    ("peak > +10%", "peak", "size", 0.10, "relative"),
    ("peak>-5%", "peak", "size", -0.05, "relative"),
    ("startup_peak > +20MiB", "startup_peak", "size", 20 * MiB, "change"),
    ("soak.slope > 0", "soak.slope", "rate", 0.0, None),
    ("soak.slope > +5MiB/h", "soak.slope", "rate", 5 * MiB, "change"),
    ("time_to_ready > +500ms", "time_to_ready", "seconds", 0.5, "change"),
    ("time_to_ready > 2s", "time_to_ready", "seconds", 2.0, None),
    ("throughput < -10%", "throughput", "rps", -0.10, "relative"),
    ("latency_p99 > +20ms", "latency_p99", "seconds", 0.02, "change"),
    ("scrape_missed > +5pp", "scrape_missed", "percent", 0.05, "change"),
    ("scrape_missed > +5%", "scrape_missed", "percent", 0.05, "relative"),
    ("oom > +0", "oom", "count", 0, "change"),
    ("hwm_spikes>3", "hwm_spikes", "count", 3, None),
    ("bytes_per_request > +10%", "bytes_per_request", "size", 0.10, "relative"),
    ("recovery > +1s", "recovery", "seconds", 1.0, "change"),
    ("phase.climb.rss.p99 > +10%", "phase.climb.rss.p99", "size", 0.10, "relative"),
    ("phase.rush#2.working_set.max>1GiB", "phase.rush#2.working_set.max", "size", 1024 * MiB, None),
    ("phase.my-soak.slope > 0", "phase.my-soak.slope", "rate", 0.0, None),
]


@pytest.mark.parametrize("text,metric,kind,value,against", OLD + NEW)
def test_parse(text, metric, kind, value, against):
    c = failon.parse(text)
    assert (c.metric, c.kind, c.against) == (metric, kind, against)
    assert c.value == pytest.approx(value)
    assert c.needs_baseline == (against is not None)


@pytest.mark.parametrize(
    "text,why",
    [
        ("peak>>3", "not a valid size"),
        ("peak>lots", "not a valid size"),
        ("growth>10MiB", "per hour"),
        ("headroom<20", "percentage"),
        ("nonsense>1", "unknown metric"),
        ("oom>0.5", "not a valid count"),
        ("soak.slope>+5MiB", "per hour"),
        ("scrape_missed>+5", "pp"),
        ("peak>+%", "not a valid"),
        ("phase.climb.bogus>1", "unknown metric"),
        ("peak>+inf%", "not a valid"),
        ("time_to_ready>+soon", "not a valid"),
    ],
)
def test_malformed(text, why):
    with pytest.raises(failon.FailOnError, match=why):
        failon.parse(text)


def _report(
    peak: int,
    *,
    slope: tuple[float, float, float] | None = None,
    startup: int = 100 * MiB,
    per_request: tuple[int, int, int] | None = None,
    throughput: float = 100.0,
) -> dict:
    phases = [
        {
            "name": "boot",
            "kind": "startup",
            "t_start": 0.0,
            "t_end": 1.0,
            "duration_s": 1.0,
            "peak_bytes": startup,
            "startup_peak_bytes": startup,
            "time_to_ready_s": 1.0,
        }
    ]
    if per_request:
        phases.append(
            {
                "name": "climb",
                "kind": "ramp",
                "t_start": 1.0,
                "t_end": 11.0,
                "duration_s": 10.0,
                "peak_bytes": peak,
                "bytes_per_request": per_request[0],
                "bytes_per_request_ci": list(per_request[1:]),
                "load": {"completed": int(throughput * 10), "throughput_rps": throughput},
            }
        )
    if slope:
        phases.append(
            {
                "name": "soak",
                "kind": "soak",
                "t_start": 11.0,
                "t_end": 71.0,
                "duration_s": 60.0,
                "peak_bytes": peak,
                "growth": {"bytes_per_hour": int(slope[0] * MiB), "ci_mib_per_hour": [slope[1], slope[2]]},
            }
        )
    return {
        "peak_bytes": peak,
        "phases": phases,
        "headline_series": "rss",
        "series": {},
        "oom_kills": [],
        "events": {},
        "samples": {"gaps": 0},
    }


BASE = _report(100 * MiB, slope=(0.0, -1.0, 1.0), per_request=(1 * MiB, 900_000, 1_150_000))


@pytest.mark.parametrize(
    "expr,new,holds",
    [
        # exactly at the threshold is not past it; one step beyond is
        ("peak>+10%", _report(110 * MiB), False),
        ("peak>=+10%", _report(110 * MiB), True),
        ("peak>+10%", _report(110 * MiB + 1), True),
        ("peak>+10MiB", _report(110 * MiB), False),
        ("peak>=+10MiB", _report(110 * MiB), True),
        ("peak<-5%", _report(95 * MiB), False),
        ("peak<-5%", _report(95 * MiB - 1), True),
        ("startup_peak>+20MiB", _report(100 * MiB, startup=121 * MiB), True),
        ("startup_peak>+20MiB", _report(100 * MiB, startup=119 * MiB), False),
        ("peak>400MiB", _report(401 * MiB), True),  # the old absolute form, judged on the new run
        ("peak>400MiB", _report(399 * MiB), False),
        # soak.slope > 0: only when the whole interval is above 0, so a flat soak's noise does not fail a build
        ("soak.slope>0", _report(100 * MiB, slope=(0.5, -0.3, 1.3)), False),
        ("soak.slope>0", _report(100 * MiB, slope=(3.0, 0.2, 5.0)), True),
        # a change on a metric with intervals must also be beyond noise
        ("bytes_per_request>+10%", _report(100 * MiB, per_request=(int(1.2 * MiB), 1_000_000, 1_500_000)), False),
        ("bytes_per_request>+10%", _report(100 * MiB, per_request=(2 * MiB, 2_000_000, 2_200_000)), True),
        ("throughput<-10%", _report(100 * MiB, per_request=(MiB, 900_000, 1_150_000), throughput=85.0), True),
        ("throughput<-10%", _report(100 * MiB, per_request=(MiB, 900_000, 1_150_000), throughput=95.0), False),
    ],
)
def test_relative_gates_hold_exactly_when_crossed(expr, new, holds):
    failed = failon.check(new, [expr], baseline=BASE)
    assert bool(failed) == holds, failed


def test_failure_names_metric_both_values_and_threshold():
    (line,) = failon.check(_report(120 * MiB), ["peak > +10%"], baseline=BASE)
    assert line == "peak > +10%: peak went from 100.0 MiB to 120.0 MiB (+20.0%; fails when the change is > +10.0%)"
    (line,) = failon.check(_report(100 * MiB, startup=130 * MiB), ["startup_peak>+20MiB"], baseline=BASE)
    assert "startup_peak went from 100.0 MiB to 130.0 MiB (+30.0 MiB;" in line and "> +20.0 MiB" in line


def test_a_change_without_a_baseline_or_value_fails_and_says_why():
    (line,) = failon.check(_report(100 * MiB), ["peak>+10%"])
    assert "needs a baseline" in line
    (line,) = failon.check(_report(100 * MiB), ["soak.slope>+1MiB/h"], baseline=BASE)
    assert "not available in this run" in line
