"""Message connections over `NoiseStream`, their limits, and dialing a peer.

A `Connection` is what the node and the gossip code see: a proven peer key and typed
messages (`trustix_p2p.core.wire`), sent whole and received strictly decoded, under the
limits of `TransportLimits`.  `connect()` dials `[<key>@]host:port` over TCP, runs the
handshake under the handshake timeout and, if the address pins a key, refuses any other peer.

This module must never hand an undecoded value to its caller, and never block forever on a
silent peer: every receive is bounded by the idle timeout.
"""

from __future__ import annotations

import contextlib
import enum
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Final

import attrs
import trio

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
from trustix_p2p.transport.address import PeerAddress, parse_peer_address
from trustix_p2p.transport.stream import NoiseStream

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
_OUTBOX_HIGH_WATER: Final = 1024 * 1024
# How long closing waits for queued messages to leave.
_FLUSH_TIMEOUT: Final = 5.0

# What a connection can raise because of the peer or the network (as opposed to a bug).
CONNECTION_ERRORS: Final = (TrustixError, trio.BrokenResourceError, trio.ClosedResourceError)


class PeerUnreachableError(TrustixError):
    """No connection to the peer: TCP refused, unreachable or timed out, or the peer hung up
    during the handshake (as a node at its connection limit does)."""


def _positive(_instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not value > 0:
        raise ConfigError(f"{attribute.name} must be positive, got {value!r}")


@attrs.frozen
class TransportLimits:
    """Per-connection limits (DESIGN §6).  Timeouts are in seconds; sizes in bytes."""

    handshake_timeout: float = attrs.field(default=10.0, validator=_positive)
    idle_timeout: float = attrs.field(default=300.0, validator=_positive)
    max_connections: int = attrs.field(default=256, validator=_positive)
    max_message_size: int = attrs.field(default=DEFAULT_MAX_MESSAGE_SIZE, validator=_positive)


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

    Several tasks may send at once; one task at a time may call `receive_message`.
    """

    stream: NoiseStream
    peer_key: PublicKey
    remote_address: str
    limits: TransportLimits = attrs.field(factory=TransportLimits)
    registry: MessageRegistry = REGISTRY
    _reader: MessageReader = attrs.field(init=False)
    _send_lock: trio.Lock = attrs.field(init=False, factory=trio.Lock)
    _mode: _SendMode = attrs.field(init=False, default=_SendMode.DIRECT)
    _outbox: list[bytes | bytearray] = attrs.field(init=False, factory=list)
    _outbox_size: int = attrs.field(init=False, default=0)
    _in_flight: bool = attrs.field(init=False, default=False)
    _writer_error: BaseException | None = attrs.field(init=False, default=None)
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

    def _check_writer(self) -> None:
        if self._mode is _SendMode.STOPPED:
            if self._writer_error is not None:
                raise trio.BrokenResourceError(
                    "the connection failed while sending"
                ) from self._writer_error
            raise trio.ClosedResourceError("the connection's writer has stopped")

    async def send_message(self, message: Message) -> None:
        data = encode_message(
            message, registry=self.registry, max_message_size=self.limits.max_message_size
        )
        if self._mode is _SendMode.DIRECT:
            async with self._send_lock:
                await self.stream.send_all(data)
            return
        await trio.lowlevel.checkpoint_if_cancelled()
        while True:
            self._check_writer()
            if self._outbox_size < _OUTBOX_HIGH_WATER:
                break
            await self._wake_senders.park()
        self._outbox.append(data)
        self._outbox_size += len(data)
        self._wake_writer.unpark_all()
        if self._outbox_size >= _FLUSH_THRESHOLD:
            # Let the writer (and everyone else) run before queueing more.
            await trio.lowlevel.cancel_shielded_checkpoint()

    async def run_writer(self) -> None:
        """Send queued messages in batches until cancelled (see the class docstring).

        Transport failures end the writer quietly; they are raised to the next sender.
        """
        if self._mode is not _SendMode.DIRECT:
            raise LocalProtocolError("run_writer is already running or has run")
        self._mode = _SendMode.QUEUED
        try:
            while True:
                while not self._outbox:
                    await self._wake_writer.park()
                batch = self._outbox
                self._outbox = []
                self._outbox_size = 0
                self._in_flight = True
                self._wake_senders.unpark_all()
                await self.stream.send_all(batch[0] if len(batch) == 1 else b"".join(batch))
                self._in_flight = False
                if not self._outbox:
                    self._wake_senders.unpark_all()
        except CONNECTION_ERRORS as exc:
            self._writer_error = exc
        finally:
            self._mode = _SendMode.STOPPED
            self._in_flight = False
            self._wake_senders.unpark_all()

    async def flush(self) -> None:
        """Wait until every queued message has been written to the stream."""
        while self._outbox or self._in_flight:
            self._check_writer()
            await self._wake_senders.park()
        await trio.lowlevel.checkpoint()

    # ---- receiving ---------------------------------------------------------------------

    async def receive_message(self) -> Message | None:
        """The next message, or None when the peer ended the stream cleanly.

        Raises `DecodeError`/`RemoteProtocolError` for malformed input, an over-long message
        or an idle peer; the connection should then be closed.
        """
        reader = self._reader
        while True:
            message = reader.next_message()
            if message is not None:
                return message
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

    An exception from `body` propagates as itself, not wrapped in an exception group.
    """
    failure: Exception | None = None
    async with trio.open_nursery() as nursery:
        nursery.start_soon(connection.run_writer)
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


@contextlib.asynccontextmanager
async def open_connection(
    address: str | PeerAddress,
    key: PrivateKey | LocalIdentity,
    *,
    limits: TransportLimits | None = None,
    registry: MessageRegistry = REGISTRY,
) -> AsyncIterator[Connection]:
    """`connect()`, with the batching writer running while the block runs; closes on exit.

    An exception from the block propagates as itself, not wrapped in an exception group.
    """
    connection = await connect(address, key, limits=limits, registry=registry)
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
) -> Connection:
    """Dial `address` over TCP and complete the handshake within `limits.handshake_timeout`.

    Raises `PeerUnreachableError` if TCP fails or the peer hangs up during the handshake, and
    `RemoteProtocolError` (incl. `NoiseError`) if the handshake fails, times out, or the peer
    is not the key pinned in the address.
    """
    limits = limits or TransportLimits()
    peer_address = parse_peer_address(address) if isinstance(address, str) else address
    identity = key if isinstance(key, LocalIdentity) else LocalIdentity.from_private_key(key)
    with trio.move_on_after(limits.handshake_timeout) as scope:
        try:
            tcp = await trio.open_tcp_stream(peer_address.host, peer_address.port)
        except OSError as exc:
            raise PeerUnreachableError(f"cannot connect to {peer_address}: {exc}") from exc
    if scope.cancelled_caught:
        raise PeerUnreachableError(
            f"cannot connect to {peer_address}: no answer within {limits.handshake_timeout:g} s"
        )
    stream = NoiseStream.initiator(
        tcp,
        identity,
        pinned=peer_address.key,
        handshake_timeout=limits.handshake_timeout,
        idle_timeout=limits.idle_timeout,
    )
    try:
        peer = await stream.do_handshake()
    except trio.BrokenResourceError as exc:
        await trio.aclose_forcefully(stream)
        raise PeerUnreachableError(f"{peer_address}: {exc}") from exc
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    return Connection(stream, peer, str(peer_address), limits, registry)


async def ping(connection: Connection, nonce: int) -> float:
    """Send `Ping(nonce)` and wait for the matching `Pong`; the round trip in seconds.

    Messages other than the matching Pong are a protocol error here: only use this on a
    connection nothing else is reading.
    """
    started = trio.current_time()
    await connection.send_message(Ping(nonce))
    reply = await connection.receive_message()
    if reply != Pong(nonce):
        raise RemoteProtocolError(f"expected Pong({nonce}) in answer to Ping, got {reply!r}")
    return trio.current_time() - started
