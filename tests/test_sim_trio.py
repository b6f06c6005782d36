"""The fidelity driver (simulations/trio_driver.py): real nodes over the in-memory network in
virtual time, and the pieces it stands on: links that deliver `delay` after sending without
holding the sender, links that can be cut and restored, and `Peering.dial_now`."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from simulations.metrics import summarize
from simulations.plan import make_plan
from simulations.scenario import (
    Attack,
    Builders,
    Churn,
    Network,
    Partition,
    Scenario,
    ScenarioError,
)
from simulations.trio_driver import run_trio
from tests.factories import key
from trustix_p2p.config import NodeConfig
from trustix_p2p.core.keys import PrivateKey
from trustix_p2p.executor import InlineExecutor
from trustix_p2p.node import Node
from trustix_p2p.ownlog import MemoryCheckpointFile, OwnLog
from trustix_p2p.storage import Store
from trustix_p2p.transport.network import MemoryNetwork

SMALL = Builders(count=3, entries=30, checkpoint_interval=20)


def _summary(scenario: Scenario) -> dict[str, Any]:
    summary, _series = summarize(run_trio(make_plan(scenario)), wall_seconds=0, peak_rss_mb=0)
    return summary


# -- the driver --------------------------------------------------------------------------------


def test_a_split_view_is_detected_by_every_honest_node_and_a_run_repeats_exactly() -> None:
    scenario = Scenario(
        nodes=30, duration=80, builders=SMALL, attack=Attack(kind="split-view", at=50)
    )
    plan = make_plan(scenario)
    obs = run_trio(plan)
    first, _ = summarize(obs, wall_seconds=0, peak_rss_mb=0)
    detection = first["detection"]
    assert detection["detected_by"] == detection["expected"] == len(plan.honest) > 0
    assert first["false_evidence"] == 0
    assert first["propagation"]["coverage"] == 1.0
    # What the shells reported: heads from peers (the twin's among them) and evidence.
    assert plan.twin in obs.builders and obs.alive == frozenset(range(plan.nodes))
    assert any(a.source == plan.twin for a in obs.accepts)
    assert {e.node for e in obs.evidence} >= set(plan.honest)
    assert sum(c.builder == plan.twin for c in obs.checkpoints) == 1
    assert not any(c.honest for c in obs.checkpoints if c.builder == 0 and c.time >= 50)
    # The same plan gives the same run, to the last message.
    second = _summary(scenario)
    assert second == first


def test_a_rewritten_history_is_detected() -> None:
    summary = _summary(
        Scenario(nodes=20, duration=80, builders=SMALL, attack=Attack(kind="rewrite", at=45))
    )
    detection = summary["detection"]
    assert detection["detected_by"] == detection["expected"] > 0
    assert summary["false_evidence"] == 0


def test_partitions_churn_and_loss_leave_every_node_with_every_checkpoint_and_no_evidence() -> None:
    scenario = Scenario(
        nodes=30,
        duration=120,
        builders=SMALL,
        network=Network(loss=0.02),
        partitions=(Partition(at=25, heal=55),),
        churn=Churn(crash=0.15, late_join=0.1, window=(20, 50), downtime=(5, 20)),
    )
    plan = make_plan(scenario)
    assert plan.crashes and plan.late and plan.link_events  # the scenario does what it says
    obs = run_trio(plan)
    summary, _ = summarize(obs, wall_seconds=0, peak_rss_mb=0)
    assert summary["propagation"]["coverage"] == 1.0
    assert summary["false_evidence"] == 0
    assert obs.alive == frozenset(range(plan.nodes))
    # After the heal every planned link is up again.
    assert obs.final_links == {(x.a, x.b) for x in plan.links}
    # A crashed node's counters add up over its two lives.
    assert all(obs.received[i] > 0 for i in range(plan.nodes))


def test_noise_on_the_links_works_too() -> None:
    summary = _summary(
        Scenario(
            nodes=12,
            duration=50,
            builders=Builders(count=2, entries=10, checkpoint_interval=15),
            attack=Attack(kind="split-view", at=30),
            noise=True,
        )
    )
    detection = summary["detection"]
    assert detection["detected_by"] == detection["expected"] > 0
    assert summary["false_evidence"] == 0


def test_attacks_the_trio_driver_does_not_run_are_refused_by_name() -> None:
    plan = make_plan(Scenario(nodes=20, duration=60, builders=SMALL, attack=Attack("garbage", 30)))
    with pytest.raises(ScenarioError, match="use --driver events for garbage"):
        run_trio(plan)


# -- the in-memory network -----------------------------------------------------------------------


async def _pair(network: MemoryNetwork, dialler: str = "10.0.0.1") -> tuple[Any, Any]:
    (listener,) = await network.listen("10.0.0.2", 7946)
    near = await network.host(dialler).dial("10.0.0.2", 7946)
    far, source, _remote = await listener.accept()
    assert source == dialler
    return near, far


async def test_messages_arrive_a_delay_after_they_were_sent_without_holding_the_sender(
    autojump_clock: trio.testing.MockClock,
) -> None:
    network = MemoryNetwork(delay=lambda _src, _dst: 0.1)
    near, far = await _pair(network)
    start = trio.current_time()
    await near.send_all(b"one")
    await near.send_all(b"two")
    assert trio.current_time() == start  # the link took both at once
    received = b""
    while received != b"onetwo":
        received += await far.receive_some()
    # Both arrive one delay after they were sent, not one delay after the other.
    assert trio.current_time() - start == pytest.approx(0.1)
    await near.aclose()
    assert await far.receive_some() == b""  # the end of the stream, after the data


async def test_bandwidth_spaces_what_a_link_carries(
    autojump_clock: trio.testing.MockClock,
) -> None:
    network = MemoryNetwork(delay=lambda _s, _d: 0.05, bandwidth=lambda _s, _d: 1000.0)
    near, far = await _pair(network)
    start = trio.current_time()
    await near.send_all(b"x" * 500)
    await near.send_all(b"y" * 500)
    assert await far.receive_some() == b"x" * 500
    assert trio.current_time() - start == pytest.approx(0.55)
    assert await far.receive_some() == b"y" * 500
    assert trio.current_time() - start == pytest.approx(1.05)


async def test_blocking_two_hosts_drops_their_connections_and_refuses_dials(
    autojump_clock: trio.testing.MockClock,
) -> None:
    network = MemoryNetwork(delay=lambda _s, _d: 0.01)
    near, far = await _pair(network)
    await near.send_all(b"in flight")  # dies with the connection
    network.block("10.0.0.2", "10.0.0.1")
    assert network.blocked("10.0.0.1", "10.0.0.2")
    for end in (near, far):
        with pytest.raises(trio.BrokenResourceError, match="went down"):
            await end.receive_some()
        with pytest.raises(trio.BrokenResourceError):
            await end.send_all(b"x")
    with pytest.raises(OSError, match="down") as refused:
        await network.host("10.0.0.1").dial("10.0.0.2", 7946)
    assert refused.value.errno == 111
    # Others still connect; and the pair again once unblocked.
    await network.host("10.0.0.3").dial("10.0.0.2", 7946)
    network.unblock("10.0.0.1", "10.0.0.2")
    again = await network.host("10.0.0.1").dial("10.0.0.2", 7946)
    assert network.connections("10.0.0.1", "10.0.0.2") == 1
    # A host that goes down: nothing listens there, its connections break.
    network.close_host("10.0.0.2")
    with pytest.raises(trio.BrokenResourceError):
        await again.receive_some()
    with pytest.raises(OSError, match="nothing listens"):
        await network.dial("10.0.0.2", 7946)


async def test_a_closed_end_breaks_the_peers_sends(autojump_clock: trio.testing.MockClock) -> None:
    network = MemoryNetwork()
    near, far = await _pair(network)
    await far.aclose()
    with pytest.raises(trio.BrokenResourceError):
        await near.send_all(b"x")
    with pytest.raises(trio.ClosedResourceError):
        await far.receive_some()
    assert await near.receive_some() == b""
    assert network.connections("10.0.0.1", "10.0.0.2") == 1
    await near.aclose()
    assert network.connections("10.0.0.1", "10.0.0.2") == 0


# -- Peering.dial_now ------------------------------------------------------------------------------


@asynccontextmanager
async def _node(
    network: MemoryNetwork, name: str, host: str, nursery: trio.Nursery, **config: Any
) -> AsyncIterator[Node]:
    k: PrivateKey = key(name)
    store = Store.in_memory()
    rng = random.Random(name)
    node = Node(
        NodeConfig(
            state_dir=Path("/nonexistent") / name,
            checkpoint_interval=3600.0,
            listen=(f"{host}:7946",),
            **config,
        ),
        store,
        k,
        OwnLog.open(store, k, MemoryCheckpointFile()),
        clock=lambda: 1_700_000_000 + trio.current_time(),
        name=name,
        network=network.host(host),
        secure=False,
        random_bytes=rng.randbytes,
        executor=InlineExecutor(),
        serve_control_socket=False,
        ingest_spool_files=False,
    )
    scope = trio.CancelScope()

    async def run() -> None:
        with scope:
            await node.run(install_signal_handlers=False)

    nursery.start_soon(run)
    await node.ready.wait()
    try:
        yield node
    finally:
        scope.cancel()


async def test_dial_now_dials_at_once_whatever_the_back_off(
    autojump_clock: trio.testing.MockClock,
) -> None:
    network = MemoryNetwork(delay=lambda _s, _d: 0.01)
    bob_address = f"{key('bob').public_key.to_base64()}@10.0.0.2:7946"
    network.block("10.0.0.1", "10.0.0.2")
    async with trio.open_nursery() as nursery:
        async with (
            _node(network, "bob", "10.0.0.2", nursery) as bob,
            _node(
                network,
                "alice",
                "10.0.0.1",
                nursery,
                seeds=(bob_address,),
                redial_interval=100.0,
            ) as alice,
        ):
            await trio.sleep(1)
            assert alice.peering.connected_count() == 0  # refused: backing off for 100 s
            network.unblock("10.0.0.1", "10.0.0.2")
            started = trio.current_time()
            alice.peering.dial_now(bob_address)
            with trio.fail_after(1):
                await alice.wait_until(lambda: alice.peering.connected_count() == 1)
            assert trio.current_time() - started < 0.1
            ((peer, _remote, outbound),) = alice.peering.connected()
            assert peer == key("bob").public_key.raw and outbound
            await bob.wait_until(lambda: bob.peering.connected_count() == 1)
            # A new address is remembered as a seed and dialled the same way.
            carol_address = f"{key('carol').public_key.to_base64()}@10.0.0.3:7946"
            async with _node(network, "carol", "10.0.0.3", nursery) as carol:
                bob.peering.dial_now(carol_address)
                with trio.fail_after(1):
                    await carol.wait_until(lambda: carol.peering.connected_count() == 1)
                # Its own address is never dialled (peer exchange may have added Alice).
                carol.peering.dial_now(carol_address)
                await trio.sleep(1)
                keys = [peer for peer, _remote, _outbound in carol.peering.connected()]
                assert key("bob").public_key.raw in keys
                assert key("carol").public_key.raw not in keys
        nursery.cancel_scope.cancel()
