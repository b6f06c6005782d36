"""Accepting Noise connections: `serve_noise` and the default Ping handler.

`serve_noise` listens on the configured TCP addresses, runs the responder handshake for each
incoming connection under the handshake timeout, and hands each `Connection` to the
caller's handler in its own task.  It enforces the limits of `TransportLimits`: connections
per source address and established connections (excess ones are closed at once), a bounded
pool of pending handshakes from which the largest holder's oldest is evicted when a newcomer
needs room (`transport.admission`), the idle and send timeouts (a peer that stops reading is
dropped), and the message size limit.  Whatever one connection does -- garbage, a failed
handshake, a malformed message, silence, not reading, or even a bug in the handler -- ends
that connection only; it is logged and the server keeps serving everyone else.

This module must not contain protocol logic beyond the connection's life cycle: what
messages mean is the handler's business.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Final

import attrs
import trio

from trustix_p2p.core.keys import PrivateKey
from trustix_p2p.core.noise import LocalIdentity
from trustix_p2p.core.wire import REGISTRY, Error, MessageRegistry, Ping, Pong
from trustix_p2p.errors import ConfigError, LocalProtocolError, RemoteProtocolError
from trustix_p2p.logfmt import ContextLogger, kv
from trustix_p2p.transport.address import parse_listen_address
from trustix_p2p.transport.admission import Admission, Refused, Ticket
from trustix_p2p.transport.connection import (
    CONNECTION_ERRORS,
    Connection,
    TransportLimits,
    run_connection,
)
from trustix_p2p.transport.network import TCP, Listener, Network
from trustix_p2p.transport.secure import secure_stream

__all__ = ["Handler", "answer_pings", "serve_noise", "serve_stream"]

logger = logging.getLogger(__name__)

Handler = Callable[[Connection], Awaitable[None]]


class _Throttled:
    """At most one log line per `interval` seconds for a kind of event, with the count of
    those not logged (`suppressed=`): a flood of connections must not become a flood of log
    lines."""

    def __init__(self, interval: float = 10.0, log: ContextLogger | None = None) -> None:
        self.interval = interval
        self.log = log if log is not None else ContextLogger(logger)
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def info(self, kind: str, message: str, **fields: object) -> None:
        now = trio.current_time()
        if now - self._last.get(kind, -math.inf) < self.interval:
            self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
            return
        self._last[kind] = now
        skipped = self._suppressed.pop(kind, 0)
        if skipped:
            fields.update(suppressed=skipped, interval=f"{self.interval:g}")
        self.log.info(message, extra=kv(**fields))


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
    log: ContextLogger | None = None,
) -> None:
    """Serve one accepted stream: responder handshake, `handler`, close.

    This is the per-connection half of `serve_noise`, usable over any trio stream (the
    simulation harness runs it over memory streams).  It never raises because of what the
    peer did or because of a bug in `handler`; it logs and closes the stream instead.  The
    stream is closed however this ends, cancellation included.
    """
    await _serve_stream(
        transport_stream,
        identity,
        handler,
        limits or TransportLimits(),
        registry,
        remote,
        throttled=_Throttled(log=log),
    )


@attrs.frozen
class _Security:
    """How accepted streams are secured (see `transport.secure`)."""

    network: Network = TCP
    secure: bool = True
    random_bytes: Callable[[int], bytes] = os.urandom


async def _serve_stream(
    transport_stream: trio.abc.Stream,
    identity: LocalIdentity,
    handler: Handler,
    limits: TransportLimits,
    registry: MessageRegistry,
    remote: str,
    admit: Callable[[], str | None] | None = None,
    throttled: _Throttled | None = None,
    security: _Security | None = None,
) -> None:
    throttled = throttled or _Throttled()
    security = security or _Security()
    # `admit` runs once the handshake completes: None lets the connection in, a string is
    # why it is refused (it is then told so and closed).
    stream: trio.abc.Stream = transport_stream
    try:
        try:
            stream, peer = await secure_stream(
                transport_stream,
                identity,
                initiator=False,
                network=security.network,
                secure=security.secure,
                pinned=None,
                handshake_timeout=limits.handshake_timeout,
                idle_timeout=limits.idle_timeout,
                send_timeout=limits.send_timeout,
                random_bytes=security.random_bytes,
            )
        except CONNECTION_ERRORS as exc:
            throttled.info("handshake", "handshake failed", addr=remote, reason=exc)
            return
        connection = Connection(stream, peer, remote, limits, registry)
        refusal = admit() if admit is not None else None
        if refusal is not None:
            throttled.info(
                "refused-after",
                "refusing connection after the handshake",
                peer=peer.to_base64(),
                addr=remote,
                reason=refusal,
            )
            await _say_goodbye(connection, refusal)
            return
        log = throttled.log.bind(peer=peer.to_base64(), addr=remote)
        log.info("connection accepted")
        try:
            await run_connection(connection, partial(_guarded, handler, log))
        except LocalProtocolError:
            # We tried to send something the protocol forbids: a bug on our side, not the
            # peer's.
            log.exception("connection ended by a local protocol error")
        except CONNECTION_ERRORS as exc:
            log.info("connection ended", extra=kv(reason=exc))
        except Exception:
            # A bug in a handler must not take the node down for every other peer; it is
            # logged with its traceback, loudly, and only this connection ends.
            log.exception("handler failed on a connection")
    finally:
        # Sends the end-of-stream marker within its close timeout (only after a handshake,
        # and not after a failed send), and closes anyway, even when cancelled.
        await stream.aclose()


async def _guarded(handler: Handler, log: ContextLogger, connection: Connection) -> None:
    try:
        await handler(connection)
    except RemoteProtocolError as exc:
        log.info("closing connection", extra=kv(reason=exc))
        await _say_goodbye(connection, str(exc))


@attrs.define(eq=False)
class _Server:
    """The accept side of `serve_noise`: admission (`transport.admission`), then serving.

    Over-limit connections are refused at once, before any handshake work: from a source
    at `max_connections_per_source`, or while `max_connections` are established.  A
    connection whose handshake completes while `max_connections` are established (they
    filled up during its handshake) is refused after it, with an `Error` message.  Every
    refusal and eviction is one info line in the log.
    """

    identity: LocalIdentity
    handler: Handler
    limits: TransportLimits
    registry: MessageRegistry
    security: _Security = attrs.field(factory=_Security)
    log: ContextLogger = attrs.field(factory=lambda: ContextLogger(logger))
    admission: Admission = attrs.field(init=False)
    _log: _Throttled = attrs.field(init=False)
    # Pending handshakes, and how to end each one if it is evicted.
    _pending: dict[Ticket, tuple[trio.CancelScope, str]] = attrs.field(init=False, factory=dict)

    def __attrs_post_init__(self) -> None:
        self._log = _Throttled(log=self.log)
        self.admission = Admission(
            max_pending=self.limits.max_pending_handshakes,
            max_established=self.limits.max_connections,
            max_per_source=self.limits.max_connections_per_source,
        )

    async def handle_stream(self, stream: trio.abc.Stream, source: str, remote: str) -> None:
        """Admit and serve one accepted stream from IP address `source` (named `remote`)."""
        decision = self.admission.arrive(source)
        if isinstance(decision, Refused):
            self._log.info("refused", "refusing connection", addr=remote, reason=decision.reason)
            await trio.aclose_forcefully(stream)
            return
        ticket = decision.ticket
        scope = trio.CancelScope()
        self._pending[ticket] = (scope, remote)
        if decision.evicted is not None:
            self._evict(decision.evicted, remote)
        try:
            with scope:
                await _serve_stream(
                    stream,
                    self.identity,
                    self.handler,
                    self.limits,
                    self.registry,
                    remote,
                    admit=partial(self._establish, ticket),
                    throttled=self._log,
                    security=self.security,
                )
        finally:
            self._pending.pop(ticket, None)
            self.admission.release(ticket)

    def _establish(self, ticket: Ticket) -> str | None:
        self._pending.pop(ticket, None)
        refusal = self.admission.establish(ticket)
        return None if refusal is None else refusal.reason

    def _evict(self, victim: Ticket, newcomer: str) -> None:
        scope, victim_remote = self._pending.pop(victim)
        self._log.info(
            "evicted",
            "evicting a pending handshake to admit a newcomer",
            addr=victim_remote,
            newcomer=newcomer,
            pending=self.admission.pending,
            limit=self.limits.max_pending_handshakes,
            from_source=self.admission.pending_from(victim.source) + 1,
            source=victim.source,
        )
        # Its task closes the stream as the cancellation unwinds it (_serve_stream's finally).
        scope.cancel()


async def _say_goodbye(connection: Connection, reason: str) -> None:
    """Best effort: tell the peer why we close (only if the stream can still carry it)."""
    with trio.move_on_after(_GOODBYE_TIMEOUT):
        try:
            await connection.send_message(Error(reason[:512]))
            await connection.flush()
        except (*CONNECTION_ERRORS, trio.BusyResourceError):
            pass  # best effort only: the connection is closed either way


async def serve_noise(
    listen: Sequence[str],
    key: PrivateKey,
    handler: Handler = answer_pings,
    *,
    limits: TransportLimits | None = None,
    registry: MessageRegistry = REGISTRY,
    network: Network = TCP,
    secure: bool = True,
    random_bytes: Callable[[int], bytes] = os.urandom,
    log: ContextLogger | None = None,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve connections on every `host:port` in `listen` until cancelled, logging to `log`
    (a node passes its own, so the lines name it).

    Over `network` (TCP unless a simulation passes its own), secured with Noise unless
    `secure=False` on an in-memory network.  `task_status.started()` reports the bound
    addresses as `host:port` strings (so port 0 can be used in tests).  Raises `ConfigError`
    for a malformed listen address and `OSError` if an address cannot be bound.
    """
    limits = limits or TransportLimits()
    if not listen:
        raise ConfigError("serve_noise needs at least one listen address")
    if not secure and not network.allows_plain:
        raise ConfigError("connections without Noise are allowed only on an in-memory network")
    parsed = [parse_listen_address(text) for text in listen]
    listeners: list[Listener] = []
    try:
        for host, port in parsed:
            listeners.extend(await network.listen(host, port))
    except BaseException:
        for listener in listeners:
            with trio.CancelScope(shield=True):
                await listener.aclose()
        raise
    bound = [listener.name for listener in listeners]
    server = _Server(
        LocalIdentity.from_private_key(key),
        handler,
        limits,
        registry,
        _Security(network, secure, random_bytes),
        log if log is not None else ContextLogger(logger),
    )
    server.log.info("listening", extra=kv(listen=",".join(bound)))
    try:
        async with trio.open_nursery() as nursery:
            for listener in listeners:
                nursery.start_soon(_accept_loop, listener, server, nursery)
            task_status.started(bound)
    finally:
        for listener in listeners:
            with trio.CancelScope(shield=True):
                await listener.aclose()


async def _accept_loop(listener: Listener, server: _Server, nursery: trio.Nursery) -> None:
    while True:
        try:
            stream, source, remote = await listener.accept()
        except OSError as exc:
            # EMFILE and friends: wait a little rather than spin (trio.serve_listeners does
            # the same for its accept errors).
            server.log.warning("accept failed", extra=kv(listen=listener.name, reason=exc))
            await trio.sleep(0.1)
            continue
        except (trio.ClosedResourceError, trio.EndOfChannel):
            return
        nursery.start_soon(server.handle_stream, stream, source, remote)
