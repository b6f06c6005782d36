"""The scale driver: real gossip engines, one heap of timed events, virtual time.

Every node is a real `trustix_p2p.gossip.engine.Engine` over a memory `Store`; builders keep a
real `OwnLog` and sign real checkpoints.  Messages go through the real wire codec (encoded by
the sender, read back by the strict reader at the receiver), over links with the plan's
latency and bandwidth: a message leaves when the link is free, takes `size / bandwidth` on
the wire, arrives `latency` later, after any earlier message on that link (TCP keeps order;
a lost segment costs a retransmission timeout, doubling).  Ticks come at each engine's
`next_deadline()`, as the node's shell arranges.  One seeded `random.Random` draws loss; the
engines' own random sources are seeded from it.  What an attack does, it does here, outside
the engines: an attacker is a shell that sends or withholds what an honest one would not.

Decoded messages are cached by their exact bytes (they are immutable values, so a receiver
gets what the strict reader would give it), and all engines share one `Verifier`: each
distinct signed note or piece of evidence is checked once per run, and whatever fails to
verify is checked again every time and refused.
"""

from __future__ import annotations

import hashlib
import heapq
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import trio

from trustix_p2p.client.light import Hit, LightClient, Proof
from trustix_p2p.client.policy import Policy, PolicyBuilder
from trustix_p2p.client.state import ClientState
from trustix_p2p.core import evidence as ev
from trustix_p2p.core import wire
from trustix_p2p.core.checkpoint import SignedCheckpoint, cosign
from trustix_p2p.core.entry import decode_entry
from trustix_p2p.core.keys import PrivateKey, PublicKey
from trustix_p2p.core.note import parse_note
from trustix_p2p.errors import DecodeError, TrustixError
from trustix_p2p.gossip import engine as eng
from trustix_p2p.gossip import messages as m
from trustix_p2p.ownlog import MemoryCheckpointFile, OwnLog
from trustix_p2p.storage import LeafRecord, Store

from .observe import AcceptObs, CheckpointObs, EvidenceObs, Observations
from .plan import EPOCH, Link, Plan, leaf, nar_hash, store_path

__all__ = ["EventsDriver", "run_events"]

Progress = Callable[[float, float], None]
FRAME = 4  # the length prefix of every frame


@attrs.define(eq=False)
class _Node:
    index: int
    key: PrivateKey
    store: Store
    own: OwnLog | None
    engine: eng.Engine | None = None  # None while down
    links: dict[int, _Wire] = attrs.field(factory=dict)
    tick_at: float = float("inf")
    generation: int = 0  # bumped at each crash: stale ticks are ignored


@attrs.define(eq=False)
class _Wire:
    """One direction of a link as the sender sees it."""

    latency: float
    bandwidth: float
    free_at: float = 0.0  # when the link finishes sending what it was given
    last_arrival: float = 0.0
    generation: int = 0


def _records(leaves: tuple[bytes, ...] | list[bytes]) -> list[LeafRecord]:
    return [LeafRecord(x, decode_entry(x).out_path) for x in leaves]


def _body_hash(signed: SignedCheckpoint) -> bytes:
    return hashlib.sha256(signed.checkpoint.body()).digest()


class EventsDriver:
    def __init__(self, plan: Plan, progress: Progress | None = None) -> None:
        self.plan = plan
        sc = plan.scenario
        self.sc = sc
        self.progress = progress
        self.rng = random.Random(f"events {sc.seed}")
        self.t = 0.0
        self._heap: list[tuple[float, int, Callable[..., None], tuple[Any, ...]]] = []
        self._seq = 0
        self.verifier = eng.Verifier(max_entries=1 << 20)
        self._decoded: dict[bytes, wire.Message | None] = {}
        self.nodes: list[_Node | None] = [None] * plan.nodes
        self.wanted: dict[tuple[int, int], Link] = {(x.a, x.b): x for x in plan.links}
        kind = sc.attack.kind
        self.kind = kind
        honest = plan.honest
        self.obs = Observations(
            sc,
            "events",
            plan.nodes,
            honest,
            plan.builders + ((plan.twin,) if plan.twin is not None else ()),
            topology=f"{sc.topology.kind} d={sc.topology.degree}",
        )
        self.obs.received = [0] * plan.nodes
        self.obs.bytes_in = [0] * plan.nodes
        self.obs.sent = [0] * plan.nodes
        if plan.attacker_builder is not None:
            self.obs.attacked_log = plan.key(0).public_key.log_id()
            self.obs.attack_time = sc.attack.at
        self.base_config = eng.EngineConfig(
            anti_entropy_interval=sc.engine.anti_entropy_interval,
            relay_delay=sc.engine.relay_delay,
            cosign=sc.engine.cosign,
            request_timeout=sc.engine.request_timeout,
        )
        # Attack state
        self.fork_a: list[bytes] = []  # builder 0's checkpoint bodies from the attack on
        self.drops: list[tuple[float, int, int, str]] = []  # (time, by, peer, reason)
        self.sybil_cosigned: set[tuple[int, bytes]] = set()
        # Nodes whose shell filters what they send (withholding, the eclipse ring), and the
        # Sybils (they cosign whatever heads they are shown).
        filtering: set[int] = set()
        if kind == "withholding":
            filtering.add(0)
        if kind == "eclipse":
            filtering |= set(plan.attackers)
        self._filtering = frozenset(filtering)
        self._sybils = frozenset(plan.attackers) if kind == "sybil" else frozenset()

    # -- the heap ---------------------------------------------------------------------------

    def at(self, when: float, fn: Callable[..., None], *args: Any) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (when, self._seq, fn, args))

    def run(self) -> Observations:
        plan, sc = self.plan, self.sc
        for i in range(plan.nodes):
            if i == plan.twin or i in plan.late:
                continue
            self._start(i, self._fresh_store(i))
        for i, when in sorted(plan.late.items()):
            self.at(when, self._join, i)
        for when, up, i in plan.crashes:
            self.at(when, self._crash, i)
            self.at(up, self._restart, i)
        for x in plan.links:
            self._connect(x)
        for when, what, x in plan.link_events:
            self.at(when, self._link_event, what, x)
        for s in plan.signings:
            self.at(s.time, self._sign, s.builder, s.leaves)
        if self.kind in ("split-view", "eclipse", "sybil"):
            self.at(sc.attack.at, self._fork)
        elif self.kind == "rewrite":
            self.at(sc.attack.at, self._rewrite)
        elif self.kind == "stolen-key":
            self.at(sc.attack.at, self._steal)
        elif self.kind in ("garbage", "flood"):
            for a in plan.attackers:
                self.at(sc.attack.at, self._pester, a)
        step = max(1.0, sc.duration / 200)
        next_report = 0.0
        heap = self._heap
        end = sc.duration
        while heap and heap[0][0] <= end:
            when, _, fn, args = heapq.heappop(heap)
            if when > self.t:
                self.t = when
            if self.progress is not None and self.t >= next_report:
                self.progress(self.t, end)
                next_report = self.t + step
            fn(*args)
        self.t = end
        if self.progress is not None:
            self.progress(end, end)
        return self._finish()

    # -- nodes -------------------------------------------------------------------------------

    def _fresh_store(self, i: int) -> tuple[Store, OwnLog | None]:
        store = Store.in_memory()
        key = self.plan.key(i)
        signs = i in self.plan.builders or i == self.plan.twin
        own = OwnLog.open(store, key, MemoryCheckpointFile()) if signs else None
        return store, own

    def _config(self, i: int) -> eng.EngineConfig:
        mode = "mirror" if i in self.plan.mirrors else "witness"
        return attrs.evolve(self.base_config, follow_unknown=mode)

    def _start(self, i: int, store_own: tuple[Store, OwnLog | None]) -> None:
        store, own = store_own
        key = self.plan.key(i)
        node = self.nodes[i]
        if node is None:
            node = _Node(i, key, store, own)
            self.nodes[i] = node
        node.store, node.own = store, own
        node.tick_at = float("inf")
        node.engine = eng.Engine(
            store,
            self._config(i),
            key=key,
            rng=random.Random(self.rng.getrandbits(64)),
            now=EPOCH + self.t,
            verifier=self.verifier,
        )
        self._schedule_tick(node)

    def _join(self, i: int) -> None:
        self._start(i, self._fresh_store(i))
        self._connect_wanted(i)

    def _connect_wanted(self, i: int) -> None:
        for key, x in sorted(self.wanted.items()):
            if i in key:
                self._connect(x)

    def _crash(self, i: int) -> None:
        node = self.nodes[i]
        if node is None or node.engine is None:
            return
        for peer in sorted(node.links):
            self._disconnect(i, peer)
        node.engine = None
        node.generation += 1

    def _restart(self, i: int) -> None:
        node = self.nodes[i]
        if node is None or node.engine is not None:
            return
        self._start(i, (node.store, node.own))  # from what it had stored
        self._connect_wanted(i)

    def _schedule_tick(self, node: _Node) -> None:
        engine = node.engine
        if engine is None:
            return
        due = max(engine.next_deadline() - EPOCH, self.t + 1e-3)
        if due < node.tick_at:
            node.tick_at = due
            self.at(due, self._tick, node, node.generation)

    def _tick(self, node: _Node, generation: int) -> None:
        if generation != node.generation or node.engine is None:
            return
        if self.t + 1e-9 < node.tick_at:
            return  # superseded by an earlier tick that moved the deadline
        node.tick_at = float("inf")
        self._apply(node, node.engine.tick(EPOCH + self.t))

    # -- links --------------------------------------------------------------------------------

    def _link_event(self, what: str, x: Link) -> None:
        if what == "up":
            self.wanted[(x.a, x.b)] = x
            self._connect(x)
        else:
            self.wanted.pop((x.a, x.b), None)
            self._disconnect(x.a, x.b)

    def _connect(self, x: Link) -> None:
        na, nb = self.nodes[x.a], self.nodes[x.b]
        if na is None or nb is None or na.engine is None or nb.engine is None:
            return
        if x.b in na.links:
            return
        na.links[x.b] = _Wire(x.latency, x.bandwidth, self.t, self.t)
        nb.links[x.a] = _Wire(x.latency, x.bandwidth, self.t, self.t)
        now = EPOCH + self.t
        self._apply(
            na,
            na.engine.peer_connected(
                x.b, nb.key.public_key.raw, outbound=True, address=f"n{x.b}", now=now
            ),
        )
        if nb.engine is not None and x.a in nb.links:
            self._apply(
                nb,
                nb.engine.peer_connected(
                    x.a, na.key.public_key.raw, outbound=False, address=f"n{x.a}", now=now
                ),
            )

    def _disconnect(self, a: int, b: int) -> None:
        na, nb = self.nodes[a], self.nodes[b]
        for x, y in ((na, b), (nb, a)):
            if x is None or y not in x.links:
                continue
            del x.links[y]
            if x.engine is not None:
                self._apply(x, x.engine.peer_disconnected(y, EPOCH + self.t))

    # -- actions and messages ---------------------------------------------------------------

    def _apply(self, node: _Node, actions: list[eng.Action]) -> None:
        encoded: dict[int, bytes] = {}
        i = node.index
        for action in actions:
            match action:
                case eng.Send(peer, message):
                    body = encoded.get(id(message))
                    if body is None:
                        body = wire.REGISTRY.encode_body(message)
                        encoded[id(message)] = body
                    self._send(node, peer, message, body)
                case eng.Disconnect(peer, reason):
                    self.drops.append((self.t, i, peer, reason))
                    self._disconnect(i, peer)
                    self.wanted.pop((min(i, peer), max(i, peer)), None)
                case eng.Accepted(log_id, size, head_hash, source):
                    self.obs.accepts.append(AcceptObs(self.t, i, log_id, size, head_hash, source))
                case eng.EvidenceFound(ident, kind, log_id, source):
                    self.obs.evidence.append(EvidenceObs(self.t, i, ident, kind, log_id, source))
                case _:
                    pass  # peers learned, entries synced: the plan fixes the graph
        self._schedule_tick(node)

    def _send(self, node: _Node, peer: int, message: wire.Message, body: bytes) -> None:
        w = node.links.get(peer)
        if w is None:
            return
        i = node.index
        if i in self._filtering:
            replaced = self._filter(i, peer, message)
            if replaced is None:
                return
            if replaced is not message:
                message = replaced
                body = wire.REGISTRY.encode_body(message)
        self._transmit(node, peer, w, body)

    def _transmit(self, node: _Node, peer: int, w: _Wire, body: bytes) -> None:
        size = len(body) + FRAME
        self.obs.sent[node.index] += 1
        start = max(self.t, w.free_at)
        w.free_at = start + size / w.bandwidth
        arrive = w.free_at + w.latency
        loss = self.sc.network.loss
        if loss:
            rto = self.sc.network.rto
            while self.rng.random() < loss:
                arrive += rto
                rto *= 2
        arrive = max(arrive, w.last_arrival)
        w.last_arrival = arrive
        self.at(arrive, self._arrive, peer, node.index, body, w)

    def _arrive(self, target: int, sender: int, body: bytes, w: _Wire) -> None:
        node = self.nodes[target]
        src = self.nodes[sender]
        if node is None or node.engine is None or src is None or src.links.get(target) is not w:
            return  # the link went down meanwhile: the bytes died with the connection
        size = len(body) + FRAME
        self.obs.received[target] += 1
        self.obs.bytes_in[target] += size
        if body in self._decoded:
            message = self._decoded[body]
        else:
            try:
                message = wire.REGISTRY.decode_body(body)
            except (DecodeError, TrustixError):
                message = None
            if len(self._decoded) > 20_000:
                self._decoded.clear()
            self._decoded[body] = message
        if message is None:
            # What the node's shell does with bytes that are no message: drop the peer.
            self.drops.append((self.t, target, sender, "malformed message"))
            self._disconnect(target, sender)
            self.wanted.pop((min(target, sender), max(target, sender)), None)
            return
        if target in self._sybils:
            self._sybil_cosign(node, message)
        self._apply(node, node.engine.message(sender, message, size, EPOCH + self.t))

    # -- builders -------------------------------------------------------------------------------

    def _sign(self, i: int, leaves: tuple[bytes, ...]) -> None:
        node = self.nodes[i]
        if node is None or node.own is None or node.engine is None:
            return
        if node.own.final is not None:
            return  # a retired log takes nothing more
        node.own.append(_records(leaves))
        self._sign_now(node)

    def _sign_now(self, node: _Node) -> None:
        assert node.own is not None
        signed = node.own.sign(int(EPOCH + self.t))
        if signed is not None:
            self._publish(node, signed)

    def _publish(self, node: _Node, signed: SignedCheckpoint) -> None:
        """A checkpoint the node signed: observed, and handed to its engine."""
        assert node.engine is not None
        i = node.index
        honest = i in self.plan.honest
        if i == self.plan.attacker_builder and self.kind in ("withholding", "lying-builder"):
            honest = False
        log_id = signed.log_id
        self.obs.checkpoints.append(
            CheckpointObs(self.t, i, log_id, signed.checkpoint.size, _body_hash(signed), honest)
        )
        if i == 0 and self.t >= self.sc.attack.at and self.kind == "eclipse":
            self.fork_a.append(signed.checkpoint.body())
        self._apply(node, node.engine.local_checkpoint(signed, EPOCH + self.t))

    def _start_twin(self) -> tuple[_Node, _Node]:
        """Builder 0, and the twin with its key started from its entries plus the twin's."""
        b0 = self.nodes[0]
        assert b0 is not None and b0.own is not None
        prefix = [leaf for _i, leaf in b0.own.log.leaves(0, b0.own.log.size)]
        twin = self.plan.twin
        assert twin is not None
        store, own = self._fresh_store(twin)
        assert own is not None
        own.append(_records(prefix) + _records(self.plan.twin_leaves))
        self._start(twin, (store, own))
        tnode = self.nodes[twin]
        assert tnode is not None
        return b0, tnode

    def _fork(self) -> None:
        """Builder 0 and its twin sign two trees of one size: the split view."""
        at = self.sc.attack.at
        b0, tnode = self._start_twin()
        assert b0.own is not None
        b0.own.append(_records([leaf(store_path(e, "fork-a/"), int(EPOCH + at)) for e in range(4)]))
        self._sign_now(b0)
        self._sign_now(tnode)
        self._connect_wanted(tnode.index)

    def _steal(self) -> None:
        """Builder 0 retires its key (a final checkpoint naming a successor that takes no
        part); a thief holding the old key goes on signing the log, to the other half."""
        b0, tnode = self._start_twin()
        assert b0.own is not None
        successor = PrivateKey.from_seed(hashlib.sha256(b"sim successor").digest()).public_key
        self._publish(b0, b0.own.retire(successor, int(EPOCH + self.t)))
        self._sign_now(tnode)
        self._connect_wanted(tnode.index)

    def _rewrite(self) -> None:
        """Builder 0 comes back with another history of the same size, and goes on."""
        b0 = self.nodes[0]
        assert b0 is not None and b0.own is not None
        old = [leaf for _i, leaf in b0.own.log.leaves(0, b0.own.log.size)]
        new = list(self.plan.rewrite_leaves) + old[len(self.plan.rewrite_leaves) :]
        self._crash(0)
        store, own = self._fresh_store(0)
        assert own is not None
        own.append(_records(new))
        self._start(0, (store, own))
        self._sign_now(b0)
        self._connect_wanted(0)

    # -- attackers ------------------------------------------------------------------------------

    def _filter(self, sender: int, peer: int, message: wire.Message) -> wire.Message | None:
        """What an attacking shell lets through to `peer` (None: nothing)."""
        if self.kind == "withholding":
            if peer not in self.plan.withheld:
                return message
            log0 = self.plan.key(0).public_key.raw
            if isinstance(message, m.Heads):
                heads = tuple(h for h in message.heads if h.public_key != log0)
                if len(heads) == len(message.heads):
                    return message
                if not heads and not message.want_reply:
                    return None
                return m.Heads(heads, message.want_reply)
            return message
        # eclipse: the ring shows its victim one view only, and no evidence.
        if peer != self.plan.victim:
            return message
        if isinstance(message, ev.EvidenceMessage):
            return None
        if isinstance(message, m.Heads):
            heads = tuple(h for h in message.heads if not self._fork_a_note(h.note))
            if len(heads) == len(message.heads):
                return message
            if not heads and not message.want_reply:
                return None
            return m.Heads(heads, message.want_reply)
        note = getattr(message, "note", None)
        if isinstance(note, bytes) and self._fork_a_note(note):
            return None
        return message

    def _fork_a_note(self, note: bytes) -> bool:
        return any(note.startswith(body) for body in self.fork_a)

    def _sybil_cosign(self, node: _Node, message: wire.Message) -> None:
        """A Sybil cosigns every checkpoint it is shown, whatever else it has seen."""
        if not isinstance(message, m.Heads) or node.engine is None:
            return
        for h in message.heads:
            marker = (node.index, hashlib.sha256(h.note).digest())
            if marker in self.sybil_cosigned:
                continue
            self.sybil_cosigned.add(marker)
            try:
                signed = self.verifier.checkpoint(h.note, PublicKey(h.public_key))
            except (DecodeError, TrustixError):
                continue
            c = cosign(
                signed.checkpoint,
                eng.witness_name(node.key.public_key),
                node.key,
                signed.checkpoint.time,
            )
            out = m.Cosigned(h.public_key, h.note, node.key.public_key.raw, c.time, c.signature)
            body = wire.REGISTRY.encode_body(out)
            for peer, w in sorted(node.links.items()):
                self._transmit(node, peer, w, body)

    def _pester(self, a: int) -> None:
        """Garbage or a flood from attacker `a` to each of its peers, until all drop it."""
        node = self.nodes[a]
        if node is None or not node.links:
            return
        if self.kind == "garbage":
            for peer, w in sorted(node.links.items()):
                self._transmit(node, peer, w, self.rng.randbytes(self.rng.randrange(1, 200)))
            self.at(self.t + 1.0, self._pester, a)
            return
        # A flood: valid requests, as fast as `flood_rate`, in bursts of 100.
        burst = 100
        for peer, w in sorted(node.links.items()):
            log_id = self.plan.key(self.rng.randrange(self.sc.builders.count)).public_key.log_id()
            body = wire.REGISTRY.encode_body(m.GetEntries(log_id, 0, 1, 1))
            for _ in range(burst):
                self._transmit(node, peer, w, body)
        self.at(self.t + burst / self.sc.attack.flood_rate, self._pester, a)

    # -- the end --------------------------------------------------------------------------------

    def _finish(self) -> Observations:
        obs = self.obs
        plan = self.plan
        alive = frozenset(n.index for n in self.nodes if n is not None and n.engine is not None)
        obs.alive = alive
        for n in self.nodes:
            if n is None:
                continue
            for peer in n.links:
                obs.final_links.add((min(n.index, peer), max(n.index, peer)))
            if n.index in plan.honest and n.engine is not None:
                obs.held[n.index] = [r.evidence for r in n.engine.evidence()]
        obs.extra.update(self._extra())
        return obs

    def _extra(self) -> dict[str, Any]:
        plan, sc, kind = self.plan, self.sc, self.kind
        out: dict[str, Any] = {}
        attackers = set(plan.attackers)
        if kind in ("garbage", "flood", "sybil", "eclipse"):
            dropped = sorted({(by, peer) for _t, by, peer, _r in self.drops if peer in attackers})
            times = sorted(t for t, _by, peer, _r in self.drops if peer in attackers)
            attacker_links = sum(1 for x in plan.links if (x.a in attackers) != (x.b in attackers))
            out["attackers"] = {
                "count": len(attackers),
                "links": attacker_links,
                "dropped_by_honest": len(dropped),
                "first_drop": round(times[0] - sc.attack.at, 6) if times else None,
                "last_drop": round(times[-1] - sc.attack.at, 6) if times else None,
            }
        if kind == "eclipse":
            victim = plan.victim
            assert victim is not None
            first = [e.time for e in self.obs.evidence if e.node == victim]
            at = first[0] if first else None
            out["eclipse"] = {
                "victim": victim,
                "ring": len(attackers),
                "honest_link_at": sc.attack.heal_at,
                "detected_while_eclipsed": at is not None and at < sc.attack.heal_at,
                "detected_at": None if at is None else round(at, 6),
                "delay_after_link": None if at is None else round(at - sc.attack.heal_at, 6),
            }
        if kind == "sybil":
            out["sybil"] = self._sybil_section()
        if kind == "withholding":
            out["withholding"] = self._withholding_section()
        if kind == "lying-builder":
            out["clients"] = self._clients()
        return out

    def _sybil_section(self) -> dict[str, Any]:
        plan = self.plan
        log_id = plan.key(0).public_key.log_id()
        sybil_names = {eng.witness_name(plan.key(a).public_key) for a in plan.attackers}
        honest_names = {eng.witness_name(plan.key(h).public_key) for h in plan.honest}
        with_sybil = 0
        most = 0
        most_honest = 0
        for h in sorted(plan.honest):
            node = self.nodes[h]
            if node is None or node.engine is None:
                continue
            note = node.engine.head_note(log_id)
            if note is None:
                continue
            names = [sig.key_name for sig in parse_note(note).signatures[1:]]
            s = sum(1 for name in names if name in sybil_names)
            most = max(most, s)
            most_honest = max(most_honest, sum(1 for name in names if name in honest_names))
            with_sybil += s > 0
        return {
            "sybils": len(plan.attackers),
            "cosignatures_sent": len(self.sybil_cosigned),
            "heads_with_sybil_cosignatures": with_sybil,
            "max_sybil_cosignatures_on_a_head": most,
            "max_honest_cosignatures_on_a_head": most_honest,
        }

    def _withholding_section(self) -> dict[str, Any]:
        plan = self.plan
        log_id = plan.key(0).public_key.log_id()
        mine = [c for c in self.obs.checkpoints if c.builder == 0]
        delays: dict[bool, list[float]] = {True: [], False: []}
        reached = 0
        for x in sorted(plan.honest):
            if x == 0:
                continue
            heads = [a for a in self.obs.accepts if a.node == x and a.log_id == log_id]
            for c in mine:
                hit = next((a for a in heads if a.size >= c.size and a.time >= c.time), None)
                if hit is not None:
                    delays[x in plan.withheld].append(hit.time - c.time)
            if x in plan.withheld and mine and any(a.size >= mine[-1].size for a in heads):
                reached += 1

        def p50(v: list[float]) -> float:
            return round(sorted(v)[len(v) // 2], 6) if v else 0.0

        return {
            "withheld_peers": len(plan.withheld),
            "withheld_peers_reached": reached,
            "p50_withheld": p50(delays[True]),
            "p50_others": p50(delays[False]),
        }

    def _clients(self) -> dict[str, Any]:
        """Simulated workstations: each asks one honest mirror, with the real light client,
        about every path the liar lied about and as many honest ones, and decides M of N."""
        plan, sc = self.plan, self.sc
        rng = random.Random(f"clients {sc.seed}")
        mirrors = sorted(
            x
            for x in plan.mirrors & plan.honest
            if (n := self.nodes[x]) is not None and n.engine is not None
        )
        builders = tuple(
            PolicyBuilder(f"builder-{b}", plan.key(b).public_key) for b in plan.builders
        )
        policy = Policy(None, sc.threshold, True, (), None, _NOWHERE, (), 0, builders, ())
        lied = sorted(plan.lies)
        others = [e for e in range(sc.builders.entries) if e not in plan.lies]
        liar = "builder-0"
        caught = fooled = 0
        dissent_named = 0
        for _c in range(sc.attack.clients):
            if not mirrors:
                break
            asked = self.nodes[rng.choice(mirrors)]
            assert asked is not None
            source = _EngineSource(asked)
            sample = lied + rng.sample(others, min(len(others), len(lied)))
            client = LightClient(policy, [source], ClientState(_NOWHERE))
            decisions = trio.run(client.decide_many, [store_path(e) for e in sample])
            ok = True
            for e, d in zip(sample, decisions, strict=True):
                if e in plan.lies:
                    named = any(name == liar for name, _h in d.dissented)
                    dissent_named += named
                    if d.trusted and d.nar_hash != _honest_hash(e):
                        fooled += 1
                    ok = ok and named and d.trusted
                elif not d.trusted:
                    ok = False
            caught += ok
        return {
            "clients": sc.attack.clients,
            "threshold": sc.threshold,
            "lies": len(lied),
            "clients_that_named_the_liar": caught,
            "decisions_naming_the_liar": dissent_named,
            "decisions_fooled": fooled,
        }


# Simulated workstations keep their state in memory: it is never saved.
_NOWHERE = Path("/nonexistent/trustix-sim-client-state")


def _honest_hash(e: int) -> bytes:
    return nar_hash(store_path(e))


@attrs.define
class _EngineSource:
    """A light client's source backed by a simulated node's engine (answers as the node's
    control socket would)."""

    node: _Node
    name: str = "sim node"

    async def path_hits(self, out_path: str) -> list[Hit]:
        assert self.node.engine is not None
        return [
            Hit(hashlib.sha256(h.public_key).digest(), h.index, h.leaf, h.note, tuple(h.proof))
            for h in self.node.engine.path_hits(out_path)
        ]

    async def consistency(self, log_id: bytes, old: int, new: int) -> Proof:
        assert self.node.engine is not None
        reply = self.node.engine.serve_consistency(m.GetConsistency(log_id, old, new))
        if isinstance(reply, m.NoData):
            raise TrustixError(reply.reason)
        return Proof(reply.prefix_root, reply.note, tuple(reply.proof))

    async def latest_checkpoint(self, log_id: bytes) -> bytes | None:
        assert self.node.engine is not None
        return self.node.engine.head_note(log_id)

    async def aclose(self) -> None:
        return None


def run_events(plan: Plan, progress: Progress | None = None) -> Observations:
    return EventsDriver(plan, progress).run()
