"""Hostile peers against a real node (in process, real TCP, Noise and LevelDB): each is
dropped with its reason recorded, and the node keeps syncing with its honest builder."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio

from tests import factories as f
from tests.test_gossip_node import make_config, pinned, running
from trustix_p2p.core import evidence as ev
from trustix_p2p.core import wire
from trustix_p2p.core.checkpoint import SignedCheckpoint
from trustix_p2p.core.keys import PrivateKey
from trustix_p2p.gossip import messages as m
from trustix_p2p.node import Node
from trustix_p2p.ownlog import MemoryCheckpointFile, OwnLog
from trustix_p2p.storage import Store
from trustix_p2p.transport import Connection
from trustix_p2p.transport.connection import open_connection


def history(key: PrivateKey, count: int, seed: str = "") -> tuple[OwnLog, SignedCheckpoint]:
    """A log of `key` with `count` entries in memory, and its checkpoint."""
    own = OwnLog.open(Store.in_memory(), key, MemoryCheckpointFile())
    own.append([f.record(i, nar_seed=seed) for i in range(count)])
    signed = own.sign(1_700_000_000 + count)
    assert signed is not None
    return own, signed


@asynccontextmanager
async def hostile(target: Node, name: str) -> AsyncIterator[Connection]:
    key = f.key(f"hostile {name}")
    async with open_connection(pinned(target), key) as connection:
        yield connection


async def drain(connection: Connection, seconds: float = 2.0) -> list[wire.Message]:
    """What the node sends until it closes the connection (or `seconds` pass)."""
    got: list[wire.Message] = []
    with trio.move_on_after(seconds):
        try:
            while (message := await connection.receive_message()) is not None:
                got.append(message)
        except Exception:  # the node hung up on us: what we wanted
            pass
    return got


def reason_for(node: Node, name: str) -> str:
    return node.peering.dropped.get(f.key(f"hostile {name}").public_key.to_base64(), "")


async def test_hostile_peers_are_dropped_and_honest_sync_goes_on(tmp_path: Path) -> None:
    alice_key = f.key("alice")
    async with running(make_config(tmp_path / "a", alice_key)) as alice:
        await alice.submit(tuple(f.leaf(i) for i in range(100)))
        await alice.sign_checkpoint_now()
        log_id = alice_key.public_key.log_id()
        target_config = make_config(tmp_path / "t", f.key("target"), seeds=(pinned(alice),))
        async with running(target_config) as target:
            with trio.fail_after(30):
                await target.wait_until(
                    lambda: target.store.has_log(log_id) and target.store.log(log_id).size == 100
                )
            host, _, port = target.listening[0].rpartition(":")

            # Garbage bytes instead of a handshake.
            stream = await trio.open_tcp_stream(host, int(port))
            await stream.send_all(os.urandom(4096))
            await stream.aclose()

            # A valid Noise session, then a frame that is not msgpack.
            async with hostile(target, "malformed") as c:
                await c.stream.send_all(b"\x00\x00\x00\x04\xc1\xc1\xc1\xc1")
                await drain(c)
            assert "not valid msgpack" in reason_for(target, "malformed") or reason_for(
                target, "malformed"
            )

            # A checkpoint of Alice's log whose signature does not verify.
            _, bigger = history(alice_key, 120)
            note = bigger.note.replace(b"\n\xe2\x80\x94 ", b"\n\xe2\x80\x94 ", 1)
            forged = bytearray(note)
            forged[-10] ^= 1
            async with hostile(target, "signature") as c:
                await c.send_message(
                    m.Heads((m.Head(alice_key.public_key.raw, bytes(forged), 0, None, ()),), False)
                )
                await drain(c)
            assert "invalid checkpoint" in reason_for(target, "signature")

            # A valid, larger checkpoint with a bogus consistency proof.
            async with hostile(target, "proof") as c:
                bogus = m.Head(alice_key.public_key.raw, bigger.note, 100, bytes(32), (bytes(32),))
                await c.send_message(m.Heads((bogus,), False))
                await drain(c)
            assert "invalid consistency proof" in reason_for(target, "proof")

            # Its own log, then entries that do not rebuild its checkpoint's root.
            liar_key = f.key("hostile entries")
            _, liar_cp = history(liar_key, 10)
            async with hostile(target, "entries") as c:
                head = m.Head(liar_key.public_key.raw, liar_cp.note, 0, None, ())
                await c.send_message(m.Heads((head,), False))
                with trio.move_on_after(10):
                    while (message := await c.receive_message()) is not None:
                        if isinstance(message, m.GetEntries):
                            wrong = tuple(
                                f.leaf(i, nar_seed="wrong")
                                for i in range(message.start, message.start + message.count)
                            )
                            await c.send_message(
                                m.Entries(message.log_id, message.start, wrong, liar_cp.note, ())
                            )
                            break
                await drain(c)
            assert "do not rebuild" in reason_for(target, "entries")
            assert target.store.log(liar_key.public_key.log_id()).size == 0

            # Forged evidence: a "split view" whose second checkpoint was never signed.
            real = target.store.log(log_id).checkpoint()
            assert real is not None
            async with hostile(target, "evidence") as c:
                fake = ev.EvidenceMessage(
                    "split-view", alice_key.public_key.raw, (real.note, bytes(forged)), None, ()
                )
                await c.send_message(fake)
                await drain(c)
            assert "invalid evidence" in reason_for(target, "evidence")
            assert target.engine.evidence() == []

            # A flood of valid but useless messages.
            sent = 0
            async with hostile(target, "flood") as c:
                with trio.move_on_after(10):
                    try:
                        for i in range(50_000):
                            await c.send_message(wire.Ping(i))
                            sent += 1
                    except Exception:
                        pass
                with trio.move_on_after(30):
                    while not reason_for(target, "flood"):
                        await trio.sleep(0.05)
            assert "budget" in reason_for(target, "flood"), (sent, target.peering.dropped)

            # Many connection attempts that never handshake.
            streams = []
            for _ in range(300):
                try:
                    streams.append(await trio.open_tcp_stream(host, int(port)))
                except OSError:
                    break
            for s in streams:
                await s.aclose()

            # The node is up and still syncing with its honest builder.
            await alice.submit(tuple(f.leaf(i) for i in range(100, 150)))
            await alice.sign_checkpoint_now()
            with trio.fail_after(30):
                await target.wait_until(lambda: target.store.log(log_id).size == 150)
            assert target.engine.evidence() == []
            rows = await target.peering.peer_rows()
            assert any(r["state"] == "connected" for r in rows)
