"""The simulation command line (`python -m simulations`), with a fake runner.

The drivers are not run here: `simulations.runner.run` is replaced by `fake_run`, which
returns a summary of the real shape (keys in `summarize`'s order) and a Series drawn from the
scenario's seed, so what the command writes and prints can be checked quickly and the same
way every time.  A sweep's points are launched through `launch_point`, replaced by a fake
that answers with the JSON a `run --json` would print.
"""

from __future__ import annotations

import itertools
import json
import random
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

import simulations.__main__ as cli
from simulations import plots, runner
from simulations.metrics import Series, hop_bound
from simulations.scenario import Scenario, load_scenario

ROOT = Path(__file__).resolve().parent.parent
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

TINY = """
name = "tiny"
description = "a small split view for the command line's tests"
nodes = 30
seed = 4
duration = 120.0

[topology]
degree = 6

[builders]
count = 3

[attack]
kind = "split-view"
at = 40.0
"""

QUIET = """
description = "no attack at all"
nodes = 20

[builders]
count = 2
"""


def fake_run(
    scenario: Scenario, driver: str = "events", progress: runner.Progress | None = None
) -> tuple[dict[str, Any], Series]:
    """A summary and series shaped like `summarize`'s, drawn from the scenario's seed."""
    rng = random.Random(f"{scenario.seed}/{scenario.nodes}/{scenario.topology.degree}")
    if progress is not None:
        progress(0.0, scenario.duration)
        progress(scenario.duration / 2, scenario.duration)
        progress(scenario.duration, scenario.duration)
    attackers = round(scenario.nodes * scenario.attack.attackers)
    honest = scenario.nodes - attackers
    attacked = scenario.attack.kind in ("split-view", "rewrite", "eclipse", "sybil")
    series = Series(
        propagation=[rng.lognormvariate(-1.0, 0.5) for _ in range(honest * 4)],
        hops=[rng.randint(1, 6) for _ in range(honest * 4)],
        detection=(
            {x: round(rng.uniform(0.5, 4.0), 6) for x in range(honest - 1)} if attacked else {}
        ),
        messages=[rng.randint(200, 400) for _ in range(honest)],
        bytes=[rng.randint(50_000, 200_000) for _ in range(honest)],
    )
    ordered = sorted(series.propagation)
    detections = sorted(series.detection.values())
    summary: dict[str, Any] = {
        "scenario": scenario.name,
        "seed": scenario.seed,
        "nodes": scenario.nodes,
        "honest_nodes": honest,
        "driver": driver,
        "topology": f"{scenario.topology.kind} d={scenario.topology.degree}",
        "degree": scenario.topology.degree,
        "attack": scenario.attack.kind,
        "duration": scenario.duration,
        "propagation": {
            "p50": round(ordered[len(ordered) // 2], 6),
            "p99": round(ordered[int(len(ordered) * 0.99)], 6),
            "max": round(ordered[-1], 6),
            "hops_p99": 6,
            "hops_max": max(series.hops),
            "hops_bound": hop_bound(scenario.nodes),
            "coverage": 1.0,
            "checkpoints": 4,
        },
        "detection": {
            "expected": honest if attacked else 0,
            "detected_by": len(detections),
            "p50": detections[len(detections) // 2] if detections else 0.0,
            "max": detections[-1] if detections else 0.0,
            "hops_max": 5 if attacked else 0,
            "missed": [honest - 1] if attacked else [],
        },
        "false_evidence": 0,
        "messages_per_node_per_checkpoint": 75.25,
        "messages_per_node": 301.0,
        "bytes_per_node": 123_456.5,
        "checkpoints_signed": 4,
    }
    if attacked:
        summary["attackers"] = {"nodes": attackers, "twin": 1}
    summary["wall_seconds"] = 0.05 * scenario.nodes
    summary["peak_rss_mb"] = 100.0 + scenario.nodes / 10
    return summary, series


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Scenario, str]]:
    """Replace the runner by `fake_run`; the (scenario, driver) of every call."""
    seen: list[tuple[Scenario, str]] = []

    def run(
        scenario: Scenario, driver: str = "events", progress: runner.Progress | None = None
    ) -> tuple[dict[str, Any], Series]:
        seen.append((scenario, driver))
        return fake_run(scenario, driver, progress)

    monkeypatch.setattr(runner, "run", run)
    return seen


@pytest.fixture
def scenario_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A scenarios directory holding tiny.toml and quiet.toml, in place of the real one."""
    import simulations.scenario

    where = tmp_path / "scenarios"
    where.mkdir()
    (where / "tiny.toml").write_text(TINY, encoding="utf-8")
    (where / "quiet.toml").write_text(QUIET, encoding="utf-8")
    monkeypatch.setattr(simulations.scenario, "SCENARIO_DIR", where)
    return where


@pytest.fixture
def no_plots(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Skip drawing (it is the slow part) where the plots are not what is tested."""
    dirs: list[Path] = []

    def write_plots(summary: dict[str, Any], series: Series, out_dir: Path | str) -> list[Path]:
        dirs.append(Path(out_dir))
        return []

    monkeypatch.setattr(plots, "write_plots", write_plots)
    return dirs


def is_png(path: Path) -> bool:
    return path.is_file() and path.read_bytes()[:8] == PNG_MAGIC


def test_run_writes_summary_and_plots(
    tmp_path: Path, scenario_dir: Path, calls: list[tuple[Scenario, str]], capsys: Any
) -> None:
    out = tmp_path / "out"
    assert cli.main(["run", "tiny", "--nodes", "40", "--seed", "3", "--out", str(out)]) == 0
    [(scenario, driver)] = calls
    assert (scenario.name, scenario.nodes, scenario.seed, driver) == ("tiny", 40, 3, "events")
    assert scenario.topology.degree == 6  # from the file

    expected, _ = fake_run(scenario, driver)
    text = (out / "summary.json").read_text(encoding="utf-8")
    assert text == json.dumps(expected, indent=2, sort_keys=False) + "\n"
    assert list(json.loads(text)) == list(expected)  # the exact keys, in order
    for name in ("propagation.png", "detection.png", "traffic.png"):
        assert is_png(out / name), name

    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == (
        f"tiny · 40 nodes ({expected['honest_nodes']} honest) · seed 3 · random-regular d=6 · "
        "attack split-view · events driver"
    )
    by_label = {line.split("  ")[0]: line for line in lines[1:]}
    p, d = expected["propagation"], expected["detection"]
    assert (
        f"hops p99/max 6/{p['hops_max']} (bound {hop_bound(40)})"
        in by_label["propagation p50/p99/max"]
    )
    assert f"{d['detected_by']} of {d['expected']} honest nodes" in by_label["detection"]
    assert by_label["false evidence"].split() == ["false", "evidence", "0"]
    assert "75.25" in by_label["messages/node/checkpoint"]
    assert by_label["bytes/node"].split() == ["bytes/node", "123", "kB"]
    assert "nodes=" in by_label["attackers"]  # the extra section, compactly
    assert "peak RSS 104 MB" in by_label["wall"]


def test_run_defaults_and_overrides(
    tmp_path: Path,
    scenario_dir: Path,
    calls: list[tuple[Scenario, str]],
    no_plots: list[Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    argv = ["run", "tiny", "--degree", "4", "--attackers", "0.1", "--driver", "trio"]
    assert cli.main(argv) == 0
    [(scenario, driver)] = calls
    assert driver == "trio"
    assert scenario.topology.degree == 4
    assert scenario.attack.attackers == 0.1
    out = tmp_path / "sim-out" / "tiny-30-4-trio"
    assert json.loads((out / "summary.json").read_text())["driver"] == "trio"
    assert no_plots == [Path("sim-out/tiny-30-4-trio")]


def test_run_json(
    tmp_path: Path,
    scenario_dir: Path,
    calls: list[tuple[Scenario, str]],
    no_plots: list[Path],
    capsys: Any,
) -> None:
    out = tmp_path / "out"
    assert cli.main(["run", "quiet", "--out", str(out), "--json"]) == 0
    printed = capsys.readouterr().out
    summary = json.loads(printed)  # nothing but the JSON
    assert summary == json.loads((out / "summary.json").read_text())
    assert summary["scenario"] == "quiet"
    assert summary["attack"] == "none"
    assert no_plots == [out]


def test_unknown_scenario(scenario_dir: Path, calls: list[Any], capsys: Any) -> None:
    assert cli.main(["run", "no-such-scenario"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no scenario 'no-such-scenario'")
    assert "quiet, tiny" in err
    assert calls == []


def test_invalid_override(scenario_dir: Path, calls: list[Any], capsys: Any) -> None:
    assert cli.main(["run", "tiny", "--nodes", "3"]) == 2
    assert capsys.readouterr().err.startswith("error: nodes: must exceed")
    assert calls == []


def test_toml_path(
    tmp_path: Path, calls: list[tuple[Scenario, str]], no_plots: list[Path], capsys: Any
) -> None:
    path = tmp_path / "mine.toml"
    path.write_text(QUIET, encoding="utf-8")
    out = tmp_path / "out"
    assert cli.main(["run", str(path), "--seed", "9", "--out", str(out)]) == 0
    [(scenario, _driver)] = calls
    assert (scenario.name, scenario.nodes, scenario.seed) == ("mine", 20, 9)
    assert json.loads((out / "summary.json").read_text())["scenario"] == "mine"
    assert no_plots == [out]
    assert "nothing to detect (attack none)" in capsys.readouterr().out


def test_bad_toml_file(tmp_path: Path, calls: list[Any], capsys: Any) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("nodes = 'many'\n", encoding="utf-8")
    assert cli.main(["run", str(path)]) == 2
    assert capsys.readouterr().err == "error: bad.toml: nodes: expected an integer\n"


def test_list(scenario_dir: Path, capsys: Any) -> None:
    assert cli.main(["list"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "quiet  no attack at all",
        "tiny   a small split view for the command line's tests",
    ]


def test_plots_of_empty_series(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With nothing to draw, each panel says why instead (and the files are still PNGs)."""
    said: list[str] = []
    empty = plots._empty

    def record(ax: Any, message: str) -> None:
        said.append(message)
        empty(ax, message)

    monkeypatch.setattr(plots, "_empty", record)
    quiet, _ = fake_run(load_scenario_text(tmp_path, QUIET))
    written = plots.write_plots(quiet, Series(), tmp_path / "quiet")
    assert [p.name for p in written] == ["propagation.png", "detection.png", "traffic.png"]
    assert all(is_png(p) for p in written)
    assert said == [
        "no checkpoint propagated",
        "no hop counts",
        "no attack to detect (attack: none)",
        "no honest nodes",
        "no honest nodes",
    ]

    said.clear()
    attacked, series = fake_run(load_scenario_text(tmp_path, TINY))
    series.detection = {}
    attacked["detection"]["detected_by"] = 0
    assert is_png(plots._detection(attacked, series, tmp_path / "detection.png"))
    assert said == [
        f"nobody detected (0 of {attacked['detection']['expected']} expected honest nodes)"
    ]


def load_scenario_text(tmp_path: Path, text: str) -> Scenario:
    path = tmp_path / "scenario.toml"
    path.write_text(text, encoding="utf-8")
    return load_scenario(str(path))


def value_of(cmd: Sequence[str], flag: str) -> str:
    return cmd[list(cmd).index(flag) + 1]


def test_sweep(
    tmp_path: Path, scenario_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    launched: list[list[str]] = []

    def launch(cmd: Sequence[str], env: Any) -> subprocess.CompletedProcess[str]:
        launched.append(list(cmd))
        assert str(ROOT) in env["PYTHONPATH"].split(":")
        scenario = load_scenario(cmd[4]).with_overrides(
            nodes=int(value_of(cmd, "--nodes")),
            seed=int(value_of(cmd, "--seed")),
            degree=int(value_of(cmd, "--degree")),
            attackers=float(value_of(cmd, "--attackers")),
        )
        summary, _ = fake_run(scenario, value_of(cmd, "--driver"))
        # Something a driver printed before the JSON is skipped.
        stdout = "a stray line\n" + json.dumps(summary, indent=2) + "\n"
        return subprocess.CompletedProcess(cmd, 0, stdout=stdout, stderr="")

    monkeypatch.setattr(cli, "launch_point", launch)
    out = tmp_path / "sweep"
    argv = ["sweep", "tiny", "--nodes", "50,100", "--degree", "4,8", "--attackers", "0.01,0.1"]
    assert cli.main([*argv, "--seed", "2", "--out", str(out)]) == 0

    grid = list(itertools.product([50, 100], [4, 8], [0.01, 0.1]))
    assert len(launched) == len(grid)
    for cmd, (n, d, a) in zip(launched, grid, strict=True):
        assert cmd[:5] == [sys.executable, "-m", "simulations", "run", "tiny"]
        assert cmd[-1] == "--json"
        assert (value_of(cmd, "--nodes"), value_of(cmd, "--degree")) == (str(n), str(d))
        assert float(value_of(cmd, "--attackers")) == a
        assert (value_of(cmd, "--seed"), value_of(cmd, "--driver")) == ("2", "events")
        assert Path(value_of(cmd, "--out")).parent == out

    rows = json.loads((out / "sweep.json").read_text())
    assert [(r["nodes"], r["degree"], r["attackers"]) for r in rows] == grid
    for r in rows:
        assert r["summary"]["nodes"] == r["nodes"]
        assert r["summary"]["degree"] == r["degree"]
        assert r["summary"]["seed"] == 2
    assert len({value_of(cmd, "--out") for cmd in launched}) == len(grid)
    assert is_png(out / "sweep.png")

    lines = capsys.readouterr().out.splitlines()
    points = [line for line in lines if line.startswith("[")]
    assert len(points) == len(grid)
    assert points[0].startswith("[1/8] nodes=50 degree=4 attackers=0.01")
    assert "detection" in points[0] and "RSS" in points[0]


def test_sweep_with_a_failed_point(
    tmp_path: Path, scenario_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    def launch(cmd: Sequence[str], env: Any) -> subprocess.CompletedProcess[str]:
        nodes = int(value_of(cmd, "--nodes"))
        if nodes == 100:
            return subprocess.CompletedProcess(cmd, 1, stdout="", stderr="Traceback\nBoom\n")
        scenario = load_scenario(cmd[4]).with_overrides(
            nodes=nodes, degree=int(value_of(cmd, "--degree"))
        )
        summary, _ = fake_run(scenario)
        return subprocess.CompletedProcess(cmd, 0, stdout=json.dumps(summary), stderr="")

    monkeypatch.setattr(cli, "launch_point", launch)
    out = tmp_path / "sweep"
    assert cli.main(["sweep", "tiny", "--nodes", "50,100", "--out", str(out)]) == 1
    rows = json.loads((out / "sweep.json").read_text())
    assert [(r["nodes"], r["degree"]) for r in rows] == [(50, 6), (100, 6)]  # the file's degree
    assert "summary" in rows[0]
    assert "summary" not in rows[1]
    assert rows[1]["error"] == "exit status 1; Traceback; Boom"
    assert is_png(out / "sweep.png")
    captured = capsys.readouterr()
    assert "FAILED: exit status 1" in captured.out
    assert "1 of 2 points failed" in captured.err


def test_sweep_refuses_a_bad_grid(
    scenario_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    def launch(cmd: Sequence[str], env: Any) -> subprocess.CompletedProcess[str]:
        raise AssertionError("no point may start")

    monkeypatch.setattr(cli, "launch_point", launch)
    assert cli.main(["sweep", "tiny", "--nodes", "100,3"]) == 2
    assert capsys.readouterr().err.startswith("error: nodes: must exceed")


def test_module_entry_point(tmp_path: Path) -> None:
    """`python -m simulations` from the project root: the status and message of a bad name."""
    done = subprocess.run(
        [sys.executable, "-m", "simulations", "run", "no-such-scenario", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.startswith("error: no scenario 'no-such-scenario'")
    assert done.stdout == ""
