"""The harness's must-hold claims at full count: many seeded runs of each scenario.

    .venv/bin/python benchmarks/sim_soak.py                    # 50 seeds x 9 scenarios, 200 nodes
    .venv/bin/python benchmarks/sim_soak.py --seeds 5 --jobs 2 # a quick look

For each adversary scenario (split-view, rewrite, eclipse, sybil, withholding, lying-builder)
and each fault scenario without an attack (honest, partition-heal, churn, all with 1 % loss),
it runs `--seeds` seeds with the events driver at `--nodes` nodes and checks, per run:

- an equivocation (split-view, rewrite, eclipse, sybil): every honest node connected to the
  honest majority holds verified evidence (`detected_by == expected`);
- eclipse: the victim did not detect while eclipsed, and did after its honest link;
- lying-builder: every simulated client named the liar and none was fooled;
- every run: no false evidence, and every honest node reached every honest checkpoint.

It prints a Markdown table (the README's) and exits 1 if any run broke a claim.  The runs are
shortened to `--duration` virtual seconds with builders of `--entries` entries (the claims
are about detection and accusation, not about the length of the run); runs go `--jobs` at a
time in worker processes.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import attrs

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from simulations.runner import run
from simulations.scenario import load_scenario

ADVERSARIES = (
    "split-view",
    "rewrite",
    "eclipse",
    "sybil",
    "withholding",
    "lying-builder",
    "stolen-key",
)
FAULTS = ("honest", "partition-heal", "churn")
EQUIVOCATIONS = ("split-view", "rewrite", "eclipse", "sybil", "stolen-key")


def one(args: tuple[str, int, int, float, int, int]) -> dict[str, Any]:
    name, seed, nodes, duration, entries, builders = args
    sc = load_scenario(name)
    scale = duration / sc.duration
    sc = attrs.evolve(
        sc,
        nodes=nodes,
        seed=seed,
        duration=duration,
        builders=attrs.evolve(sc.builders, entries=entries, count=builders),
        attack=attrs.evolve(
            sc.attack,
            at=sc.attack.at * scale,
            heal_at=sc.attack.heal_at * scale,
            threshold=min(sc.attack.threshold, builders // 2 + 1),
        ),
        partitions=tuple(
            attrs.evolve(p, at=p.at * scale, heal=p.heal * scale) for p in sc.partitions
        ),
        churn=attrs.evolve(
            sc.churn,
            window=(sc.churn.window[0] * scale, sc.churn.window[1] * scale),
            downtime=(sc.churn.downtime[0] * scale, sc.churn.downtime[1] * scale),
        ),
    )
    if name in FAULTS:
        sc = attrs.evolve(sc, network=attrs.evolve(sc.network, loss=0.01))
    summary, _ = run(sc)
    problems: list[str] = []
    d = summary["detection"]
    if name in EQUIVOCATIONS and not d["detected_by"] == d["expected"] > 0:
        problems.append(f"detected by {d['detected_by']} of {d['expected']}")
    if summary["false_evidence"]:
        problems.append(f"false evidence at {summary['false_evidence']} nodes")
    if summary["propagation"]["coverage"] < 1.0:
        problems.append(f"coverage {summary['propagation']['coverage']}")
    if name == "eclipse":
        e = summary["eclipse"]
        if e["detected_while_eclipsed"] or e["detected_at"] is None:
            problems.append(f"eclipse: {e}")
    if name == "lying-builder":
        c = summary["clients"]
        if c["clients_that_named_the_liar"] != c["clients"] or c["decisions_fooled"]:
            problems.append(f"clients: {c}")
    return {"name": name, "seed": seed, "summary": summary, "problems": problems}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=50)
    parser.add_argument("--nodes", type=int, default=200)
    parser.add_argument("--duration", type=float, default=160.0)
    parser.add_argument("--entries", type=int, default=200)
    parser.add_argument("--builders", type=int, default=10)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--only", action="append", help="a scenario (repeatable)")
    parser.add_argument("--log", type=Path, help="append each run's result here (JSON lines)")
    parser.add_argument(
        "--table-from", type=Path, action="append", help="print the table of these logs only"
    )
    args = parser.parse_args()
    if args.table_from:
        rows = [json.loads(x) for f in args.table_from for x in f.read_text().splitlines()]
        names = [n for n in ADVERSARIES + FAULTS if any(r["name"] == n for r in rows)]
        results = {n: [r for r in rows if r["name"] == n] for n in names}
        print(f"{len(rows)} runs from {', '.join(str(f) for f in args.table_from)}")
        return table(names, results)
    names = args.only or list(ADVERSARIES + FAULTS)
    work = [
        (n, s, args.nodes, args.duration, args.entries, args.builders)
        for n in names
        for s in range(1, args.seeds + 1)
    ]
    started = time.perf_counter()
    results: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    with ProcessPoolExecutor(args.jobs) as pool:
        for done, r in enumerate(pool.map(one, work), 1):
            results[r["name"]].append(r)
            if args.log is not None:
                with args.log.open("a") as log:
                    log.write(json.dumps(r) + "\n")
            for p in r["problems"]:
                print(f"  {r['name']} seed {r['seed']}: {p}", flush=True)
            if done % 25 == 0:
                print(
                    f"  {done}/{len(work)} runs, {time.perf_counter() - started:.0f} s", flush=True
                )
    print()
    print(
        f"{args.seeds} seeds per scenario, {args.nodes} nodes, {args.duration:.0f} virtual s, "
        f"{args.builders} builders of {args.entries} entries, events driver; "
        f"{time.perf_counter() - started:.0f} s wall with {args.jobs} workers"
    )
    return table(names, results)


def table(names: list[str], results: dict[str, list[dict[str, Any]]]) -> int:
    print()
    print(
        "| scenario | runs | runs holding | honest nodes detecting (min of expected) | "
        "detection p50 / max (s) | false evidence | propagation p99 (s) |"
    )
    print("|---|---|---|---|---|---|---|")
    failed = 0
    for name in names:
        rs = results[name]
        ok = sum(1 for r in rs if not r["problems"])
        failed += len(rs) - ok
        ss = [r["summary"] for r in rs]
        if name in EQUIVOCATIONS:
            det = [s["detection"] for s in ss]
            worst = min(d["detected_by"] / max(1, d["expected"]) for d in det)
            low, high = min(d["expected"] for d in det), max(d["expected"] for d in det)
            detecting = f"{100 * worst:.0f} % (expected {low}–{high})"
            p50 = statistics.median(d["p50"] for d in det)
            dp = f"{p50:.2f} / {max(d['max'] for d in det):.2f}"
        elif name == "lying-builder":
            named = sum(s["clients"]["clients_that_named_the_liar"] for s in ss)
            total = sum(s["clients"]["clients"] for s in ss)
            detecting = f"clients naming the liar: {named} of {total}"
            dp = "—"
        else:
            detecting, dp = "— (nothing to detect)", "—"
        false = sum(s["false_evidence"] for s in ss)
        p99 = max(s["propagation"]["p99"] for s in ss)
        print(f"| {name} | {len(rs)} | {ok} | {detecting} | {dp} | {false} | {p99:.2f} |")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
