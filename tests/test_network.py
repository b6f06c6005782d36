"""The network seam: the same serve_noise/connect over TCP and over the in-memory network,
with Noise or (in memory only) without, in virtual time and with seeded randomness."""

from __future__ import annotations

import random

import pytest
import trio
import trio.testing

from tests.factories import key
from trustix_p2p.core import wire
from trustix_p2p.errors import ConfigError, RemoteProtocolError
from trustix_p2p.transport import PeerUnreachableError, connect, ping, serve_noise
from trustix_p2p.transport.network import TCP, MemoryNetwork

SERVER, CLIENT = key("net server"), key("net client")


def seeded(seed: int):  # type: ignore[no-untyped-def]
    rng = random.Random(seed)
    return lambda n: rng.randbytes(n)


@pytest.mark.parametrize("secure", [True, False])
async def test_ping_over_the_memory_network_in_virtual_time(
    autojump_clock: trio.testing.MockClock, secure: bool
) -> None:
    network = MemoryNetwork(delay=lambda _a, _b: 0.025)
    async with trio.open_nursery() as nursery:
        (address,) = await nursery.start(
            lambda task_status: serve_noise(
                ["10.0.0.1:0"], SERVER, network=network, secure=secure, task_status=task_status
            )
        )
        pinned = f"{SERVER.public_key.to_base64()}@{address}"
        connection = await connect(pinned, CLIENT, network=network, secure=secure)
        assert connection.peer_key == SERVER.public_key
        # One round trip is two 25 ms hops, exactly, in virtual time.
        assert await ping(connection, 7) == pytest.approx(0.05)
        await connection.aclose()
        nursery.cancel_scope.cancel()


async def test_a_pinned_key_is_enforced_without_noise_too(
    autojump_clock: trio.testing.MockClock,
) -> None:
    network = MemoryNetwork()
    async with trio.open_nursery() as nursery:
        (address,) = await nursery.start(
            lambda task_status: serve_noise(
                ["10.0.0.1:0"], SERVER, network=network, secure=False, task_status=task_status
            )
        )
        with pytest.raises(RemoteProtocolError, match="pinned"):
            await connect(
                f"{CLIENT.public_key.to_base64()}@{address}", CLIENT, network=network, secure=False
            )
        nursery.cancel_scope.cancel()


async def test_nothing_listening_is_unreachable_and_ports_are_handed_out_in_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    network = MemoryNetwork()
    with pytest.raises(PeerUnreachableError):
        await connect("10.0.0.9:1", CLIENT, network=network)
    first = await network.listen("10.0.0.1", 0)
    second = await network.listen("10.0.0.1", 0)
    assert [first[0].name, second[0].name] == ["10.0.0.1:10000", "10.0.0.1:10001"]
    with pytest.raises(OSError, match="in use"):
        await network.listen("10.0.0.1", 10000)


async def test_tcp_never_goes_without_noise() -> None:
    with pytest.raises(ConfigError, match="in-memory network"):
        await serve_noise(["127.0.0.1:0"], SERVER, network=TCP, secure=False)
    async with trio.open_nursery() as nursery:
        (address,) = await nursery.start(
            lambda task_status: serve_noise(["127.0.0.1:0"], SERVER, task_status=task_status)
        )
        with pytest.raises(ConfigError, match="in-memory network"):
            await connect(address, CLIENT, secure=False)
        nursery.cancel_scope.cancel()


async def test_seeded_ephemeral_keys_make_the_bytes_on_the_wire_repeat(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def one_run() -> bytes:
        network = MemoryNetwork()
        seen = bytearray()
        original = network.dial

        async def spying_dial(host: str, port: int, **kw: str):  # type: ignore[no-untyped-def]
            stream = await original(host, port, **kw)
            inner = stream.send_all

            async def send_all(data: bytes | bytearray | memoryview) -> None:
                seen.extend(data)
                await inner(data)

            stream.send_all = send_all  # type: ignore[method-assign]
            return stream

        network.dial = spying_dial  # type: ignore[method-assign]
        async with trio.open_nursery() as nursery:
            (address,) = await nursery.start(
                lambda task_status: serve_noise(
                    ["10.0.0.1:0"],
                    SERVER,
                    network=network,
                    random_bytes=seeded(2),
                    task_status=task_status,
                )
            )
            connection = await connect(address, CLIENT, network=network, random_bytes=seeded(1))
            await connection.send_message(wire.Ping(1))
            await connection.aclose()
            nursery.cancel_scope.cancel()
        return bytes(seen)

    first, second = await one_run(), await one_run()
    assert len(first) > 100 and first == second
