"""Many real nodes in one process (simulations/cluster.py): speed and memory per node.

Prints, for 500 nodes with Noise and without: wall seconds, virtual seconds, node-seconds of
virtual time per wall second, events, and whether a second run with the same seed gave the
same trace; then the memory of 1,000 idle nodes (each with its store, log, key and listener;
started and waiting), per node, beside the process's RSS before any node existed, with Noise
and with plain streams, each in a fresh process.

    .venv/bin/python benchmarks/bench_cluster.py            # about 2 to 4 minutes
    .venv/bin/python benchmarks/bench_cluster.py --nodes 100 --idle 200
"""

from __future__ import annotations

import argparse
import gc
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from simulations.cluster import ClusterSpec, run_cluster


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def idle_only(count: int, seed: int, secure: bool) -> int:
    """Start `count` nodes that do nothing; print the process's peak RSS beside its baseline."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    gc.collect()
    before = rss_mb()
    spec = ClusterSpec(
        nodes=count, seed=seed, entries_per_node=0, pings_per_node=0, duration=1, secure=secure
    )
    start = time.perf_counter()
    run_cluster(spec)
    wall = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    label = "Noise" if secure else "plain streams"
    print(
        f"{count:,} idle nodes, {label}: peak RSS {peak:.1f} MB, of which {before:.1f} MB "
        f"before any node existed: {(peak - before) * 1024 / count:.0f} KB per node; "
        f"start, idle {spec.duration + 2 * spec.checkpoint_interval:g} virtual s and stop took "
        f"{wall:.1f} s"
    )
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=500)
    parser.add_argument("--idle", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--idle-only", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--plain", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.idle_only:
        return idle_only(args.idle_only, args.seed, secure=not args.plain)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))

    print(f"{'run':<34}{'wall s':>8}{'virtual s':>11}{'node-s/s':>10}{'events':>9}  same trace")
    for secure in (True, False):
        spec = ClusterSpec(nodes=args.nodes, seed=args.seed, secure=secure)
        start = time.perf_counter()
        trace = run_cluster(spec)
        wall = time.perf_counter() - start
        again = run_cluster(spec)
        virtual = spec.duration + 2 * spec.checkpoint_interval
        label = f"{args.nodes} nodes, {'Noise' if secure else 'plain streams'}"
        print(
            f"{label:<34}{wall:>8.1f}{virtual:>11.1f}{args.nodes * virtual / wall:>10,.0f}"
            f"{len(trace):>9,}  {'yes' if trace == again else 'NO'}"
        )

    # Idle memory in a fresh process each, so the runs above do not count in its peak.
    print()
    for extra in ([], ["--plain"]):
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--idle-only",
                str(args.idle),
                "--seed",
                str(args.seed),
                *extra,
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        print(out.strip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
