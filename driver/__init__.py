"""The spikewatch load driver: TOML scenarios played on uvloop, with phase markers and
load telemetry on the sampler's stream.

Python API (used by ``spikewatch run``)::

    from spikewatch.driver import load_scenario, run_scenario
    result = run_scenario(load_scenario("scenario.toml").with_url("http://127.0.0.1:8080"),
                          inlet="tcp://127.0.0.1:7782")
    result.exit_code, result.to_json()

Heavy imports (uvloop, hdrhistogram) happen on first use, so ``import driver`` is cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .scenario import Scenario, ScenarioError, bundled, load_scenario, parse_scenario

if TYPE_CHECKING:
    from .run import DriveResult, Progress

__all__ = [
    "Scenario",
    "ScenarioError",
    "load_scenario",
    "parse_scenario",
    "bundled",
    "run_scenario",
    "DriveResult",
    "Progress",
]


def run_scenario(scenario: Scenario, **kwargs: Any) -> DriveResult:
    """Play a scenario; see :func:`spikewatch.driver.run.run_scenario` for the options."""
    from .run import run_scenario as _run

    return _run(scenario, **kwargs)


def __getattr__(name: str) -> Any:
    if name in ("DriveResult", "Progress"):
        from . import run

        return getattr(run, name)
    raise AttributeError(name)
