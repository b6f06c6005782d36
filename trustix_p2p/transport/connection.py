"""Message connections over `NoiseStream`, their limits, and dialing a peer.

A `Connection` is what the node and the gossip code see: a proven peer key and typed
messages (`trustix_p2p.core.wire`), sent whole and received strictly decoded, under the
limits of `TransportLimits`.  `connect()` dials `[<key>@]host:port` over TCP, runs the
handshake under the handshake timeout and, if the address pins a key, refuses any other peer.

This module must never hand an undecoded value to its caller, and never block forever on a
silent peer: every receive is bounded by the idle timeout.
"""

from __future__ import annotations

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
from trustix_p2p.errors import RemoteProtocolError, TrustixError
from trustix_p2p.transport.address import PeerAddress, parse_peer_address
from trustix_p2p.transport.stream import NoiseStream

__all__ = [
    "CONNECTION_ERRORS",
    "Connection",
    "PeerUnreachableError",
    "TransportLimits",
    "connect",
    "ping",
]

_RECEIVE_SIZE: Final = 256 * 1024

# What a connection can raise because of the peer or the network (as opposed to a bug).
CONNECTION_ERRORS: Final = (TrustixError, trio.BrokenResourceError, trio.ClosedResourceError)


class PeerUnreachableError(TrustixError):
    """No TCP connection to the peer could be made (refused, unreachable, timed out)."""


def _positive(_instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not value > 0:
        raise ValueError(f"{attribute.name} must be positive, got {value!r}")


@attrs.frozen
class TransportLimits:
    """Per-connection limits (DESIGN §6).  Timeouts are in seconds; sizes in bytes."""

    handshake_timeout: float = attrs.field(default=10.0, validator=_positive)
    idle_timeout: float = attrs.field(default=300.0, validator=_positive)
    max_connections: int = attrs.field(default=256, validator=_positive)
    max_message_size: int = attrs.field(default=DEFAULT_MAX_MESSAGE_SIZE, validator=_positive)


@attrs.define(eq=False)
class Connection:
    """A handshaken Noise connection carrying typed messages.

    Several tasks may call `send_message` at once (sends are serialised whole); one task at a
    time may call `receive_message`.
    """

    stream: NoiseStream
    peer_key: PublicKey
    remote_address: str
    limits: TransportLimits = attrs.field(factory=TransportLimits)
    registry: MessageRegistry = REGISTRY
    _reader: MessageReader = attrs.field(init=False)
    _send_lock: trio.Lock = attrs.field(init=False, factory=trio.Lock)

    def __attrs_post_init__(self) -> None:
        self._reader = MessageReader(
            registry=self.registry, max_message_size=self.limits.max_message_size
        )

    async def send_message(self, message: Message) -> None:
        data = encode_message(
            message, registry=self.registry, max_message_size=self.limits.max_message_size
        )
        async with self._send_lock:
            await self.stream.send_all(data)

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


async def connect(
    address: str | PeerAddress,
    key: PrivateKey | LocalIdentity,
    *,
    limits: TransportLimits | None = None,
    registry: MessageRegistry = REGISTRY,
) -> Connection:
    """Dial `address` over TCP and complete the handshake within `limits.handshake_timeout`.

    Raises `PeerUnreachableError` if TCP fails, `RemoteProtocolError` (incl. `NoiseError`) if
    the handshake fails, times out, or the peer is not the key pinned in the address.
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
