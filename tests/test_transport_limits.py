"""Server limits under floods: admission and eviction, per-source limits, send timeouts.

Timeouts are pinned in virtual time (`MockClock`) over bounded in-memory pipes, whose
sender can be made to wait exactly as on a socket whose peer stopped reading.  What is about
sockets runs over real loopback TCP, with attackers bound to other 127/8 source addresses
(Linux routes all of 127.0.0.0/8 to the loopback interface).
"""

from __future__ import annotations

import errno
import hashlib
import itertools
import logging
import math
import select
import socket
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import attrs
import pytest
import trio
import trio.testing

from tests.logs import fields_of, render
from trustix_p2p.core import wire
from trustix_p2p.core.keys import PrivateKey
from trustix_p2p.core.noise import LocalIdentity, NoiseSession, Role
from trustix_p2p.errors import ConfigError, RemoteProtocolError
from trustix_p2p.transport import (
    CONNECTION_ERRORS,
    Connection,
    NoiseStream,
    PeerUnreachableError,
    TransportLimits,
    connect,
    parse_listen_address,
    ping,
    run_connection,
    serve_noise,
)
from trustix_p2p.transport.admission import Admission, Admitted, Refused, TicketState
from trustix_p2p.transport.server import _Server, answer_pings


def key(name: str) -> PrivateKey:
    return PrivateKey.from_seed(hashlib.sha256(b"limits test " + name.encode()).digest())


SERVER, CLIENT = key("server"), key("client")
SERVER_ID = LocalIdentity.from_private_key(SERVER)
CLIENT_ID = LocalIdentity.from_private_key(CLIENT)
SERVER_LOG = "trustix_p2p.transport.server"


# ---- a bounded pipe: a socket buffer in virtual time ---------------------------------------


@attrs.define(eq=False)
class Pipe:
    """One direction of a connection that holds at most `capacity` unread bytes.

    `last_progress` is when the sender last got bytes in; `send_closed_at` is when the
    sending side was closed (for a server's outgoing pipe: when it dropped the connection).
    """

    capacity: int
    buffer: bytearray = attrs.field(factory=bytearray)
    last_progress: float | None = None
    send_closed_at: float | None = None
    receive_closed: bool = False
    lot: trio.lowlevel.ParkingLot = attrs.field(factory=trio.lowlevel.ParkingLot)


class PipeSendStream(trio.abc.SendStream):
    def __init__(self, pipe: Pipe) -> None:
        self.pipe = pipe

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        pipe = self.pipe
        await trio.lowlevel.checkpoint_if_cancelled()
        view = memoryview(data)
        while view:
            if pipe.send_closed_at is not None:
                raise trio.ClosedResourceError("this pipe was closed")
            if pipe.receive_closed:
                raise trio.BrokenResourceError("the receiver closed the pipe")
            room = pipe.capacity - len(pipe.buffer)
            if room > 0:
                pipe.buffer += view[:room]
                view = view[room:]
                pipe.last_progress = trio.current_time()
                pipe.lot.unpark_all()
            else:
                await pipe.lot.park()
        await trio.lowlevel.cancel_shielded_checkpoint()

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        if self.pipe.send_closed_at is None:
            self.pipe.send_closed_at = trio.current_time()
        self.pipe.lot.unpark_all()
        await trio.lowlevel.checkpoint()


class PipeReceiveStream(trio.abc.ReceiveStream):
    def __init__(self, pipe: Pipe) -> None:
        self.pipe = pipe

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        pipe = self.pipe
        await trio.lowlevel.checkpoint_if_cancelled()
        while not pipe.buffer:
            if pipe.receive_closed:
                raise trio.ClosedResourceError("this pipe was closed")
            if pipe.send_closed_at is not None:
                await trio.lowlevel.cancel_shielded_checkpoint()
                return b""
            await pipe.lot.park()
        size = max_bytes or len(pipe.buffer)
        data = bytes(pipe.buffer[:size])
        del pipe.buffer[:size]
        pipe.lot.unpark_all()
        await trio.lowlevel.cancel_shielded_checkpoint()
        return data

    async def aclose(self) -> None:
        self.pipe.receive_closed = True
        self.pipe.lot.unpark_all()
        await trio.lowlevel.checkpoint()


@attrs.frozen
class PipePair:
    client: trio.StapledStream[PipeSendStream, PipeReceiveStream]
    server: trio.StapledStream[PipeSendStream, PipeReceiveStream]
    to_server: Pipe
    to_client: Pipe


def pipe_pair(capacity: int = 4096) -> PipePair:
    up, down = Pipe(capacity), Pipe(capacity)
    return PipePair(
        trio.StapledStream(PipeSendStream(up), PipeReceiveStream(down)),
        trio.StapledStream(PipeSendStream(down), PipeReceiveStream(up)),
        up,
        down,
    )


async def client_connection(
    stream: trio.abc.Stream, limits: TransportLimits | None = None
) -> Connection:
    limits = limits or TransportLimits()
    noise = NoiseStream.initiator(
        stream,
        CLIENT_ID,
        handshake_timeout=limits.handshake_timeout,
        idle_timeout=limits.idle_timeout,
        send_timeout=limits.send_timeout,
    )
    peer = await noise.do_handshake()
    return Connection(noise, peer, "server", limits)


def server(limits: TransportLimits | None = None) -> _Server:
    return _Server(SERVER_ID, answer_pings, limits or TransportLimits(), wire.REGISTRY)


# ---- TransportLimits ---------------------------------------------------------------------------


def test_new_limits_have_their_documented_defaults() -> None:
    limits = TransportLimits()
    assert limits.handshake_timeout == 5.0
    assert limits.send_timeout == 30.0
    assert limits.max_pending_handshakes == 64
    assert limits.max_connections_per_source == 16
    assert limits.max_connections == 256
    assert limits.idle_timeout == 300.0


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("send_timeout", 0),
        ("send_timeout", -1.0),
        ("max_pending_handshakes", 0),
        ("max_pending_handshakes", 2.5),
        ("max_connections_per_source", 0),
        ("max_connections_per_source", True),
        ("max_connections", 0),
    ],
)
def test_limits_are_validated(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=field):
        TransportLimits(**{field: value})  # type: ignore[arg-type]


def test_send_timeout_may_be_infinite() -> None:
    assert TransportLimits(send_timeout=math.inf).send_timeout == math.inf


# ---- Admission: the pure decisions ------------------------------------------------------------


def admitted(decision: Admitted | Refused) -> Admitted:
    assert isinstance(decision, Admitted), decision
    return decision


def test_source_at_its_limit_is_refused_and_other_sources_are_admitted() -> None:
    admission = Admission(max_pending=10, max_established=10, max_per_source=2)
    first = admitted(admission.arrive("10.0.0.2")).ticket
    admitted(admission.arrive("10.0.0.2"))
    refusal = admission.arrive("10.0.0.2")
    assert refusal == Refused("10.0.0.2 already holds 2 connections (limit 2)")
    assert admitted(admission.arrive("10.0.0.3")).evicted is None
    # Established connections count against the source too.
    assert admission.establish(first) is None
    assert isinstance(admission.arrive("10.0.0.2"), Refused)
    admission.release(first)
    assert admitted(admission.arrive("10.0.0.2")).ticket.source == "10.0.0.2"


def test_full_pending_pool_evicts_the_oldest_of_the_largest_holder() -> None:
    admission = Admission(max_pending=4, max_established=10, max_per_source=10)
    flood = [admitted(admission.arrive("10.0.0.66")).ticket for _ in range(3)]
    other = admitted(admission.arrive("10.0.0.7")).ticket
    honest = admitted(admission.arrive("10.0.0.1"))
    assert honest.evicted is flood[0]
    assert flood[0].state is TicketState.EVICTED
    assert admission.pending == 4
    assert admission.pending_from("10.0.0.66") == 2
    assert admission.connections_from("10.0.0.66") == 2
    # The next newcomer evicts the flood again, never the single handshakes.
    assert admitted(admission.arrive("10.0.0.9")).evicted is flood[1]
    assert other.state is TicketState.PENDING
    assert honest.ticket.state is TicketState.PENDING
    # Releasing an evicted ticket (its task closing) changes nothing.
    admission.release(flood[0])
    assert admission.pending == 4
    assert admission.connections_from("10.0.0.66") == 1


def test_eviction_tie_goes_to_the_source_with_the_oldest_pending_handshake() -> None:
    admission = Admission(max_pending=4, max_established=10, max_per_source=10)
    a1 = admitted(admission.arrive("10.0.0.2")).ticket
    b1 = admitted(admission.arrive("10.0.0.3")).ticket
    a2 = admitted(admission.arrive("10.0.0.2")).ticket
    b2 = admitted(admission.arrive("10.0.0.3")).ticket
    assert admitted(admission.arrive("10.0.0.1")).evicted is a1  # 2 each: a1 is oldest
    assert admitted(admission.arrive("10.0.0.4")).evicted is b1  # now 3.x holds the most
    assert admitted(admission.arrive("10.0.0.5")).evicted is a2  # 1 each: a2 is oldest
    assert b2.state is TicketState.PENDING


def test_established_limit_refuses_before_and_after_the_handshake() -> None:
    admission = Admission(max_pending=10, max_established=1, max_per_source=10)
    first = admitted(admission.arrive("10.0.0.2")).ticket
    second = admitted(admission.arrive("10.0.0.3")).ticket
    assert admission.establish(first) is None
    # Now full: a newcomer is refused at once...
    assert admission.arrive("10.0.0.4") == Refused("1 connections established (limit 1)")
    # ...and one whose handshake was already under way is refused when it completes.
    assert admission.establish(second) == Refused("1 connections established (limit 1)")
    assert admission.connections_from("10.0.0.3") == 1  # until its task closes it
    admission.release(second)
    admission.release(second)
    assert admission.connections_from("10.0.0.3") == 0
    admission.release(first)
    assert admission.established == 0
    assert admitted(admission.arrive("10.0.0.4")).evicted is None


# ---- timeouts in virtual time -----------------------------------------------------------------


async def test_silent_connection_is_dropped_at_the_default_handshake_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    srv = server()
    pair = pipe_pair()
    start = trio.current_time()
    await srv.handle_stream(pair.server, "10.0.0.2", "10.0.0.2:1")
    assert pair.to_client.send_closed_at == start + 5
    assert srv.admission.connections_from("10.0.0.2") == 0


async def test_eviction_closes_a_pending_handshake_and_lets_the_newcomer_in(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    srv = server(TransportLimits(max_pending_handshakes=3))
    silent = [pipe_pair() for _ in range(3)]
    honest = pipe_pair()
    with caplog.at_level(logging.INFO, logger=SERVER_LOG):
        async with trio.open_nursery() as nursery:
            for n, pair in enumerate(silent):
                nursery.start_soon(srv.handle_stream, pair.server, "10.0.0.66", f"10.0.0.66:{n}")
                await trio.sleep(0.25)  # arrivals in this order
            await trio.sleep(0.25)
            assert srv.admission.pending == 3
            nursery.start_soon(srv.handle_stream, honest.server, "10.0.0.1", "10.0.0.1:1")
            connection = await client_connection(honest.client)
            assert await ping(connection, 1) == 0  # virtual time: nothing waited
            # The oldest silent one was closed at once, the others are still pending.
            assert [p.to_client.send_closed_at for p in silent] == [1, None, None]
            assert srv.admission.established == 1
            assert srv.admission.pending == 2
            nursery.cancel_scope.cancel()
    evictions = [r for r in caplog.records if "evicting" in r.getMessage()]
    assert [(r.getMessage(), fields_of(r)) for r in evictions] == [
        (
            "evicting a pending handshake to admit a newcomer",
            {
                "addr": "10.0.0.66:0",
                "newcomer": "10.0.0.1:1",
                "pending": 3,
                "limit": 3,
                "from_source": 3,
                "source": "10.0.0.66",
            },
        )
    ]
    assert all(r.exc_info is None for r in caplog.records)


async def test_handshake_completing_at_the_connection_limit_is_refused_with_an_error(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    srv = server(TransportLimits(max_connections=1))
    first, second = pipe_pair(), pipe_pair()
    with caplog.at_level(logging.INFO, logger=SERVER_LOG):
        async with trio.open_nursery() as nursery:
            # Both are admitted as pending: nothing is established yet.
            nursery.start_soon(srv.handle_stream, first.server, "10.0.0.2", "10.0.0.2:1")
            nursery.start_soon(srv.handle_stream, second.server, "10.0.0.3", "10.0.0.3:1")
            await trio.sleep(1)
            kept = await client_connection(first.client)
            await trio.sleep(1)
            late = await client_connection(second.client)
            with trio.fail_after(10):
                assert await late.receive_message() == wire.Error(
                    "1 connections established (limit 1)"
                )
                assert await late.receive_message() is None
            assert await ping(kept, 1) == 0
            assert srv.admission.connections_from("10.0.0.3") == 0
            nursery.cancel_scope.cancel()
    (refusal,) = [r for r in caplog.records if r.getMessage().startswith("refusing")]
    assert refusal.getMessage() == "refusing connection after the handshake"
    assert fields_of(refusal) == {
        "peer": CLIENT.public_key.to_base64(),
        "addr": "10.0.0.3:1",
        "reason": "1 connections established (limit 1)",
    }


def message_one() -> bytes:
    return NoiseSession(Role.INITIATOR, CLIENT_ID, b"\x01" * 32).initiate()


async def test_responder_handshake_sends_are_bounded_by_the_send_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    pair = pipe_pair(capacity=16)  # message 2 does not fit, and nobody reads
    stream = NoiseStream.responder(
        pair.server, SERVER_ID, handshake_timeout=math.inf, send_timeout=30
    )
    start = trio.current_time()
    with trio.fail_after(1000):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pair.client.send_all, message_one())
            with pytest.raises(RemoteProtocolError, match="peer did not read for 30 s"):
                await stream.do_handshake()
            nursery.cancel_scope.cancel()
    assert trio.current_time() - start == 30
    with pytest.raises(trio.BrokenResourceError):
        await stream.send_all(b"x")


async def pipe_connections(
    capacity: int, *, stream_send_timeout: float, limits: TransportLimits
) -> tuple[Connection, Connection, PipePair]:
    pair = pipe_pair(capacity)
    left = NoiseStream.initiator(pair.client, CLIENT_ID, send_timeout=stream_send_timeout)
    right = NoiseStream.responder(pair.server, SERVER_ID, send_timeout=stream_send_timeout)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(left.do_handshake)
        nursery.start_soon(right.do_handshake)
    return (
        Connection(left, left.peer, "left", limits),
        Connection(right, right.peer, "right", limits),
        pair,
    )


async def test_direct_send_to_a_peer_that_never_reads_breaks_after_the_send_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    left, _right, pair = await pipe_connections(
        64 * 1024, stream_send_timeout=30, limits=TransportLimits()
    )
    with trio.fail_after(1000), pytest.raises(RemoteProtocolError, match="did not read for 30 s"):
        for _ in range(1000):  # 500 kB into a 64 KiB pipe
            await left.send_message(wire.Error("x" * 500))
    assert pair.to_server.last_progress is not None
    assert trio.current_time() - pair.to_server.last_progress == 30
    with pytest.raises(trio.BrokenResourceError, match="earlier send"):
        await left.send_message(wire.Ping(1))


async def test_queued_sender_waits_at_most_send_timeout_for_room(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The stream itself has no send timeout here: only the sender's wait bounds it.
    left, _right, pair = await pipe_connections(
        64 * 1024, stream_send_timeout=math.inf, limits=TransportLimits(send_timeout=30)
    )
    with trio.fail_after(1000):
        await queue_until_the_send_timeout(left)
    assert pair.to_server.last_progress is not None
    assert trio.current_time() - pair.to_server.last_progress == 30
    with pytest.raises(trio.BrokenResourceError, match="while sending: peer did not read"):
        await left.send_message(wire.Ping(1))
    assert isinstance(left.writer_error, RemoteProtocolError)


async def queue_until_the_send_timeout(left: Connection) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(left.run_writer)
        with pytest.raises(RemoteProtocolError, match="peer did not read for 30 s"):
            for _ in range(10_000):
                await left.send_message(wire.Error("x" * 500))
        # The nursery is not cancelled: the writer must have stopped by itself.


async def test_run_connection_ends_a_receiving_body_when_the_writer_times_out(
    autojump_clock: trio.testing.MockClock,
) -> None:
    left, _right, pair = await pipe_connections(
        4096, stream_send_timeout=30, limits=TransportLimits(idle_timeout=300)
    )

    async def body(connection: Connection) -> None:
        for nonce in range(100):  # ~1.4 kB queued: no sender waits, the writer is stuck
            await connection.send_message(wire.Error("y" * 100 + str(nonce)))
        await connection.receive_message()  # the peer sends nothing: would wait 300 s

    with (
        trio.fail_after(1000),
        pytest.raises(trio.BrokenResourceError, match="while sending: peer did not read for 30"),
    ):
        await run_connection(left, body)
    assert pair.to_server.last_progress is not None
    assert trio.current_time() - pair.to_server.last_progress == 30


async def test_receiving_a_buffer_full_of_messages_lets_other_tasks_run() -> None:
    left, right, _pair = await pipe_connections(
        1 << 20, stream_send_timeout=math.inf, limits=TransportLimits()
    )
    await left.stream.send_all(b"".join(wire.encode_message(wire.Ping(n)) for n in range(500)))
    assert await right.receive_message() == wire.Ping(0)  # the rest is now buffered
    other_turns = 0

    async def other() -> None:
        nonlocal other_turns
        while True:
            other_turns += 1
            await trio.sleep(0)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(other)
        for n in range(1, 500):
            assert await right.receive_message() == wire.Ping(n)
        # A flooding peer keeps the buffer full; it must not keep every other task waiting
        # (without a yield, `other` would not have run at all).
        assert other_turns >= 3
        nursery.cancel_scope.cancel()


async def test_ping_flooder_that_never_reads_is_dropped_and_an_honest_peer_is_served(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    limits = TransportLimits()
    srv = server(limits)
    flood, honest = pipe_pair(capacity=4096), pipe_pair(capacity=4096)
    flood_ended: list[float] = []

    async def flooder(connection: Connection) -> None:
        # 100 Pings a second, never reading a Pong; ends when the server drops it.
        with trio.fail_after(1000):
            try:
                for nonce in itertools.count():
                    await connection.send_message(wire.Ping(nonce))
                    await trio.sleep(0.01)
            except trio.BrokenResourceError:
                flood_ended.append(trio.current_time())

    with caplog.at_level(logging.INFO, logger=SERVER_LOG):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(srv.handle_stream, flood.server, "10.0.0.66", "10.0.0.66:1")
            nursery.start_soon(srv.handle_stream, honest.server, "10.0.0.1", "10.0.0.1:1")
            nursery.start_soon(flooder, await client_connection(flood.client, limits))
            good = await client_connection(honest.client, limits)
            answered = 0
            for nonce in range(120):
                with trio.fail_after(1):
                    await ping(good, nonce)
                answered += 1
                await trio.sleep(1)
            nursery.cancel_scope.cancel()
    assert answered == 120
    stalled, dropped = flood.to_client.last_progress, flood.to_client.send_closed_at
    assert stalled is not None and dropped is not None
    assert limits.send_timeout <= dropped - stalled <= limits.send_timeout + 1
    assert flood_ended and flood_ended[0] - dropped <= 1
    assert srv.admission.connections_from("10.0.0.66") == 0
    text = render(caplog.records)
    assert "(limit" not in text  # dropped for not reading, not refused
    assert "peer did not read for 30 s" in text


# ---- real sockets ------------------------------------------------------------------------------


def loopback_alias_works() -> bool:
    probe = socket.socket()
    try:
        probe.bind(("127.0.0.2", 0))
    except OSError:
        return False
    finally:
        probe.close()
    return True


needs_loopback_aliases = pytest.mark.skipif(
    not loopback_alias_works(), reason="cannot bind 127.0.0.2 (not Linux loopback)"
)


@asynccontextmanager
async def running_server(limits: TransportLimits | None = None) -> AsyncIterator[str]:
    async with trio.open_nursery() as nursery:
        bound = await nursery.start(
            lambda task_status: serve_noise(
                ["127.0.0.1:0"], SERVER, limits=limits, task_status=task_status
            )
        )
        yield bound[0]
        nursery.cancel_scope.cancel()


async def connect_from(source: str, address: str) -> Connection:
    """Like `connect()`, but from local address `source`."""
    host, port = parse_listen_address(address)
    sock = trio.socket.socket()
    try:
        await sock.bind((source, 0))
        await sock.connect((host, port))
    except BaseException:
        sock.close()
        raise
    stream = NoiseStream.initiator(trio.SocketStream(sock), CLIENT_ID, handshake_timeout=10)
    try:
        peer = await stream.do_handshake()
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    return Connection(stream, peer, address)


@needs_loopback_aliases
async def test_per_source_limit_refuses_only_the_extra_connection_from_that_source(
    caplog: pytest.LogCaptureFixture,
) -> None:
    limits = TransportLimits(max_connections_per_source=3)
    with caplog.at_level(logging.INFO, logger=SERVER_LOG):
        async with running_server(limits) as address:
            held = [await connect_from("127.0.0.2", address) for _ in range(3)]
            for nonce, connection in enumerate(held):
                await ping(connection, nonce)
            with pytest.raises(trio.BrokenResourceError):
                await connect_from("127.0.0.2", address)
            other = await connect_from("127.0.0.3", address)
            await ping(other, 9)
            await other.aclose()
            # A slot freed on that source is usable again (once the server saw the close).
            await held.pop().aclose()
            with trio.fail_after(10):
                while True:
                    try:
                        held.append(await connect_from("127.0.0.2", address))
                        break
                    except trio.BrokenResourceError:
                        await trio.sleep(0.01)
            await ping(held[-1], 10)
            for connection in held:
                await connection.aclose()
    refusals = [r for r in caplog.records if r.getMessage().startswith("refusing")]
    assert refusals
    assert all(
        r.getMessage() == "refusing connection"
        and str(fields_of(r)["addr"]).startswith("127.0.0.2:")
        and fields_of(r)["reason"] == "127.0.0.2 already holds 3 connections (limit 3)"
        for r in refusals
    ), render(refusals)


class SilentFlood:
    """Holds `count` TCP connections that never send a byte, from `sources` in turn, and
    reopens any the server closes, in rounds of at least `round_seconds`.

    Runs in a thread; bounded by `stop`, `max_seconds` and `max_opens`.  Every socket it
    opens is closed before `run` returns.
    """

    def __init__(
        self,
        address: str,
        sources: list[str],
        count: int = 300,
        *,
        max_seconds: float = 30.0,
        max_opens: int = 100_000,
        round_seconds: float = 0.01,
    ) -> None:
        host, port = parse_listen_address(address)
        self.target = (host, port)
        self.sources = sources
        self.count = count
        self.max_seconds = max_seconds
        self.max_opens = max_opens
        self.round_seconds = round_seconds
        self.stop = threading.Event()
        self.opened = 0
        self.closed_by_server = 0
        self.open_errors = 0
        self.held_at_once = 0

    def _open(self, slot: int) -> socket.socket | None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            sock.bind((self.sources[slot % len(self.sources)], 0))
            status = sock.connect_ex(self.target)
        except OSError:
            sock.close()
            self.open_errors += 1
            return None
        if status not in (0, errno.EINPROGRESS):
            sock.close()
            self.open_errors += 1
            return None
        self.opened += 1
        return sock

    def run(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        held: dict[int, socket.socket] = {}  # slot -> socket
        slot_of: dict[int, int] = {}  # fd -> slot
        poller = select.poll()
        try:
            while not self.stop.is_set() and time.monotonic() < deadline:
                started = time.monotonic()
                for slot in range(self.count):
                    if slot in held or self.opened >= self.max_opens:
                        continue
                    sock = self._open(slot)
                    if sock is not None:
                        held[slot] = sock
                        slot_of[sock.fileno()] = slot
                        poller.register(sock, select.POLLIN | select.POLLERR | select.POLLHUP)
                self.held_at_once = max(self.held_at_once, len(held))
                # Any event on a socket that never sends: the server closed or reset it.
                for fd, _events in poller.poll(self.round_seconds * 1000):
                    poller.unregister(fd)
                    held.pop(slot_of.pop(fd)).close()
                    self.closed_by_server += 1
                time.sleep(max(0.0, self.round_seconds - (time.monotonic() - started)))
        finally:
            for sock in held.values():
                sock.close()


async def honest_pings(address: str, count: int) -> tuple[int, int]:
    """Connect, handshake, Ping/Pong, close, `count` times: (succeeded, attempted).

    A count, not a time window: how many fit in a second depends on the machine's load."""
    ok = attempts = 0
    while attempts < count:
        attempts += 1
        with trio.move_on_after(10):
            try:
                connection = await connect(address, CLIENT)
                async with connection:
                    await ping(connection, attempts)
                ok += 1
            except (PeerUnreachableError, *CONNECTION_ERRORS):
                pass
    return ok, attempts


async def run_flood_against_honest_pings(
    sources: list[str], caplog: pytest.LogCaptureFixture
) -> tuple[SilentFlood, int, int]:
    with caplog.at_level(logging.INFO, logger=SERVER_LOG):
        async with running_server() as address:
            flood = SilentFlood(address, sources, max_seconds=300)
            thread = threading.Thread(target=flood.run, name="silent-flood", daemon=True)
            thread.start()
            try:
                # Let the flood take every slot it can before the honest client starts.
                with trio.move_on_after(5):
                    while flood.opened < flood.count:
                        await trio.sleep(0.01)
                ok, attempts = await honest_pings(address, count=40)
            finally:
                flood.stop.set()
                await trio.to_thread.run_sync(thread.join, 30)
            assert not thread.is_alive()
    return flood, ok, attempts


@needs_loopback_aliases
async def test_silent_flood_from_one_source_does_not_lock_out_honest_pings(
    caplog: pytest.LogCaptureFixture,
) -> None:
    flood, ok, attempts = await run_flood_against_honest_pings(["127.0.0.2"], caplog)
    assert flood.held_at_once == 300  # the attack was on: 300 connections open at once
    assert flood.closed_by_server > 0
    assert "127.0.0.2 already holds 16 connections (limit 16)" in render(caplog.records)
    assert ok / attempts >= 0.9, (ok, attempts)


@needs_loopback_aliases
async def test_silent_flood_from_many_sources_does_not_lock_out_honest_pings(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sources = [f"127.0.0.{n}" for n in range(2, 41)]
    flood, ok, attempts = await run_flood_against_honest_pings(sources, caplog)
    assert flood.held_at_once == 300
    assert "evicting a pending handshake to admit a newcomer addr=127.0.0." in render(
        caplog.records
    )
    assert ok / attempts >= 0.9, (ok, attempts)
