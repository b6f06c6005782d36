"""The simulation harness's figures: scale, growth with N, and what the fidelity driver costs.

    .venv/bin/python benchmarks/bench_sim.py         # 1,000 nodes, sweep to 2,000, drivers
    .venv/bin/python benchmarks/bench_sim.py --full  # also 10,000 nodes, sweep to 10,000
    .venv/bin/python benchmarks/bench_sim.py --only drivers

Each run is a child process (`python -m simulations run ... --json`), so its peak RSS is its
own.  Printed beside the figures, measured in the same run: the floor of any discrete-event
simulation here, a bare heap of as many timed events as the run delivered messages, each
doing nothing; the ratio says what the real engines, codec and checks cost on top of it.

The scale scenario (`simulations/scenarios/scale.toml`): 10 builders of 1,000 entries each
over the run, one of them equivocating at 70 s, degree 8, 50 ms median latency (log-normal),
150 virtual seconds.  Targets: 1,000 nodes under 1 minute, 10,000 under 10 minutes and 4 GB;
propagation to 99 % within ceil(log2 N) + 3 hops; detection within twice that; messages
received per node per checkpoint at most twice the degree.
"""

from __future__ import annotations

import argparse
import heapq
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def sim(args: list[str], out: Path) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "simulations", "run", *args, "--json", "--out", str(out)]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr}")
    summary: dict[str, Any] = json.loads(done.stdout)
    return summary


def heap_floor(events: int) -> float:
    """Seconds to push and pop `events` timed events that do nothing (the DES floor)."""
    rng = random.Random(1)
    heap: list[tuple[float, int, int]] = []
    started = time.perf_counter()
    t = 0.0
    for i in range(events):
        heapq.heappush(heap, (t + rng.random(), i, i))
        if len(heap) > 1000:
            t, _, _ = heapq.heappop(heap)
    while heap:
        heapq.heappop(heap)
    return time.perf_counter() - started


def line(s: dict[str, Any]) -> str:
    p, d = s["propagation"], s["detection"]
    messages = round(s["messages_per_node"] * s["nodes"])
    floor = heap_floor(messages)
    return (
        f"{s['nodes']:>6} nodes  {s['driver']:<6}  wall {s['wall_seconds']:7.1f} s "
        f"(floor {floor:.2f} s for {messages:,} events: {s['wall_seconds'] / floor:,.0f}x)  "
        f"RSS {s['peak_rss_mb']:6.0f} MB  hops p99/max {p['hops_p99']}/{p['hops_max']} "
        f"(bound {p['hops_bound']})  detection {d['detected_by']}/{d['expected']} "
        f"hops {d['hops_max']} (bound {2 * p['hops_bound']}), max {d['max']:.2f} s  "
        f"msgs/node/ckpt {s['messages_per_node_per_checkpoint']:.1f} "
        f"(bound {2 * s['degree']})"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="10,000 nodes too")
    parser.add_argument("--only", choices=("scale", "sweep", "drivers"), action="append")
    args = parser.parse_args()
    parts = args.only or ["scale", "sweep", "drivers"]
    with tempfile.TemporaryDirectory(prefix="bench-sim-") as tmp:
        out = Path(tmp)
        if "scale" in parts:
            print("scale scenario (events driver):", flush=True)
            for n in [1000] + ([10000] if args.full else []):
                print(
                    "  " + line(sim(["scale", "--nodes", str(n)], out / f"scale-{n}")), flush=True
                )
        if "drivers" in parts:
            print("the two drivers, split-view at 200 nodes:", flush=True)
            noise = out / "split-view-noise.toml"
            text = (ROOT / "simulations/scenarios/split-view.toml").read_text()
            noise.write_text('name = "split-view"\nnoise = true\n' + text)
            for label, scenario, driver in (
                ("events", "split-view", "events"),
                ("trio, plain streams", "split-view", "trio"),
                ("trio, Noise", str(noise), "trio"),
            ):
                s = sim([scenario, "--nodes", "200", "--driver", driver], out / label)
                print(f"  {label:<20} " + line(s), flush=True)
        if "sweep" in parts:
            nodes = "250,500,1000,2000" + (",5000,10000" if args.full else "")
            target = ROOT / "benchmarks" / "results" / "sim-sweep"
            env = dict(os.environ, PYTHONPATH=str(ROOT))
            cmd = [
                sys.executable,
                "-m",
                "simulations",
                "sweep",
                "scale",
                "--nodes",
                nodes,
                "--degree",
                "8",
                "--out",
                str(target),
            ]
            print(f"sweep: {' '.join(cmd[1:])}", flush=True)
            subprocess.run(cmd, cwd=ROOT, env=env, check=True)
            rows = json.loads((target / "sweep.json").read_text())
            for row in rows:
                if "summary" in row:
                    print("  " + line(row["summary"]), flush=True)
            print(f"  plot: {target / 'sweep.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
