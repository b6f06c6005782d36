"""Serving the control socket: the Unix listener, its limits, and one task per client.

The control socket is owner-only (mode 0600 from the moment it exists), but what arrives on it
is still untrusted bytes, and no client may hold the node up for the others:

- a frame's length is checked before its body is read (`framing.MAX_FRAME`), and all frames
  being read at once share a byte budget, so many half-sent large frames cannot exhaust memory;
- a frame must arrive whole within `frame_timeout`, a connection may sit idle between requests
  for `idle_timeout`, and every reply must be taken within `send_timeout`: a client that stops
  reading loses its connection, never blocks another;
- at most `max_connections` connections; when full, the one idle the longest is closed to make
  room (an idle connection costs nothing but its slot), and only when none is idle is the new
  one refused.  So a status request answers at once however many idle clients are connected;
- an existing path is replaced only if it is a socket that nothing answers on: a regular file
  (the key file, say) is never deleted, and a live node's socket is never stolen.

This module serves frames and knows nothing of what requests mean: `handler` turns a decoded
request into a reply frame.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket as stdlib_socket
import stat
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import attrs
import trio

from trustix_p2p.control import protocol
from trustix_p2p.core.lean.frame import FrameReader
from trustix_p2p.errors import ConfigError, DecodeError
from trustix_p2p.logfmt import ContextLogger, kv

__all__ = ["ControlLimits", "serve_control", "unix_listener"]

_log = logging.getLogger("trustix_p2p.control")

#: sun_path is 108 bytes on Linux, one of which is the terminating NUL.
MAX_SOCKET_PATH = 107

Handler = Callable[[protocol.Request], Awaitable[bytes]]


@attrs.frozen
class ControlLimits:
    max_connections: int = 512
    idle_timeout: float = 60.0
    frame_timeout: float = 10.0
    send_timeout: float = 10.0
    #: Bytes of frame bodies being read at once, over all connections.
    read_budget: int = 4 * protocol.MAX_FRAME


class _ByteBudget:
    """Bytes lent to frame readers; a reader waits until enough are free."""

    def __init__(self, total: int) -> None:
        self.free = total
        self._lot = trio.lowlevel.ParkingLot()

    async def acquire(self, n: int) -> None:
        while self.free < n:
            await self._lot.park()
        self.free -= n

    def release(self, n: int) -> None:
        self.free += n
        self._lot.unpark_all()


@attrs.define(eq=False)
class _Client:
    scope: trio.CancelScope
    idle_since: float | None = None


@attrs.define(eq=False)
class _Server:
    handler: Handler
    limits: ControlLimits
    budget: _ByteBudget
    log: ContextLogger = attrs.field(factory=lambda: ContextLogger(_log))
    clients: set[_Client] = attrs.field(factory=set)

    def _make_room(self) -> bool:
        if len(self.clients) < self.limits.max_connections:
            return True
        idle = [c for c in self.clients if c.idle_since is not None]
        if not idle:
            return False
        oldest = min(idle, key=lambda c: c.idle_since or 0.0)
        oldest.scope.cancel()
        self.clients.discard(oldest)
        return True

    async def handle(self, stream: trio.SocketStream) -> None:
        if not self._make_room():
            self.log.warning(
                "control socket: all clients busy, refusing one",
                extra=kv(clients=len(self.clients)),
            )
            await trio.aclose_forcefully(stream)
            return
        client = _Client(trio.CancelScope())
        self.clients.add(client)
        try:
            with client.scope:
                async with stream:
                    await self._serve(stream, client)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the client went away: nothing to answer, nothing to log
        finally:
            self.clients.discard(client)

    async def _send(self, stream: trio.SocketStream, reply: bytes) -> bool:
        with trio.move_on_after(self.limits.send_timeout):
            await stream.send_all(reply)
            return True
        self.log.info("control socket: a client did not take its reply; closing it")
        return False

    async def _serve(self, stream: trio.SocketStream, client: _Client) -> None:
        reader = protocol.frame_reader()
        while True:
            try:
                request = await self._read_request(stream, reader, client)
            except DecodeError as exc:
                await self._send(stream, protocol.encode_reply(protocol.Refused(str(exc))))
                return
            if request is None:
                return  # closed, idle too long between requests, or too slow within one
            try:
                reply = await self.handler(request)
            except Exception:
                # A bug in a handler: logged with its traceback, and it ends only this
                # connection (the same policy as for peer connections); the node runs on.
                self.log.exception(
                    "control request failed; closing that connection",
                    extra=kv(request=type(request).__name__),
                )
                return
            if not await self._send(stream, reply):
                return

    async def _read_request(
        self, stream: trio.SocketStream, reader: FrameReader, client: _Client
    ) -> protocol.Request | None:
        """The next request, or None if the client left, idled or was too slow.

        Reads at most `reader.wanted()` bytes at a time, so never past the frame under way:
        its header within idle_timeout, then, holding a share of the byte budget the size of
        its body, the body within frame_timeout.  DecodeError for a frame above the limit
        (refused from its header alone) or a body that is no request.
        """
        limits = self.limits
        client.idle_since = trio.current_time()
        body: memoryview | None = None
        with trio.move_on_after(limits.idle_timeout):
            while (body := reader.next_frame()) is None and reader.body_length is None:
                if not await _receive_into(stream, reader):
                    return None
            client.idle_since = None
        if client.idle_since is not None:
            return None
        if body is not None:  # an empty body: complete with its header
            return protocol.decode_request(body)
        size = reader.body_length
        assert size is not None
        with trio.move_on_after(limits.frame_timeout):
            await self.budget.acquire(size)
            try:
                while (body := reader.next_frame()) is None:
                    if not await _receive_into(stream, reader):
                        return None
                return protocol.decode_request(body)
            finally:
                self.budget.release(size)
        return None


async def _receive_into(stream: trio.abc.ReceiveStream, reader: FrameReader) -> bool:
    """Feed the reader what the stream has, up to what completes its current part; False
    when the stream has ended."""
    data = await stream.receive_some(min(reader.wanted(), 1 << 20))
    if not data:
        return False
    reader.feed(data)
    return True


def _check_socket_path(path: Path) -> None:
    """Refuse to start over anything but a stale socket of ours (see the module docstring)."""
    if len(os.fsencode(path)) > MAX_SOCKET_PATH:
        raise ConfigError(
            f"control_socket: {path} is {len(os.fsencode(path))} bytes long; a Unix socket "
            f"path may be at most {MAX_SOCKET_PATH}"
        )
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise ConfigError(f"control_socket: cannot inspect {path}: {exc.strerror}") from exc
    if not stat.S_ISSOCK(st.st_mode):
        raise ConfigError(
            f"control_socket: {path} exists and is not a socket; refusing to replace it"
        )
    probe = stdlib_socket.socket(stdlib_socket.AF_UNIX)
    probe.settimeout(2.0)
    try:
        probe.connect(os.fspath(path))
    except ConnectionRefusedError:
        os.unlink(path)  # the socket of a node that is gone
        return
    except OSError as exc:
        if exc.errno == errno.ECONNREFUSED:
            os.unlink(path)
            return
        raise ConfigError(f"control_socket: cannot check {path}: {exc.strerror or exc}") from exc
    finally:
        probe.close()
    raise ConfigError(f"control_socket: another node is already listening on {path}")


@contextlib.asynccontextmanager
async def unix_listener(path: Path) -> AsyncIterator[trio.SocketListener]:
    """A Unix listening socket at `path`, mode 0600 from the moment it exists."""
    _check_socket_path(path)
    sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
    old_umask = os.umask(0o177)  # no window in which the socket is group/world accessible
    try:
        await sock.bind(os.fspath(path))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"control_socket: cannot bind {path}: {exc.strerror}") from exc
    finally:
        os.umask(old_umask)
    bound = os.lstat(path)
    try:
        os.chmod(path, 0o600)
        sock.listen(128)
        yield trio.SocketListener(sock)
    finally:
        sock.close()
        # Remove it only if it is still the socket we bound (not one a later node made).
        with contextlib.suppress(OSError):
            now = os.lstat(path)
            if (now.st_ino, now.st_dev) == (bound.st_ino, bound.st_dev):
                os.unlink(path)


async def serve_control(
    path: Path,
    handler: Handler,
    *,
    limits: ControlLimits | None = None,
    log: ContextLogger | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the control socket at `path` until cancelled, logging to `log` (a node passes
    its own, so the lines name it)."""
    limits = limits or ControlLimits()
    budget = _ByteBudget(max(limits.read_budget, protocol.MAX_FRAME))
    server = _Server(handler, limits, budget, log if log is not None else ContextLogger(_log))
    async with unix_listener(path) as listener:
        task_status.started()
        await trio.serve_listeners(server.handle, [listener])
