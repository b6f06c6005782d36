"""Benchmarks of the Noise transport, each with its baseline measured in the same run.

    .venv/bin/python benchmarks/bench_noise.py [--quick]

1. Handshakes per second, both sides in one process: our sans-IO HandshakeState, our full
   NoiseSession (framing + identity payload checks), and the `noiseprotocol` package.
2. Bulk throughput of 64 KiB application messages over loopback TCP (Connection over
   NoiseStream), against raw trio TCP moving the same bytes.
3. Small (200-byte payload) messages one way on one connection, messages per second.

Issue 4's targets: (1) at least noiseprotocol's rate; (2) at least 250 MB/s and at least a
quarter of raw TCP; (3) at least 20,000 messages/s.  Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from functools import partial

import attrs
import trio
from noise.connection import Keypair, NoiseConnection

from trustix_p2p.core import wire
from trustix_p2p.core.keys import PrivateKey
from trustix_p2p.core.noise import (
    NEED_DATA,
    HandshakeComplete,
    HandshakeState,
    LocalIdentity,
    NoiseSession,
    Role,
)
from trustix_p2p.transport import Connection, connect, serve_noise

BULK_SIZE = 64 * 1024
SMALL_SIZE = 200

# A registry of its own, so benchmark messages never leak into the real protocol.
BENCH_REGISTRY = wire.MessageRegistry()


@BENCH_REGISTRY.register(100)
@attrs.frozen
class Blob(wire.Message):
    data: bytes = wire.field(wire.Bytes(0, 1 << 20))


def _rate(count: int, fn: Callable[[], None]) -> float:
    start = time.perf_counter()
    for _ in range(count):
        fn()
    return count / (time.perf_counter() - start)


def bench_handshakes(count: int) -> None:
    a_key = PrivateKey.from_seed(os.urandom(32))
    b_key = PrivateKey.from_seed(os.urandom(32))
    a_static, b_static = a_key.to_x25519(), b_key.to_x25519()

    def ours_raw() -> None:
        i = HandshakeState(
            Role.INITIATOR, static_private=a_static, ephemeral_private=os.urandom(32)
        )
        r = HandshakeState(
            Role.RESPONDER, static_private=b_static, ephemeral_private=os.urandom(32)
        )
        r.read_message(i.write_message(b""))
        i.read_message(r.write_message(b""))
        r.read_message(i.write_message(b""))
        i.split()
        r.split()

    a_id, b_id = LocalIdentity.from_private_key(a_key), LocalIdentity.from_private_key(b_key)

    def ours_session() -> None:
        i = NoiseSession(Role.INITIATOR, a_id, os.urandom(32), pinned=b_key.public_key)
        r = NoiseSession(Role.RESPONDER, b_id, os.urandom(32))
        r.receive_data(i.initiate())
        assert r.next_event() is NEED_DATA
        i.receive_data(r.data_to_send())
        assert isinstance(i.next_event(), HandshakeComplete)
        r.receive_data(i.data_to_send())
        assert isinstance(r.next_event(), HandshakeComplete)

    def theirs() -> None:
        i = NoiseConnection.from_name(b"Noise_XX_25519_ChaChaPoly_BLAKE2b")
        r = NoiseConnection.from_name(b"Noise_XX_25519_ChaChaPoly_BLAKE2b")
        i.set_as_initiator()
        r.set_as_responder()
        i.set_keypair_from_private_bytes(Keypair.STATIC, a_static)
        r.set_keypair_from_private_bytes(Keypair.STATIC, b_static)
        i.set_prologue(b"trustix-p2p/1")
        r.set_prologue(b"trustix-p2p/1")
        i.start_handshake()
        r.start_handshake()
        r.read_message(i.write_message())
        i.read_message(r.write_message())
        r.read_message(i.write_message())
        assert i.handshake_finished and r.handshake_finished

    # Interleave and repeat so that neither side profits from a warmer machine.
    results: dict[str, list[float]] = {"ours": [], "session": [], "noiseprotocol": []}
    for _ in range(3):
        results["noiseprotocol"].append(_rate(count, theirs))
        results["ours"].append(_rate(count, ours_raw))
        results["session"].append(_rate(count, ours_session))
    theirs_best = max(results["noiseprotocol"])
    print("handshakes/s (XX, both sides in one process, best of 3):")
    print(f"  noiseprotocol package          {theirs_best:10.0f}")
    for label, name in (("trustix HandshakeState", "ours"), ("trustix NoiseSession+id", "session")):
        best = max(results[name])
        print(f"  {label:<30} {best:10.0f}   ({best / theirs_best:.2f}x noiseprotocol)")


async def _raw_tcp_throughput(total: int) -> float:
    done = trio.Event()
    received = 0

    async def handler(stream: trio.SocketStream) -> None:
        nonlocal received
        while received < total:
            data = await stream.receive_some(256 * 1024)
            if not data:
                break
            received += len(data)
        done.set()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, host="127.0.0.1"), handler, 0)
        port = listeners[0].socket.getsockname()[1]
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        chunk = os.urandom(BULK_SIZE)
        start = time.perf_counter()
        for _ in range(total // BULK_SIZE):
            await stream.send_all(chunk)
        await done.wait()
        elapsed = time.perf_counter() - start
        await stream.aclose()
        nursery.cancel_scope.cancel()
    return total / elapsed


async def _noise_messages(count: int, size: int) -> tuple[float, float]:
    """Send `count` Blob messages of `size` bytes one way; (bytes/s, messages/s)."""
    server_key = PrivateKey.from_seed(os.urandom(32))
    client_key = PrivateKey.from_seed(os.urandom(32))
    done = trio.Event()
    got = 0

    async def handler(connection: Connection) -> None:
        nonlocal got
        while got < count:
            message = await connection.receive_message()
            if message is None:
                break
            got += 1
        done.set()

    async with trio.open_nursery() as nursery:
        bound = await nursery.start(
            partial(serve_noise, registry=BENCH_REGISTRY), ["127.0.0.1:0"], server_key, handler
        )
        connection = await connect(
            f"{server_key.public_key.to_base64()}@{bound[0]}",
            client_key,
            registry=BENCH_REGISTRY,
        )
        message = Blob(os.urandom(size))
        start = time.perf_counter()
        for _ in range(count):
            await connection.send_message(message)
        await done.wait()
        elapsed = time.perf_counter() - start
        await connection.aclose()
        nursery.cancel_scope.cancel()
    return count * size / elapsed, count / elapsed


async def bench_stream(bulk_count: int, small_count: int) -> None:
    raw = max([await _raw_tcp_throughput(bulk_count * BULK_SIZE) for _ in range(3)])
    noise = max([(await _noise_messages(bulk_count, BULK_SIZE))[0] for _ in range(3)])
    print("bulk 64 KiB messages over loopback TCP (one process, best of 3):")
    print(f"  raw trio TCP                   {raw / 1e6:10.1f} MB/s")
    print(
        f"  Noise Connection               {noise / 1e6:10.1f} MB/s   "
        f"({noise / raw:.2f} of raw; targets >= 250 MB/s and >= 0.25)"
    )
    small = max([(await _noise_messages(small_count, SMALL_SIZE))[1] for _ in range(3)])
    print("small messages (200-byte payload), one way, one connection (best of 3):")
    print(f"  Noise Connection               {small:10.0f} msg/s (target >= 20000)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer iterations")
    args = parser.parse_args()
    scale = 5 if args.quick else 1
    bench_handshakes(1000 // scale)
    trio.run(bench_stream, 8000 // scale, 100_000 // scale)


if __name__ == "__main__":
    main()
