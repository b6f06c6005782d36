"""Message connections over `NoiseStream`, their limits, and dialing a peer.

A `Connection` is what the node and the gossip code see: a proven peer key and typed
messages (`trustix_p2p.core.wire`), sent whole and received strictly decoded, under the
limits of `TransportLimits`.  `connect()` dials `[<key>@]host:port` over TCP, runs the
handshake under the handshake timeout and, if the address pins a key, refuses any other peer.

This module must never hand an undecoded value to its caller, and never block forever on a
peer: every receive is bounded by the idle timeout, and every send by the send timeout.
"""

from __future__ import annotations

import contextlib
import enum
import math
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Final

import attrs
import trio

# Every message type the project speaks is registered in the wire registry before any
# connection reads: a node greets each peer with gossip messages.
from trustix_p2p.core import evidence as _evidence  # noqa: F401
from trustix_p2p.core.keys import PrivateKey, PublicKey
from trustix_p2p.core.noise import LocalIdentity
from trustix_p2p.core.wire import (
    DEFAULT_MAX_MESSAGE_SIZE,
    REGISTRY,
    Message,
    MessageReader,
    MessageRegistry,
    Ping,
    Pong,
    encode_message,
)
from trustix_p2p.errors import ConfigError, LocalProtocolError, RemoteProtocolError, TrustixError
from trustix_p2p.gossip import messages as _gossip_messages  # noqa: F401
from trustix_p2p.transport.address import PeerAddress, parse_peer_address
from trustix_p2p.transport.network import TCP, Network
from trustix_p2p.transport.secure import secure_stream
from trustix_p2p.transport.stream import SEND_CHUNK_SIZE

__all__ = [
    "CONNECTION_ERRORS",
    "Connection",
    "PeerUnreachableError",
    "TransportLimits",
    "connect",
    "open_connection",
    "ping",
    "run_connection",
]

_RECEIVE_SIZE: Final = 256 * 1024
_FLUSH_THRESHOLD: Final = 64 * 1024
# Messages `receive_message` may return from its buffer before it yields to other tasks.
_RECEIVE_BATCH: Final = 64
_OUTBOX_HIGH_WATER: Final = 1024 * 1024
# How long closing waits for queued messages to leave.
_FLUSH_TIMEOUT: Final = 5.0

# Messages `ping` passes over while it waits for its Pong.
_PING_SKIP: Final = 1000

# What a connection can raise because of the peer or the network (as opposed to a bug).
CONNECTION_ERRORS: Final = (TrustixError, trio.BrokenResourceError, trio.ClosedResourceError)


class PeerUnreachableError(TrustixError):
    """No connection to the peer: TCP refused, unreachable or timed out, or the peer hung up
    during the handshake (as a node at its connection limit does)."""


def _positive(_instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not value > 0:
        raise ConfigError(f"{attribute.name} must be positive, got {value!r}")


def _positive_count(_instance: object, attribute: attrs.Attribute[Any], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{attribute.name} must be a positive integer, got {value!r}")


@attrs.frozen
class TransportLimits:
    """Per-connection and per-server limits (DESIGN §6).  Timeouts in seconds, sizes in bytes.

    - `handshake_timeout` (5 s): from accept (or dial) until the Noise handshake completes.
      An honest handshake takes milliseconds; the bound is what a silent socket costs us.
    - `idle_timeout` (300 s): the longest a receive waits for the peer's next bytes.
    - `send_timeout` (30 s): the longest any single send may go without progress (one
      write of at most `SEND_CHUNK_SIZE` bytes, or a sender waiting for room in a full
      queue); then the connection is broken, so a peer that never reads is dropped.
    - `max_connections` (256): established connections a server holds; more are refused.
    - `max_pending_handshakes` (64): connections a server has accepted but not yet
      handshaken.  When full, the oldest pending handshake of the source holding the most
      is evicted to admit the newcomer (see `transport.admission`).
    - `max_connections_per_source` (16): connections, pending and established, from one
      remote IP address; more are refused at once.
    - `max_message_size` (4 MiB): the largest application message sent or received.
    """

    handshake_timeout: float = attrs.field(default=5.0, validator=_positive)
    idle_timeout: float = attrs.field(default=300.0, validator=_positive)
    max_connections: int = attrs.field(default=256, validator=_positive_count)
    max_message_size: int = attrs.field(default=DEFAULT_MAX_MESSAGE_SIZE, validator=_positive_count)
    send_timeout: float = attrs.field(default=30.0, validator=_positive)
    max_pending_handshakes: int = attrs.field(default=64, validator=_positive_count)
    max_connections_per_source: int = attrs.field(default=16, validator=_positive_count)


class _SendMode(enum.Enum):
    DIRECT = "direct"  # no writer task: send_message writes to the stream itself
    QUEUED = "queued"  # run_writer is running: send_message queues, the writer batches
    STOPPED = "stopped"  # the writer has ended: nothing more can be sent


@attrs.define(eq=False)
class Connection:
    """A handshaken Noise connection carrying typed messages.

    Sending has two modes.  Without a writer task, `send_message` writes each message to the
    stream itself (one Noise message and one socket write per call).  Once `run_writer()` is
    running in a nursery (`serve_noise` and `open_connection` do this), `send_message` only
    queues: the writer sends everything queued since its last write in one batch, packed
    into as few Noise messages as fit, which is what makes small messages cheap.  Queued
    sends are a cancellation point every time and a scheduling point whenever 64 KiB are
    waiting; more than `_OUTBOX_HIGH_WATER` bytes queued makes senders wait (backpressure).
    `flush()` waits until the queue has been handed to the stream.

    A peer that stops reading cannot hold us: the stream bounds each write by
    `limits.send_timeout` (for streams built by `connect` and `serve_stream`), and a sender
    waits for room at most `limits.send_timeout` after the writer last made progress.
    Either expiry breaks the connection for sending: the writer stops, and every later send
    raises `trio.BrokenResourceError` whose message names the cause.

    `receive_message` returns messages already buffered without waiting for I/O, but yields
    to other tasks before every `_RECEIVE_BATCH`th such message, so a peer that keeps our
    buffer full cannot starve the other connections.

    Several tasks may send at once; one task at a time may call `receive_message`.
    """

    # A NoiseStream, or on an in-memory network without Noise the raw stream (transport.secure).
    stream: trio.abc.Stream
    peer_key: PublicKey
    remote_address: str
    limits: TransportLimits = attrs.field(factory=TransportLimits)
    registry: MessageRegistry = REGISTRY
    _reader: MessageReader = attrs.field(init=False)
    # The framed size of the message `send_message` sent last (for metrics).
    last_sent_size: int = attrs.field(init=False, default=0)
    # Messages returned from the buffer since the last checkpoint.
    _unyielded: int = attrs.field(init=False, default=0)
    _send_lock: trio.Lock = attrs.field(init=False, factory=trio.Lock)
    _mode: _SendMode = attrs.field(init=False, default=_SendMode.DIRECT)
    _outbox: list[bytes | bytearray] = attrs.field(init=False, factory=list)
    _outbox_size: int = attrs.field(init=False, default=0)
    _in_flight: bool = attrs.field(init=False, default=False)
    _writer_error: BaseException | None = attrs.field(init=False, default=None)
    _writer_scope: trio.CancelScope = attrs.field(init=False, factory=trio.CancelScope)
    # When the writer last took a batch or finished writing a chunk of one.
    _progress_at: float = attrs.field(init=False, default=-math.inf)
    _wake_writer: trio.lowlevel.ParkingLot = attrs.field(
        init=False, factory=trio.lowlevel.ParkingLot
    )
    _wake_senders: trio.lowlevel.ParkingLot = attrs.field(
        init=False, factory=trio.lowlevel.ParkingLot
    )

    def __attrs_post_init__(self) -> None:
        self._reader = MessageReader(
            registry=self.registry, max_message_size=self.limits.max_message_size
        )

    # ---- sending -----------------------------------------------------------------------

    @property
    def writer_error(self) -> BaseException | None:
        """Why the writer stopped, if the transport failed under it (else None)."""
        return self._writer_error

    def _check_writer(self) -> None:
        if self._mode is _SendMode.STOPPED:
            if self._writer_error is not None:
                raise trio.BrokenResourceError(
                    f"the connection failed while sending: {self._writer_error}"
                ) from self._writer_error
            raise trio.ClosedResourceError("the connection's writer has stopped")

    async def send_message(self, message: Message) -> None:
        data = encode_message(
            message, registry=self.registry, max_message_size=self.limits.max_message_size
        )
        self.last_sent_size = len(data)
        if self._mode is _SendMode.DIRECT:
            async with self._send_lock:
                await self.stream.send_all(data)
            return
        await trio.lowlevel.checkpoint_if_cancelled()
        while True:
            self._check_writer()
            if self._outbox_size < _OUTBOX_HIGH_WATER:
                break
            await self._wait_for_room()
        if not self._outbox and not self._in_flight:
            # The writer is idle: its clock for making progress starts now.
            self._progress_at = trio.current_time()
        self._outbox.append(data)
        self._outbox_size += len(data)
        self._wake_writer.unpark_all()
        if self._outbox_size >= _FLUSH_THRESHOLD:
            # Let the writer (and everyone else) run before queueing more.
            await trio.lowlevel.cancel_shielded_checkpoint()

    async def _wait_for_room(self) -> None:
        timeout = self.limits.send_timeout
        with trio.CancelScope(deadline=self._progress_at + timeout):
            await self._wake_senders.park()
            return
        # The writer has been stuck on one chunk for the whole send timeout.
        error = RemoteProtocolError(f"peer did not read for {timeout:g} s")
        self._writer_error = error
        self._mode = _SendMode.STOPPED
        self._writer_scope.cancel()
        self._wake_senders.unpark_all()
        raise error

    async def run_writer(self) -> None:
        """Send queued messages in batches until cancelled (see the class docstring).

        Transport failures (including a send timeout) end the writer quietly; they are raised
        to the next sender and kept in `writer_error`.
        """
        if self._mode is not _SendMode.DIRECT:
            raise LocalProtocolError("run_writer is already running or has run")
        self._mode = _SendMode.QUEUED
        try:
            with self._writer_scope:
                while True:
                    while not self._outbox:
                        await self._wake_writer.park()
                    batch = self._outbox
                    self._outbox = []
                    self._outbox_size = 0
                    self._in_flight = True
                    self._progress_at = trio.current_time()
                    self._wake_senders.unpark_all()
                    await self._write(batch[0] if len(batch) == 1 else b"".join(batch))
                    self._in_flight = False
                    if not self._outbox:
                        self._wake_senders.unpark_all()
        except CONNECTION_ERRORS as exc:
            self._writer_error = exc
        finally:
            self._mode = _SendMode.STOPPED
            self._in_flight = False
            self._wake_senders.unpark_all()

    async def _write(self, data: bytes | bytearray) -> None:
        if len(data) <= SEND_CHUNK_SIZE:
            await self.stream.send_all(data)
            return
        # Chunk by chunk (the stream's own unit), so waiting senders see the progress.
        view = memoryview(data)
        for start in range(0, len(view), SEND_CHUNK_SIZE):
            await self.stream.send_all(view[start : start + SEND_CHUNK_SIZE])
            self._progress_at = trio.current_time()

    async def flush(self) -> None:
        """Wait until every queued message has been written to the stream."""
        while self._outbox or self._in_flight:
            self._check_writer()
            await self._wake_senders.park()
        await trio.lowlevel.checkpoint()

    # ---- receiving ---------------------------------------------------------------------

    @property
    def last_message_size(self) -> int:
        """The framed size of the message `receive_message` returned last (for budgets)."""
        return self._reader.last_size

    async def receive_message(self) -> Message | None:
        """The next message, or None when the peer ended the stream cleanly.

        Raises `DecodeError`/`RemoteProtocolError` for malformed input, an over-long message
        or an idle peer; the connection should then be closed.
        """
        reader = self._reader
        if self._unyielded >= _RECEIVE_BATCH:
            # Buffered messages return without waiting for I/O; a peer that keeps the buffer
            # full must still let every other connection run now and then.
            self._unyielded = 0
            await trio.lowlevel.checkpoint()
        while True:
            message = reader.next_message()
            if message is not None:
                self._unyielded += 1
                return message
            self._unyielded = 0
            data = await self.stream.receive_some(_RECEIVE_SIZE)
            if not data:
                if reader.at_boundary:
                    return None
                raise RemoteProtocolError("peer ended the stream in the middle of a message")
            reader.feed(data)

    async def aclose(self) -> None:
        await self.stream.aclose()

    async def __aenter__(self) -> Connection:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


async def _flush_quietly(connection: Connection) -> None:
    with (
        trio.move_on_after(_FLUSH_TIMEOUT),
        contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError),
    ):
        await connection.flush()


async def run_connection(
    connection: Connection, body: Callable[[Connection], Awaitable[None]]
) -> None:
    """Run `body(connection)` with the connection's writer, then flush (bounded) and stop it.

    If the writer fails (the peer stopped reading for `send_timeout`, or the transport
    broke), `body` is cancelled and `trio.BrokenResourceError` is raised: a connection that
    can no longer send is over, even if `body` was only waiting to receive.  An exception
    from `body` propagates as itself, not wrapped in an exception group.
    """
    failure: Exception | None = None
    async with trio.open_nursery() as nursery:

        async def writer() -> None:
            await connection.run_writer()
            # run_writer only returns by itself when the transport failed under it.
            nursery.cancel_scope.cancel()

        nursery.start_soon(writer)
        try:
            await body(connection)
            await _flush_quietly(connection)
        except Exception as exc:
            # Re-raised below, outside the nursery, so callers can catch it by type.
            failure = exc
        finally:
            nursery.cancel_scope.cancel()
    if failure is not None:
        raise failure
    if connection.writer_error is not None:
        raise trio.BrokenResourceError(
            f"the connection failed while sending: {connection.writer_error}"
        ) from connection.writer_error


@contextlib.asynccontextmanager
async def open_connection(
    address: str | PeerAddress,
    key: PrivateKey | LocalIdentity,
    *,
    limits: TransportLimits | None = None,
    registry: MessageRegistry = REGISTRY,
    network: Network = TCP,
    secure: bool = True,
    random_bytes: Callable[[int], bytes] = os.urandom,
) -> AsyncIterator[Connection]:
    """`connect()`, with the batching writer running while the block runs; closes on exit.

    An exception from the block propagates as itself, not wrapped in an exception group.
    """
    connection = await connect(
        address,
        key,
        limits=limits,
        registry=registry,
        network=network,
        secure=secure,
        random_bytes=random_bytes,
    )
    failure: Exception | None = None
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(connection.run_writer)
            try:
                yield connection
                await _flush_quietly(connection)
            except Exception as exc:
                failure = exc
            finally:
                nursery.cancel_scope.cancel()
    finally:
        await connection.aclose()
    if failure is not None:
        raise failure


async def connect(
    address: str | PeerAddress,
    key: PrivateKey | LocalIdentity,
    *,
    limits: TransportLimits | None = None,
    registry: MessageRegistry = REGISTRY,
    network: Network = TCP,
    secure: bool = True,
    random_bytes: Callable[[int], bytes] = os.urandom,
) -> Connection:
    """Dial `address` and complete the handshake within `limits.handshake_timeout`.

    Over `network` (TCP unless a simulation passes its own); `secure=False` skips Noise and is
    allowed only on an in-memory network (`transport.secure`).  `random_bytes` makes the
    ephemeral key.  The connection's stream bounds receives by `limits.idle_timeout` and sends
    by `limits.send_timeout`, as the server's do.

    Raises `PeerUnreachableError` if the dial fails or the peer hangs up during the handshake,
    and `RemoteProtocolError` (incl. `NoiseError`) if the handshake fails, times out, or the
    peer is not the key pinned in the address.
    """
    limits = limits or TransportLimits()
    peer_address = parse_peer_address(address) if isinstance(address, str) else address
    identity = key if isinstance(key, LocalIdentity) else LocalIdentity.from_private_key(key)
    with trio.move_on_after(limits.handshake_timeout) as scope:
        try:
            raw = await network.dial(peer_address.host, peer_address.port)
        except OSError as exc:
            raise PeerUnreachableError(f"cannot connect to {peer_address}: {exc}") from exc
    if scope.cancelled_caught:
        raise PeerUnreachableError(
            f"cannot connect to {peer_address}: no answer within {limits.handshake_timeout:g} s"
        )
    try:
        stream, peer = await secure_stream(
            raw,
            identity,
            initiator=True,
            network=network,
            secure=secure,
            pinned=peer_address.key,
            handshake_timeout=limits.handshake_timeout,
            idle_timeout=limits.idle_timeout,
            send_timeout=limits.send_timeout,
            random_bytes=random_bytes,
        )
    except trio.BrokenResourceError as exc:
        raise PeerUnreachableError(f"{peer_address}: {exc}") from exc
    return Connection(stream, peer, str(peer_address), limits, registry)


async def ping(connection: Connection, nonce: int) -> float:
    """Send `Ping(nonce)` and wait for the matching `Pong`; the round trip in seconds.

    A node greets every connection (its gossip engine sends Hello, its heads, GetPeers), so
    up to `_PING_SKIP` other messages are passed over; another Pong, or a stream that ends,
    is a protocol error.  Only use this on a connection nothing else is reading.
    """
    started = trio.current_time()
    await connection.send_message(Ping(nonce))
    for _ in range(_PING_SKIP):
        reply = await connection.receive_message()
        if reply == Pong(nonce):
            return trio.current_time() - started
        if reply is None or isinstance(reply, Pong):
            break
    raise RemoteProtocolError(f"expected Pong({nonce}) in answer to Ping, got {reply!r}")
