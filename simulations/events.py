"""The discrete-event driver: many gossip engines, one heap of timed events, virtual time.

Each node is a real `trustix_p2p.gossip.engine.Engine` over a memory `Store`; builders also
own a real `OwnLog`.  Messages between engines go through the real wire codec (encoded, then
read back by the strict reader), after a per-link latency; nothing is modelled that the node
would compute.  One seeded `random.Random` drives every choice, so a run is replayable: the
same seed gives the same trace.

A peer id inside an engine is the index of the other node, so traces read naturally.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable, Iterable
from typing import Any

import attrs

from trustix_p2p.core import wire
from trustix_p2p.core.checkpoint import SignedCheckpoint
from trustix_p2p.core.entry import decode_entry
from trustix_p2p.core.keys import PrivateKey
from trustix_p2p.gossip import engine as eng
from trustix_p2p.ownlog import MemoryCheckpointFile, OwnLog
from trustix_p2p.storage import LeafRecord, Store

__all__ = ["EventNetwork", "SimNode"]


@attrs.define(eq=False)
class SimNode:
    index: int
    key: PrivateKey
    store: Store
    engine: eng.Engine
    own: OwnLog | None = None
    links: set[int] = attrs.field(factory=set)
    received: int = 0
    bytes_in: int = 0
    sent: int = 0


class EventNetwork:
    """Engines joined by links with latency; `run(until)` processes events in time order."""

    def __init__(
        self,
        seed: int,
        *,
        latency: Callable[[random.Random], float] | None = None,
        start: float = 1_700_000_000.0,
        verifier: eng.Verifier | None = None,
    ) -> None:
        self.rng = random.Random(seed)
        self.now = start
        self.nodes: list[SimNode] = []
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = 0
        self._latency = latency or (lambda r: 0.01 + 0.04 * r.random())
        self.verifier = verifier if verifier is not None else eng.Verifier()
        self.trace: list[tuple[float, int, str]] = []
        self.observers: list[Callable[[float, int, eng.Action], None]] = []

    # -- building --------------------------------------------------------------------------

    def add_node(
        self, config: eng.EngineConfig, *, builder: bool = False, seed: bytes | None = None
    ) -> SimNode:
        index = len(self.nodes)
        key = PrivateKey.from_seed(seed or self.rng.randbytes(32))
        store = Store.in_memory()
        own = OwnLog.open(store, key, MemoryCheckpointFile()) if builder else None
        engine = eng.Engine(
            store,
            config,
            key=key,
            rng=random.Random(self.rng.getrandbits(64)),
            now=self.now,
            verifier=self.verifier,
        )
        node = SimNode(index, key, store, engine, own)
        self.nodes.append(node)
        self._schedule(engine.next_deadline(), lambda: self._tick(node))
        return node

    def link(self, a: int, b: int) -> None:
        na, nb = self.nodes[a], self.nodes[b]
        if b in na.links:
            return
        na.links.add(b)
        nb.links.add(a)
        self._apply(
            na,
            na.engine.peer_connected(
                b, nb.key.public_key.raw, outbound=True, address=f"n{b}", now=self.now
            ),
        )
        self._apply(
            nb,
            nb.engine.peer_connected(
                a, na.key.public_key.raw, outbound=False, address=f"n{a}", now=self.now
            ),
        )

    def unlink(self, a: int, b: int) -> None:
        na, nb = self.nodes[a], self.nodes[b]
        if b not in na.links:
            return
        na.links.discard(b)
        nb.links.discard(a)
        self._apply(na, na.engine.peer_disconnected(b, self.now))
        self._apply(nb, nb.engine.peer_disconnected(a, self.now))

    def random_regular(self, degree: int, nodes: Iterable[int] | None = None) -> None:
        """Join nodes into a connected graph where every node has about `degree` links: a
        ring for connectivity, then random chords."""
        members = list(range(len(self.nodes)) if nodes is None else nodes)
        self.rng.shuffle(members)
        for i, a in enumerate(members):
            self.link(a, members[(i + 1) % len(members)])
        for a in members:
            tries = 0
            while len(self.nodes[a].links) < degree and tries < 20:
                tries += 1
                b = self.rng.choice(members)
                if b != a and len(self.nodes[b].links) < degree:
                    self.link(a, b)

    # -- builders ------------------------------------------------------------------------------

    def append(self, index: int, leaves: list[bytes]) -> None:
        own = self.nodes[index].own
        assert own is not None
        own.append([LeafRecord(leaf, decode_entry(leaf).out_path) for leaf in leaves])

    def sign(self, index: int) -> SignedCheckpoint | None:
        node = self.nodes[index]
        assert node.own is not None
        signed = node.own.sign(int(self.now))
        if signed is not None:
            self._apply(node, node.engine.local_checkpoint(signed, self.now))
        return signed

    def at(self, when: float, action: Callable[[], Any]) -> None:
        self._schedule(when, action)

    # -- running -------------------------------------------------------------------------------

    def _schedule(self, when: float, fn: Callable[[], None]) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (when, self._seq, fn))

    def run(self, until: float) -> None:
        while self._heap and self._heap[0][0] <= until:
            when, _, fn = heapq.heappop(self._heap)
            self.now = max(self.now, when)
            fn()
        self.now = max(self.now, until)

    def _tick(self, node: SimNode) -> None:
        self._apply(node, node.engine.tick(self.now))
        self._schedule(max(self.now + 0.05, node.engine.next_deadline()), lambda: self._tick(node))

    def _apply(self, node: SimNode, actions: list[eng.Action]) -> None:
        for action in actions:
            for observe in self.observers:
                observe(self.now, node.index, action)
            match action:
                case eng.Send(peer, message):
                    self._deliver(node, peer, message)
                case eng.Disconnect(peer, reason):
                    self.trace.append((self.now, node.index, f"drop {peer}: {reason}"))
                    self.unlink(node.index, peer)
                case eng.EvidenceFound(ident, kind, _log, source):
                    self.trace.append(
                        (self.now, node.index, f"evidence {kind} {ident[:16]} from {source}")
                    )
                case eng.Accepted(_log, size, _h, source):
                    self.trace.append((self.now, node.index, f"head {size} from {source}"))
                # Peers learned and entries synced change nothing here: the graph is fixed.

    def _deliver(self, node: SimNode, peer: int, message: wire.Message) -> None:
        if peer not in node.links:
            return
        body = wire.REGISTRY.encode_body(message)
        node.sent += 1
        delay = self._latency(self.rng)
        target = self.nodes[peer]
        sender = node.index

        def arrive() -> None:
            if sender not in target.links:
                return
            target.received += 1
            target.bytes_in += len(body) + 4
            decoded = wire.REGISTRY.decode_body(body)
            self._apply(target, target.engine.message(sender, decoded, len(body) + 4, self.now))

        self._schedule(self.now + delay, arrive)
