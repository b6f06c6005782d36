"""`NoiseStream`: a trio `HalfCloseableStream` encrypted with the Trustix Noise session.

This is the trio shell around the sans-IO `trustix_p2p.core.noise.NoiseSession`, in the shape
of trio's `SSLStream`: it wraps any trio stream (TCP, memory, a simulated network), performs
the handshake lazily on first use or explicitly with `do_handshake()`, and then moves
application bytes.  `send_eof()` sends the authenticated end-of-stream marker, and
`receive_some()` returns b"" only after receiving that marker; a peer that drops the
connection without it raises `trio.BrokenResourceError`, so a truncation is never mistaken
for a clean end.

Errors: transport failures surface as trio's `BrokenResourceError` / `ClosedResourceError` /
`BusyResourceError` as the `trio.abc.Stream` contract says; bytes from the peer that violate
the protocol raise `RemoteProtocolError` (`NoiseError` for cryptographic failures) and leave
the stream broken.  A handshake that takes longer than `handshake_timeout`, a receive that
waits longer than `idle_timeout`, or a write to the underlying stream that does not complete
within `send_timeout` raises `RemoteProtocolError`, so a peer that stops reading cannot hold a
sender forever.  One such write carries one handshake message, or the ciphertext of at most
`SEND_CHUNK_SIZE` bytes of a `send_all`: that is the unit of progress `send_timeout` bounds.

This module must not interpret application bytes (that is `transport.connection`) and must
never let a partially sent Noise message be followed by another: after a cancelled or failed
send, the stream is broken for sending.
"""

from __future__ import annotations

import contextlib
import math
import operator
import os
from collections.abc import Callable
from typing import Final

import trio

from trustix_p2p.core.keys import PublicKey
from trustix_p2p.core.noise import (
    MAX_FRAME_PAYLOAD,
    NEED_DATA,
    Data,
    EndOfStream,
    HandshakeComplete,
    LocalIdentity,
    NoiseSession,
    Role,
)
from trustix_p2p.errors import LocalProtocolError, RemoteProtocolError

__all__ = ["DEFAULT_RECEIVE_SIZE", "SEND_CHUNK_SIZE", "NoiseStream"]

# Bytes asked of the underlying stream per read; one whole Noise message plus its prefix.
_TRANSPORT_RECEIVE_SIZE: Final = 256 * 1024
DEFAULT_RECEIVE_SIZE: Final = 65536
# Frames encrypted per underlying send_all: big sends are cheap, but bound the memory.  Each
# underlying send_all is also the unit of progress that `send_timeout` bounds.
_FRAMES_PER_SEND: Final = 4
SEND_CHUNK_SIZE: Final = _FRAMES_PER_SEND * MAX_FRAME_PAYLOAD


class NoiseStream(trio.abc.HalfCloseableStream):
    """A Noise-encrypted stream over `transport_stream` (see the module docstring).

    Build one with `NoiseStream.initiator(...)` or `NoiseStream.responder(...)`, or pass a
    prepared `NoiseSession` (tests use that to fix the ephemeral key).
    """

    def __init__(
        self,
        transport_stream: trio.abc.Stream,
        session: NoiseSession,
        *,
        handshake_timeout: float = math.inf,
        idle_timeout: float = math.inf,
        send_timeout: float = math.inf,
        close_timeout: float = 1.0,
    ) -> None:
        self.transport_stream = transport_stream
        self._session = session
        self._handshake_timeout = handshake_timeout
        self._idle_timeout = idle_timeout
        self._send_timeout = send_timeout
        self._close_timeout = close_timeout
        self._handshake_lock = trio.Lock()
        self._peer: PublicKey | None = None
        # Decrypted plaintext not yet returned: self._pending[self._pending_pos:].
        self._pending: bytes | bytearray = b""
        self._pending_pos = 0
        self._closed = False
        # Set once the peer or the session broke the stream; every later call raises it.
        self._broken: BaseException | None = None
        self._send_broken = False
        self._sending = False
        self._send_buffer = bytearray()
        self._receiving = False

    @classmethod
    def initiator(
        cls,
        transport_stream: trio.abc.Stream,
        identity: LocalIdentity,
        *,
        pinned: PublicKey | None = None,
        handshake_timeout: float = math.inf,
        idle_timeout: float = math.inf,
        send_timeout: float = math.inf,
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> NoiseStream:
        return cls._for_role(
            Role.INITIATOR,
            transport_stream,
            identity,
            pinned,
            handshake_timeout=handshake_timeout,
            idle_timeout=idle_timeout,
            send_timeout=send_timeout,
            random_bytes=random_bytes,
        )

    @classmethod
    def responder(
        cls,
        transport_stream: trio.abc.Stream,
        identity: LocalIdentity,
        *,
        pinned: PublicKey | None = None,
        handshake_timeout: float = math.inf,
        idle_timeout: float = math.inf,
        send_timeout: float = math.inf,
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> NoiseStream:
        return cls._for_role(
            Role.RESPONDER,
            transport_stream,
            identity,
            pinned,
            handshake_timeout=handshake_timeout,
            idle_timeout=idle_timeout,
            send_timeout=send_timeout,
            random_bytes=random_bytes,
        )

    @classmethod
    def _for_role(
        cls,
        role: Role,
        transport_stream: trio.abc.Stream,
        identity: LocalIdentity,
        pinned: PublicKey | None,
        *,
        handshake_timeout: float,
        idle_timeout: float,
        send_timeout: float,
        random_bytes: Callable[[int], bytes],
    ) -> NoiseStream:
        # The ephemeral key is the only randomness here; a simulation passes a seeded source.
        session = NoiseSession(role, identity, random_bytes(32), pinned=pinned)
        return cls(
            transport_stream,
            session,
            handshake_timeout=handshake_timeout,
            idle_timeout=idle_timeout,
            send_timeout=send_timeout,
        )

    # ---- introspection -----------------------------------------------------------------

    @property
    def peer(self) -> PublicKey:
        """The Ed25519 key the peer proved in the handshake."""
        if self._peer is None:
            raise LocalProtocolError("the handshake has not completed")
        return self._peer

    @property
    def handshake_hash(self) -> bytes:
        value = self._session.handshake_hash
        if value is None:
            raise LocalProtocolError("the handshake has not completed")
        return value

    def buffered(self) -> int:
        """Bytes held by this stream (ciphertext plus decrypted, unread plaintext)."""
        return self._session.buffered() + len(self._pending) - self._pending_pos

    # ---- helpers -----------------------------------------------------------------------

    def _check_usable(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("this NoiseStream was closed")
        if self._broken is not None:
            raise trio.BrokenResourceError("this NoiseStream is broken") from self._broken

    async def _receive_raw(self) -> bytes | bytearray:
        if self._idle_timeout == math.inf:
            return await self.transport_stream.receive_some(_TRANSPORT_RECEIVE_SIZE)
        with trio.move_on_after(self._idle_timeout):
            return await self.transport_stream.receive_some(_TRANSPORT_RECEIVE_SIZE)
        raise RemoteProtocolError(f"peer sent nothing for {self._idle_timeout:g} s")

    async def _send_raw(self, data: bytes | bytearray | memoryview) -> None:
        # The caller marks the stream broken for sending if this raises: the peer may hold
        # part of a Noise message.
        if self._send_timeout == math.inf:
            await self.transport_stream.send_all(data)
            return
        with trio.move_on_after(self._send_timeout):
            await self.transport_stream.send_all(data)
            return
        raise RemoteProtocolError(f"peer did not read for {self._send_timeout:g} s")

    # ---- handshake ---------------------------------------------------------------------

    async def do_handshake(self) -> PublicKey:
        """Run the handshake if it has not run yet; returns the peer's proven key.

        Safe to call from several tasks at once; all of them wait for the one handshake.
        """
        self._check_usable()
        if self._peer is not None:
            await trio.lowlevel.checkpoint()
            return self._peer
        async with self._handshake_lock:
            self._check_usable()
            if self._peer is not None:
                return self._peer
            try:
                with trio.fail_after(self._handshake_timeout):
                    peer = await self._run_handshake()
            except trio.TooSlowError as exc:
                self._broken = exc
                raise RemoteProtocolError(
                    f"handshake did not complete within {self._handshake_timeout:g} s"
                ) from exc
            except BaseException as exc:
                # Cancelled half-way or failed: the peer holds a half-done handshake.
                self._broken = exc
                raise
            self._peer = peer
            return peer

    async def _run_handshake(self) -> PublicKey:
        session = self._session
        if session.role is Role.INITIATOR:
            await self._send_raw(session.initiate())
        while True:
            event = session.next_event()
            outgoing = session.data_to_send()
            if outgoing:
                await self._send_raw(outgoing)
            if isinstance(event, HandshakeComplete):
                return event.peer
            if event is NEED_DATA:
                data = await self._receive_raw()
                if not data:
                    raise trio.BrokenResourceError(
                        "peer closed the connection during the handshake"
                    )
                session.receive_data(data)
            else:  # pragma: no cover - the session emits nothing else before the handshake ends
                raise LocalProtocolError(f"unexpected {event!r} during the handshake")

    # ---- receiving ---------------------------------------------------------------------

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        if max_bytes is None:
            max_bytes = DEFAULT_RECEIVE_SIZE
        else:
            max_bytes = operator.index(max_bytes)
            if max_bytes < 1:
                raise ValueError("max_bytes must be >= 1")
        self._check_usable()
        if self._receiving:
            raise trio.BusyResourceError("another task is already receiving on this stream")
        self._receiving = True
        try:
            await self.do_handshake()
            if self._pending_pos >= len(self._pending):
                await self._fill_pending()
            else:
                await trio.lowlevel.checkpoint()
            pending, pos = self._pending, self._pending_pos
            end = pos + max_bytes
            if pos == 0 and end >= len(pending):
                # The common case: hand over the decrypted bytes without copying them.
                self._pending = b""
                return pending
            self._pending_pos = min(end, len(pending))
            return pending[pos:end]
        finally:
            self._receiving = False

    async def _fill_pending(self) -> None:
        session = self._session
        while True:
            try:
                event = session.next_event()
            except BaseException as exc:
                self._broken = exc
                raise
            if isinstance(event, Data):
                self._pending = event.data
                self._pending_pos = 0
                return
            if isinstance(event, EndOfStream):
                return
            data = await self._receive_raw()
            if not data:
                broken = trio.BrokenResourceError(
                    "peer closed the connection without the Noise end-of-stream marker"
                )
                self._broken = broken
                raise broken
            session.receive_data(data)

    # ---- sending -----------------------------------------------------------------------

    def _enter_send(self) -> None:
        self._check_usable()
        if self._sending:
            raise trio.BusyResourceError("another task is already sending on this stream")
        self._sending = True

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        self._enter_send()
        try:
            await self.do_handshake()
            if self._session.eof_sent:
                raise trio.ClosedResourceError("send_eof() was called on this stream")
            if self._send_broken:
                raise trio.BrokenResourceError("an earlier send on this stream failed")
            await trio.lowlevel.checkpoint_if_cancelled()
            view = memoryview(data)
            size = len(view)
            try:
                for start in range(0, size, SEND_CHUNK_SIZE):
                    chunk = view[start : start + SEND_CHUNK_SIZE]
                    buffer = self._send_buffer
                    if len(buffer) < NoiseSession.sealed_size(len(chunk)):
                        buffer = self._send_buffer = bytearray(
                            NoiseSession.sealed_size(min(size, SEND_CHUNK_SIZE))
                        )
                    written = self._session.send_into(buffer, chunk)
                    # One buffer serves every send: send_all is done with it when it returns.
                    with memoryview(buffer)[:written] as ciphertext:
                        await self._send_raw(ciphertext)
            except BaseException:
                # Part of a Noise message may be on the wire (or the session failed, e.g. on
                # nonce exhaustion): nothing may follow it.
                self._send_broken = True
                raise
            if size == 0:
                await trio.lowlevel.cancel_shielded_checkpoint()
        finally:
            self._sending = False

    async def wait_send_all_might_not_block(self) -> None:
        self._enter_send()
        try:
            await self.transport_stream.wait_send_all_might_not_block()
        finally:
            self._sending = False

    async def send_eof(self) -> None:
        """Send the authenticated end-of-stream marker; receiving still works."""
        self._enter_send()
        try:
            await self.do_handshake()
            if self._send_broken:
                raise trio.BrokenResourceError("an earlier send on this stream failed")
            frame = self._session.send_eof()
            if not frame:
                await trio.lowlevel.checkpoint()
                return
            try:
                await self._send_raw(frame)
            except BaseException:
                self._send_broken = True
                raise
        finally:
            self._sending = False

    # ---- closing -----------------------------------------------------------------------

    async def aclose(self) -> None:
        """Send the end-of-stream marker if we can do so at once, then close the transport.

        Like every trio `aclose`, this closes even when cancelled; the marker is skipped when
        another task is mid-send or the stream is broken, and given at most `close_timeout`.
        """
        if self._closed:
            await trio.lowlevel.checkpoint()
            return
        self._closed = True
        session = self._session
        # The peer gone or the transport in use: then closing is all that is left.
        gone = (trio.BrokenResourceError, trio.ClosedResourceError, trio.BusyResourceError)
        try:
            if (
                self._peer is not None
                and self._broken is None
                and not self._send_broken
                and not self._sending
                and not session.eof_sent
            ):
                frame = session.send_eof()
                with trio.move_on_after(self._close_timeout), contextlib.suppress(*gone):
                    await self.transport_stream.send_all(frame)
        finally:
            self._pending = b""
            await self.transport_stream.aclose()
