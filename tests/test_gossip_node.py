"""Nodes in one process over real TCP, Noise and LevelDB: mirroring, relaying, evidence."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio

from tests import factories as f
from trustix_p2p.config import NodeConfig
from trustix_p2p.core.keys import PrivateKey
from trustix_p2p.keyfile import write_key_file
from trustix_p2p.node import Node


def make_config(directory: Path, key: PrivateKey, **kw: object) -> NodeConfig:
    directory.mkdir(parents=True, exist_ok=True)
    key_file = directory / "node.key"
    if not key_file.exists():
        write_key_file(key_file, key)
    defaults: dict[str, object] = {
        "checkpoint_interval": 3600.0,
        "anti_entropy_interval": 0.5,
        "follow_unknown": "mirror",
        "redial_interval": 0.1,
    }
    defaults.update(kw)
    return NodeConfig(
        state_dir=directory / "state",
        key_file=key_file,
        control_socket=directory / "c.sock",
        **defaults,
    )  # type: ignore[arg-type]


@asynccontextmanager
async def running(config: NodeConfig) -> AsyncIterator[Node]:
    node = Node.open(config)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: node.run(install_signal_handlers=False))
            await node.ready.wait()
            yield node
            nursery.cancel_scope.cancel()
    finally:
        node.close()


def pinned(node: Node) -> str:
    assert node.key is not None
    return f"{node.key.public_key.to_base64()}@{node.listening[0]}"


async def test_a_seeded_node_mirrors_the_builders_log_and_relays_it(tmp_path: Path) -> None:
    alice_key, bob_key, carol_key = f.key("alice"), f.key("bob"), f.key("carol")
    async with running(make_config(tmp_path / "a", alice_key)) as alice:
        await alice.submit(tuple(f.leaf(i) for i in range(300)))
        signed = await alice.sign_checkpoint_now()
        assert signed is not None
        log_id = signed.log_id
        bob_config = make_config(tmp_path / "b", bob_key, seeds=(pinned(alice),))
        async with running(bob_config) as bob:
            with trio.fail_after(30):
                await bob.wait_until(
                    lambda: bob.store.has_log(log_id) and bob.store.log(log_id).size == 300
                )
            # Carol knows only Bob, and gets Alice's log from him.
            carol_config = make_config(tmp_path / "c", carol_key, seeds=(pinned(bob),))
            async with running(carol_config) as carol:
                with trio.fail_after(30):
                    await carol.wait_until(
                        lambda: carol.store.has_log(log_id) and carol.store.log(log_id).size == 300
                    )
                # Through the node's executor, as the control socket asks: the predicate above
                # reads the store from this thread and may see the new size a moment before
                # the append that made it is committed.
                hits = await carol.executor.run(carol.lookup, f.entry(7).out_path)
                assert [h.index for h in hits] == [7]
                # New entries travel the same way.
                await alice.submit(tuple(f.leaf(i) for i in range(300, 350)))
                await alice.sign_checkpoint_now()
                with trio.fail_after(30):
                    await carol.wait_until(lambda: carol.store.log(log_id).size == 350)
                assert not carol.engine.evidence()
                assert not bob.engine.evidence()
