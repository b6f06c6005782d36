"""The gossip engine in virtual time: engines over the event driver, real codec, seeded."""

from __future__ import annotations

from simulations.events import EventNetwork
from tests import factories as f
from trustix_p2p.gossip import engine as eng

CONFIG = eng.EngineConfig(follow_unknown="mirror", anti_entropy_interval=5.0)


def honest_network(seed: int, nodes: int = 50) -> EventNetwork:
    net = EventNetwork(seed)
    net.add_node(CONFIG, builder=True)
    for _ in range(nodes - 1):
        net.add_node(CONFIG)
    net.random_regular(4)
    return net


def test_a_checkpoint_reaches_every_engine_and_mirrors_get_every_entry() -> None:
    net = honest_network(1)
    net.append(0, [f.leaf(i) for i in range(10)])
    signed = net.sign(0)
    assert signed is not None
    net.run(net.now + 30)
    log_id = signed.log_id
    for node in net.nodes:
        info = node.engine.log_info(log_id)
        assert info is not None, node.index
        assert info.head_size == 10, node.index
        assert node.store.log(log_id).size == 10, node.index
    assert not any(node.engine.evidence() for node in net.nodes)
    # More entries later travel the same way, with the proof from the previous head.
    net.append(0, [f.leaf(i) for i in range(10, 25)])
    net.sign(0)
    net.run(net.now + 30)
    assert all(node.store.log(log_id).size == 25 for node in net.nodes)
    assert not any("drop" in line for _, _, line in net.trace)


def test_the_same_seed_gives_the_same_trace() -> None:
    traces = []
    for _ in range(2):
        net = honest_network(7, nodes=20)
        net.append(0, [f.leaf(i) for i in range(5)])
        net.sign(0)
        net.run(net.now + 20)
        traces.append(net.trace)
    assert traces[0] == traces[1]
    assert traces[0]


def equivocation(seed: int, rewrite: bool, honest_count: int = 20) -> tuple[EventNetwork, bytes]:
    net = EventNetwork(seed)
    key_seed = bytes(range(32))
    a = net.add_node(CONFIG, builder=True, seed=key_seed).index
    b = net.add_node(CONFIG, builder=True, seed=key_seed).index
    honest = [net.add_node(CONFIG).index for _ in range(honest_count)]
    half = honest_count // 2
    left, right = honest[:half], honest[half:]
    net.random_regular(3, left)
    net.random_regular(3, right)
    for h in left[:3]:
        net.link(a, h)
    for h in right[:3]:
        net.link(b, h)
    net.link(left[5], right[5])
    net.append(a, [f.leaf(i) for i in range(5)])
    if rewrite:
        net.append(b, [f.leaf(i, nar_seed="other") for i in range(8)])
    else:
        net.append(b, [f.leaf(i, nar_seed="other") for i in range(5)])
    net.sign(a)
    net.sign(b)
    net.run(net.now + 60)
    own = net.nodes[a].own
    assert own is not None
    return net, own.log_id


def test_a_split_view_is_exposed_at_every_honest_engine() -> None:
    net, log_id = equivocation(3, rewrite=False)
    for node in net.nodes[2:]:
        kinds = {r.kind for r in node.engine.evidence() if r.log_id == log_id}
        assert kinds == {"split-view"}, (node.index, net.trace[-20:])


def test_a_rewritten_history_is_exposed_at_every_honest_engine() -> None:
    net, log_id = equivocation(4, rewrite=True)
    for node in net.nodes[2:]:
        records = [r for r in node.engine.evidence() if r.log_id == log_id]
        assert records, node.index


def test_fifty_engines_expose_a_split_view_identically_for_the_same_seed() -> None:
    runs = [equivocation(11, rewrite=False, honest_count=50) for _ in range(2)]
    for net, log_id in runs:
        for node in net.nodes[2:]:
            assert any(r.log_id == log_id for r in node.engine.evidence()), node.index
    assert runs[0][0].trace == runs[1][0].trace


def test_witnesses_keep_only_the_head_and_still_expose_a_split_view() -> None:
    witness = eng.EngineConfig(follow_unknown="witness", anti_entropy_interval=5.0)
    net = EventNetwork(5)
    key_seed = bytes(range(32, 64))
    a = net.add_node(CONFIG, builder=True, seed=key_seed).index
    b = net.add_node(CONFIG, builder=True, seed=key_seed).index
    # Two mirrors serve proofs; everyone else only witnesses.
    mirrors = [net.add_node(CONFIG).index for _ in range(2)]
    witnesses = [net.add_node(witness).index for _ in range(16)]
    net.random_regular(3, mirrors + witnesses)
    net.link(a, mirrors[0])
    net.link(b, witnesses[-1])
    net.append(a, [f.leaf(i) for i in range(6)])
    net.sign(a)
    net.run(net.now + 20)
    own = net.nodes[a].own
    assert own is not None
    log_id = own.log_id
    for index in witnesses:
        node = net.nodes[index]
        info = node.engine.log_info(log_id)
        assert info is not None and info.mode == "witness" and info.head_size == 6, index
        assert node.store.log(log_id).size == 0  # no entries: O(1) per log
    # Honest growth is followed by witnesses through consistency proofs.
    net.append(a, [f.leaf(i) for i in range(6, 9)])
    net.sign(a)
    net.run(net.now + 20)
    for index in witnesses:
        info = net.nodes[index].engine.log_info(log_id)
        assert info is not None and info.head_size == 9, index
    assert not any(n.engine.evidence() for n in net.nodes)
    # Now the same key shows another history of the same size to one witness.
    net.append(b, [f.leaf(i, nar_seed="fork") for i in range(9)])
    net.sign(b)
    net.run(net.now + 30)
    for index in mirrors + witnesses:
        kinds = {r.kind for r in net.nodes[index].engine.evidence() if r.log_id == log_id}
        assert kinds == {"split-view"}, index


def test_nodes_cosign_the_heads_they_verified_and_spread_the_cosignatures() -> None:
    from trustix_p2p.core.checkpoint import cosignatures_in
    from trustix_p2p.gossip.engine import witness_name

    net = honest_network(9, nodes=10)
    net.append(0, [f.leaf(i) for i in range(4)])
    signed = net.sign(0)
    assert signed is not None
    net.run(net.now + 20)
    note = net.nodes[3].engine.head_note(signed.log_id)
    assert note is not None
    valid = 0
    for node in net.nodes[1:]:
        pub = node.key.public_key
        valid += len(cosignatures_in(note, witness_name(pub), pub))
    info = net.nodes[3].engine.log_info(signed.log_id)
    assert info is not None and info.cosignatures >= 2
    assert valid == info.cosignatures
