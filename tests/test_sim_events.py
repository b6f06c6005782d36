"""The discrete-event driver: every shipped scenario, small, with what each must show."""

from __future__ import annotations

import json
from pathlib import Path

import attrs
import pytest

from simulations.metrics import hop_bound
from simulations.plan import leaf, make_plan, store_path
from simulations.runner import run
from simulations.scenario import (
    Scenario,
    ScenarioError,
    load_scenario,
    scenario_names,
)
from trustix_p2p.core.keys import PrivateKey
from trustix_p2p.errors import DecodeError, VerificationError
from trustix_p2p.gossip import engine as eng
from trustix_p2p.ownlog import MemoryCheckpointFile, OwnLog
from trustix_p2p.storage import LeafRecord, Store

REQUIRED = (
    "honest",
    "split-view",
    "rewrite",
    "withholding",
    "lying-builder",
    "eclipse",
    "sybil",
    "partition-heal",
    "churn",
)


def small(name: str, seed: int = 1, nodes: int = 40) -> Scenario:
    """A shipped scenario, shrunk: 4 builders of 40 entries, the same attack and faults."""
    sc = load_scenario(name)
    return attrs.evolve(
        sc,
        nodes=nodes,
        seed=seed,
        builders=attrs.evolve(sc.builders, count=4, entries=40, mirrors=0.1),
        attack=attrs.evolve(
            sc.attack, threshold=min(sc.attack.threshold, 3), lies=min(sc.attack.lies, 5)
        ),
    )


def stable(summary: dict[str, object]) -> str:
    return json.dumps(
        {k: v for k, v in summary.items() if k not in ("wall_seconds", "peak_rss_mb")}
    )


def test_every_required_scenario_ships_and_loads() -> None:
    names = scenario_names()
    for name in REQUIRED:
        assert name in names
        load_scenario(name).validate()


def test_a_scenario_file_with_an_unknown_key_or_a_wrong_type_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[topology]\ndegre = 4\n")
    with pytest.raises(ScenarioError, match=r"topology\.degre: unknown key"):
        load_scenario(str(bad))
    bad.write_text('nodes = "many"\n')
    with pytest.raises(ScenarioError, match="nodes: expected an integer"):
        load_scenario(str(bad))
    bad.write_text('[attack]\nkind = "bribery"\n')
    with pytest.raises(ScenarioError, match=r"attack\.kind"):
        load_scenario(str(bad))
    with pytest.raises(ScenarioError, match="no scenario 'nope'"):
        load_scenario("nope")


def test_the_same_scenario_and_seed_give_the_same_summary() -> None:
    a, _ = run(small("split-view", seed=3))
    b, _ = run(small("split-view", seed=3))
    c, _ = run(small("split-view", seed=4))
    assert stable(a) == stable(b)
    assert stable(a) != stable(c)


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("name", ["split-view", "rewrite", "sybil", "stolen-key"])
def test_an_equivocation_is_detected_by_every_honest_node(name: str, seed: int) -> None:
    summary, series = run(small(name, seed))
    detection = summary["detection"]
    assert detection["expected"] == summary["honest_nodes"] > 0
    assert detection["detected_by"] == detection["expected"], detection
    assert summary["false_evidence"] == 0
    assert len(series.detection) == detection["detected_by"]
    assert summary["propagation"]["coverage"] == 1.0


@pytest.mark.parametrize("name", ["honest", "partition-heal", "churn", "withholding"])
def test_faults_without_an_equivocation_accuse_nobody_and_everyone_catches_up(name: str) -> None:
    summary, _ = run(small(name, seed=2))
    assert summary["false_evidence"] == 0
    assert summary["detection"]["expected"] == summary["detection"]["detected_by"] == 0
    assert summary["propagation"]["coverage"] == 1.0, summary["propagation"]


def test_honest_propagation_stays_within_the_hop_bound_and_the_message_budget() -> None:
    sc = small("honest", nodes=60)
    summary, series = run(sc)
    bound = hop_bound(60)
    assert summary["propagation"]["hops_bound"] == bound
    within = sum(1 for h in series.hops if h <= bound) / len(series.hops)
    assert within >= 0.99
    assert summary["messages_per_node_per_checkpoint"] <= 2 * sc.topology.degree


def test_a_partition_delays_propagation_until_it_heals() -> None:
    sc = small("partition-heal")
    summary, _ = run(sc)
    part = sc.partitions[0]
    # Checkpoints signed on one side during the split reach the other only after it heals.
    assert summary["propagation"]["max"] > (part.heal - part.at) / 4


def test_the_eclipsed_victim_detects_only_once_an_honest_link_appears() -> None:
    summary, _ = run(small("eclipse"))
    e = summary["eclipse"]
    assert e["detected_while_eclipsed"] is False
    assert e["detected_at"] is not None and e["detected_at"] >= e["honest_link_at"]
    assert summary["detection"]["detected_by"] == summary["detection"]["expected"]


def test_without_the_honest_link_the_victim_never_detects() -> None:
    sc = small("eclipse")
    sc = attrs.evolve(sc, attack=attrs.evolve(sc.attack, heal_at=sc.duration + 1))
    sc = attrs.evolve(sc, duration=sc.duration)
    summary, _ = run(sc)
    assert summary["eclipse"]["detected_at"] is None
    # The victim is cut off from the honest majority, so it is not expected to detect.
    assert summary["detection"]["detected_by"] == summary["detection"]["expected"]


def test_sybil_cosignatures_reach_honest_heads_but_accuse_nobody_else() -> None:
    summary, _ = run(small("sybil"))
    s = summary["sybil"]
    assert s["cosignatures_sent"] > 0
    assert s["heads_with_sybil_cosignatures"] > 0
    assert summary["false_evidence"] == 0


def test_a_lying_builder_is_named_by_every_simulated_client() -> None:
    summary, _ = run(small("lying-builder"))
    c = summary["clients"]
    assert c["clients"] == c["clients_that_named_the_liar"] > 0
    assert c["decisions_fooled"] == 0
    assert summary["false_evidence"] == 0  # its log is consistent: no node can accuse it


@pytest.mark.parametrize("name", ["garbage", "flood"])
def test_garbage_and_floods_get_the_attackers_dropped(name: str) -> None:
    summary, _ = run(small(name))
    a = summary["attackers"]
    assert a["dropped_by_honest"] == a["links"] > 0
    assert summary["propagation"]["coverage"] == 1.0
    assert summary["false_evidence"] == 0


@pytest.mark.parametrize("kind", ["clustered", "local-clusters", "small-world"])
def test_every_topology_is_connected_and_detects(kind: str) -> None:
    sc = small("split-view", nodes=48)
    sc = attrs.evolve(sc, topology=attrs.evolve(sc.topology, kind=kind, clusters=4))
    summary, _ = run(sc)
    assert summary["detection"]["detected_by"] == summary["detection"]["expected"] > 0
    assert summary["propagation"]["coverage"] == 1.0


def test_the_plan_is_a_function_of_the_scenario() -> None:
    a, b = make_plan(small("split-view")), make_plan(small("split-view"))
    assert a.links == b.links and a.signings == b.signings and a.half_b == b.half_b
    assert a.twin is not None and a.seeds[a.twin] == a.seeds[0]


def test_the_shared_verifier_still_rejects_a_tampered_checkpoint() -> None:
    store = Store.in_memory()
    key = PrivateKey.from_seed(bytes(32))
    own = OwnLog.open(store, key, MemoryCheckpointFile())
    path = store_path(1)
    own.append([LeafRecord(leaf(path, 1), path)])
    signed = own.sign(1_700_000_000)
    assert signed is not None
    verifier = eng.Verifier()
    assert verifier.checkpoint(signed.note, key.public_key).checkpoint == signed.checkpoint
    tampered = signed.note.replace(b"\n1\n", b"\n2\n", 1)
    assert tampered != signed.note
    with pytest.raises(VerificationError):
        verifier.checkpoint(tampered, key.public_key)
    # A note with another first signature line is checked whole, not from the cache.
    other = PrivateKey.from_seed(bytes([1]) * 32)
    forged = signed.note.replace(
        signed.note[signed.note.index("\n\u2014 ".encode()) :], b"\n\xe2\x80\x94 x AAAAAAAA\n"
    )
    with pytest.raises((VerificationError, DecodeError)):
        verifier.checkpoint(forged, other.public_key)


def test_the_scenario_example_in_the_simulations_readme_loads(tmp_path: Path) -> None:
    text = (Path(__file__).parent.parent / "simulations" / "README.md").read_text()
    block = text.split("```toml\n", 1)[1].split("```", 1)[0]
    path = tmp_path / "example.toml"
    path.write_text(block)
    sc = load_scenario(str(path))
    assert sc.attack.kind == "split-view" and sc.partitions[0].heal == 140.0
