"""Accepting Noise connections: `serve_noise` and the default Ping handler.

`serve_noise` listens on the configured TCP addresses, runs the responder handshake for each
incoming connection under the handshake timeout, and hands each `Connection` to the
caller's handler in its own task.  It enforces the connection limit (excess connections are
closed at once), the idle timeout (through `Connection.receive_message`), and the message
size limit.  Whatever one connection does -- garbage, a failed handshake, a malformed
message, silence, or even a bug in the handler -- ends that connection only; it is logged and
the server keeps serving everyone else.

This module must not contain protocol logic beyond the connection's life cycle: what
messages mean is the handler's business.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Final

import attrs
import trio

from trustix_p2p.core.keys import PrivateKey
from trustix_p2p.core.noise import LocalIdentity
from trustix_p2p.core.wire import REGISTRY, Error, MessageRegistry, Ping, Pong
from trustix_p2p.errors import ConfigError, LocalProtocolError, RemoteProtocolError
from trustix_p2p.transport.address import format_host_port, parse_listen_address
from trustix_p2p.transport.connection import (
    CONNECTION_ERRORS,
    Connection,
    TransportLimits,
    run_connection,
)
from trustix_p2p.transport.stream import NoiseStream

__all__ = ["Handler", "answer_pings", "serve_noise", "serve_stream"]

logger = logging.getLogger(__name__)

Handler = Callable[[Connection], Awaitable[None]]

# How long a goodbye (Error message, end-of-stream marker) may take before we just close.
_GOODBYE_TIMEOUT: Final = 1.0


async def answer_pings(connection: Connection) -> None:
    """The default handler: answer every Ping with a Pong until the peer ends the stream.

    Any other message type gets an `Error` reply and the connection stays open.
    """
    while (message := await connection.receive_message()) is not None:
        if isinstance(message, Ping):
            await connection.send_message(Pong(message.nonce))
        else:
            await connection.send_message(Error(f"unexpected {type(message).__name__}"))


async def serve_stream(
    transport_stream: trio.abc.Stream,
    identity: LocalIdentity,
    handler: Handler = answer_pings,
    *,
    limits: TransportLimits | None = None,
    registry: MessageRegistry = REGISTRY,
    remote: str = "<stream>",
) -> None:
    """Serve one accepted stream: responder handshake, `handler`, close.

    This is the per-connection half of `serve_noise`, usable over any trio stream (the
    simulation harness runs it over memory streams).  It never raises because of what the
    peer did or because of a bug in `handler`; it logs and closes the stream instead.
    """
    limits = limits or TransportLimits()
    stream = NoiseStream.responder(
        transport_stream,
        identity,
        handshake_timeout=limits.handshake_timeout,
        idle_timeout=limits.idle_timeout,
    )
    try:
        peer = await stream.do_handshake()
    except CONNECTION_ERRORS as exc:
        logger.info("handshake with %s failed: %s", remote, exc)
        await trio.aclose_forcefully(stream)
        return
    logger.info("connection from %s, peer %s", remote, peer.to_base64())
    connection = Connection(stream, peer, remote, limits, registry)
    try:
        await run_connection(connection, partial(_guarded, handler))
    except LocalProtocolError:
        # We tried to send something the protocol forbids: a bug on our side, not the peer's.
        logger.exception("connection from %s ended by a local protocol error", remote)
    except CONNECTION_ERRORS as exc:
        logger.info("connection from %s (%s) ended: %s", remote, peer.to_base64(), exc)
    except Exception:
        # A bug in a handler must not take the node down for every other peer; it is
        # logged with its traceback, loudly, and only this connection ends.
        logger.exception("handler failed on connection from %s", remote)
    finally:
        # Sends the end-of-stream marker within its close timeout, and closes anyway.
        await stream.aclose()


async def _guarded(handler: Handler, connection: Connection) -> None:
    try:
        await handler(connection)
    except RemoteProtocolError as exc:
        logger.info(
            "closing connection from %s (%s): %s",
            connection.remote_address,
            connection.peer_key.to_base64(),
            exc,
        )
        await _say_goodbye(connection, str(exc))


@attrs.define(eq=False)
class _Server:
    identity: LocalIdentity
    handler: Handler
    limits: TransportLimits
    registry: MessageRegistry
    active: int = 0

    async def handle_tcp(self, tcp: trio.SocketStream) -> None:
        remote = _remote_name(tcp)
        if self.active >= self.limits.max_connections:
            logger.warning("refusing connection from %s: %d connections open", remote, self.active)
            await trio.aclose_forcefully(tcp)
            return
        self.active += 1
        try:
            await serve_stream(
                tcp,
                self.identity,
                self.handler,
                limits=self.limits,
                registry=self.registry,
                remote=remote,
            )
        finally:
            self.active -= 1


async def _say_goodbye(connection: Connection, reason: str) -> None:
    """Best effort: tell the peer why we close (only if the stream can still carry it)."""
    with trio.move_on_after(_GOODBYE_TIMEOUT):
        try:
            await connection.send_message(Error(reason[:512]))
            await connection.flush()
        except (*CONNECTION_ERRORS, trio.BusyResourceError):
            pass


def _remote_name(tcp: trio.SocketStream) -> str:
    try:
        sockname = tcp.socket.getpeername()
    except OSError:
        return "<unknown>"
    if isinstance(sockname, tuple):
        return format_host_port(str(sockname[0]), int(sockname[1]))
    return str(sockname)


async def serve_noise(
    listen: Sequence[str],
    key: PrivateKey,
    handler: Handler = answer_pings,
    *,
    limits: TransportLimits | None = None,
    registry: MessageRegistry = REGISTRY,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve Noise connections on every `host:port` in `listen` until cancelled.

    `task_status.started()` reports the bound addresses as `host:port` strings (so port 0
    can be used in tests).  Raises `ConfigError` for a malformed listen
    address and `OSError` if an address cannot be bound.
    """
    limits = limits or TransportLimits()
    if not listen:
        raise ConfigError("serve_noise needs at least one listen address")
    parsed = [parse_listen_address(text) for text in listen]
    listeners: list[trio.SocketListener] = []
    try:
        for host, port in parsed:
            listeners.extend(await trio.open_tcp_listeners(port, host=host))
    except BaseException:
        for listener in listeners:
            await trio.aclose_forcefully(listener)
        raise
    bound = [_listener_name(listener) for listener in listeners]
    server = _Server(LocalIdentity.from_private_key(key), handler, limits, registry)
    logger.info("listening for Noise connections on %s", ", ".join(bound))
    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, server.handle_tcp, listeners)
        task_status.started(bound)


def _listener_name(listener: trio.SocketListener) -> str:
    sockname = listener.socket.getsockname()
    return format_host_port(str(sockname[0]), int(sockname[1]))
