"""NoiseStream and Connection over memory streams and TCP: conformance, limits, failures."""

from __future__ import annotations

import hashlib
import math

import pytest
import trio
import trio.testing

from trustix_p2p.core import wire
from trustix_p2p.core.keys import PrivateKey
from trustix_p2p.core.noise import LocalIdentity, NoiseError, NoiseSession, Role
from trustix_p2p.errors import ConfigError, DecodeError, RemoteProtocolError
from trustix_p2p.transport import Connection, NoiseStream, TransportLimits


def key(name: str) -> PrivateKey:
    return PrivateKey.from_seed(hashlib.sha256(b"transport test " + name.encode()).digest())


ALICE, BOB, MALLORY = key("alice"), key("bob"), key("mallory")
ALICE_ID = LocalIdentity.from_private_key(ALICE)
BOB_ID = LocalIdentity.from_private_key(BOB)


def wrap(a: trio.abc.Stream, b: trio.abc.Stream, **kw: float) -> tuple[NoiseStream, NoiseStream]:
    left = NoiseStream(a, NoiseSession(Role.INITIATOR, ALICE_ID, b"\x01" * 32), **kw)
    right = NoiseStream(b, NoiseSession(Role.RESPONDER, BOB_ID, b"\x02" * 32), **kw)
    return left, right


async def handshaken(
    pair: tuple[trio.abc.Stream, trio.abc.Stream],
) -> tuple[NoiseStream, NoiseStream]:
    left, right = wrap(*pair)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(left.do_handshake)
        nursery.start_soon(right.do_handshake)
    return left, right


async def memory_pair() -> tuple[NoiseStream, NoiseStream]:
    return await handshaken(trio.testing.memory_stream_pair())


async def lockstep_pair() -> tuple[NoiseStream, NoiseStream]:
    return await handshaken(trio.testing.lockstep_stream_pair())


async def lazy_memory_pair() -> tuple[NoiseStream, NoiseStream]:
    # No explicit handshake: the first send or receive runs it.
    return wrap(*trio.testing.memory_stream_pair())


async def tcp_socket_pair() -> tuple[trio.SocketStream, trio.SocketStream]:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    client = await trio.testing.open_stream_to_socket_listener(listeners[0])
    server = await listeners[0].accept()
    for listener in listeners:
        await listener.aclose()
    return client, server


async def tcp_pair() -> tuple[NoiseStream, NoiseStream]:
    return await handshaken(await tcp_socket_pair())


# ---- trio's own conformance checks -------------------------------------------------------------


async def test_conforms_to_half_closeable_stream_over_memory() -> None:
    await trio.testing.check_half_closeable_stream(memory_pair, lockstep_pair)


async def test_conforms_with_a_lazy_handshake() -> None:
    await trio.testing.check_half_closeable_stream(lazy_memory_pair, None)


async def test_conforms_to_half_closeable_stream_over_tcp() -> None:
    await trio.testing.check_half_closeable_stream(tcp_pair, None)


# ---- handshake and identity -------------------------------------------------------------------


async def test_handshake_reports_proven_keys() -> None:
    left, right = await memory_pair()
    assert left.peer == BOB.public_key and right.peer == ALICE.public_key
    assert left.handshake_hash == right.handshake_hash
    assert await left.do_handshake() == BOB.public_key  # idempotent


async def test_pinned_key_mismatch_fails_the_handshake() -> None:
    a, b = trio.testing.memory_stream_pair()
    left = NoiseStream.initiator(a, ALICE_ID, pinned=MALLORY.public_key)
    right = NoiseStream.responder(b, BOB_ID)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(right.do_handshake)
        with pytest.raises(RemoteProtocolError, match="expected pinned key"):
            await left.do_handshake()
        nursery.cancel_scope.cancel()
    with pytest.raises(trio.BrokenResourceError):
        await left.send_all(b"x")


async def test_handshake_timeout_is_exact_in_virtual_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    a, _silent = trio.testing.memory_stream_pair()
    stream = NoiseStream(
        a, NoiseSession(Role.RESPONDER, BOB_ID, b"\x02" * 32), handshake_timeout=10
    )
    start = trio.current_time()
    with pytest.raises(RemoteProtocolError, match="handshake did not complete within 10 s"):
        await stream.do_handshake()
    assert trio.current_time() - start == 10
    with pytest.raises(trio.BrokenResourceError):
        await stream.receive_some()


async def test_idle_timeout_is_exact_in_virtual_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    left, right = wrap(*trio.testing.memory_stream_pair(), idle_timeout=300)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(left.do_handshake)
        nursery.start_soon(right.do_handshake)
    start = trio.current_time()
    with pytest.raises(RemoteProtocolError, match="peer sent nothing for 300 s"):
        await right.receive_some()
    assert trio.current_time() - start == 300
    # An idle timeout consumed nothing: the stream still works.
    await left.send_all(b"late")
    assert await right.receive_some() == b"late"


async def test_peer_closing_during_handshake_is_a_protocol_error() -> None:
    a, b = trio.testing.memory_stream_pair()
    stream = NoiseStream.responder(a, BOB_ID)
    await b.send_all(b"\x00\x20" + b"\x09" * 20)  # part of message 1, then gone
    await b.aclose()
    with pytest.raises(trio.BrokenResourceError, match="during the handshake"):
        await stream.do_handshake()


# ---- truncation, tampering, bounded buffering ---------------------------------------------------


async def test_close_without_end_marker_is_broken_not_eof() -> None:
    left, right = await memory_pair()
    await left.send_all(b"partial")
    await left.transport_stream.aclose()  # no authenticated end-of-stream marker
    assert await right.receive_some() == b"partial"
    with pytest.raises(trio.BrokenResourceError, match="without the Noise end-of-stream"):
        await right.receive_some()
    with pytest.raises(trio.BrokenResourceError):
        await right.receive_some()


async def test_tampered_transport_bytes_raise_noise_error_then_broken() -> None:
    a, b = trio.testing.memory_stream_pair()
    _left, right = await handshaken((a, b))
    await a.send_all(b"\x00\x20" + b"\x00" * 32)  # a frame that does not authenticate
    with pytest.raises(NoiseError):
        await right.receive_some()
    with pytest.raises(trio.BrokenResourceError):
        await right.receive_some()


async def test_buffering_stays_bounded_when_the_reader_is_slow() -> None:
    left, right = await memory_pair()
    await left.send_all(b"z" * (4 * 1024 * 1024))
    got = 0
    bound = 2 * (2 + 65535) + 256 * 1024 + 4 * (2 + 65535)
    while got < 4 * 1024 * 1024:
        got += len(await right.receive_some(7000))
        assert right.buffered() <= bound
    assert got == 4 * 1024 * 1024


async def test_cancelled_send_breaks_sending_only(autojump_clock: trio.testing.MockClock) -> None:
    a, b = trio.testing.lockstep_stream_pair()
    left, right = await handshaken((a, b))
    with trio.move_on_after(1):
        await left.send_all(b"blocked")  # lockstep: nobody receives, so this blocks
    with pytest.raises(trio.BrokenResourceError, match="earlier send"):
        await left.send_all(b"more")
    # Receiving in the other direction still works.
    async with trio.open_nursery() as nursery:
        nursery.start_soon(right.send_all, b"reply")
        assert await left.receive_some() == b"reply"


async def test_large_writes_arrive_intact_over_tcp() -> None:
    left, right = await tcp_pair()
    data = bytes(range(256)) * 20_000  # 5 MB: many maximal Noise messages

    async def receive_all() -> bytes:
        got = bytearray()
        while len(got) < len(data):
            chunk = await right.receive_some()
            assert chunk
            got += chunk
        return bytes(got)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(left.send_all, data)
        assert await receive_all() == data
    await left.aclose()
    assert await right.receive_some() == b""
    await right.aclose()


# ---- Connection: typed messages -----------------------------------------------------------------


async def connection_pair(
    limits: TransportLimits | None = None,
) -> tuple[Connection, Connection, trio.testing.MemorySendStream]:
    a, b = trio.testing.memory_stream_pair()
    left, right = await handshaken((a, b))
    limits = limits or TransportLimits()
    return (
        Connection(left, left.peer, "left", limits),
        Connection(right, right.peer, "right", limits),
        a.send_stream,  # type: ignore[attr-defined]
    )


async def test_connection_round_trip_and_clean_end() -> None:
    left, right, _ = await connection_pair()
    await left.send_message(wire.Ping(1))
    await left.send_message(wire.Error("x" * 500))
    assert await right.receive_message() == wire.Ping(1)
    assert await right.receive_message() == wire.Error("x" * 500)
    await left.aclose()
    assert await right.receive_message() is None


async def test_connection_refuses_oversized_and_malformed_messages() -> None:
    left, right, _ = await connection_pair(TransportLimits(max_message_size=16))
    await left.stream.send_all(b"\x00\x00\x01\x00")  # announces 256 bytes
    with pytest.raises(DecodeError, match="256 bytes is above the 16-byte limit"):
        await right.receive_message()
    left2, right2, _ = await connection_pair()
    await left2.stream.send_all(b"\x00\x00\x00\x02\x91\x63")  # [99]
    with pytest.raises(DecodeError, match="unknown message type 99"):
        await right2.receive_message()


async def test_connection_end_mid_message_is_an_error() -> None:
    left, right, _ = await connection_pair()
    await left.stream.send_all(b"\x00\x00\x00\x09\x92")
    await left.aclose()
    with pytest.raises(RemoteProtocolError, match="middle of a message"):
        await right.receive_message()


async def test_writer_batches_messages_in_order() -> None:
    left, right, _ = await connection_pair()
    count = 5000
    async with trio.open_nursery() as nursery:
        nursery.start_soon(left.run_writer)
        for nonce in range(count):
            await left.send_message(wire.Ping(nonce))
        await left.flush()
        received = [await right.receive_message() for _ in range(count)]
        nursery.cancel_scope.cancel()
    assert received == [wire.Ping(n) for n in range(count)]
    with pytest.raises(trio.ClosedResourceError, match="writer has stopped"):
        await left.send_message(wire.Ping(0))


async def test_writer_failure_reaches_the_next_sender() -> None:
    left, right, _ = await connection_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(left.run_writer)
        await right.aclose()
        with pytest.raises(trio.BrokenResourceError, match="failed while sending"):
            for _ in range(100_000):
                await left.send_message(wire.Error("x" * 500))
                await trio.sleep(0)
        nursery.cancel_scope.cancel()


async def test_direct_mode_sends_without_a_writer() -> None:
    left, right, _ = await connection_pair()
    await left.send_message(wire.Pong(3))
    await left.flush()  # nothing queued: returns at once
    assert await right.receive_message() == wire.Pong(3)


def test_limits_must_be_positive() -> None:
    with pytest.raises(ConfigError, match="idle_timeout must be positive"):
        TransportLimits(idle_timeout=0)
    assert TransportLimits().max_message_size == 4 * 1024 * 1024
    assert TransportLimits(handshake_timeout=math.inf).handshake_timeout == math.inf
