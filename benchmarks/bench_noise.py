"""Benchmarks of the Noise transport, each with its baseline measured in the same run.

    .venv/bin/python benchmarks/bench_noise.py [--quick]

1. Handshakes per second, both sides in one process: our sans-IO HandshakeState, our full
   NoiseSession (framing + identity payload checks), and the `noiseprotocol` package.
2. Bulk throughput of 64 KiB application messages over loopback TCP (Connection over
   NoiseStream), against raw trio TCP moving the same bytes.
3. Small (200-byte payload) messages one way on one connection, messages per second.

2 and 3 run twice: with the receiving server in this process (one core does the sender's
and the receiver's work, including both sides of the cryptography) and in a child process,
which is how two nodes run.

Issue 4's targets: (1) at least noiseprotocol's rate; (2) at least 250 MB/s and at least a
quarter of raw TCP; (3) at least 20,000 messages/s.  Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
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
from trustix_p2p.transport import Connection, open_connection, serve_noise

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


# ---- stream benchmarks: a sink server (in this process or a child process) and a sender ----


@BENCH_REGISTRY.register(101)
@attrs.frozen
class Done(wire.Message):
    received: int = wire.field(wire.Integer())


SINK_KEY = PrivateKey.from_seed(b"\x07" * 32)


async def _raw_sink(stream: trio.SocketStream) -> None:
    # Protocol: 8-byte total, then that many bytes; answered with one byte once all arrived.
    header = b""
    while len(header) < 8:
        header += await stream.receive_some(8 - len(header))
    remaining = int.from_bytes(header, "big")
    while remaining > 0:
        data = await stream.receive_some(256 * 1024)
        if not data:
            return
        remaining -= len(data)
    await stream.send_all(b"k")


async def _noise_sink(connection: Connection) -> None:
    received = 0
    while (message := await connection.receive_message()) is not None:
        if isinstance(message, Done):
            await connection.send_message(Done(received))
            received = 0
        else:
            received += 1


async def _serve_sinks(*, task_status: trio.TaskStatus[tuple[int, int]]) -> None:
    async with trio.open_nursery() as nursery:
        raw = await nursery.start(partial(trio.serve_tcp, host="127.0.0.1"), _raw_sink, 0)
        noise = await nursery.start(
            partial(serve_noise, registry=BENCH_REGISTRY), ["127.0.0.1:0"], SINK_KEY, _noise_sink
        )
        task_status.started((raw[0].socket.getsockname()[1], int(noise[0].rsplit(":", 1)[1])))


def _run_sink_process() -> None:
    async def main() -> None:
        async with trio.open_nursery() as nursery:
            ports = await nursery.start(_serve_sinks)
            print(f"{ports[0]} {ports[1]}", flush=True)

    trio.run(main)


async def _raw_throughput(port: int, total: int) -> float:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    chunk = os.urandom(BULK_SIZE)
    start = time.perf_counter()
    await stream.send_all(total.to_bytes(8, "big"))
    for _ in range(total // BULK_SIZE):
        await stream.send_all(chunk)
    assert await stream.receive_some(1) == b"k"
    elapsed = time.perf_counter() - start
    await stream.aclose()
    return total / elapsed


async def _noise_messages(port: int, count: int, size: int) -> tuple[float, float]:
    """Send `count` Blob messages of `size` bytes one way; (bytes/s, messages/s)."""
    address = f"{SINK_KEY.public_key.to_base64()}@127.0.0.1:{port}"
    client_key = PrivateKey.from_seed(os.urandom(32))
    async with open_connection(address, client_key, registry=BENCH_REGISTRY) as connection:
        message = Blob(os.urandom(size))
        start = time.perf_counter()
        for _ in range(count):
            await connection.send_message(message)
        await connection.send_message(Done(0))
        reply = await connection.receive_message()
        elapsed = time.perf_counter() - start
        assert reply == Done(count), reply
    return count * size / elapsed, count / elapsed


async def _measure(raw_port: int, noise_port: int, bulk_count: int, small_count: int) -> None:
    raw = max([await _raw_throughput(raw_port, bulk_count * BULK_SIZE) for _ in range(3)])
    noise = max([(await _noise_messages(noise_port, bulk_count, BULK_SIZE))[0] for _ in range(3)])
    small = max([(await _noise_messages(noise_port, small_count, SMALL_SIZE))[1] for _ in range(3)])
    print(f"  bulk, raw trio TCP             {raw / 1e6:10.1f} MB/s")
    print(
        f"  bulk, Noise Connection         {noise / 1e6:10.1f} MB/s   "
        f"({noise / raw:.2f} of raw; targets >= 250 MB/s and >= 0.25)"
    )
    print(f"  200-byte messages, one way     {small:10.0f} msg/s  (target >= 20000)")


async def bench_stream_in_process(bulk_count: int, small_count: int) -> None:
    print("loopback TCP, sender and receiver in ONE process (one core for both), best of 3:")
    async with trio.open_nursery() as nursery:
        raw_port, noise_port = await nursery.start(_serve_sinks)
        await _measure(raw_port, noise_port, bulk_count, small_count)
        nursery.cancel_scope.cancel()


def bench_stream_two_processes(bulk_count: int, small_count: int) -> None:
    print("loopback TCP, receiver in a SEPARATE process (as between two nodes), best of 3:")
    child = subprocess.Popen(
        [sys.executable, __file__, "--sink"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        raw_port, noise_port = map(int, child.stdout.readline().split())
        trio.run(_measure, raw_port, noise_port, bulk_count, small_count)
    finally:
        child.terminate()
        child.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer iterations")
    parser.add_argument("--sink", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.sink:
        _run_sink_process()
        return
    scale = 5 if args.quick else 1
    bench_handshakes(1000 // scale)
    trio.run(bench_stream_in_process, 4000 // scale, 100_000 // scale)
    bench_stream_two_processes(4000 // scale, 100_000 // scale)


if __name__ == "__main__":
    main()
