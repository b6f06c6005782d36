"""Run one scenario with one driver: plan, drive, summarise.

    summary, series = run(load_scenario("split-view").with_overrides(nodes=200), "events")

`progress(now, end)` is called now and then with the virtual time reached (for a progress bar).
"""

from __future__ import annotations

import resource
import time
from collections.abc import Callable
from typing import Any

from .metrics import Series, summarize
from .observe import Observations
from .plan import make_plan
from .scenario import Scenario, ScenarioError

__all__ = ["DRIVERS", "Progress", "observe", "run"]

DRIVERS = ("events", "trio")
Progress = Callable[[float, float], None]


def observe(
    scenario: Scenario, driver: str = "events", progress: Progress | None = None
) -> Observations:
    plan = make_plan(scenario)
    if driver == "events":
        from .events_driver import run_events

        return run_events(plan, progress)
    if driver == "trio":
        from .trio_driver import run_trio

        return run_trio(plan, progress)
    raise ScenarioError(f"driver: one of {', '.join(DRIVERS)}, not {driver!r}")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run(
    scenario: Scenario, driver: str = "events", progress: Progress | None = None
) -> tuple[dict[str, Any], Series]:
    started = time.perf_counter()
    obs = observe(scenario, driver, progress)
    wall = time.perf_counter() - started
    return summarize(obs, wall_seconds=wall, peak_rss_mb=peak_rss_mb())
