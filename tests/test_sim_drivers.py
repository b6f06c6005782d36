"""One scenario through both drivers: the same detections, the same propagation hop counts.

With one latency on every link and no relay delay, a head first reaches each node along a
shortest path in either driver, so the hop counts are a property of the network, and both
drivers must measure exactly them; and every honest node must hold evidence in both.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import attrs
import pytest

from simulations.metrics import summarize
from simulations.plan import make_plan
from simulations.runner import observe
from simulations.scenario import (
    Attack,
    Builders,
    Distribution,
    EngineSettings,
    Network,
    Scenario,
    Topology,
)


def scenario(kind: str, seed: int = 1, noise: bool = False) -> Scenario:
    return Scenario(
        name=f"both-drivers-{kind}",
        nodes=30,
        seed=seed,
        duration=120.0,
        topology=Topology(degree=4),
        network=Network(latency=Distribution("constant", value=0.05), bandwidth=1e12),
        builders=Builders(count=3, entries=30, checkpoint_interval=20.0, mirrors=0.1),
        engine=EngineSettings(relay_delay=0.0, anti_entropy_interval=1000.0),
        attack=Attack(kind=kind, at=50.0),
        noise=noise,
    )


def hops_by_checkpoint(obs: object) -> list[int]:
    _, series = summarize(obs, wall_seconds=0, peak_rss_mb=0)  # type: ignore[arg-type]
    return sorted(series.hops)


@pytest.mark.parametrize("kind", ["split-view", "rewrite", "stolen-key"])
def test_both_drivers_detect_the_same_and_count_the_same_hops(kind: str) -> None:
    sc = scenario(kind)
    events = observe(sc, "events")
    trio_ = observe(sc, "trio")
    e, es = summarize(events, wall_seconds=0, peak_rss_mb=0)
    t, ts = summarize(trio_, wall_seconds=0, peak_rss_mb=0)
    assert e["detection"]["expected"] == t["detection"]["expected"] > 0
    assert e["detection"]["detected_by"] == t["detection"]["detected_by"]
    assert e["detection"]["detected_by"] == e["detection"]["expected"]
    assert e["false_evidence"] == t["false_evidence"] == 0
    assert sorted(es.detection) == sorted(ts.detection)
    assert e["propagation"]["checkpoints"] == t["propagation"]["checkpoints"]
    assert e["propagation"]["coverage"] == t["propagation"]["coverage"] == 1.0
    assert sorted(es.hops) == sorted(ts.hops)
    assert e["propagation"]["hops_max"] == t["propagation"]["hops_max"]
    assert e["detection"]["hops_max"] == t["detection"]["hops_max"] > 0


def test_the_trio_driver_is_replayable_with_noise_on() -> None:
    sc = attrs.evolve(scenario("split-view", seed=2, noise=True), nodes=16)
    runs = [summarize(observe(sc, "trio"), wall_seconds=0, peak_rss_mb=0)[0] for _ in range(2)]
    assert json.dumps(runs[0]) == json.dumps(runs[1])
    assert runs[0]["detection"]["detected_by"] == runs[0]["detection"]["expected"] > 0


def test_the_plan_decides_the_network_for_both_drivers() -> None:
    sc = scenario("split-view")
    plan = make_plan(sc)
    assert all(link.latency == 0.05 for link in plan.links)


@pytest.mark.parametrize("driver", ["events", "trio"])
def test_summary_json_is_byte_identical_across_processes(driver: str, tmp_path: Path) -> None:
    """The same scenario and seed, in two processes with different hash seeds: summary.json
    is the same byte for byte, apart from wall_seconds and peak_rss_mb."""
    root = Path(__file__).resolve().parent.parent
    texts = []
    for hash_seed in ("1", "2"):
        out = tmp_path / f"{driver}-{hash_seed}"
        env = dict(os.environ, PYTHONHASHSEED=hash_seed, PYTHONPATH=str(root))
        subprocess.run(
            [
                sys.executable,
                "-m",
                "simulations",
                "run",
                "split-view",
                "--nodes",
                "20",
                "--driver",
                driver,
                "--seed",
                "5",
                "--out",
                str(out),
            ],
            cwd=root,
            env=env,
            check=True,
            capture_output=True,
        )
        lines = (out / "summary.json").read_text().splitlines()
        texts.append([x for x in lines if '"wall_seconds"' not in x and '"peak_rss_mb"' not in x])
    assert texts[0] == texts[1]
