"""Many real nodes in one process: the in-memory network, virtual time, one seed.

Each node is a real `trustix_p2p.node.Node` (its writer, checkpointer and Noise listener; no
control socket, no spool) with a store of its own (in memory, or LevelDB in a directory),
talking over `MemoryNetwork` with Noise on or off.  Every source of variation is derived from
the seed: node keys, Noise ephemeral keys, what each node appends and whom it pings when, and
trio's own scheduling order (`deterministic_scheduling`).  The nodes' events are the trace: the
same spec and seed give the same trace, byte for byte, whatever the store.

    trace = run_cluster(ClusterSpec(nodes=50, seed=1))
"""

from __future__ import annotations

import contextlib
import hashlib
import random
import tempfile
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import attrs
import trio
import trio.testing

from trustix_p2p.config import NodeConfig
from trustix_p2p.core import nix32
from trustix_p2p.core.entry import Entry, encode_entry
from trustix_p2p.core.keys import PrivateKey
from trustix_p2p.events import NodeEvent
from trustix_p2p.executor import InlineExecutor
from trustix_p2p.node import Node
from trustix_p2p.ownlog import MemoryCheckpointFile, OwnLog
from trustix_p2p.storage import Store
from trustix_p2p.transport.network import MemoryNetwork

__all__ = ["ClusterSpec", "deterministic_scheduling", "run_cluster"]

# Checkpoint times are wall-clock seconds in the format; in a run they are virtual.
EPOCH = 1_700_000_000


@attrs.frozen
class ClusterSpec:
    nodes: int = 50
    seed: int = 1
    secure: bool = True  # Noise on the in-memory links, or plain framed streams
    store: str = "memory"  # or "leveldb"
    entries_per_node: int = 5
    pings_per_node: int = 3
    duration: float = 30.0  # virtual seconds during which nodes append and ping
    checkpoint_interval: float = 2.0
    latency: tuple[float, float] = (0.02, 0.1)  # one-way link delay range, seconds


@contextlib.contextmanager
def deterministic_scheduling(seed: int) -> Iterator[None]:
    """Make trio's choice among runnable tasks a function of `seed` (for replayable runs).

    trio shuffles each batch of runnable tasks with its own random source; pytest-trio makes
    that deterministic the same way under Hypothesis.
    """
    import trio._core._run as run

    saved_flag = run._ALLOW_DETERMINISTIC_SCHEDULING
    saved_state = run._r.getstate()
    run._ALLOW_DETERMINISTIC_SCHEDULING = True  # type: ignore[misc]
    run._r.seed(seed)
    try:
        yield
    finally:
        run._ALLOW_DETERMINISTIC_SCHEDULING = saved_flag  # type: ignore[misc]
        run._r.setstate(saved_state)


def _key(seed: int, i: int) -> PrivateKey:
    return PrivateKey.from_seed(hashlib.sha256(f"cluster {seed} node {i}".encode()).digest())


def _entry(rng: random.Random, i: int, k: int, built_at: int) -> bytes:
    part = nix32.encode(hashlib.sha256(f"node {i} entry {k}".encode()).digest()[:20])
    return encode_entry(
        Entry(
            out_path=f"/nix/store/{part}-pkg-{i}-{k}",
            nar_hash=rng.randbytes(32),
            nar_size=rng.randrange(1, 1 << 30),
            references=(),
            deriver="",
            output_name="out",
            built_at=built_at,
        )
    )


def _address(i: int) -> str:
    return f"10.{i // 250}.{i % 250}.1:7946"


def _open_store(
    spec: ClusterSpec, i: int, key: PrivateKey, root: Path | None
) -> tuple[Store, OwnLog]:
    if spec.store == "memory":
        store = Store.in_memory()
        return store, OwnLog.open(store, key, MemoryCheckpointFile())
    if spec.store == "leveldb":
        assert root is not None
        state = root / f"n{i}"
        state.mkdir(mode=0o700)
        store = Store(state / "db")
        return store, OwnLog.open(store, key, state)
    raise ValueError(f"unknown store {spec.store!r}")


async def _drive(spec: ClusterSpec, node: Node, i: int, rng: random.Random) -> None:
    """What node i does: append its entries and ping random peers at random virtual times."""
    actions = ["append"] * spec.entries_per_node + ["ping"] * spec.pings_per_node
    times = sorted(rng.uniform(0, spec.duration) for _ in actions)
    rng.shuffle(actions)
    now = 0.0
    for k, (at, action) in enumerate(zip(times, actions, strict=True)):
        await trio.sleep(at - now)
        now = at
        if action == "append":
            await node.submit((_entry(rng, i, k, EPOCH + int(trio.current_time())),))
        else:
            peer = rng.randrange(spec.nodes - 1)
            peer += peer >= i
            with contextlib.suppress(Exception):
                await node.ping_peer(_address(peer), nonce=k)


async def _run(spec: ClusterSpec, trace: list[str], root: Path | None) -> None:
    seed_rng = random.Random(spec.seed)
    lo, hi = spec.latency
    link_delay: dict[tuple[str, str], float] = {}

    def delay(src: str, dst: str) -> float:
        # One latency per pair of hosts, the same both ways, drawn when first used.
        hosts = tuple(sorted((src.rsplit(":", 1)[0], dst.rsplit(":", 1)[0])))
        pair = (hosts[0], hosts[1])
        if pair not in link_delay:
            link_delay[pair] = seed_rng.uniform(lo, hi)
        return link_delay[pair]

    network = MemoryNetwork(delay=delay)

    def record(event: NodeEvent) -> None:
        trace.append(event.line())

    nodes: list[Node] = []
    for i in range(spec.nodes):
        key = _key(spec.seed, i)
        store, own = _open_store(spec, i, key, root)
        noise_rng = random.Random(f"{spec.seed} noise {i}")
        config = NodeConfig(
            state_dir=(root or Path("/nonexistent")) / f"n{i}",
            checkpoint_interval=spec.checkpoint_interval,
            listen=(_address(i),),
        )
        nodes.append(
            Node(
                config,
                store,
                key,
                own,
                clock=lambda: EPOCH + trio.current_time(),
                name=f"n{i:04d}",
                network=network,
                secure=spec.secure,
                random_bytes=noise_rng.randbytes,
                executor=InlineExecutor(),
                events=record,
                serve_control_socket=False,
                ingest_spool_files=False,
            )
        )
    try:
        async with trio.open_nursery() as nursery:
            for node in nodes:
                nursery.start_soon(partial(node.run, install_signal_handlers=False))
            for node in nodes:
                await node.ready.wait()
            async with trio.open_nursery() as drivers:
                for i, node in enumerate(nodes):
                    drivers.start_soon(_drive, spec, node, i, random.Random(f"{spec.seed} {i}"))
            # Let the last checkpoints be signed, then stop everyone.
            await trio.sleep(spec.checkpoint_interval * 2)
            nursery.cancel_scope.cancel()
    finally:
        for node in nodes:
            node.close()


def run_cluster(spec: ClusterSpec) -> list[str]:
    """Run the cluster to the end in virtual time; the trace of every node's events."""
    trace: list[str] = []
    with contextlib.ExitStack() as stack:
        root = None
        if spec.store == "leveldb":
            root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="cluster-")))
        stack.enter_context(deterministic_scheduling(spec.seed))
        trio.run(_run, spec, trace, root, clock=trio.testing.MockClock(autojump_threshold=0))
    return trace
