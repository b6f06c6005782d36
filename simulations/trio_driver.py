"""The fidelity driver: a plan run by real nodes over the in-memory network, in virtual time.

Every simulated node is a real `trustix_p2p.node.Node` (writer, checkpointer, peering shell,
the Noise listener when the scenario says `noise = true`, plain framed streams otherwise) with
a memory store and an own log, on `MemoryNetwork` under `trio.testing.MockClock`, with trio's
scheduling made a function of the seed (`simulations.cluster.deterministic_scheduling`).  What
it observes comes from the nodes themselves: the events their peering shell emits for the
engine's actions (`HeadAccepted`, `EvidenceRecorded`), the checkpoints the builders sign, and
at the end each node's connections, evidence and counters.

It simulates the same network as `simulations.events_driver` (same plan, same semantics):

- virtual time 0 is the start; node clocks read `plan.EPOCH + trio.current_time()`;
- node i lives at `10.{i // 250}.{i % 250}.1:7946`; for each planned link `a` dials `b`
  (pinned to `b`'s key), one-way latency and bandwidth from the plan; peer exchange learns
  nothing (`advertise=()`), so the topology is exactly the plan's;
- `link_events`: "down" blocks the pair and drops its connection, "up" unblocks it and has
  `a` dial `b` at once;
- builders submit and sign at their planned times; attacks "split-view" (builder 0 forks, its
  twin shows the other fork to `half_b`), "rewrite" (builder 0 restarts over a rewritten
  log) and "stolen-key" (builder 0's node retires its key; the twin, a thief with the old
  key, goes on signing) are run; churn: late joins, and crashes that restart over the same store.

    obs = run_trio(make_plan(load_scenario("split-view").with_overrides(nodes=100)), None)
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import random
from collections.abc import Awaitable, Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import trio
import trio.testing

from trustix_p2p.config import NodeConfig
from trustix_p2p.core.checkpoint import SignedCheckpoint
from trustix_p2p.core.entry import decode_entry
from trustix_p2p.core.keys import PrivateKey
from trustix_p2p.events import EvidenceRecorded, HeadAccepted, NodeEvent
from trustix_p2p.executor import InlineExecutor
from trustix_p2p.gossip import engine as eng
from trustix_p2p.node import Node
from trustix_p2p.ownlog import MemoryCheckpointFile, OwnLog
from trustix_p2p.storage import LeafRecord, Store
from trustix_p2p.transport.network import MemoryNetwork

from .cluster import deterministic_scheduling
from .observe import AcceptObs, CheckpointObs, EvidenceObs, Observations
from .plan import EPOCH, Link, Plan, leaf, store_path
from .scenario import ScenarioError

__all__ = ["ATTACKS", "SimNode", "address", "host", "run_trio"]

ATTACKS = ("none", "split-view", "rewrite", "stolen-key")
PORT = 7946
REDIAL_INTERVAL = 1.0

# Order of things planned for the same moment: links go down first (so a fork signed then
# does not leak over them), links come up last (so whoever starts then can be dialled).
_DOWN, _CRASH, _ATTACK, _SIGN, _START, _UP = range(6)


def host(i: int) -> str:
    return f"10.{i // 250}.{i % 250}.1"


def address(i: int) -> str:
    return f"{host(i)}:{PORT}"


def _host_of(addr: str) -> str:
    """The host of `[key@]host:port`."""
    return addr.rpartition("@")[2].rpartition(":")[0]


def _records(leaves: tuple[bytes, ...] | list[bytes]) -> list[LeafRecord]:
    return [LeafRecord(x, decode_entry(x).out_path) for x in leaves]


@attrs.define(eq=False)
class SimNode(Node):
    """A node whose gossip engine runs with `overrides` (the scenario's engine settings)."""

    overrides: dict[str, Any] = attrs.field(factory=dict)

    def engine_config(self, advertise: tuple[str, ...] = ()) -> eng.EngineConfig:
        return attrs.evolve(super().engine_config(advertise), **self.overrides)


@attrs.define(eq=False)
class _Slot:
    """One simulated node index: its key and store, and the node running on them, if any."""

    index: int
    key: PrivateKey
    store: Store
    checkpoints: MemoryCheckpointFile
    node: SimNode | None = None
    scope: trio.CancelScope | None = None
    stopped: trio.Event | None = None
    starts: int = 0
    # Counters of the node's earlier lives (a crash and restart, a rewrite).
    received: int = 0
    bytes_in: int = 0
    sent: int = 0


class _Run:
    def __init__(self, plan: Plan, progress: Callable[[float, float], None] | None) -> None:
        sc = plan.scenario
        self.plan = plan
        self.sc = sc
        self.progress = progress
        self.kind = sc.attack.kind
        self.at = sc.attack.at
        twin = plan.twin
        attacked = self.kind in ("split-view", "rewrite", "stolen-key")
        self.obs = Observations(
            scenario=sc,
            driver="trio",
            nodes=plan.nodes,
            honest=plan.honest,
            builders=plan.builders + ((twin,) if twin is not None else ()),
            attacked_log=plan.key(0).public_key.log_id() if attacked else None,
            attack_time=self.at if self.kind != "none" else None,
            topology=f"{sc.topology.kind} d={sc.topology.degree}",
        )
        self.loss_rng = random.Random(f"trustix-sim {sc.seed} loss")
        self.network = MemoryNetwork(
            delay=self._delay,
            bandwidth=self._bandwidth,
            late=self._late if sc.network.loss > 0 else None,
        )
        self.index_of_host = {host(i): i for i in range(plan.nodes)}
        self.slots: list[_Slot] = []
        self.index_of_key: dict[str, int] = {}
        for i in range(plan.nodes):
            key = plan.key(i)
            self.slots.append(_Slot(i, key, Store.in_memory(), MemoryCheckpointFile()))
            self.index_of_key.setdefault(key.public_key.to_base64(), i)
        self.pinned = [f"{s.key.public_key.to_base64()}@{address(s.index)}" for s in self.slots]
        # Every link the run may have, by pair (latency, bandwidth), and those up now.
        self.links: dict[tuple[int, int], Link] = {}
        self.up: dict[tuple[int, int], Link] = {}
        for link in plan.links:
            self.links[(link.a, link.b)] = link
            self.up[(link.a, link.b)] = link
        for _t, _what, link in plan.link_events:
            pair = (link.a, link.b)
            if pair not in self.links:
                self.links[pair] = link
                self.network.block(host(link.a), host(link.b))  # up only from its event
        # From when builder 0 signs dishonestly.
        self.dishonest_from = self.at if attacked else float("inf")
        self.finished = False
        self.nursery: trio.Nursery | None = None
        self.verifier = eng.Verifier(max_entries=1 << 18)

    # -- the network -----------------------------------------------------------------------

    def _link_between(self, src: str, dst: str) -> Link | None:
        a = self.index_of_host.get(_host_of(src))
        b = self.index_of_host.get(_host_of(dst))
        if a is None or b is None:
            return None
        return self.links.get((min(a, b), max(a, b)))

    def _delay(self, src: str, dst: str) -> float:
        link = self._link_between(src, dst)
        return link.latency if link is not None else self.sc.network.latency.typical()

    def _bandwidth(self, src: str, dst: str) -> float:
        link = self._link_between(src, dst)
        return link.bandwidth if link is not None else self.sc.network.bandwidth

    def _late(self) -> float:
        """What loss costs one chunk: each lost try, a retransmission timeout (doubling)."""
        net = self.sc.network
        late, rto = 0.0, net.rto
        while self.loss_rng.random() < net.loss:
            late += rto
            rto *= 2
        return late

    # -- what the nodes report -------------------------------------------------------------

    def _source(self, node: int, peer: str, when: float) -> int | None:
        if not peer:
            return None
        source = self.index_of_key.get(peer)
        if (
            source == 0
            and self.plan.twin is not None
            and node in self.plan.half_b
            and when >= self.at
        ):
            return self.plan.twin  # builder 0's key, shown to half B by its twin
        return source

    def _event(self, i: int, event: NodeEvent) -> None:
        if self.finished:
            return
        if isinstance(event, HeadAccepted):
            self.obs.accepts.append(
                AcceptObs(
                    event.time,
                    i,
                    bytes.fromhex(event.log),
                    event.size,
                    bytes.fromhex(event.head_hash),
                    self._source(i, event.peer, event.time),
                )
            )
        elif isinstance(event, EvidenceRecorded):
            self.obs.evidence.append(
                EvidenceObs(
                    event.time,
                    i,
                    event.ident,
                    event.kind,
                    bytes.fromhex(event.log),
                    self._source(i, event.peer, event.time),
                )
            )

    # -- nodes -----------------------------------------------------------------------------

    def _overrides(self, i: int) -> dict[str, Any]:
        e = self.sc.engine
        return {
            "anti_entropy_interval": e.anti_entropy_interval,
            "relay_delay": e.relay_delay,
            "cosign": e.cosign,
            "request_timeout": e.request_timeout,
            "follow_unknown": "mirror" if i in self.plan.mirrors else "witness",
            "advertise": (),
        }

    def _seeds(self, i: int) -> tuple[str, ...]:
        return tuple(self.pinned[b] for (a, b) in self.up if a == i)

    async def _start(self, i: int) -> SimNode:
        """Start node i over its slot's store (and wait until it listens and dials)."""
        assert self.nursery is not None
        slot = self.slots[i]
        assert slot.node is None
        slot.starts += 1
        rng = random.Random(f"trustix-sim {self.sc.seed} node {i} start {slot.starts}")
        config = NodeConfig(
            state_dir=Path("/nonexistent") / f"n{i}",
            checkpoint_interval=max(86400.0, 10 * self.sc.duration),
            listen=(address(i),),
            seeds=self._seeds(i),
            peers_target=1024,
            max_outbound=1024,
            redial_interval=REDIAL_INTERVAL,
            anti_entropy_interval=self.sc.engine.anti_entropy_interval,
            follow_unknown="mirror" if i in self.plan.mirrors else "witness",
            # The plan's links stay up however quiet they are (the events driver has no
            # idle timeout either).
            idle_timeout=86400.0,
        )
        node = SimNode(
            config,
            slot.store,
            slot.key,
            OwnLog.open(slot.store, slot.key, slot.checkpoints),
            clock=lambda: EPOCH + trio.current_time(),
            name=f"n{i:04d}",
            network=self.network.host(host(i)),
            secure=self.sc.noise,
            random_bytes=rng.randbytes,
            executor=InlineExecutor(),
            events=partial(self._event, i),
            serve_control_socket=False,
            ingest_spool_files=False,
            overrides=self._overrides(i),
        )
        # One signature cache for every node: a check gives the same answer wherever it runs,
        # so only the CPU it costs is shared (nothing in virtual time changes).
        node.engine.verifier = self.verifier
        scope = trio.CancelScope()
        stopped = trio.Event()
        slot.node, slot.scope, slot.stopped = node, scope, stopped
        self.nursery.start_soon(self._host, node, scope, stopped)
        await node.ready.wait()
        return node

    @staticmethod
    async def _host(node: Node, scope: trio.CancelScope, stopped: trio.Event) -> None:
        try:
            with scope:
                await node.run(install_signal_handlers=False)
        finally:
            stopped.set()

    async def _stop(self, i: int) -> None:
        """Node i goes down: its connections drop at once, nobody can dial it."""
        slot = self.slots[i]
        node = slot.node
        assert node is not None and slot.scope is not None and slot.stopped is not None
        self.network.close_host(host(i))
        slot.scope.cancel()
        await slot.stopped.wait()
        slot.received += node.peering.received
        slot.bytes_in += node.peering.bytes_in
        slot.sent += node.peering.sent
        slot.node = slot.scope = slot.stopped = None

    def _reconnect(self, i: int) -> None:
        """Node i (re)started: every link of it that is up is dialled now."""
        for a, b in self.up:
            if i not in (a, b):
                continue
            dialler = self.slots[a].node
            if dialler is not None and self.slots[b].node is not None:
                dialler.peering.dial_now(self.pinned[b])

    # -- builders --------------------------------------------------------------------------

    async def _sign(self, i: int, leaves: tuple[bytes, ...], *, honest: bool) -> None:
        node = self.slots[i].node
        if node is None or node.own is None or node.own.final is not None:
            return  # a builder that is down, or retired, signs nothing
        if leaves:
            await node.submit(leaves)
        before = node.own.log.checkpoint()
        signed = await node.sign_checkpoint_now()
        if signed is not None and (before is None or before.note != signed.note):
            self._signed(i, signed, honest=honest)

    def _signed(self, i: int, signed: SignedCheckpoint, *, honest: bool) -> None:
        self.obs.checkpoints.append(
            CheckpointObs(
                trio.current_time(),
                i,
                signed.log_id,
                signed.checkpoint.size,
                hashlib.sha256(signed.checkpoint.body()).digest(),
                honest,
            )
        )

    def _leaves_of(self, i: int) -> list[bytes]:
        node = self.slots[i].node
        assert node is not None and node.own is not None
        lg = node.own.log
        return [x for _index, x in lg.leaves(0, lg.size)]

    async def _split_view(self) -> None:
        """Builder 0 signs fork A; its twin starts with the shared prefix and fork B."""
        twin = self.plan.twin
        assert twin is not None
        if self.slots[0].node is None:
            return
        prefix = self._leaves_of(0)
        built_at = int(EPOCH + self.at)
        fork_a = tuple(leaf(store_path(e, "fork-a/"), built_at) for e in range(4))
        await self._sign(0, fork_a, honest=False)
        slot = self.slots[twin]
        own = OwnLog.open(slot.store, slot.key, slot.checkpoints)
        own.append(_records(prefix + list(self.plan.twin_leaves)))
        await self._start(twin)
        await self._sign(twin, (), honest=False)

    async def _steal(self) -> None:
        """Builder 0 retires its key (the real node's `retire`); a thief with the old key, the
        twin, starts with its entries plus more and signs, to half B."""
        twin = self.plan.twin
        node = self.slots[0].node
        assert twin is not None
        if node is None:
            return
        prefix = self._leaves_of(0)
        successor = PrivateKey.from_seed(hashlib.sha256(b"sim successor").digest()).public_key
        self._signed(0, await node.retire(successor), honest=False)
        slot = self.slots[twin]
        own = OwnLog.open(slot.store, slot.key, slot.checkpoints)
        own.append(_records(prefix + list(self.plan.twin_leaves)))
        await self._start(twin)
        await self._sign(twin, (), honest=False)

    async def _rewrite(self) -> None:
        """Builder 0 crashes and comes back at once over a rewritten log of the same size."""
        if self.slots[0].node is None:
            return
        old = self._leaves_of(0)
        await self._stop(0)
        slot = self.slots[0]
        slot.store.close()
        slot.store = Store.in_memory()
        slot.checkpoints = MemoryCheckpointFile()
        rewritten = list(self.plan.rewrite_leaves)
        own = OwnLog.open(slot.store, slot.key, slot.checkpoints)
        own.append(_records(rewritten + old[len(rewritten) :]))
        await self._start(0)
        await self._sign(0, (), honest=False)
        self._reconnect(0)

    # -- the timeline ----------------------------------------------------------------------

    def _timeline(self) -> Iterator[tuple[float, int, int, Callable[[], Awaitable[None]]]]:
        plan = self.plan
        seq = 0

        def item(
            when: float, order: int, fn: Callable[[], Awaitable[None]]
        ) -> tuple[float, int, int, Callable[[], Awaitable[None]]]:
            nonlocal seq
            seq += 1
            return (when, order, seq, fn)

        for when, what, link in plan.link_events:
            order = _UP if what == "up" else _DOWN
            yield item(when, order, partial(self._link_event, what, link))
        for down, up, i in plan.crashes:
            yield item(down, _CRASH, partial(self._crash, i))
            yield item(up, _START, partial(self._restart, i))
        for i, when in plan.late.items():
            yield item(when, _START, partial(self._restart, i))
        if self.kind == "split-view":
            yield item(self.at, _ATTACK, self._split_view)
        elif self.kind == "stolen-key":
            yield item(self.at, _ATTACK, self._steal)
        elif self.kind == "rewrite":
            yield item(self.at, _ATTACK, self._rewrite)
        for s in plan.signings:
            honest = not (s.builder == 0 and s.time >= self.dishonest_from)
            yield item(s.time, _SIGN, partial(self._sign, s.builder, s.leaves, honest=honest))

    async def _link_event(self, what: str, link: Link) -> None:
        pair = (link.a, link.b)
        if what == "down":
            self.up.pop(pair, None)
            self.network.block(host(link.a), host(link.b))
        else:
            self.up[pair] = link
            self.network.unblock(host(link.a), host(link.b))
            dialler = self.slots[link.a].node
            if dialler is not None and self.slots[link.b].node is not None:
                dialler.peering.dial_now(self.pinned[link.b])
        await trio.lowlevel.checkpoint()

    async def _crash(self, i: int) -> None:
        if self.slots[i].node is not None:
            await self._stop(i)

    async def _restart(self, i: int) -> None:
        if self.slots[i].node is None:
            await self._start(i)
            self._reconnect(i)

    async def _report_progress(self, report: Callable[[float, float], None]) -> None:
        while True:
            report(trio.current_time(), self.sc.duration)
            await trio.sleep(1.0)

    async def main(self) -> None:
        plan = self.plan
        duration = self.sc.duration
        try:
            async with trio.open_nursery() as nursery:
                self.nursery = nursery
                if self.progress is not None:
                    nursery.start_soon(self._report_progress, self.progress)
                # Highest index first: a node dials only higher indices, which then listen.
                special = {plan.twin} if plan.twin is not None else set()
                for i in reversed(range(plan.nodes)):
                    if i not in plan.late and i not in special:
                        await self._start(i)
                for when, _order, _seq, action in sorted(self._timeline()):
                    if when >= duration:
                        break
                    await trio.sleep_until(when)
                    await action()
                await trio.sleep_until(duration)
                self._collect()
                nursery.cancel_scope.cancel()
        finally:
            for slot in self.slots:
                slot.store.close()
        if self.progress is not None:
            self.progress(duration, duration)

    def _collect(self) -> None:
        """What the run ends with: counters, connections, evidence held, who is up."""
        self.finished = True
        obs = self.obs
        alive: set[int] = set()
        for slot in self.slots:
            i = slot.index
            node = slot.node
            received, bytes_in, sent = slot.received, slot.bytes_in, slot.sent
            if node is not None:
                alive.add(i)
                received += node.peering.received
                bytes_in += node.peering.bytes_in
                sent += node.peering.sent
                for _key, remote, _outbound in node.peering.connected():
                    j = self.index_of_host.get(_host_of(remote))
                    if j is not None and j != i and self.slots[j].node is not None:
                        obs.final_links.add((min(i, j), max(i, j)))
                if i in obs.honest:
                    obs.held[i] = [r.evidence for r in node.engine.evidence()]
            obs.received.append(received)
            obs.bytes_in.append(bytes_in)
            obs.sent.append(sent)
        obs.alive = frozenset(alive)


@contextlib.contextmanager
def _quiet_nodes() -> Iterator[None]:
    """Hundreds of nodes each log what they find (evidence is a warning): keep it to errors,
    unless the caller set a level for them."""
    logger = logging.getLogger("trustix_p2p")
    saved = logger.level
    if saved == logging.NOTSET:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(saved)


def run_trio(plan: Plan, progress: Callable[[float, float], None] | None = None) -> Observations:
    """Run `plan` with real nodes in virtual time (see the module docstring)."""
    kind = plan.scenario.attack.kind
    if kind not in ATTACKS:
        raise ScenarioError(
            "the trio driver runs the attacks none, split-view, rewrite and stolen-key; "
            f"use --driver events for {kind}"
        )
    run = _Run(plan, progress)
    with deterministic_scheduling(plan.scenario.seed), _quiet_nodes():
        trio.run(run.main, clock=trio.testing.MockClock(autojump_threshold=0))
    return run.obs
