"""The network seam: where byte streams between nodes come from.

`TcpNetwork` is the real thing (trio TCP).  `MemoryNetwork` connects nodes living in one
process: listening registers an address, dialling it hands each side one end of an in-memory
stream pair, optionally behind a per-link delay, so a simulation can run hundreds of real nodes
under `trio.testing.MockClock` with no sockets.  Both hand out plain byte streams; whether a
connection is then secured with Noise is the caller's choice (`transport.connection.connect`
and `serve_noise` take `secure=`; only the memory network may go without).

This module opens sockets (TcpNetwork) and nothing else; it reads no clock and holds no
randomness.
"""

from __future__ import annotations

import abc
import itertools
from collections.abc import Callable, Sequence

import attrs
import trio
import trio.testing

from trustix_p2p.transport.address import format_host_port

__all__ = ["Listener", "MemoryNetwork", "Network", "TcpNetwork"]

#: Latency of a link (dialler address, listener address) -> seconds, for MemoryNetwork.
LinkDelay = Callable[[str, str], float]


class Listener(abc.ABC):
    """Accepted streams, with the address they were bound to."""

    name: str

    @abc.abstractmethod
    async def accept(self) -> tuple[trio.abc.Stream, str, str]:
        """The next stream, its source (the per-source key) and a name for the log."""

    @abc.abstractmethod
    async def aclose(self) -> None: ...


class Network(abc.ABC):
    """Listening and dialling; see the module docstring."""

    #: Whether connections may skip Noise (only where no stranger can reach them).
    allows_plain: bool = False

    @abc.abstractmethod
    async def listen(self, host: str, port: int) -> list[Listener]:
        """Bind `host:port` (port 0: any free one); OSError if it cannot be bound."""

    @abc.abstractmethod
    async def dial(self, host: str, port: int) -> trio.abc.Stream:
        """A stream to `host:port`; OSError if nothing answers there."""


# ---- TCP ----------------------------------------------------------------------------------


@attrs.define(eq=False)
class _TcpListener(Listener):
    listener: trio.SocketListener
    name: str

    async def accept(self) -> tuple[trio.abc.Stream, str, str]:
        stream = await self.listener.accept()
        try:
            peer = stream.socket.getpeername()
        except OSError:
            return stream, "<unknown>", "<unknown>"
        if isinstance(peer, tuple):
            host = str(peer[0])
            return stream, host, format_host_port(host, int(peer[1]))
        return stream, str(peer), str(peer)

    async def aclose(self) -> None:
        await self.listener.aclose()


class TcpNetwork(Network):
    async def listen(self, host: str, port: int) -> list[Listener]:
        listeners = await trio.open_tcp_listeners(port, host=host)
        result: list[Listener] = []
        for listener in listeners:
            sockname = listener.socket.getsockname()
            name = format_host_port(str(sockname[0]), int(sockname[1]))
            result.append(_TcpListener(listener, name))
        return result

    async def dial(self, host: str, port: int) -> trio.abc.Stream:
        return await trio.open_tcp_stream(host, port)


TCP = TcpNetwork()


# ---- in memory ----------------------------------------------------------------------------


class _DelayedStream(trio.abc.HalfCloseableStream):
    """One end of a memory stream pair whose sends arrive `delay` seconds later, in order."""

    def __init__(self, inner: trio.abc.HalfCloseableStream, delay: float) -> None:
        self._inner = inner
        self._delay = delay

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self._delay > 0:
            await trio.sleep(self._delay)
        await self._inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._inner.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        await self._inner.send_eof()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self._inner.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self._inner.aclose()


@attrs.define(eq=False)
class _MemoryListener(Listener):
    network: MemoryNetwork
    name: str
    send: trio.MemorySendChannel[tuple[trio.abc.Stream, str, str]]
    receive: trio.MemoryReceiveChannel[tuple[trio.abc.Stream, str, str]]

    async def accept(self) -> tuple[trio.abc.Stream, str, str]:
        return await self.receive.receive()

    async def aclose(self) -> None:
        self.network._listeners.pop(self.name, None)
        await self.send.aclose()
        await self.receive.aclose()


@attrs.define(eq=False)
class MemoryNetwork(Network):
    """Nodes of one process connected by in-memory streams (see the module docstring).

    Addresses are `host:port` strings; port 0 picks the next free port of that host, in order,
    so a run is the same every time.  `delay(dialler, listener)` gives each link's one-way
    latency (default: none).
    """

    delay: LinkDelay | None = None
    allows_plain: bool = True
    _listeners: dict[str, _MemoryListener] = attrs.field(factory=dict)
    _ports: itertools.count[int] = attrs.field(factory=lambda: itertools.count(10000))
    _dial_ports: itertools.count[int] = attrs.field(factory=lambda: itertools.count(40000))

    async def listen(self, host: str, port: int) -> list[Listener]:
        await trio.lowlevel.checkpoint()
        if port == 0:
            port = next(p for p in self._ports if format_host_port(host, p) not in self._listeners)
        name = format_host_port(host, port)
        if name in self._listeners:
            raise OSError(98, f"address already in use: {name}")
        send, receive = trio.open_memory_channel[tuple[trio.abc.Stream, str, str]](1024)
        listener = _MemoryListener(self, name, send, receive)
        self._listeners[name] = listener
        return [listener]

    async def dial(self, host: str, port: int, *, source: str = "127.0.0.1") -> trio.abc.Stream:
        await trio.lowlevel.checkpoint()
        name = format_host_port(host, port)
        listener = self._listeners.get(name)
        if listener is None:
            raise OSError(111, f"connection refused: nothing listens on {name}")
        dialler_end, listener_end = trio.testing.memory_stream_pair()
        remote = format_host_port(source, next(self._dial_ports))
        forward = self.delay(remote, name) if self.delay is not None else 0.0
        back = self.delay(name, remote) if self.delay is not None else 0.0
        try:
            listener.send.send_nowait((_DelayedStream(listener_end, back), source, remote))
        except (trio.WouldBlock, trio.ClosedResourceError) as exc:
            raise OSError(111, f"connection refused by {name}") from exc
        return _DelayedStream(dialler_end, forward)

    def addresses(self) -> Sequence[str]:
        return list(self._listeners)
