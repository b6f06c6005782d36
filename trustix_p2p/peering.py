"""The gossip shell of a node: connections, the dialer, discovery, and the engine's actions.

`Peering` drives one `trustix_p2p.gossip.engine.Engine` (sans-IO) over the node's transport:
each connection gets a peer id; every received message, opened or closed connection and timer
tick becomes an engine call, and every action it returns is carried out here (a message
queued for a peer, a peer dropped with its reason, addresses learned).  Engine calls go
through the node's executor, one at a time, like every other store call, so the engine and the
node's own writer never touch the store at once.

The connection manager keeps `peers_target` outbound connections: it dials seeds, peers met
by peer exchange and peers found by mDNS, redials a failed address after `redial_interval`
doubled per failure (up to 64 times that), and keeps at most one connection per peer key
(of two, the one dialled by the smaller key stays, on both sides).  Peers that connected
successfully are remembered in the store and dialled first after a restart.  A peer dropped
for misbehaviour is not dialled again (nor let back in) before its back-off expires; the
reason is kept for `trustix-p2p peers`.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections import OrderedDict
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any, Final, Protocol

import attrs
import msgpack
import trio

from trustix_p2p.core import wire
from trustix_p2p.core.keys import PublicKey
from trustix_p2p.errors import ConfigError, TrustixError
from trustix_p2p.events import EvidenceRecorded, HeadAccepted, NodeEvent
from trustix_p2p.gossip import engine as eng
from trustix_p2p.logfmt import ContextLogger, kv
from trustix_p2p.transport import Connection, connect
from trustix_p2p.transport.address import PeerAddress, parse_peer_address
from trustix_p2p.transport.connection import CONNECTION_ERRORS

if TYPE_CHECKING:
    from trustix_p2p.config import NodeConfig
    from trustix_p2p.core.keys import PrivateKey
    from trustix_p2p.executor import Executor
    from trustix_p2p.metrics import NodeMetrics
    from trustix_p2p.storage import Store
    from trustix_p2p.transport.network import Network


class Host(Protocol):
    """What the shell needs of its node (`trustix_p2p.node.Node` is one)."""

    config: NodeConfig
    key: PrivateKey | None
    store: Store
    executor: Executor
    network: Network
    secure: bool
    listening: tuple[str, ...]

    @property
    def log(self) -> ContextLogger: ...

    def clock(self) -> float: ...

    def random_bytes(self, n: int) -> bytes: ...

    def notify(self) -> None: ...

    def emit(self, event_type: type[NodeEvent], **fields: object) -> None: ...

    @property
    def metrics(self) -> NodeMetrics | None: ...

    def emit_connection(
        self, peer: str, direction: str, *, opened: bool, reason: str = ""
    ) -> None: ...


__all__ = ["AddressRecord", "Host", "Peering"]

log = logging.getLogger("trustix_p2p.peering")

MAX_ADDRESSES: Final = 1000
OUTBOX: Final = 4096
MAX_BACKOFF_STEPS: Final = 6
BAN_SECONDS: Final = 60.0
PROGRESS_INTERVAL: Final = 10.0
# Keys of peers whose connections ended, by peer id: the engine may still name them (a head
# it judged after the connection it came on closed).
PAST_PEERS: Final = 1024


def _host_port(address: str) -> str:
    """`host:port` of a peer address that may pin a key (`<key>@host:port`)."""
    return address.rpartition("@")[2]


@attrs.define(eq=False)
class AddressRecord:
    """What the node knows of one address it may dial."""

    address: str
    key: str | None  # base64, when pinned or learned at a handshake
    source: str  # "seed" | "pex" | "mdns" | "stored"
    fails: int = 0
    next_attempt: float = 0.0
    last_connected: float = 0.0
    last_reason: str = ""
    connected: bool = False


@attrs.define(eq=False)
class _Conn:
    id: int
    connection: Connection
    key: bytes
    outbound: bool
    address: str
    outbox: trio.MemorySendChannel[wire.Message]
    scope: trio.CancelScope
    record: AddressRecord | None
    closing: bool = False


@attrs.define(eq=False)
class Peering:
    node: Host
    engine: eng.Engine
    _conns: dict[int, _Conn] = attrs.field(init=False, factory=dict)
    _next_id: int = attrs.field(init=False, default=0)
    _book: dict[str, AddressRecord] = attrs.field(init=False, factory=dict)
    _banned: dict[bytes, tuple[float, str]] = attrs.field(init=False, factory=dict)
    _wake_timer: trio.Event = attrs.field(init=False, factory=trio.Event)
    _wake_dialer: trio.Event = attrs.field(init=False, factory=trio.Event)
    _dialing: set[str] = attrs.field(init=False, factory=set)
    _nursery: trio.Nursery | None = attrs.field(init=False, default=None)
    # Drop reasons by peer key (base64), newest last, bounded.
    dropped: dict[str, str] = attrs.field(init=False, factory=dict)
    # Per log being synced: (when it started, size then, size now, target).
    _progress: dict[bytes, tuple[float, int, int, int]] = attrs.field(init=False, factory=dict)
    _last_progress_log: float = attrs.field(init=False, default=-math.inf)
    # The engine's next deadline, as of its last call (unix seconds), and until when the
    # timer sleeps (a call that moves the deadline before that wakes it).
    _deadline: float = attrs.field(init=False, default=-math.inf)
    _timer_until: float = attrs.field(init=False, default=-math.inf)
    _past_keys: OrderedDict[int, bytes] = attrs.field(init=False, factory=OrderedDict)
    # Messages (and their framed bytes) handed to the engine, and messages queued to peers.
    received: int = attrs.field(init=False, default=0)
    bytes_in: int = attrs.field(init=False, default=0)
    sent: int = attrs.field(init=False, default=0)
    # The node's bound fields (node=...) on this module's logger.
    log: ContextLogger = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.log = self.node.log.on(log)

    # -- start ------------------------------------------------------------------------------

    def load_addresses(self) -> None:
        """Seeds from the configuration, then peers remembered in the store."""
        for text in self.node.config.seeds:
            parsed = parse_peer_address(text)
            self._remember(str(parsed), parsed, "seed")
        for name, raw in self.node.store.records(b"R"):
            try:
                key, last_connected = msgpack.unpackb(raw)
                parsed = parse_peer_address(name.decode())
            except (ValueError, TypeError, UnicodeDecodeError, TrustixError):
                continue
            record = self._remember(str(parsed), parsed, "stored")
            if record is not None:
                record.last_connected = float(last_connected)
                if record.key is None and isinstance(key, str) and key:
                    record.key = key

    def _remember(self, text: str, parsed: PeerAddress, source: str) -> AddressRecord | None:
        own = self.node.key.public_key if self.node.key is not None else None
        if parsed.key is not None and own is not None and parsed.key == own:
            return None
        if parsed.host_port() in self.node.listening:
            return None
        existing = self._book.get(text)
        if existing is not None:
            return existing
        # The same host and port under another spelling (with or without the key).
        for record in self._book.values():
            if record.address.rpartition("@")[2] == parsed.host_port():
                if record.key is None and parsed.key is not None:
                    record.key = parsed.key.to_base64()
                return record
        if len(self._book) >= MAX_ADDRESSES:
            return None
        key = parsed.key.to_base64() if parsed.key is not None else None
        record = AddressRecord(text, key, source)
        self._book[text] = record
        return record

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self.load_addresses()
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._timer)
            if self.node.key is not None:
                nursery.start_soon(self._dialer)
            mdns = self.node.config.mdns
            if mdns.enabled and self.node.key is not None and self.node.listening:
                nursery.start_soon(self._mdns)
            task_status.started()

    # -- engine calls -------------------------------------------------------------------------

    async def call(self, fn: Callable[..., list[eng.Action]], *args: Any, **kw: Any) -> None:
        """Run one engine event (through the executor) and carry out its actions."""
        engine = self.engine

        def step() -> tuple[list[eng.Action], float]:
            # The engine runs in the executor's thread: its next deadline is read there too.
            return fn(*args, **kw), engine.next_deadline()

        try:
            actions, self._deadline = await self.node.executor.run(step)
        except TrustixError as exc:
            # A store that cannot be written, say: that event is lost for the engine, which
            # asks again (anti-entropy, request timeouts); the node stays up.
            self.log.error("gossip: an engine call failed", extra=kv(reason=exc))
            return
        self._apply(actions)
        if self._deadline < self._timer_until:
            self._wake_timer.set()  # the engine wants a tick sooner than the timer sleeps

    def _apply(self, actions: list[eng.Action]) -> None:
        for action in actions:
            match action:
                case eng.Send(peer, message):
                    conn = self._conns.get(peer)
                    if conn is None:
                        continue
                    if conn.closing:
                        continue  # being dropped: its queue is closed
                    try:
                        conn.outbox.send_nowait(message)
                        self.sent += 1
                    except trio.WouldBlock:
                        self._disconnect(conn, "does not read its messages (send queue full)")
                    except trio.ClosedResourceError:
                        continue
                case eng.Disconnect(peer, reason):
                    conn = self._conns.get(peer)
                    if conn is not None:
                        self._disconnect(conn, reason, ban=True)
                case eng.LearnedPeers(_peer, addresses):
                    self._learn(addresses)
                case eng.Accepted(log_id, size, head_hash, peer):
                    if peer is not None:
                        self.log.debug(
                            "head accepted",
                            extra=kv(log=log_id.hex(), size=size, peer=self._peer_key(peer)),
                        )
                        if self.node.metrics is not None:
                            self.node.metrics.received.labels(log_id.hex()).inc()
                    self.node.emit(
                        HeadAccepted,
                        log=log_id.hex(),
                        size=size,
                        head_hash=head_hash.hex(),
                        peer=self._peer_key(peer),
                    )
                case eng.Synced(log_id, count, size, target):
                    self._sync_progress(log_id, count, size, target)
                    if self.node.metrics is not None:
                        self.node.metrics.synced.labels(log_id.hex()).inc(count)
                case eng.EvidenceFound(ident, kind, log_id, peer):
                    found = {} if peer is None else {"peer": self._peer_key(peer)}
                    self.log.warning(
                        "evidence recorded",
                        extra=kv(log=log_id.hex(), kind=kind, evidence=ident, **found),
                    )
                    self.node.emit(
                        EvidenceRecorded,
                        ident=ident,
                        kind=kind,
                        log=log_id.hex(),
                        peer=self._peer_key(peer),
                    )
        self.node.notify()

    def peer_states(self) -> dict[str, int]:
        """Peers by state, for metrics: connected in and out, being dialled, backing off."""
        now = trio.current_time()
        conns = list(self._conns.values())
        return {
            "connected_in": sum(1 for c in conns if not c.outbound),
            "connected_out": sum(1 for c in conns if c.outbound),
            "dialing": len(self._dialing),
            "backoff": sum(
                1 for r in self._book.values() if not r.connected and r.next_attempt > now
            ),
        }

    def _peer_key(self, peer: int | None) -> str:
        """The base64 key of the peer with engine id `peer` ("" for None: this node)."""
        if peer is None:
            return ""
        conn = self._conns.get(peer)
        key = conn.key if conn is not None else self._past_keys.get(peer)
        return PublicKey(key).to_base64() if key is not None else "?"

    def _sync_progress(self, log_id: bytes, count: int, size: int, target: int) -> None:
        now = trio.current_time()
        started, base, _, _ = self._progress.get(log_id, (now, size - count, 0, 0))
        self._progress[log_id] = (started, base, size, target)
        if size >= target:
            self._progress.pop(log_id, None)
        if size >= target and size - base > 10_000:
            rate = (size - base) / max(now - started, 1e-9)
            self.log.info(
                "log synced",
                extra=kv(log=log_id.hex(), entries=size, rate=f"{rate:.0f}"),
            )
        elif now - self._last_progress_log >= PROGRESS_INTERVAL and size < target:
            self._last_progress_log = now
            rate = (size - base) / max(now - started, 1e-9)
            eta = (target - size) / rate if rate > 0 else math.inf
            self.log.info(
                "log syncing",
                extra=kv(
                    log=log_id.hex(),
                    entries=size,
                    target=target,
                    rate=f"{rate:.0f}",
                    eta=f"{eta:.0f}",
                ),
            )

    def sync_rates(self) -> dict[bytes, tuple[float, float]]:
        """Per log being synced: (entries per second, seconds left), for status."""
        now = trio.current_time()
        rates: dict[bytes, tuple[float, float]] = {}
        for log_id, (started, base, size, target) in self._progress.items():
            rate = (size - base) / max(now - started, 1e-9)
            rates[log_id] = (rate, (target - size) / rate if rate > 0 else math.inf)
        return rates

    def _learn(self, addresses: tuple[str, ...]) -> None:
        added = False
        for text in addresses:
            try:
                parsed = parse_peer_address(text)
            except ConfigError:
                continue
            if parsed.key is None:
                continue  # peer exchange must pin the key
            if self._remember(str(parsed), parsed, "pex") is not None:
                added = True
        if added:
            self._wake_dialer.set()

    def _record_drop(self, name: str, reason: str) -> None:
        self.dropped.pop(name, None)
        self.dropped[name] = reason
        while len(self.dropped) > 256:
            self.dropped.pop(next(iter(self.dropped)))

    def _disconnect(self, conn: _Conn, reason: str, *, ban: bool = False) -> None:
        name = PublicKey(conn.key).to_base64()
        self._record_drop(name, reason)
        if conn.record is not None:
            conn.record.last_reason = reason
        if ban:
            self._banned[conn.key] = (trio.current_time() + BAN_SECONDS, reason)
            self.log.info(
                "dropping peer", extra=kv(peer=name, addr=_host_port(conn.address), reason=reason)
            )
        conn.closing = True
        with contextlib.suppress(trio.WouldBlock, trio.ClosedResourceError):
            conn.outbox.send_nowait(wire.Error(reason[:500]))
        conn.outbox.close()
        conn.scope.deadline = trio.current_time() + 2.0  # let the goodbye leave, then close

    # -- sessions -------------------------------------------------------------------------------

    async def serve(self, connection: Connection) -> None:
        """The handler of accepted connections."""
        await self.session(connection, outbound=False, record=None)

    async def session(
        self, connection: Connection, *, outbound: bool, record: AddressRecord | None
    ) -> None:
        key = connection.peer_key.raw
        banned = self._banned.get(key)
        if banned is not None and banned[0] > trio.current_time():
            with contextlib.suppress(*CONNECTION_ERRORS):
                await connection.send_message(wire.Error(f"dropped earlier: {banned[1]}"[:500]))
            return
        if self.node.key is not None and key == self.node.key.public_key.raw:
            return  # ourselves, by another address
        for other in list(self._conns.values()):
            if other.key == key:
                # One connection per peer: keep the one the smaller key dialled.
                ours = self.node.key.public_key.raw if self.node.key is not None else b""
                mine_dialled_new = outbound
                new_initiator = ours if mine_dialled_new else key
                old_initiator = ours if other.outbound else key
                if new_initiator >= old_initiator:
                    return
                self._disconnect(other, "replaced by a connection the smaller key dialled")
        self._next_id += 1
        peer_id = self._next_id
        send, receive = trio.open_memory_channel[wire.Message](OUTBOX)
        scope = trio.CancelScope()
        conn = _Conn(
            peer_id, connection, key, outbound, connection.remote_address, send, scope, record
        )
        self._conns[peer_id] = conn
        peer_name = connection.peer_key.to_base64()
        self.node.emit_connection(peer_name, "out" if outbound else "in", opened=True)
        peer_log = self.log.bind(
            peer=peer_name,
            addr=_host_port(connection.remote_address),
            direction="out" if outbound else "in",
        )
        peer_log.debug("peer connected")
        reason = ["closed"]
        try:
            with scope:
                async with trio.open_nursery() as nursery:
                    # An accepted connection's writer is run by the server already.
                    nursery.start_soon(
                        self._pump, connection, receive, nursery.cancel_scope, outbound, reason
                    )
                    await self.call(
                        self.engine.peer_connected,
                        peer_id,
                        key,
                        outbound=outbound,
                        address=connection.remote_address,
                        now=self.node.clock(),
                    )
                    try:
                        await self._read(conn)
                    except CONNECTION_ERRORS as exc:
                        reason[0] = str(exc) or type(exc).__name__
                        # Malformed or oversized data, a broken stream: kept for `peers`.
                        self._record_drop(peer_name, reason[0])
                    nursery.cancel_scope.cancel()
        finally:
            self._conns.pop(peer_id, None)
            self._past_keys[peer_id] = key
            while len(self._past_keys) > PAST_PEERS:
                self._past_keys.popitem(last=False)
            if record is not None:
                record.connected = False
            peer_log.debug("peer disconnected", extra=kv(reason=reason[0]))
            self.node.emit_connection(
                peer_name, "out" if outbound else "in", opened=False, reason=reason[0]
            )
            with trio.CancelScope(shield=True):
                await self.call(self.engine.peer_disconnected, peer_id, now=self.node.clock())
            self._wake_dialer.set()

    async def _pump(
        self,
        connection: Connection,
        receive: trio.MemoryReceiveChannel[wire.Message],
        scope: trio.CancelScope,
        run_writer: bool,
        reason: list[str],
    ) -> None:
        """Write queued messages; when the queue is closed (the peer is dropped), stop."""

        async def writer() -> None:
            try:
                await connection.run_writer()
            except CONNECTION_ERRORS as exc:
                reason[0] = str(exc) or type(exc).__name__
            scope.cancel()

        async with trio.open_nursery() as nursery:
            if run_writer:
                nursery.start_soon(writer)
            try:
                metrics = self.node.metrics
                async for message in receive:
                    await connection.send_message(message)
                    if metrics is not None:
                        metrics.message("out", message, connection.last_sent_size)
                with trio.move_on_after(2.0):
                    await connection.flush()
            except CONNECTION_ERRORS as exc:
                reason[0] = str(exc) or type(exc).__name__
            nursery.cancel_scope.cancel()
        scope.cancel()

    async def _read(self, conn: _Conn) -> None:
        connection = conn.connection
        while True:
            message = await connection.receive_message()
            if message is None:
                return
            if isinstance(message, wire.Error):
                self.log.debug(
                    "peer sent an error",
                    extra=kv(peer=PublicKey(conn.key).to_base64(), reason=message.reason),
                )
                continue
            self.received += 1
            self.bytes_in += connection.last_message_size
            metrics = self.node.metrics
            if metrics is not None:
                metrics.message("in", message, connection.last_message_size)
            await self.call(
                self.engine.message,
                conn.id,
                message,
                connection.last_message_size,
                self.node.clock(),
            )
            if conn.id not in self._conns or conn.closing:
                return

    # -- timers ---------------------------------------------------------------------------------

    async def _timer(self) -> None:
        while True:
            now = self.node.clock()
            wait = min(self._deadline - now, 1.0)
            if wait > 0:
                self._timer_until = now + wait
                with trio.move_on_after(wait):
                    await self._wake_timer.wait()
                self._wake_timer = trio.Event()
            self._timer_until = -math.inf  # ticking: nothing needs to wake it
            await self.call(self.engine.tick, self.node.clock())
            if self._deadline <= self.node.clock():
                await trio.sleep(0.05)  # never spin, even on a deadline the tick did not move
            else:
                await trio.sleep(0)

    # -- dialling ---------------------------------------------------------------------------------

    def connected_count(self) -> int:
        return len(self._conns)

    def connected(self) -> list[tuple[bytes, str, bool]]:
        """(key, remote address, outbound) of every open peer connection, oldest first."""
        return [(c.key, c.address, c.outbound) for c in self._conns.values() if not c.closing]

    def dial_now(self, address: str) -> None:
        """Dial `address` (`[<key>@]host:port`) now, whatever its back-off, and keep it as a
        seed (redialled like one).  Nothing happens for the node's own address or key, or
        while the address is connected; ConfigError if it does not parse."""
        parsed = parse_peer_address(address)
        record = self._remember(str(parsed), parsed, "seed")
        if record is None:
            return
        record.source = "seed"
        record.fails = 0
        record.next_attempt = 0.0
        self._wake_dialer.set()

    def outbound_count(self) -> int:
        return sum(1 for c in self._conns.values() if c.outbound) + len(self._dialing)

    def _candidates(self, now: float) -> list[AddressRecord]:
        connected_keys = {PublicKey(c.key).to_base64() for c in self._conns.values()}
        ready = [
            r
            for r in self._book.values()
            if not r.connected
            and r.address not in self._dialing
            and r.next_attempt <= now
            and (r.key is None or r.key not in connected_keys)
        ]
        # Seeds first, then peers that worked before (most recent first), then the rest.
        order = {"seed": 0, "stored": 1, "mdns": 1, "pex": 2}
        ready.sort(key=lambda r: (order.get(r.source, 3), -r.last_connected, r.fails, r.address))
        return ready

    async def _dialer(self) -> None:
        config = self.node.config
        while True:
            now = trio.current_time()
            want = min(config.peers_target, config.max_outbound) - self.outbound_count()
            assert self._nursery is not None
            for record in self._candidates(now)[: max(0, want)]:
                self._dialing.add(record.address)
                self._nursery.start_soon(self._dial, record)
            with trio.move_on_after(1.0):
                await self._wake_dialer.wait()
            self._wake_dialer = trio.Event()

    async def _dial(self, record: AddressRecord) -> None:
        node = self.node
        assert node.key is not None
        address = record.address
        if record.key is not None and "@" not in address:
            address = f"{record.key}@{address}"
        try:
            try:
                connection = await connect(
                    address,
                    node.key,
                    limits=node.config.transport_limits(),
                    network=node.network,
                    secure=node.secure,
                    random_bytes=node.random_bytes,
                )
            except CONNECTION_ERRORS as exc:
                record.fails += 1
                record.last_reason = str(exc)
                who = {"peer": record.key} if record.key else {}
                self.log.debug(
                    "dial failed",
                    extra=kv(
                        **who, addr=_host_port(record.address), fails=record.fails, reason=exc
                    ),
                )
                step = min(record.fails - 1, MAX_BACKOFF_STEPS)
                record.next_attempt = trio.current_time() + node.config.redial_interval * 2**step
                return
        finally:
            self._dialing.discard(address)
            self._dialing.discard(record.address)
        record.fails = 0
        record.connected = True
        record.last_connected = node.clock()
        record.key = connection.peer_key.to_base64()
        record.next_attempt = trio.current_time() + node.config.redial_interval
        await self._store_address(record)
        async with connection:
            await self.session(connection, outbound=True, record=record)

    async def _store_address(self, record: AddressRecord) -> None:
        value = msgpack.packb([record.key or "", record.last_connected], use_bin_type=True)
        name = record.address.encode()
        try:
            await self.node.executor.run(
                partial(self.node.store.put_record, b"R", name, value, durable=False)
            )
        except TrustixError as exc:
            who = {"peer": record.key} if record.key else {}
            self.log.warning(
                "cannot remember peer",
                extra=kv(**who, addr=_host_port(record.address), reason=exc),
            )

    # -- mDNS ----------------------------------------------------------------------------------

    async def _mdns(self) -> None:
        from trustix_p2p.discovery.mdns import Found, MdnsDiscovery

        node = self.node
        assert node.key is not None
        port = int(node.listening[0].rpartition(":")[2])
        discovery = MdnsDiscovery(
            node.key.public_key,
            port,
            node.config.mdns.interfaces,
            log=self.log.on("trustix_p2p.discovery.mdns"),
        )
        send, receive = trio.open_memory_channel[Found](64)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(discovery.run, send)
            async for found in receive:
                parsed = parse_peer_address(found.address)
                record = self._remember(str(parsed), parsed, "mdns")
                if record is not None:
                    record.next_attempt = 0.0
                    self._wake_dialer.set()

    # -- queries -------------------------------------------------------------------------------

    async def peer_rows(self) -> list[dict[str, Any]]:
        """Connected peers and known addresses, for `trustix-p2p peers`."""
        # The engine is read through the executor, like every engine call.
        peers = await self.node.executor.run(self.engine.peers)
        scores = {p.id: p.score for p in peers}
        rows: list[dict[str, Any]] = []
        seen: set[str] = set()
        for conn in self._conns.values():
            key = PublicKey(conn.key).to_base64()
            seen.add(key)
            address = conn.record.address if conn.record is not None else conn.address
            rows.append(
                {
                    "address": address,
                    "key": key,
                    "direction": "out" if conn.outbound else "in",
                    "state": "connected",
                    "score": scores.get(conn.id, 0),
                    "last_reason": self.dropped.get(key, ""),
                }
            )
        for record in self._book.values():
            if record.connected or (record.key is not None and record.key in seen):
                continue
            state = "dialling" if record.address in self._dialing else "known"
            if record.fails:
                state = "backing off"
            rows.append(
                {
                    "address": record.address,
                    "key": record.key or "",
                    "direction": "out",
                    "state": state,
                    "score": 0,
                    "last_reason": self.dropped.get(record.key or "", record.last_reason),
                }
            )
        return rows
