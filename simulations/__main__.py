"""The simulation harness's command line: `python -m simulations run|sweep|list`.

    .venv/bin/python -m simulations list
    .venv/bin/python -m simulations run split-view --nodes 1000 --seed 2
    .venv/bin/python -m simulations run path/to/my.toml --driver trio --json
    .venv/bin/python -m simulations sweep split-view --nodes 100,1000,10000 --degree 4,8

`run` writes `summary.json` and the plots (`propagation.png`, `detection.png`,
`traffic.png`) to `--out` (default `sim-out/<scenario>-<nodes>-<seed>-<driver>`) and prints
a short table, or the summary's JSON with `--json`.  `sweep` runs every point of the grid in
its own process (so each point's peak RSS is its own), then writes `sweep.json` and
`sweep.png` to `--out` (default `sim-out/sweep-<scenario>`).  A scenario that cannot be run
exits with status 2.  The progress bar and plots need the `sim` extra (rich, matplotlib).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from . import plots, runner
from .runner import Progress
from .scenario import Scenario, ScenarioError, load_scenario, scenario_names

__all__ = ["format_summary", "launch_point", "main"]

T = TypeVar("T")

# Keys `format_summary` prints itself; any other key is an extra section, one line each.
_KNOWN = frozenset(
    {
        "scenario",
        "seed",
        "nodes",
        "honest_nodes",
        "driver",
        "topology",
        "degree",
        "attack",
        "duration",
        "propagation",
        "detection",
        "false_evidence",
        "messages_per_node_per_checkpoint",
        "messages_per_node",
        "bytes_per_node",
        "checkpoints_signed",
        "wall_seconds",
        "peak_rss_mb",
    }
)
_OPTIONAL = frozenset({"rich", "matplotlib"})  # the `sim` extra
_LABEL = 26  # the width of the table's first column


# -- formatting --------------------------------------------------------------------------------


def _secs(x: Any) -> str:
    if not isinstance(x, int | float) or isinstance(x, bool):
        return "?"
    if abs(x) < 10:
        return f"{x:.2f}"
    if abs(x) < 100:
        return f"{x:.1f}"
    return f"{x:.0f}"


def _bytes(x: Any) -> str:
    if not isinstance(x, int | float) or isinstance(x, bool):
        return "?"
    for scale, unit in ((1e9, "GB"), (1e6, "MB"), (1e3, "kB")):
        if abs(x) >= scale:
            return f"{x / scale:.3g} {unit}"
    return f"{x:.0f} B"


def _compact(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, Mapping):
        return "{" + " ".join(f"{k}={_compact(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        shown = [_compact(v) for v in value[:10]]
        if len(value) > 10:
            shown.append(f"…(+{len(value) - 10})")
        return "[" + ",".join(shown) + "]"
    return str(value)


def _line(label: str, text: str) -> str:
    return f"{label:<{_LABEL}}{text}"


def _context(summary: Mapping[str, Any]) -> str:
    return (
        f"{summary.get('scenario', '?')} · {summary.get('nodes', '?')} nodes "
        f"({summary.get('honest_nodes', '?')} honest) · seed {summary.get('seed', '?')} · "
        f"{plots.topology_label(summary)} · "
        f"attack {summary.get('attack', '?')} · {summary.get('driver', '?')} driver"
    )


def format_summary(summary: Mapping[str, Any]) -> list[str]:
    """The run's table: plain text lines, the values aligned after their labels."""
    lines = [_context(summary)]
    p: Mapping[str, Any] = summary.get("propagation", {})
    lines.append(
        _line(
            "propagation p50/p99/max",
            f"{_secs(p.get('p50'))} / {_secs(p.get('p99'))} / {_secs(p.get('max'))} s   "
            f"hops p99/max {p.get('hops_p99', '?')}/{p.get('hops_max', '?')} "
            f"(bound {p.get('hops_bound', '?')})   "
            f"coverage {_percent(p.get('coverage'))} of {p.get('checkpoints', '?')} checkpoints",
        )
    )
    d: Mapping[str, Any] = summary.get("detection", {})
    expected = d.get("expected", 0)
    detected = d.get("detected_by", 0)
    if expected or detected:
        text = (
            f"{detected} of {expected} honest nodes, p50 {_secs(d.get('p50'))} s, "
            f"max {_secs(d.get('max'))} s, hops max {d.get('hops_max', '?')}"
        )
        missed = d.get("missed") or []
        if missed:
            text += f"   missed {_compact(list(missed))}"
    else:
        text = f"nothing to detect (attack {summary.get('attack', 'none')})"
    lines.append(_line("detection", text))
    lines.append(_line("false evidence", str(summary.get("false_evidence", "?"))))
    mpc = summary.get("messages_per_node_per_checkpoint")
    lines.append(
        _line(
            "messages/node/checkpoint",
            f"{_compact(mpc) if mpc is not None else '?'}   "
            f"({_compact(summary.get('messages_per_node'))} per node, "
            f"{summary.get('checkpoints_signed', '?')} checkpoints signed)",
        )
    )
    lines.append(_line("bytes/node", _bytes(summary.get("bytes_per_node"))))
    for key, value in summary.items():
        if key not in _KNOWN:
            lines.append(_line(key, _compact(value)))
    rss = summary.get("peak_rss_mb")
    lines.append(
        _line(
            "wall",
            f"{_secs(summary.get('wall_seconds'))} s, "
            f"peak RSS {f'{rss:.0f}' if isinstance(rss, int | float) else '?'} MB",
        )
    )
    return lines


def _percent(x: Any) -> str:
    if not isinstance(x, int | float) or isinstance(x, bool):
        return "?"
    return f"{x:.1%}"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "scenario"


# -- run ---------------------------------------------------------------------------------------


@contextmanager
def _progress_bar(label: str, total: float, *, to_stderr: bool) -> Iterator[Progress | None]:
    """A rich progress bar over virtual time when stdout is a terminal; else no callback."""
    if not sys.stdout.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.progress import Progress as Bar

    console = Console(stderr=to_stderr)
    with Bar(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:>7.1f} / {task.total:.0f} s virtual"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    ) as bar:
        task = bar.add_task(label, total=total)
        last = [total]

        def progress(now: float, end: float) -> None:
            last[0] = end
            bar.update(task, completed=min(now, end), total=end)

        yield progress
        bar.update(task, completed=last[0])


def _load(name_or_path: str, **overrides: Any) -> Scenario:
    return load_scenario(name_or_path).with_overrides(**overrides)


def cmd_run(args: argparse.Namespace) -> int:
    scenario = _load(
        args.scenario,
        nodes=args.nodes,
        seed=args.seed,
        degree=args.degree,
        attackers=args.attackers,
    )
    out = Path(
        args.out
        or Path("sim-out")
        / f"{_slug(scenario.name)}-{scenario.nodes}-{scenario.seed}-{args.driver}"
    )
    label = f"{scenario.name} · {scenario.nodes} nodes"
    with _progress_bar(label, scenario.duration, to_stderr=args.json) as progress:
        summary, series = runner.run(scenario, driver=args.driver, progress=progress)

    out.mkdir(parents=True, exist_ok=True)
    text = json.dumps(summary, indent=2, sort_keys=False) + "\n"
    (out / "summary.json").write_text(text, encoding="utf-8")
    written = plots.write_plots(summary, series, out)
    if args.json:
        sys.stdout.write(text)
    else:
        for line in format_summary(summary):
            print(line)
        names = ", ".join(p.name for p in written)
        print(_line("out", f"{out}/ (summary.json, {names})"))
    return 0


# -- sweep -------------------------------------------------------------------------------------


def _list_of(kind: Callable[[str], T]) -> Callable[[str], list[T]]:
    def parse(text: str) -> list[T]:
        try:
            values = [kind(part.strip()) for part in text.split(",") if part.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a comma-separated list: {text!r}") from None
        if not values:
            raise argparse.ArgumentTypeError("an empty list")
        return values

    parse.__name__ = f"list of {getattr(kind, '__name__', 'values')}"
    return parse


def launch_point(cmd: Sequence[str], env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    """Run one sweep point's `python -m simulations run ... --json` to completion."""
    return subprocess.run(list(cmd), env=dict(env), capture_output=True, text=True, check=False)


def _child_env() -> dict[str, str]:
    """This environment, with the directory that holds `simulations` on PYTHONPATH."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parent.parent)
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join([root, *(p for p in paths if p != root)])
    return env


def _parse_json_output(stdout: str) -> dict[str, Any]:
    """The summary a point printed with `--json` (anything printed before it is skipped)."""
    try:
        value = json.loads(stdout)
    except json.JSONDecodeError:
        lines = stdout.splitlines()
        starts = [i for i, line in enumerate(lines) if line == "{"]
        if not starts:
            raise
        value = json.loads("\n".join(lines[starts[-1] :]))
    if not isinstance(value, dict):
        raise ValueError("the summary is not a JSON object")
    return value


def _point_line(summary: Mapping[str, Any]) -> str:
    d: Mapping[str, Any] = summary.get("detection", {})
    p: Mapping[str, Any] = summary.get("propagation", {})
    rss = summary.get("peak_rss_mb")
    return (
        f"detection {d.get('detected_by', '?')}/{d.get('expected', '?')} "
        f"p50 {_secs(d.get('p50'))} s max {_secs(d.get('max'))} s   "
        f"propagation p99 {_secs(p.get('p99'))} s   "
        f"wall {_secs(summary.get('wall_seconds'))} s   "
        f"RSS {f'{rss:.0f}' if isinstance(rss, int | float) else '?'} MB"
    )


def cmd_sweep(args: argparse.Namespace) -> int:
    base = load_scenario(args.scenario)
    seed = args.seed if args.seed is not None else base.seed
    degrees: list[int] = args.degree or [base.topology.degree]
    attackers: list[float | None] = list(args.attackers) if args.attackers else [None]
    grid: list[dict[str, Any]] = []
    for nodes, degree, fraction in itertools.product(args.nodes, degrees, attackers):
        point: dict[str, Any] = {"nodes": nodes, "degree": degree}
        if fraction is not None:
            point["attackers"] = fraction
        # Refuse a bad grid before the first process starts.
        base.with_overrides(nodes=nodes, seed=seed, degree=degree, attackers=fraction)
        grid.append(point)

    out = Path(args.out or Path("sim-out") / f"sweep-{_slug(base.name)}")
    out.mkdir(parents=True, exist_ok=True)
    print(
        f"sweep {base.name}: {len(grid)} points, seed {seed}, {args.driver} driver → {out}/",
        flush=True,
    )
    env = _child_env()
    rows: list[dict[str, Any]] = []
    failed = 0
    width = len(str(len(grid)))
    for i, point in enumerate(grid, 1):
        name = "-".join(
            f"{k[0]}{v:g}" if isinstance(v, float) else f"{k[0]}{v}" for k, v in point.items()
        )
        cmd = [sys.executable, "-m", "simulations", "run", args.scenario]
        cmd += ["--nodes", str(point["nodes"]), "--degree", str(point["degree"])]
        if "attackers" in point:
            cmd += ["--attackers", repr(point["attackers"])]
        cmd += ["--seed", str(seed), "--driver", args.driver, "--out", str(out / name), "--json"]
        done = launch_point(cmd, env)
        grid_text = " ".join(f"{k}={v}" for k, v in point.items())
        prefix = f"[{i:>{width}}/{len(grid)}] {grid_text}"
        row: dict[str, Any] = dict(point)
        try:
            if done.returncode != 0:
                raise RuntimeError(f"exit status {done.returncode}")
            summary = _parse_json_output(done.stdout)
        except (RuntimeError, ValueError) as exc:
            failed += 1
            tail = (done.stderr or "").strip().splitlines()[-5:]
            row["error"] = "; ".join([str(exc), *tail])
            print(f"{prefix}   FAILED: {row['error']}", flush=True)
        else:
            row["summary"] = summary
            print(f"{prefix}   {_point_line(summary)}", flush=True)
        rows.append(row)
        # After every point, so an interrupted sweep keeps what it finished.
        (out / "sweep.json").write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")

    plot = plots.write_sweep_plot(rows, out / "sweep.png", x_key="nodes")
    print(f"wrote {out / 'sweep.json'} and {plot}")
    if failed:
        print(f"error: {failed} of {len(grid)} points failed", file=sys.stderr)
        return 1
    return 0


# -- list --------------------------------------------------------------------------------------


def cmd_list(args: argparse.Namespace) -> int:
    names = scenario_names()
    if not names:
        print("no scenarios in simulations/scenarios/", file=sys.stderr)
        return 0
    width = max(len(n) for n in names) + 2
    for name in names:
        try:
            description = load_scenario(name).description
        except ScenarioError as exc:
            description = f"(cannot load: {exc})"
        print(f"{name:<{width}}{description}".rstrip())
    return 0


# -- the parser --------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m simulations",
        description="Simulate a trustix-p2p network: one scenario, a sweep, or the list.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run one scenario; write summary.json and plots")
    run.add_argument("scenario", metavar="SCENARIO", help="a scenario name or a TOML file")
    run.add_argument("--nodes", type=int, help="node count (overrides the scenario)")
    run.add_argument("--seed", type=int, help="seed (overrides the scenario)")
    run.add_argument("--driver", choices=runner.DRIVERS, default=runner.DRIVERS[0])
    run.add_argument("--degree", type=int, help="topology degree (overrides the scenario)")
    run.add_argument("--attackers", type=float, help="attacker fraction (overrides)")
    run.add_argument(
        "--out", metavar="DIR", help="output directory (sim-out/<scenario>-<nodes>-<seed>-<driver>)"
    )
    run.add_argument("--json", action="store_true", help="print the summary JSON, no table")
    run.set_defaults(func=cmd_run)

    sweep = sub.add_parser("sweep", help="run a grid of node counts and degrees, each alone")
    sweep.add_argument("scenario", metavar="SCENARIO", help="a scenario name or a TOML file")
    sweep.add_argument("--nodes", type=_list_of(int), required=True, help="e.g. 100,1000")
    sweep.add_argument("--degree", type=_list_of(int), help="e.g. 4,8 (default: the scenario's)")
    sweep.add_argument("--attackers", type=_list_of(float), help="e.g. 0.01,0.1")
    sweep.add_argument("--seed", type=int, help="seed of every point (default: the scenario's)")
    sweep.add_argument("--driver", choices=runner.DRIVERS, default=runner.DRIVERS[0])
    sweep.add_argument("--out", metavar="DIR", help="output directory (sim-out/sweep-<scenario>)")
    sweep.set_defaults(func=cmd_sweep)

    listing = sub.add_parser("list", help="the scenarios in simulations/scenarios/")
    listing.set_defaults(func=cmd_list)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except ScenarioError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ImportError as exc:
        if exc.name not in _OPTIONAL:
            raise
        print(
            f"error: {exc.name} is not installed; the simulation command line needs the"
            " sim extra: pip install '.[sim]'",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
