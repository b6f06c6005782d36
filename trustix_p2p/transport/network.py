"""The network seam: where byte streams between nodes come from.

`TcpNetwork` is the real thing (trio TCP).  `MemoryNetwork` connects nodes living in one
process: listening registers an address, dialling it hands each side one end of an in-memory
link that behaves like a TCP connection on a wire with a latency and (optionally) a bandwidth,
so a simulation can run hundreds of real nodes under `trio.testing.MockClock` with no sockets.
Links between two hosts can be cut and restored (`block`, `unblock`, `close_host`).  Both
networks hand out plain byte streams; whether a connection is then secured with Noise is the
caller's choice (`transport.connection.connect` and `serve_noise` take `secure=`; only the
memory network may go without).

This module opens sockets (TcpNetwork) and nothing else; it reads no clock and holds no
randomness.
"""

from __future__ import annotations

import abc
import itertools
import math
import operator
from collections import deque
from collections.abc import Callable, Sequence

import attrs
import trio

from trustix_p2p.transport.address import format_host_port

__all__ = ["Listener", "MemoryHost", "MemoryNetwork", "Network", "TcpNetwork"]

#: Latency of a link (dialler address, listener address) -> seconds, for MemoryNetwork.
LinkDelay = Callable[[str, str], float]
#: Bandwidth of a link (sender address, receiver address) -> bytes per second (math.inf: none).
LinkRate = Callable[[str, str], float]


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


#: Sends on one memory stream between two schedule points (see `_MemoryStream.send_all`).
_SEND_BATCH = 64


def _host_of(address: str) -> str:
    """The host of a `host:port` (IPv6 literals lose their brackets)."""
    host = address.rpartition(":")[0]
    return host[1:-1] if host.startswith("[") else host


def _pair(a: str, b: str) -> tuple[str, str]:
    return (a, b) if a <= b else (b, a)


class _Pipe:
    """One direction of a memory link: the chunks in flight, each with the time it arrives.

    A chunk sent at `now` leaves once the chunks before it have (`free`), takes
    `len / rate` seconds to send and arrives `delay` after that (plus `late()`, if given: a
    lost segment's retransmissions), never before the chunk sent before it: in order,
    `delay` after it was sent on an idle link, and the sender never waits (the link buffers
    what it sends).
    """

    __slots__ = (
        "chunks",
        "delay",
        "error",
        "free",
        "last",
        "late",
        "rate",
        "reader_gone",
        "waiter",
    )

    def __init__(self, delay: float, rate: float, late: Callable[[], float] | None) -> None:
        self.delay = delay
        self.rate = rate
        self.late = late
        self.free = -math.inf
        self.last = -math.inf  # when the chunk sent last arrives
        # (arrival time, data); None is the end of the stream.
        self.chunks: deque[tuple[float, bytes | None]] = deque()
        self.error: str | None = None  # the link was cut: both ends raise this
        self.reader_gone = False
        # The receiver waiting for the next arrival sleeps in this scope until its deadline:
        # a send moves the deadline to the arrival (so the receiver wakes once, then).
        self.waiter: trio.CancelScope | None = None

    def put(self, data: bytes | None, now: float) -> None:
        if self.reader_gone or self.error is not None:
            return
        leaves = max(now, self.free)
        if data and self.rate != math.inf:
            leaves += len(data) / self.rate
        self.free = leaves
        arrives = leaves + self.delay
        if self.late is not None:
            arrives += self.late()
        arrives = self.last = max(arrives, self.last)
        self.chunks.append((arrives, data))
        waiter = self.waiter
        if waiter is not None and arrives < waiter.deadline:
            waiter.deadline = arrives

    def wake(self) -> None:
        if self.waiter is not None:
            self.waiter.cancel()

    def cut(self, reason: str) -> None:
        if self.error is None:
            self.error = reason
        self.chunks.clear()
        self.wake()


class _Link:
    """A connection between two hosts: a pipe each way, and the two ends' streams."""

    __slots__ = ("back", "forward", "hosts", "network", "open_ends")

    def __init__(
        self, network: MemoryNetwork, hosts: tuple[str, str], forward: _Pipe, back: _Pipe
    ) -> None:
        self.network = network
        self.hosts = hosts
        self.forward = forward  # dialler -> listener
        self.back = back
        self.open_ends = 2

    def cut(self, reason: str) -> None:
        self.forward.cut(reason)
        self.back.cut(reason)
        self.network._forget(self)

    def end_closed(self) -> None:
        self.open_ends -= 1
        if self.open_ends <= 0:
            self.network._forget(self)


class _MemoryStream(trio.abc.HalfCloseableStream):
    """One end of a memory link (see `_Pipe`): sends never wait, receives wait for arrivals.

    Closing sends the end of the stream (it arrives after the data before it) and discards
    what the peer sends from then on; the peer's next send raises BrokenResourceError, as
    over TCP.  A cut link raises BrokenResourceError at both ends at once.
    """

    def __init__(self, link: _Link, outgoing: _Pipe, incoming: _Pipe) -> None:
        self._link = link
        self._out = outgoing
        self._in = incoming
        self._closed = False
        self._eof_sent = False
        self._receiving = False
        self._unyielded = 0

    def _check_send(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("this stream was closed")
        if self._eof_sent:
            raise trio.ClosedResourceError("send_eof() was called on this stream")
        if self._out.error is not None:
            raise trio.BrokenResourceError(self._out.error)
        if self._out.reader_gone:
            raise trio.BrokenResourceError("the peer closed the connection")

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        # A cancel point always; a schedule point every _SEND_BATCH sends (the link takes
        # every send at once, and a writer parks when it has nothing more: yielding after
        # each send would only cost the scheduler a round per message).
        await trio.lowlevel.checkpoint_if_cancelled()
        self._check_send()
        if len(data):
            self._out.put(bytes(data), trio.current_time())
        self._unyielded += 1
        if self._unyielded >= _SEND_BATCH:
            self._unyielded = 0
            await trio.lowlevel.cancel_shielded_checkpoint()

    async def wait_send_all_might_not_block(self) -> None:
        self._check_send()
        await trio.lowlevel.checkpoint()

    async def send_eof(self) -> None:
        await trio.lowlevel.checkpoint_if_cancelled()
        if self._closed:
            raise trio.ClosedResourceError("this stream was closed")
        if not self._eof_sent:
            self._eof_sent = True
            self._out.put(None, trio.current_time())
        await trio.lowlevel.cancel_shielded_checkpoint()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        if max_bytes is not None:
            max_bytes = operator.index(max_bytes)
            if max_bytes < 1:
                raise ValueError("max_bytes must be >= 1")
        if self._receiving:
            raise trio.BusyResourceError("another task is already receiving on this stream")
        self._receiving = True
        try:
            await trio.lowlevel.checkpoint_if_cancelled()
            pipe = self._in
            waited = False
            while True:
                if self._closed:
                    raise trio.ClosedResourceError("this stream was closed")
                if pipe.error is not None:
                    raise trio.BrokenResourceError(pipe.error)
                due = pipe.chunks[0][0] if pipe.chunks else math.inf
                if due <= trio.current_time():
                    break
                with trio.CancelScope(deadline=due) as scope:
                    pipe.waiter = scope
                    try:
                        await trio.sleep_forever()
                    finally:
                        pipe.waiter = None
                waited = True
            data = self._take(pipe, max_bytes)
            if not waited:
                await trio.lowlevel.cancel_shielded_checkpoint()
            return data
        finally:
            self._receiving = False

    @staticmethod
    def _take(pipe: _Pipe, max_bytes: int | None) -> bytes:
        """The chunks that have arrived, joined (at most `max_bytes`); b"" at the end."""
        chunks = pipe.chunks
        now = trio.current_time()
        parts: list[bytes] = []
        total = 0
        while chunks and chunks[0][0] <= now:
            due, data = chunks[0]
            if data is None:
                break  # the end of the stream stays, for every later receive
            if max_bytes is not None and total + len(data) > max_bytes:
                take = max_bytes - total
                parts.append(data[:take])
                chunks[0] = (due, data[take:])
                break
            chunks.popleft()
            parts.append(data)
            total += len(data)
            if max_bytes is not None and total >= max_bytes:
                break
        if len(parts) == 1:
            return parts[0]
        return b"".join(parts)

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            if not self._eof_sent:
                self._eof_sent = True
                self._out.put(None, trio.current_time())
            self._in.reader_gone = True
            self._in.chunks.clear()
            self._in.wake()
            self._link.end_closed()
        await trio.lowlevel.checkpoint()


@attrs.define(eq=False)
class _MemoryListener(Listener):
    network: MemoryNetwork
    name: str
    send: trio.MemorySendChannel[tuple[trio.abc.Stream, str, str]]
    receive: trio.MemoryReceiveChannel[tuple[trio.abc.Stream, str, str]]

    async def accept(self) -> tuple[trio.abc.Stream, str, str]:
        return await self.receive.receive()

    def close_now(self) -> None:
        """Stop listening; connections dialled but not accepted yet are refused."""
        if self.network._listeners.get(self.name) is self:
            del self.network._listeners[self.name]
        self.send.close()
        while True:
            try:
                stream, _source, _remote = self.receive.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                break
            if isinstance(stream, _MemoryStream):
                stream._link.cut(f"connection refused: {self.name} stopped listening")
        self.receive.close()

    async def aclose(self) -> None:
        self.close_now()
        await trio.lowlevel.checkpoint()


@attrs.define(eq=False)
class MemoryNetwork(Network):
    """Nodes of one process connected by in-memory links (see the module docstring).

    Addresses are `host:port` strings; port 0 picks the next free port of that host, in order,
    so a run is the same every time.  `delay(dialler, listener)` gives each direction's
    one-way latency (default: none), `bandwidth(sender, receiver)` its bytes per second
    (default: unlimited); both are asked once per connection, with `host:port` addresses.
    `late()`, if given, is asked for every chunk sent: the seconds it arrives late (a
    simulation's packet loss, which TCP turns into retransmission delay); order is kept.

    `dial` connects from `source` (the host the listener sees, and the per-source key of its
    limits); `host(name)` is a view of the network that dials from `name`, for a node that
    lives there.  `block(a, b)` cuts every connection between hosts `a` and `b` (both ends
    see it break) and refuses dials between them until `unblock(a, b)`; `close_host(h)`
    stops everything listening on `h` and cuts its connections, as a crash does.
    """

    delay: LinkDelay | None = None
    allows_plain: bool = True
    bandwidth: LinkRate | None = None
    late: Callable[[], float] | None = None
    _listeners: dict[str, _MemoryListener] = attrs.field(factory=dict)
    _ports: itertools.count[int] = attrs.field(factory=lambda: itertools.count(10000))
    _dial_ports: itertools.count[int] = attrs.field(factory=lambda: itertools.count(40000))
    # Open links by pair of hosts (sorted), and the pairs that are blocked.
    _links: dict[tuple[str, str], dict[_Link, None]] = attrs.field(factory=dict)
    _blocked: set[tuple[str, str]] = attrs.field(factory=set)

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
        hosts = _pair(source, host)
        if hosts in self._blocked:
            raise OSError(111, f"connection refused: the link between {source} and {host} is down")
        listener = self._listeners.get(name)
        if listener is None:
            raise OSError(111, f"connection refused: nothing listens on {name}")
        remote = format_host_port(source, next(self._dial_ports))
        forward = _Pipe(*self._link_params(remote, name), self.late)
        back = _Pipe(*self._link_params(name, remote), self.late)
        link = _Link(self, hosts, forward, back)
        dialler_end = _MemoryStream(link, forward, back)
        listener_end = _MemoryStream(link, back, forward)
        try:
            listener.send.send_nowait((listener_end, source, remote))
        except (trio.WouldBlock, trio.ClosedResourceError) as exc:
            raise OSError(111, f"connection refused by {name}") from exc
        self._links.setdefault(hosts, {})[link] = None
        return dialler_end

    def _link_params(self, sender: str, receiver: str) -> tuple[float, float]:
        delay = self.delay(sender, receiver) if self.delay is not None else 0.0
        rate = self.bandwidth(sender, receiver) if self.bandwidth is not None else math.inf
        return delay, rate

    def _forget(self, link: _Link) -> None:
        links = self._links.get(link.hosts)
        if links is not None:
            links.pop(link, None)
            if not links:
                del self._links[link.hosts]

    def addresses(self) -> Sequence[str]:
        return list(self._listeners)

    def host(self, name: str) -> MemoryHost:
        """This network as seen from host `name`: its dials come from there."""
        return MemoryHost(self, name)

    # -- link control -------------------------------------------------------------------

    def block(self, a: str, b: str) -> None:
        """Cut every connection between hosts `a` and `b`, and refuse dials between them."""
        hosts = _pair(a, b)
        self._blocked.add(hosts)
        for link in list(self._links.get(hosts, ())):
            link.cut(f"connection reset: the link between {a} and {b} went down")

    def unblock(self, a: str, b: str) -> None:
        """Let hosts `a` and `b` connect again (existing connections stay cut)."""
        self._blocked.discard(_pair(a, b))

    def blocked(self, a: str, b: str) -> bool:
        return _pair(a, b) in self._blocked

    def connections(self, a: str, b: str) -> int:
        """Open connections between hosts `a` and `b` (either may have dialled)."""
        return len(self._links.get(_pair(a, b), ()))

    def close_host(self, host: str) -> None:
        """Host `host` goes down: its listeners stop and its connections are cut."""
        for name, listener in list(self._listeners.items()):
            if _host_of(name) == host:
                listener.close_now()
        for hosts in [h for h in self._links if host in h]:
            for link in list(self._links.get(hosts, ())):
                link.cut(f"connection reset: {host} went down")


@attrs.define(eq=False)
class MemoryHost(Network):
    """A `MemoryNetwork` as one host sees it: dials come from `host` (see `MemoryNetwork`)."""

    network: MemoryNetwork
    name: str
    allows_plain: bool = True

    async def listen(self, host: str, port: int) -> list[Listener]:
        return await self.network.listen(host, port)

    async def dial(self, host: str, port: int) -> trio.abc.Stream:
        return await self.network.dial(host, port, source=self.name)
