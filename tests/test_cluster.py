"""Hundreds of real nodes in one process, in virtual time: the same seed gives the same run.

Each node has its own store and log, appends entries, signs checkpoints and pings random
peers over the in-memory network (simulations/cluster.py).  CI runs smaller counts than the
benchmark (benchmarks/bench_cluster.py runs 500)."""

from __future__ import annotations

import pytest

from simulations.cluster import ClusterSpec, run_cluster


def _signed(trace: list[str]) -> set[str]:
    return {line.split()[1] for line in trace if " CheckpointSigned " in line}


@pytest.mark.parametrize("secure", [True, False], ids=["noise", "plain"])
def test_two_runs_with_the_same_seed_give_the_same_trace(secure: bool) -> None:
    spec = ClusterSpec(nodes=40, seed=7, secure=secure)
    first = run_cluster(spec)
    second = run_cluster(spec)
    assert "\n".join(first) == "\n".join(second)
    # The run did what it says: every node logged and signed, and pings crossed the network.
    assert len(_signed(first)) == spec.nodes
    assert sum(" PingAnswered " in line for line in first) >= spec.nodes
    assert sum(" EntriesAppended " in line for line in first) == spec.nodes * spec.entries_per_node


def test_another_seed_gives_another_trace() -> None:
    assert run_cluster(ClusterSpec(nodes=10, seed=1)) != run_cluster(ClusterSpec(nodes=10, seed=2))


def test_leveldb_stores_give_the_same_trace_as_memory_stores() -> None:
    memory = run_cluster(ClusterSpec(nodes=50, seed=11, store="memory"))
    leveldb = run_cluster(ClusterSpec(nodes=50, seed=11, store="leveldb"))
    assert "\n".join(memory) == "\n".join(leveldb)
