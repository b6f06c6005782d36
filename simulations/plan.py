"""A run's plan: everything a scenario and seed decide before any node runs.

Both drivers follow the same plan, so they simulate the same network: node keys, which nodes
build, mirror or attack, the links (with their latency and bandwidth), what each builder logs
and when it signs, and the attack's parameters.  Everything comes from one
`random.Random(seed)`, drawn in a fixed order.

Node indices: the builders come first (`0 .. builders-1`); when an attack needs a dishonest
builder it is builder 0.  An attack that runs a second node with builder 0's key (its twin, for
the other view) gets the next index.  Attacker nodes (Sybils, flooders, the eclipse ring) take
the last indices.  Everything else is an honest node.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Iterator

import attrs

from trustix_p2p.core import nix32
from trustix_p2p.core.entry import Entry, encode_entry
from trustix_p2p.core.keys import PrivateKey

from .scenario import Scenario

__all__ = ["EPOCH", "Link", "Plan", "Signing", "make_plan", "topology_edges"]

# Checkpoint times are unix seconds in the format; a run starts at this virtual moment.
EPOCH = 1_700_000_000.0

TWIN_ATTACKS = ("split-view", "eclipse", "sybil", "stolen-key")
BUILDER_ATTACKS = (
    "split-view",
    "rewrite",
    "withholding",
    "lying-builder",
    "eclipse",
    "sybil",
    "stolen-key",
)
NODE_ATTACKS = ("garbage", "flood", "eclipse", "sybil")


@attrs.frozen
class Link:
    a: int
    b: int  # a < b; a dials b
    latency: float  # one way, seconds
    bandwidth: float  # bytes per second, each direction
    slow: bool = False


@attrs.frozen
class Signing:
    """Builder `builder` appends `leaves` at `time`, then signs a checkpoint."""

    time: float
    builder: int
    leaves: tuple[bytes, ...]


@attrs.define
class Plan:
    scenario: Scenario
    nodes: int  # all simulated nodes, the twin and attackers included
    seeds: list[bytes]  # per node: its Ed25519 key seed (the twin's is builder 0's)
    builders: tuple[int, ...]  # the builders' indices (not the twin)
    attacker_builder: int | None
    twin: int | None
    attackers: tuple[int, ...]
    mirrors: frozenset[int]  # nodes that mirror every log (builders included)
    links: list[Link]
    signings: list[Signing]  # in time order
    # Attack parameters
    half_b: frozenset[int] = frozenset()  # the honest nodes the twin's view is shown to
    victim: int | None = None  # eclipse
    withheld: frozenset[int] = frozenset()  # withholding: peers the builder skips
    lies: frozenset[int] = frozenset()  # lying-builder: entry positions logged wrongly
    twin_leaves: tuple[bytes, ...] = ()  # the twin's own entries after the shared prefix
    rewrite_leaves: tuple[bytes, ...] = ()  # rewrite: the rewritten log, whole
    cluster: list[int] = attrs.field(factory=list)  # per node: its cluster (or 0)
    late: dict[int, float] = attrs.field(factory=dict)  # node -> when it joins
    crashes: list[tuple[float, float, int]] = attrs.field(factory=list)  # (down, up, node)
    # Links that come and go: (time, "up" | "down", link), in time order.  Links in `links`
    # are up from the start; partitions, an attack's wiring and an eclipse's end are here.
    link_events: list[tuple[float, str, Link]] = attrs.field(factory=list)

    def key(self, node: int) -> PrivateKey:
        return PrivateKey.from_seed(self.seeds[node])

    @property
    def honest(self) -> frozenset[int]:
        bad = set(self.attackers)
        if self.twin is not None:
            bad.add(self.twin)
        if self.attacker_builder is not None:
            bad.add(self.attacker_builder)
        return frozenset(i for i in range(self.nodes) if i not in bad)

    def neighbours(self, node: int) -> Iterator[int]:
        for link in self.links:
            if link.a == node:
                yield link.b
            elif link.b == node:
                yield link.a


def store_path(k: int, tag: str = "") -> str:
    part = nix32.encode(hashlib.sha256(f"sim path {tag}{k}".encode()).digest()[:20])
    return f"/nix/store/{part}-pkg-{k}"


def nar_hash(path: str, lie: bool = False) -> bytes:
    return hashlib.sha256(("lie " if lie else "nar ").encode() + path.encode()).digest()


def leaf(path: str, built_at: int, *, lie: bool = False) -> bytes:
    return encode_entry(
        Entry(
            out_path=path,
            nar_hash=nar_hash(path, lie),
            nar_size=len(path) * 1000,
            references=(),
            deriver="",
            output_name="out",
            built_at=built_at,
        )
    )


def topology_edges(
    scenario: Scenario, members: list[int], rng: random.Random
) -> tuple[list[tuple[int, int, bool]], list[int]]:
    """Edges (a, b, slow) joining `members` as the scenario's topology says; and each
    member's cluster (by position in `members`)."""
    t = scenario.topology
    n = len(members)
    d = min(t.degree, n - 1)
    edges: set[tuple[int, int]] = set()
    slow: set[tuple[int, int]] = set()
    cluster = [0] * n

    def add(i: int, j: int, is_slow: bool = False) -> None:
        if i == j:
            return
        e = (min(i, j), max(i, j))
        if e not in edges:
            edges.add(e)
            if is_slow:
                slow.add(e)

    def regular(idx: list[int], degree: int) -> None:
        # A ring for connectivity, then random chords until every node has `degree` links.
        order = idx[:]
        rng.shuffle(order)
        count = dict.fromkeys(order, 0)
        m = len(order)
        if m < 2:
            return
        for k in range(m):
            e = (min(order[k], order[(k + 1) % m]), max(order[k], order[(k + 1) % m]))
            if e[0] != e[1] and e not in edges:
                add(*e)
                count[e[0]] += 1
                count[e[1]] += 1
        short = [i for i in order if count[i] < degree]
        for _round in range(4):
            rng.shuffle(short)
            for i in short:
                for _try in range(8):
                    if count[i] >= degree:
                        break
                    j = order[rng.randrange(m)]
                    e = (min(i, j), max(i, j))
                    if i == j or e in edges or count[j] >= degree + 1:
                        continue
                    add(*e)
                    count[i] += 1
                    count[j] += 1
            short = [i for i in short if count[i] < degree]
            if not short:
                break

    if t.kind == "random-regular":
        regular(list(range(n)), d)
    elif t.kind == "small-world":
        # Watts-Strogatz: a ring lattice of degree d, each link rewired with chance `rewire`.
        half = max(1, d // 2)
        for i in range(n):
            for k in range(1, half + 1):
                j = (i + k) % n
                if rng.random() < t.rewire:
                    j = rng.randrange(n)
                add(i, j)
    else:
        k = max(1, min(t.clusters, n // 2))
        order = list(range(n))
        rng.shuffle(order)
        groups = [order[c::k] for c in range(k)]
        for c, g in enumerate(groups):
            for i in g:
                cluster[i] = c
        for g in groups:
            if t.kind == "local-clusters" and len(g) <= 12:
                for x in range(len(g)):  # a LAN: everyone finds everyone by mDNS
                    for y in range(x + 1, len(g)):
                        add(g[x], g[y])
            else:
                regular(g, min(d, len(g) - 1))
        # Slow links between clusters: a ring of clusters, then `bridges` more per cluster.
        for c in range(k):
            for _b in range(t.bridges):
                other = (c + 1) % k if _b == 0 else rng.randrange(k)
                if other == c and k > 1:
                    other = (c + 1) % k
                if other != c:
                    add(rng.choice(groups[c]), rng.choice(groups[other]), True)
    out = [(members[a], members[b], (a, b) in slow) for a, b in sorted(edges)]
    return out, cluster


def make_plan(scenario: Scenario) -> Plan:
    sc = scenario
    rng = random.Random(f"trustix-sim {sc.seed}")
    kind = sc.attack.kind
    b = sc.builders.count
    n = sc.nodes
    seeds = [hashlib.sha256(f"sim {sc.seed} node {i}".encode()).digest() for i in range(n)]
    attacker_builder = 0 if kind in BUILDER_ATTACKS else None
    twin = b if kind in TWIN_ATTACKS else None
    if twin is not None:
        seeds[twin] = seeds[0]
    attackers: tuple[int, ...] = ()
    if kind in NODE_ATTACKS:
        count = max(1, round(sc.attack.attackers * n))
        if kind == "eclipse":
            count = max(count, 2)
        count = min(count, n - b - 3)
        attackers = tuple(range(n - count, n))
    builders = tuple(range(b))
    special = set(builders) | set(attackers) | ({twin} if twin is not None else set())
    plain = [i for i in range(n) if i not in special]
    mirror_count = round(sc.builders.mirrors * len(plain))
    mirrors = frozenset(builders) | frozenset(rng.sample(plain, mirror_count))

    # The honest graph: builders and plain nodes (the twin and attackers are wired by attack).
    members = sorted(set(builders) | set(plain))
    edges, clusters = topology_edges(sc, members, rng)
    cluster = [0] * n
    for pos, node in enumerate(members):
        cluster[node] = clusters[pos]

    def cluster_of(i: int) -> int:
        return cluster[i] if sc.topology.kind in ("clustered", "local-clusters") else 0

    # Builders and mirrors list each other as seeds: a mirror can only fetch entries from
    # a peer that keeps them, so they form a connected overlay of their own (a ring, and
    # chords up to three links each), whatever the topology.
    have = {(a, c) for a, c, _slow in edges}
    keepers = sorted(mirrors)
    rng.shuffle(keepers)
    overlay: set[tuple[int, int]] = set()
    for k in range(len(keepers)):
        overlay.add(tuple(sorted((keepers[k], keepers[(k + 1) % len(keepers)]))))  # type: ignore[arg-type]
    for x in keepers:
        for _try in range(2):
            y = rng.choice(keepers)
            if y != x:
                overlay.add((min(x, y), max(x, y)))
    for a, c in sorted(overlay - have):
        if a != c:
            edges.append((a, c, cluster_of(a) != cluster_of(c)))
    # A witness that missed a checkpoint catches up only with a consistency proof from a
    # peer that keeps the entries: every node has a builder or mirror among its seeds.
    near: set[int] = set()
    for a, c, _slow in edges:
        if a in mirrors:
            near.add(c)
        if c in mirrors:
            near.add(a)
    for x in members:
        if x not in mirrors and x not in near:
            same = [k for k in sorted(mirrors) if cluster_of(k) == cluster_of(x)]
            y = rng.choice(same or sorted(mirrors))
            edges.append((min(x, y), max(x, y), cluster_of(x) != cluster_of(y)))
    net = sc.network
    links: list[Link] = []
    for a, c, slow in edges:
        lat = (net.slow_latency if slow else net.latency).draw(rng)
        links.append(Link(a, c, lat, net.slow_bandwidth if slow else net.bandwidth, slow))

    # Signings: each builder signs every interval from `start` (offset at random) until 70 %
    # of the run, its entries spread evenly over its checkpoints.
    last = sc.duration * 0.7
    signings: list[Signing] = []
    per_builder: dict[int, list[float]] = {}
    for builder in builders:
        offset = rng.uniform(0, sc.builders.checkpoint_interval)
        times: list[float] = []
        t = sc.builders.start + offset
        while t <= last:
            times.append(t)
            t += sc.builders.checkpoint_interval
        per_builder[builder] = times or [sc.builders.start]
    lies: frozenset[int] = frozenset()
    if kind == "lying-builder":
        lies = frozenset(rng.sample(range(sc.builders.entries), sc.attack.lies))
    for builder, times in per_builder.items():
        total = sc.builders.entries
        done = 0
        for k, when in enumerate(times):
            upto = math.ceil(total * (k + 1) / len(times))
            leaves = []
            for e in range(done, upto):
                path = store_path(e) if sc.builders.shared_paths else store_path(e, f"{builder}/")
                lie = builder == attacker_builder and e in lies
                leaves.append(leaf(path, int(EPOCH + when), lie=lie))
            done = upto
            signings.append(Signing(when, builder, tuple(leaves)))
    signings.sort(key=lambda s: (s.time, s.builder))

    plan = Plan(
        sc,
        n,
        seeds,
        builders,
        attacker_builder,
        twin,
        attackers,
        mirrors,
        links,
        signings,
        lies=lies,
        cluster=cluster,
    )
    honest_plain = [i for i in plain]
    if kind in TWIN_ATTACKS:
        half = rng.sample(honest_plain, len(honest_plain) // 2)
        plan.half_b = frozenset(half)
        plan.twin_leaves = tuple(
            leaf(store_path(e, "twin/"), int(EPOCH + sc.attack.at)) for e in range(4)
        )
    if kind == "eclipse":
        plan.victim = rng.choice(sorted(set(honest_plain) - plan.half_b - plan.mirrors))
    if kind == "withholding":
        skip = [x for x in plan.neighbours(0)]
        rng.shuffle(skip)
        plan.withheld = frozenset(skip[: round(len(skip) * sc.attack.withhold)])
    if kind == "rewrite":
        # Builder 0 later claims another history: its first entry replaced, then more.
        plan.rewrite_leaves = tuple(
            leaf(store_path(e, "rewritten/"), int(EPOCH + sc.attack.at)) for e in range(1)
        )
    _wire_attack(plan, rng)
    for p in sc.partitions:
        side = set(rng.sample(members, round(p.fraction * len(members))))
        for link in plan.links:
            if (link.a in side) != (link.b in side):
                plan.link_events.append((p.at, "down", link))
                plan.link_events.append((p.heal, "up", link))
    plan.link_events.sort(key=lambda e: (e[0], e[1] == "up", e[2].a, e[2].b))
    ch = sc.churn
    if ch.late_join > 0:
        for i in rng.sample(honest_plain, round(ch.late_join * len(honest_plain))):
            plan.late[i] = rng.uniform(*ch.window)
    if ch.crash > 0:
        pool = [i for i in honest_plain if i not in plan.late]
        for i in rng.sample(pool, round(ch.crash * len(honest_plain))):
            down = rng.uniform(*ch.window)
            plan.crashes.append((down, down + rng.uniform(*ch.downtime), i))
        plan.crashes.sort()
    return plan


def _wire_attack(plan: Plan, rng: random.Random) -> None:
    """The attack's links: the twin shows its view to half the network (builder 0 keeps to
    the other half); attackers join the honest graph; an eclipse surrounds its victim."""
    sc = plan.scenario
    kind = sc.attack.kind
    at = sc.attack.at
    d = sc.topology.degree
    lat = sc.network.latency
    bw = sc.network.bandwidth
    honest_plain = sorted(plan.honest - set(plan.builders))

    def link(a: int, b: int) -> Link:
        return Link(min(a, b), max(a, b), lat.draw(rng), bw)

    if plan.twin is not None:
        pool = sorted(plan.half_b)
        if kind == "eclipse":
            pool = list(plan.attackers)
        for x in rng.sample(pool, min(d, len(pool))):
            plan.link_events.append((at, "up", link(plan.twin, x)))
        for existing in plan.links:
            if 0 in (existing.a, existing.b) and (
                existing.a in plan.half_b or existing.b in plan.half_b
            ):
                plan.link_events.append((at, "down", existing))
    if kind == "eclipse":
        victim = plan.victim
        assert victim is not None
        # The victim's honest links are gone from the start: only attackers surround it.
        plan.links = [x for x in plan.links if victim not in (x.a, x.b)]
        for a in plan.attackers:
            plan.links.append(link(a, victim))
            others = [x for x in honest_plain if x != victim]
            for x in rng.sample(others, min(d - 1, len(others))):
                plan.links.append(link(a, x))
        rescuer = rng.choice([x for x in honest_plain if x != victim and x not in plan.half_b])
        plan.link_events.append((sc.attack.heal_at, "up", link(victim, rescuer)))
    elif kind in ("garbage", "flood", "sybil"):
        for a in plan.attackers:
            for x in rng.sample(honest_plain, min(d, len(honest_plain))):
                plan.links.append(link(a, x))
    plan.links.sort(key=lambda x: (x.a, x.b))
