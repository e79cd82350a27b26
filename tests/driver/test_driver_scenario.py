"""Scenario files: the documented example (docs/scenarios.md) parses; bad ones are rejected naming the field."""

from __future__ import annotations

import subprocess
import tomllib

import pytest
from spikewatch.driver.scenario import ScenarioError, bundled, load_scenario, parse_scenario

DESIGN_EXAMPLE = """
[target]
url = "http://127.0.0.1:8080"
ready = "/health"

[[requests]]
name = "ingest"
method = "POST"
path = "/ingest"
weight = 3
body = { size = "lognormal", median = "200KiB", sigma = 0.8, max = "4MiB", content = "json" }

[[phases]]
name = "boot"
kind = "startup"

[[phases]]
name = "climb"
kind = "ramp"
concurrency = [1, 64]
steps = 8
duration = "2m"

[[phases]]
name = "rush"
kind = "burst"
rate = 100
burst = { every = "20s", length = "2s", rate = 2000 }
duration = "1m"

[[phases]]
name = "long"
kind = "soak"
rate = 200
duration = "30m"

[thresholds]
error_rate = "<1%"
p99 = "<500ms"
"""


def parse(text: str):
    return parse_scenario(tomllib.loads(text))


def test_design_example_parses_into_typed_phases() -> None:
    sc = parse(DESIGN_EXAMPLE)
    assert sc.target.port == 8080 and sc.target.ready == "/health"
    body = sc.requests[0].body
    assert body is not None and body.dist == "lognormal" and body.median == 200 * 1024 and body.max == 4 << 20
    assert [p.kind for p in sc.phases] == ["startup", "ramp", "burst", "soak"]
    ramp, burst, soak = sc.phases[1:]
    assert ramp.concurrency == (1, 64) and ramp.steps == 8 and ramp.duration_ns == 120 * 10**9
    assert ramp.model == "closed" and burst.model == "open" and soak.model == "open"
    assert burst.burst is not None and burst.burst.every_ns == 20 * 10**9 and burst.burst.rate == 2000
    assert burst.burst.at_ns == 20 * 10**9  # first burst one period in: the baseline shows first
    assert [t.text for t in sc.thresholds] == ["error_rate < 1%", "p99 < 500ms"]
    assert sc.thresholds[0].value == pytest.approx(0.01) and sc.thresholds[1].value == 500e6


def test_bundled_scenarios_are_valid() -> None:
    demo = load_scenario(bundled("demo"))
    kinds = {p.kind for p in demo.phases}
    assert {"startup", "ramp", "burst", "idle", "soak"} <= kinds
    assert 60e9 <= demo.duration_ns <= 90e9
    quick = load_scenario(bundled("quick"))
    assert quick.duration_ns <= 5e9
    staggered = load_scenario(bundled("staggered"))
    ramps = [p for p in staggered.phases if p.kind == "ramp"]
    assert [p.requests for p in ramps] == [("big",), ("small",)]  # one endpoint at a time
    assert ramps[0].params()["requests"] == ["big"]


BASE = 'phases = [{ name = "s", kind = "steady", rate = 10, duration = "1s" }]\n[target]\nurl = "http://127.0.0.1:1"\n'


@pytest.mark.parametrize(
    "text, message",
    [
        (
            '[target]\nurl = "http://x:1"\n[[phases]]\nkind = "burst"\nrate = 10\nduration = "1m"\n'
            'burst = { every = 5, length = "1s", rate = 100 }',
            'phases[0].burst.every: expected a duration like "20s", got 5',
        ),
        (
            '[target]\nurl = "http://x:1"\n[[phases]]\nkind = "steady"\nrate = 10\nconcurrency = 3\nduration = "1s"',
            "phases[0]: give exactly one of rate",
        ),
        (
            '[target]\nurl = "http://x:1"\n[[phases]]\nkind = "sprint"\nduration = "1s"',
            "phases[0].kind: expected one of startup, ramp",
        ),
        (
            '[target]\nurl = "http://x:1"\n[[phases]]\nkind = "steady"\nrate = 10\nduration = "1s"\nrat = 3',
            "phases[0].rat: unknown field (allowed here:",
        ),
        ('[target]\nurl = "ftp://x"\n[[phases]]\nkind = "idle"\nduration = "1s"', "target.url: expected http://"),
        ('[[phases]]\nkind = "idle"\nduration = "1s"', "target: missing"),
        ('[target]\nurl = "http://x:1"\n[[phases]]\nkind = "startup"', "phases[0]: a startup phase needs target.ready"),
        (
            '[target]\nurl = "http://x:1"\n[[phases]]\nkind = "steady"\nrate = [1, 5]\nduration = "1s"',
            "phases[0].rate: a steady phase takes one rate",
        ),
        (
            '[target]\nurl = "http://x:1"\n[[phases]]\nkind = "steady"\nconcurrency = 4\narrivals = "poisson"\n'
            'duration = "1s"',
            "phases[0].arrivals: arrivals shape an open model",
        ),
        (
            '[target]\nurl = "http://x:1"\n[[phases]]\nkind = "burst"\nconcurrency = 4\nduration = "1m"\n'
            'burst = { every = "10s", length = "1s", rate = 100 }',
            "phases[0].burst.rate: the phase has a concurrency",
        ),
        (
            '[target]\nurl = "http://x:1"\n[[phases]]\nkind = "burst"\nrate = 4\nduration = "1m"\n'
            'burst = { every = "10s", length = "10s", rate = 100 }',
            "phases[0].burst.length: must be shorter than every",
        ),
        (
            '[target]\nurl = "http://x:1"\n[[requests]]\nbody = { size = "lognormal", median = "1M" }\n'
            '[[phases]]\nkind = "idle"\nduration = "1s"',
            'requests[0].body.sigma: missing: size = "lognormal" needs',
        ),
        (
            '[target]\nurl = "http://x:1"\n[[requests]]\nbody = { size = "fixed", value = "12 parsecs" }\n'
            '[[phases]]\nkind = "idle"\nduration = "1s"',
            "requests[0].body.value: expected a size like",
        ),
        (
            '[target]\nurl = "http://x:1"\n[[requests]]\nbody = { size = "empirical", file = "/nonexistent/sizes" }\n'
            '[[phases]]\nkind = "idle"\nduration = "1s"',
            "requests[0].body.file: cannot read the sizes file",
        ),
        (BASE + '[thresholds]\np99 = "500ms"', "thresholds.p99: expected a condition starting with <"),
        (BASE + '[thresholds]\np42 = "<5ms"', "thresholds.p42: unknown field"),
        (
            '[target]\nurl = "http://x:1"\n[[phases]]\nname = "a"\nkind = "idle"\nduration = "1s"\n'
            '[[phases]]\nname = "a"\nkind = "idle"\nduration = "1s"',
            "phases[1].name: 'a' is already the name",
        ),
        (
            '[target]\nurl = "http://x:1"\n[[phases]]\nkind = "idle"\nduration = "0s"',
            "phases[0].duration: must be longer",
        ),
        (
            '[target]\nurl = "http://x:1"\n[[requests]]\nname = "a"\n[[phases]]\nkind = "steady"\nrate = 1\n'
            'duration = "1s"\nrequests = ["b"]',
            "phases[0].requests: no [[requests]] named 'b' (there are: a)",
        ),
        (
            '[target]\nurl = "http://x:1"\n[[phases]]\nkind = "steady"\nrate = 1\nduration = "1s"\nrequests = "a"',
            "phases[0].requests: expected a list of request names",
        ),
    ],
)
def test_bad_scenarios_name_the_field_and_what_is_allowed(text: str, message: str) -> None:
    with pytest.raises(ScenarioError) as info:
        parse(text)
    assert message in str(info.value)


def test_empirical_sizes_file_relative_to_the_scenario(tmp_path) -> None:
    (tmp_path / "sizes.txt").write_text("# observed in production\n1024\n2KiB\n\n300000, from march\n")
    (tmp_path / "s.toml").write_text(
        '[target]\nurl = "http://127.0.0.1:1"\n[[requests]]\nmethod = "POST"\n'
        'body = { size = "empirical", file = "sizes.txt" }\n[[phases]]\nkind = "idle"\nduration = "1s"\n'
    )
    sc = load_scenario(tmp_path / "s.toml")
    assert sc.requests[0].body.sizes == (1024, 2048, 300000)


def test_cli_rejects_a_bad_scenario_cleanly(tmp_path, spikewatch_cmd) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(
        '[target]\nurl = "http://127.0.0.1:1"\n[[phases]]\nkind = "burst"\nrate = 1\n'
        'duration = "1m"\nburst = { every = 5, length = "1s", rate = 9 }\n'
    )
    out = subprocess.run([*spikewatch_cmd, "drive", str(bad)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2  # bad input (README: exit statuses)
    assert 'phases[0].burst.every: expected a duration like "20s", got 5' in out.stderr
    assert "Traceback" not in out.stderr
    broken = tmp_path / "broken.toml"
    broken.write_text("[target\n")
    out = subprocess.run([*spikewatch_cmd, "drive", str(broken)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "not valid TOML" in out.stderr and "Traceback" not in out.stderr
