"""The node process: the only place that starts long-running tasks.

A node owns one LevelDB store.  With a key it is a builder node with a log of its own: it
accepts submissions on the local control socket (and from the spool the post-build hook writes
when the node is down), appends them durably with group commit, and signs a checkpoint at most
every `checkpoint_interval` seconds and once more on clean shutdown.  Without a key it keeps
only mirrored logs (a witness/relay).

Ordering guarantees, which the crash tests pin down:
- a submission is acknowledged only after the write batch holding it was written with sync=True;
- a checkpoint is signed only over entries already durable and re-read (`OwnLog.sign`), written
  to the checkpoint file outside LevelDB and then stored; so a signed checkpoint never refers
  to data that is not on disk, and every acknowledged entry survives kill -9;
- on start the stored tree is checked against the last checkpoint and the checkpoint file; a
  disagreement stops the node (StoreCorruptError) rather than let it sign a second history.

Faults: a failed write (disk full, file size limit) is an "unavailable" reply to the
submissions in that batch (the post-build hook then spools them), nothing of it acknowledged;
the node stays up and reopens the store before the next write.  Damage found in the store stops
the node with one line.  The state, spool and socket directories must not be writable by
others (a local user could otherwise forge spool files or replace the control socket).

The control socket is created mode 0600 (owner-only) and is the only way to submit: no remote
peer can append to a log.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import random
import signal
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import trio

from trustix_p2p.config import NodeConfig
from trustix_p2p.control import protocol
from trustix_p2p.control.server import ControlLimits, serve_control
from trustix_p2p.core import evidence as ev
from trustix_p2p.core.checkpoint import SignedCheckpoint
from trustix_p2p.core.entry import decode_entry
from trustix_p2p.core.keys import PrivateKey, PublicKey
from trustix_p2p.errors import (
    ConfigError,
    DecodeError,
    LogRetiredError,
    NodeUnavailableError,
    RemoteProtocolError,
    StoreCorruptError,
    StoreError,
    StoreWriteError,
    TrustixError,
)
from trustix_p2p.events import (
    CheckpointSigned,
    ConnectionClosed,
    ConnectionOpened,
    EntriesAppended,
    NodeEvent,
    PingAnswered,
    Subscriber,
)
from trustix_p2p.executor import Executor, ThreadExecutor
from trustix_p2p.gossip import engine as eng
from trustix_p2p.gossip.messages import GetConsistency, NoData
from trustix_p2p.keyfile import load_key_file
from trustix_p2p.logfmt import ContextLogger, kv
from trustix_p2p.metrics import NodeMetrics, metrics_app
from trustix_p2p.ownlog import OwnLog
from trustix_p2p.peering import Peering
from trustix_p2p.spool import (
    SpoolFileUnusable,
    SpoolFileVanished,
    pending_spool_files,
    read_spool,
    reject_spool,
    remove_spool,
)
from trustix_p2p.statedir import prepare_directories
from trustix_p2p.storage import LeafRecord, LogStore, Store
from trustix_p2p.transport import Connection, connect, ping, serve_noise
from trustix_p2p.transport.network import TCP, Network

log = logging.getLogger("trustix_p2p.node")

#: Seconds between attempts to reopen a store after a failed write.
REOPEN_INTERVAL = 1.0
WRITE_FAILURE_LOG_INTERVAL = 60.0


@attrs.define(eq=False)
class _Pending:
    """One submission waiting for the writer: its leaves, then its result or its error."""

    leaves: tuple[bytes, ...]
    done: trio.Event = attrs.field(factory=trio.Event)
    indices: list[int] | None = None
    error: str | None = None
    unavailable: bool = False


@attrs.define(eq=False)
class Node:
    """A running node; create with `Node.open(config)`, then `await node.run()`."""

    config: NodeConfig
    store: Store
    key: PrivateKey | None
    own: OwnLog | None
    clock: Callable[[], float] = time.time
    control_limits: ControlLimits = attrs.field(factory=ControlLimits)
    # The injectable parts (see the module docstring): a simulation passes its own.
    name: str = ""
    network: Network = TCP
    secure: bool = True
    random_bytes: Callable[[int], bytes] = os.urandom
    executor: Executor = attrs.field(factory=ThreadExecutor)
    events: Subscriber | None = None
    serve_control_socket: bool = True
    ingest_spool_files: bool = True
    log: ContextLogger = attrs.field(init=False)
    _send: trio.MemorySendChannel[_Pending] = attrs.field(init=False)
    _recv: trio.MemoryReceiveChannel[_Pending] = attrs.field(init=False)
    _write_lock: trio.Lock = attrs.field(init=False, factory=trio.Lock)
    ready: trio.Event = attrs.field(init=False, factory=trio.Event)
    # The Noise listener's bound addresses (`listen` may ask for port 0).
    listening: tuple[str, ...] = attrs.field(init=False, default=())
    # Set and replaced whenever the node's state changes (see `wait_until`).
    _changed: trio.Event = attrs.field(init=False, factory=trio.Event)
    _last_reopen: float = attrs.field(init=False, default=-math.inf)
    _last_write_failure_logged: float = attrs.field(init=False, default=-math.inf)
    # Spool entries that could be neither read nor moved aside: logged once, then skipped.
    _spool_skipped: set[tuple[str, int, int]] = attrs.field(init=False, factory=set)
    spool_ingested: int = attrs.field(init=False, default=0)
    spool_scans: int = attrs.field(init=False, default=0)
    engine: eng.Engine = attrs.field(init=False)
    peering: Peering = attrs.field(init=False)
    # The Prometheus metrics, when `[metrics] enabled` (served on its `listen` by `run`).
    metrics: NodeMetrics | None = attrs.field(init=False, default=None)
    metrics_url: str | None = attrs.field(init=False, default=None)

    def __attrs_post_init__(self) -> None:
        self._send, self._recv = trio.open_memory_channel[_Pending](1024)
        if not self.name:
            self.name = self.key.public_key.to_base64()[:8] if self.key is not None else "relay"
        # Every line names the node: a process (or a simulation) may run many.
        self.log = ContextLogger(log, {"node": self.name})
        self.engine = eng.Engine(
            self.store,
            self.engine_config(),
            key=self.key,
            rng=random.Random(self.random_bytes(16)),
            now=self.clock(),
        )
        self.peering = Peering(self, self.engine)
        if self.config.metrics.enabled:
            self.metrics = NodeMetrics()

    def engine_config(self, advertise: tuple[str, ...] = ()) -> eng.EngineConfig:
        """The gossip engine's configuration, from the node's."""
        c = self.config
        follow = tuple(
            eng.Follow(PublicKey.from_base64(f.public_key), f.mode, f.name) for f in c.follow
        )
        return eng.EngineConfig(
            follow=follow,
            follow_unknown=c.follow_unknown,
            follow_successors=c.follow_successors,
            anti_entropy_interval=c.anti_entropy_interval,
            max_logs=c.max_logs,
            entries_per_request=c.entries_per_request,
            advertise=c.advertise or advertise,
            max_reply_bytes=min(1 << 20, c.max_message_size // 2),
        )

    def emit(self, event_type: type[NodeEvent], **fields: object) -> None:
        """Hand an event to the subscriber, if there is one (see trustix_p2p.events)."""
        if self.events is not None:
            self.events(event_type(time=trio.current_time(), node=self.name, **fields))

    @classmethod
    def open(cls, config: NodeConfig, clock: Callable[[], float] = time.time, **parts: Any) -> Node:
        """Open the store and the own log, refusing to start on a store that disagrees.

        `parts` are the other injectable fields (name, network, executor, events, ...).
        """
        prepare_directories(config)
        key = load_key_file(config.key_file) if config.key_file is not None else None
        store = Store(config.db_path)
        try:
            own = OwnLog.open(store, key, config.state_dir) if key is not None else None
        except BaseException:
            store.close()
            raise
        return cls(config, store, key, own, clock, **parts)

    @property
    def own_log(self) -> LogStore | None:
        return self.own.log if self.own is not None else None

    def close(self) -> None:
        self.store.close()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def notify(self) -> None:
        """Wake `wait_until` callers: the node's state changed."""
        self._notify()

    def emit_connection(self, peer: str, direction: str, *, opened: bool, reason: str = "") -> None:
        if opened:
            self.emit(ConnectionOpened, peer=peer, direction=direction)
        else:
            self.emit(ConnectionClosed, peer=peer, direction=direction, reason=reason)

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Wait until `predicate()` holds; it is re-checked whenever the node's state changes
        (entries appended, a checkpoint signed, a spool file handled)."""
        while not predicate():
            await self._changed.wait()

    # -- the writer: group commit --------------------------------------------------------

    async def submit(self, leaves: tuple[bytes, ...]) -> list[int]:
        """Queue leaves for the own log and wait until they are durable.

        RemoteProtocolError: the leaves were refused.  NodeUnavailableError: the store could
        not take them now (a failed write); nothing was logged, retry later.
        """
        if self.own is None:
            raise ConfigError("this node has no key_file, so it keeps no log to submit to")
        final = self.own.final
        if final is not None:
            # Unavailable, not refused: the post-build hook spools the entries, and the node
            # started with the successor's key logs them.
            raise NodeUnavailableError(str(self.own.retired_error(final)))
        if len(leaves) > self.config.max_submit_batch:
            raise RemoteProtocolError(
                f"a submission may hold at most {self.config.max_submit_batch} leaves"
            )
        pending = _Pending(leaves)
        await self._send.send(pending)
        await pending.done.wait()
        if pending.error is not None:
            if pending.unavailable:
                raise NodeUnavailableError(pending.error)
            raise RemoteProtocolError(pending.error)
        assert pending.indices is not None
        return pending.indices

    async def _ensure_writable(self) -> None:
        """Reopen the store after a failed write (at most every REOPEN_INTERVAL seconds)."""
        if self.store.broken is None:
            return
        now = trio.current_time()
        if now - self._last_reopen < REOPEN_INTERVAL:
            raise self.store.broken
        self._last_reopen = now
        await self.executor.run(self._reopen)
        self.log.info("store reopened after a failed write; writes resume")
        self._last_write_failure_logged = -math.inf

    def _write_failed(self, what: str, exc: StoreWriteError) -> None:
        """Log a failed write once, then at most once a minute while it keeps failing."""
        now = trio.current_time()
        if now - self._last_write_failure_logged >= WRITE_FAILURE_LOG_INTERVAL:
            self._last_write_failure_logged = now
            self.log.error(
                "cannot write to the store (retrying; logged once a minute)",
                extra=kv(what=what, **self._own_log_field(), reason=exc),
            )

    def _reopen(self) -> None:
        try:
            self.store.reopen()
        except StoreCorruptError:
            raise
        except StoreError as exc:
            raise StoreWriteError(f"reopening the store failed: {exc}") from exc
        if self.own is not None:
            self.own.check()

    async def _writer(self) -> None:
        assert self.own is not None
        own = self.own
        async for first in self._recv:
            batch = [first]
            count = len(first.leaves)
            while count < self.config.max_submit_batch:
                try:
                    item = self._recv.receive_nowait()
                except trio.WouldBlock:
                    break
                batch.append(item)
                count += len(item.leaves)
            accepted: list[tuple[_Pending, list[LeafRecord]]] = []
            for item in batch:
                try:
                    records = [
                        LeafRecord(leaf, decode_entry(leaf).out_path) for leaf in item.leaves
                    ]
                except DecodeError as exc:
                    item.error = f"invalid entry: {exc}"
                    item.done.set()
                    continue
                accepted.append((item, records))
            if not accepted:
                continue
            all_records = [r for _, records in accepted for r in records]
            async with self._write_lock:
                try:
                    await self._ensure_writable()
                    indices = await self.executor.run(own.append, all_records)
                except LogRetiredError as exc:  # retired while these waited in the queue
                    for item, _ in accepted:
                        item.error = str(exc)
                        item.unavailable = True
                        item.done.set()
                    continue
                except StoreWriteError as exc:
                    self._write_failed("submitted entries", exc)
                    for item, _ in accepted:
                        item.error = f"the node cannot store entries now ({exc}); retry later"
                        item.unavailable = True
                        item.done.set()
                    continue
            pos = 0
            for item, records in accepted:
                item.indices = indices[pos : pos + len(records)]
                pos += len(records)
                item.done.set()
            self.emit(EntriesAppended, count=len(all_records), size=own.log.size)
            self._notify()

    # -- checkpoints -----------------------------------------------------------------------

    async def sign_checkpoint_now(self) -> SignedCheckpoint | None:
        """Sign a checkpoint over every durable entry if the log grew since the last one."""
        if self.own is None:
            return None
        own = self.own
        async with self._write_lock:
            previous = own.log.checkpoint()
            try:
                await self._ensure_writable()
                signed = await self.executor.run(own.sign, int(self.clock()))
            except StoreWriteError as exc:
                self._write_failed("a new checkpoint", exc)
                return previous
        if signed is not None and signed is not previous:
            self.log.info(
                "checkpoint signed", extra=kv(log=own.log_id.hex(), size=signed.checkpoint.size)
            )
            if self.metrics is not None:
                self.metrics.signed.inc()
            self.emit(
                CheckpointSigned, size=signed.checkpoint.size, root=signed.checkpoint.root.hex()
            )
            await self.peering.call(self.engine.local_checkpoint, signed, self.clock())
            self._notify()
        return signed

    async def retire(self, successor: PublicKey) -> SignedCheckpoint:
        """Sign the own log's final checkpoint naming `successor`, and gossip it at once.

        Submissions after it are unavailable (the post-build hook spools them for the
        successor's key).  ConfigError without a log; LogRetiredError for another successor.
        """
        if self.own is None:
            raise ConfigError("this node has no key_file, so it keeps no log to retire")
        own = self.own
        async with self._write_lock:
            await self._ensure_writable()
            previous = own.final
            final = await self.executor.run(own.retire, successor, int(self.clock()))
        if final is not previous:
            self.log.warning(
                "own log retired",
                extra=kv(
                    log=own.log_id.hex(),
                    size=final.checkpoint.size,
                    successor=successor.to_base64(),
                ),
            )
            if self.metrics is not None:
                self.metrics.signed.inc()
            self.emit(
                CheckpointSigned, size=final.checkpoint.size, root=final.checkpoint.root.hex()
            )
            await self.peering.call(self.engine.local_checkpoint, final, self.clock())
            self._notify()
        return final

    async def _serve_metrics(self, nursery: trio.Nursery) -> None:
        from trustix_p2p.proxy.serve import serve_proxy  # hypercorn: only when asked for

        metrics = self.metrics
        assert metrics is not None

        async def refresh() -> None:
            metrics.refresh(await self.metrics_snapshot())

        listen = self.config.metrics.listen
        try:
            self.metrics_url = await nursery.start(
                partial(
                    serve_proxy,
                    metrics_app(metrics.registry, refresh),
                    listen,
                    log=self.log.on("trustix_p2p.proxy.server"),
                )
            )
        except OSError as exc:
            raise ConfigError(f"metrics: cannot listen on {listen}: {exc.strerror or exc}") from exc
        self.log.info("serving metrics", extra=kv(url=f"{self.metrics_url}/metrics"))

    async def metrics_snapshot(self) -> dict[str, Any]:
        """What the metrics' gauges show: per log (hex id, mode, entries stored, head size,
        head age), peers by state, evidence held.  Engine state is read through the executor."""
        now = self.clock()

        def read() -> tuple[list[tuple[str, str, int, int | None, float]], int]:
            logs = []
            for info in self.engine.logs():
                age = now - info.head_time if info.head_time is not None else 0.0
                logs.append((info.log_id.hex(), info.mode, info.size, info.head_size, age))
            return logs, len(self.engine.evidence())

        logs, evidence = await self.executor.run(read)
        return {"logs": logs, "peers": self.peering.peer_states(), "evidence": evidence}

    async def _checkpointer(self) -> None:
        while True:
            await trio.sleep(self.config.checkpoint_interval)
            await self.sign_checkpoint_now()

    # -- spool -----------------------------------------------------------------------------

    def _skip_once(self, path: Path, why: str) -> None:
        try:
            st = os.lstat(path)
        except OSError:
            return
        ident = (path.name, st.st_ino, st.st_mtime_ns)
        if ident not in self._spool_skipped:
            if len(self._spool_skipped) > 10_000:
                self._spool_skipped.clear()
            self._spool_skipped.add(ident)
            self.log.error(
                "skipping spool entry (cannot move it aside)", extra=kv(file=path.name, reason=why)
            )

    def _is_skipped(self, path: Path) -> bool:
        try:
            st = os.lstat(path)
        except OSError:
            return True
        return (path.name, st.st_ino, st.st_mtime_ns) in self._spool_skipped

    def _set_aside(self, path: Path, why: str) -> None:
        target = reject_spool(path)
        if target is None:
            self._skip_once(path, why)
        else:
            self.log.error(
                "moved spool entry aside", extra=kv(file=path.name, to=target, reason=why)
            )

    async def ingest_spool(self) -> int:
        """Submit every pending spool file, deleting each once all its valid leaves are durable.

        A file that is not a regular file of ours, or not a valid spool file, is moved aside
        (or, if even that fails, skipped with one log line).  A file's leaves go in chunks of
        `max_submit_batch`; invalid leaves are kept (the file is moved aside after its valid
        leaves are logged).  When the store cannot take writes the file stays for next time.
        """
        if self.own is None or self.own.final is not None:
            return 0  # a retired log: spooled entries wait for the successor's key
        try:
            paths = pending_spool_files(self.config.spool_path)
        except SpoolFileUnusable as exc:
            self.log.error("cannot read the spool directory", extra=kv(reason=exc))
            return 0
        ingested = 0
        for path in paths:
            if self._is_skipped(path):
                continue
            try:
                leaves = await self.executor.run(read_spool, path)
            except SpoolFileVanished:
                continue
            except DecodeError as exc:
                self._set_aside(path, str(exc))
                self._notify()
                continue
            valid: list[bytes] = []
            invalid = 0
            for leaf in leaves:
                try:
                    decode_entry(leaf)
                except DecodeError:
                    invalid += 1
                else:
                    valid.append(leaf)
            step = self.config.max_submit_batch
            try:
                for start in range(0, len(valid), step):
                    await self.submit(tuple(valid[start : start + step]))
            except NodeUnavailableError as exc:
                self.log.warning("spool file kept for later", extra=kv(file=path.name, reason=exc))
                return ingested
            ingested += len(valid)
            self.spool_ingested += len(valid)
            if invalid:
                self._set_aside(path, f"{invalid} invalid entries (its {len(valid)} valid logged)")
            else:
                remove_spool(path)
            self._notify()
        if ingested:
            self.log.info("ingested spooled entries", extra=kv(entries=ingested))
        self.spool_scans += 1
        self._notify()
        return ingested

    async def _spool_loop(self) -> None:
        while True:
            await self.ingest_spool()
            await trio.sleep(self.config.spool_poll_interval)

    # -- control socket --------------------------------------------------------------------

    def status(
        self, peers: int = 0, syncing: dict[bytes, tuple[float, float]] | None = None
    ) -> protocol.Status:
        """The node's status (a store call: run it through the executor).  `peers` and
        `syncing` (entries per second and seconds left, per log) come from the peering,
        which lives in the event loop's thread."""
        syncing = syncing or {}
        own = self.own_log
        cp = own.checkpoint() if own is not None else None
        try:
            spooled = len(pending_spool_files(self.config.spool_path))
        except SpoolFileUnusable:
            spooled = 0
        try:
            logs = len(self.store.log_ids())
        except StoreError:  # closed between a failed write and its reopen: still answer
            logs = self.store.open_log_count()
        return protocol.Status(
            public_key=self.key.public_key.raw if self.key is not None else None,
            log_id=own.log_id if own is not None else None,
            size=own.size if own is not None else 0,
            checkpoint_size=cp.checkpoint.size if cp is not None else 0,
            checkpoint_time=cp.checkpoint.time if cp is not None else 0,
            spool_pending=spooled,
            logs=logs,
            listen=self.listening or tuple(self.config.listen),
            peers=peers,
            follows=tuple(self._followed(info, syncing) for info in self.engine.logs()),
            evidence=len(self.engine.evidence()),
            successor=cp.checkpoint.successor if cp is not None else None,
        )

    def _followed(
        self, info: eng.LogInfo, syncing: dict[bytes, tuple[float, float]]
    ) -> protocol.FollowedLog:
        sync = syncing.get(info.log_id) if info.syncing else None
        rate = eta = None
        if sync is not None:
            rate = int(sync[0])
            eta = int(sync[1]) if sync[1] != math.inf else None
        return protocol.FollowedLog(
            info.log_id,
            info.public_key.raw,
            info.name,
            info.mode,
            info.size,
            info.head_size,
            info.head_time,
            info.cosignatures,
            info.evidence,
            rate,
            eta,
            info.head_from,
            info.head_receipts,
            info.successor,
        )

    def evidence_rows(self) -> list[protocol.EvidenceRow]:
        return [
            protocol.EvidenceRow(r.id, r.kind, r.log_id, r.public_key, r.found_at)
            for r in self.engine.evidence()
        ]

    def evidence_document(self, prefix: str) -> str:
        """The evidence document whose id starts with `prefix` (ConfigError unless one)."""
        matches = [r for r in self.engine.evidence() if r.id.startswith(prefix.lower())]
        if len(matches) != 1:
            what = "no evidence" if not matches else f"{len(matches)} pieces of evidence"
            raise ConfigError(f"{what} with an id starting {prefix!r} on this node")
        return ev.to_json(matches[0].evidence)

    def lookup(self, out_path: str) -> list[protocol.LookupHit]:
        """Every entry about `out_path` in the own and mirrored logs, with its inclusion proof
        against the log's stored checkpoint (carrying the cosignatures gathered for it)."""
        return [
            protocol.LookupHit(
                hashlib.sha256(h.public_key).digest(),
                h.index,
                h.leaf,
                h.note,
                h.proof if h.note is not None else None,
            )
            for h in self.engine.path_hits(out_path)
        ]

    def entries(self, log_id: bytes, start: int, count: int) -> list[bytes]:
        """Leaves [start, start + count) of a stored log, at most MAX_ENTRIES_REPLY_BYTES."""
        if not self.store.has_log(log_id):
            raise StoreError(f"this node holds no log {log_id.hex()}")
        lg = self.store.log(log_id)
        leaves: list[bytes] = []
        budget = protocol.MAX_ENTRIES_REPLY_BYTES
        for _index, leaf in lg.leaves(start, min(lg.size, start + count)):
            budget -= len(leaf) + 5
            if leaves and budget < 0:
                break
            leaves.append(leaf)
        return leaves

    def consistency(self, log_id: bytes, old: int, new: int) -> protocol.ConsistencyReply:
        reply = self.engine.serve_consistency(GetConsistency(log_id, old, new))
        if isinstance(reply, NoData):
            raise StoreError(f"no consistency proof here: {reply.reason}")
        return protocol.ConsistencyReply(reply.prefix_root, reply.note, reply.proof)

    def _checkpoint_note(self, log_id: bytes | None) -> bytes | None:
        """The stored checkpoint of the own log or of `log_id` (the one its stored entries
        are verified against); for a log witnessed here, which keeps no entries, its head.
        None for a log this node does not hold."""
        if log_id is not None and not self.store.has_log(log_id):
            return None
        target = self.own_log if log_id is None else self.store.log(log_id)
        cp = target.checkpoint() if target is not None else None
        if cp is None and log_id is not None:
            return self.engine.head_note(log_id)
        return cp.note if cp is not None else None

    # -- peers -----------------------------------------------------------------------------

    async def _peer_session(
        self,
        connection: Connection,
        direction: str,
        body: Callable[[Connection], Awaitable[object]],
    ) -> object:
        peer = connection.peer_key.to_base64()
        self.emit(ConnectionOpened, peer=peer, direction=direction)
        reason = "closed"
        try:
            return await body(connection)
        except BaseException as exc:
            reason = type(exc).__name__
            raise
        finally:
            self.emit(ConnectionClosed, peer=peer, direction=direction, reason=reason)

    async def ping_peer(self, address: str, nonce: int = 0) -> float:
        """Dial `address`, ping it once, close; the round trip in seconds."""
        if self.key is None:
            raise ConfigError("a node without a key cannot dial peers")

        async def one(connection: Connection) -> float:
            rtt = await ping(connection, nonce)
            self.emit(PingAnswered, peer=connection.peer_key.to_base64(), round_trip=rtt)
            return rtt

        connection = await connect(
            address,
            self.key,
            limits=self.config.transport_limits(),
            network=self.network,
            secure=self.secure,
            random_bytes=self.random_bytes,
        )
        async with connection:
            result = await self._peer_session(connection, "out", one)
        assert isinstance(result, float)
        return result

    async def _answer(self, request: protocol.Request) -> bytes:
        """Run one control request; TrustixErrors become error replies, bugs propagate."""
        reply: protocol.Reply
        try:
            match request:
                case protocol.Submit(leaves):
                    reply = protocol.SubmitReply(tuple(await self.submit(leaves)))
                case protocol.StatusRequest():
                    status = await self.executor.run(
                        self.status, self.peering.connected_count(), self.peering.sync_rates()
                    )
                    reply = protocol.StatusReply(status)
                case protocol.CheckpointRequest(log_id):
                    note = await self.executor.run(self._checkpoint_note, log_id)
                    reply = protocol.CheckpointReply(note)
                case protocol.LookupRequest(out_path):
                    hits = await self.executor.run(self.lookup, out_path)
                    reply = protocol.LookupReply(tuple(hits))
                case protocol.PeersRequest():
                    rows = await self.peering.peer_rows()
                    reply = protocol.PeersReply(tuple(protocol.PeerRow(**r) for r in rows))
                case protocol.EvidenceListRequest():
                    items = await self.executor.run(self.evidence_rows)
                    reply = protocol.EvidenceListReply(tuple(items))
                case protocol.EntriesRequest(log_id, start, count):
                    got = await self.executor.run(self.entries, log_id, start, count)
                    reply = protocol.EntriesReply(tuple(got))
                case protocol.ConsistencyRequest(log_id, old, new):
                    reply = await self.executor.run(self.consistency, log_id, old, new)
                case protocol.RetireRequest(successor):
                    final = await self.retire(PublicKey(successor))
                    reply = protocol.CheckpointReply(final.note)
                case protocol.EvidenceRequest(ident):
                    document = await self.executor.run(self.evidence_document, ident)
                    reply = protocol.EvidenceReply(document)
                case _:
                    raise AssertionError(f"unhandled request {request!r}")
        except NodeUnavailableError as exc:
            reply = protocol.Unavailable(str(exc))
        except TrustixError as exc:
            reply = protocol.Refused(str(exc))
        return protocol.encode_reply(reply)

    # -- lifecycle -------------------------------------------------------------------------

    async def run(self, *, install_signal_handlers: bool = True) -> None:
        """Run until cancelled or until SIGTERM/SIGINT; sign a final checkpoint on the way out.

        A TrustixError that stops the node (a listen address that cannot be bound, damage
        found in the store) is raised as itself, not inside an exception group.
        """
        try:
            async with trio.open_nursery() as nursery:
                if self.own is not None:
                    nursery.start_soon(self._writer)
                    if self.ingest_spool_files:
                        await self.ingest_spool()
                        nursery.start_soon(self._spool_loop)
                    nursery.start_soon(self._checkpointer)
                if self.key is not None and self.config.listen:
                    try:
                        bound = await nursery.start(
                            partial(
                                serve_noise,
                                limits=self.config.transport_limits(),
                                network=self.network,
                                secure=self.secure,
                                random_bytes=self.random_bytes,
                                log=self.log.on("trustix_p2p.transport.server"),
                            ),
                            list(self.config.listen),
                            self.key,
                            self.peering.serve,
                        )
                    except OSError as exc:
                        raise ConfigError(
                            f"listen: cannot listen on {', '.join(self.config.listen)}: "
                            f"{exc.strerror or exc}"
                        ) from exc
                    self.listening = tuple(bound)
                    concrete = tuple(a for a in bound if not a.startswith(("0.0.0.0:", "[::]:")))
                    self.engine.config = self.engine_config(concrete)
                if self.key is not None:
                    await nursery.start(self.peering.run)
                if self.metrics is not None:
                    await self._serve_metrics(nursery)
                # Last: once the control socket answers, everything it reports is running.
                if self.serve_control_socket:
                    await nursery.start(
                        partial(
                            serve_control,
                            limits=self.control_limits,
                            log=self.log.on("trustix_p2p.control"),
                        ),
                        self.config.socket_path,
                        self._answer,
                    )
                if install_signal_handlers:
                    nursery.start_soon(self._watch_signals, nursery.cancel_scope)
                self.log.info("node ready", extra=kv(**self._ready_fields()))
                if self.own is not None and (final := self.own.final) is not None:
                    successor = final.checkpoint.successor
                    assert successor is not None
                    self.log.warning(
                        "own log retired: submissions wait in the spool until the node runs "
                        "with the successor's key_file",
                        extra=kv(
                            log=self.own.log_id.hex(),
                            successor=PublicKey(successor).to_base64(),
                        ),
                    )
                self.ready.set()
        except BaseExceptionGroup as group:
            _raise_first_trustix_error(group)
            raise
        finally:
            with trio.CancelScope(shield=True):
                try:
                    await self.sign_checkpoint_now()
                except StoreError as exc:
                    self.log.error(
                        "no final checkpoint", extra=kv(**self._own_log_field(), reason=exc)
                    )

    def _ready_fields(self) -> dict[str, object]:
        """What the "node ready" line reports: the control socket, the listen addresses and
        the own log (fields left out when there is none)."""
        fields: dict[str, object] = {"socket": self.config.socket_path}
        if self.listening:
            fields["listen"] = ",".join(self.listening)
        return fields | self._own_log_field()

    def _own_log_field(self) -> dict[str, object]:
        """`log=<own log id>` for lines about the own log (nothing without one)."""
        return {"log": self.own.log_id.hex()} if self.own is not None else {}

    async def _watch_signals(self, scope: trio.CancelScope) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                self.log.info(
                    "shutting down on a signal", extra=kv(signal=signal.Signals(signum).name)
                )
                scope.cancel()
                return


def _raise_first_trustix_error(group: BaseExceptionGroup[BaseException]) -> None:
    """Raise the first TrustixError in `group` (depth first) as itself, if there is one."""
    for exc in group.exceptions:
        if isinstance(exc, TrustixError):
            raise exc
        if isinstance(exc, BaseExceptionGroup):
            _raise_first_trustix_error(exc)


async def run_node(config: NodeConfig) -> None:
    """Open and run a node until it is told to stop."""
    node = Node.open(config)
    try:
        await node.run()
    finally:
        node.close()
