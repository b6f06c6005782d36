"""Turning a raw byte stream into one whose peer key is known: Noise, or (in memory) plain.

`secure=True` (always, on a real network) runs the Noise XX handshake (`NoiseStream`): the
peer proves the Ed25519 key it claims.  `secure=False` is for the in-memory network of a
simulation that wants speed more than fidelity: each side sends `PLAIN_HELLO` and its public
key in clear and believes the other's.  Nothing proves anything then, so `connect` and
`serve_noise` allow it only on a network that says it may (`Network.allows_plain`): never on
TCP.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Final

import trio

from trustix_p2p.core.keys import PublicKey
from trustix_p2p.core.noise import LocalIdentity
from trustix_p2p.errors import ConfigError, RemoteProtocolError, TrustixError
from trustix_p2p.transport.network import Network
from trustix_p2p.transport.stream import NoiseStream

__all__ = ["PLAIN_HELLO", "secure_stream"]

PLAIN_HELLO: Final = b"trustix-p2p/plain/1\n"
_HELLO_SIZE: Final = len(PLAIN_HELLO) + 32


async def _receive_exactly(stream: trio.abc.Stream, n: int) -> bytes:
    data = bytearray()
    while len(data) < n:
        chunk = await stream.receive_some(n - len(data))
        if not chunk:
            raise trio.BrokenResourceError("peer closed the connection during the hello")
        data += chunk
    return bytes(data)


async def _plain_hello(
    raw: trio.abc.Stream, identity: LocalIdentity, pinned: PublicKey | None, timeout: float
) -> PublicKey:
    try:
        with trio.fail_after(timeout):
            await raw.send_all(PLAIN_HELLO + identity.public_key.raw)
            hello = await _receive_exactly(raw, _HELLO_SIZE)
    except trio.TooSlowError as exc:
        raise RemoteProtocolError(f"hello did not complete within {timeout:g} s") from exc
    if not hello.startswith(PLAIN_HELLO):
        raise RemoteProtocolError("peer did not send a plain hello")
    try:
        peer = PublicKey(hello[len(PLAIN_HELLO) :])
    except TrustixError as exc:
        raise RemoteProtocolError("peer sent an invalid key in its hello") from exc
    if pinned is not None and peer != pinned:
        raise RemoteProtocolError("peer is not the pinned key")
    return peer


async def secure_stream(
    raw: trio.abc.Stream,
    identity: LocalIdentity,
    *,
    initiator: bool,
    network: Network,
    secure: bool,
    pinned: PublicKey | None,
    handshake_timeout: float,
    idle_timeout: float,
    send_timeout: float,
    random_bytes: Callable[[int], bytes] = os.urandom,
) -> tuple[trio.abc.Stream, PublicKey]:
    """The stream to carry messages and the peer's key; closes `raw` on failure.

    Raises what the handshake raises (RemoteProtocolError, NoiseError, BrokenResourceError).
    """
    if not secure and not network.allows_plain:
        await trio.aclose_forcefully(raw)
        raise ConfigError("connections without Noise are allowed only on an in-memory network")
    if not secure:
        try:
            return raw, await _plain_hello(raw, identity, pinned, handshake_timeout)
        except BaseException:
            await trio.aclose_forcefully(raw)
            raise
    make = NoiseStream.initiator if initiator else NoiseStream.responder
    stream = make(
        raw,
        identity,
        pinned=pinned,
        handshake_timeout=handshake_timeout,
        idle_timeout=idle_timeout,
        send_timeout=send_timeout,
        random_bytes=random_bytes,
    )
    try:
        return stream, await stream.do_handshake()
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
