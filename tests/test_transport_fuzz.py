"""Hostile peers against the real per-connection server code, in virtual time.

Each example runs `serve_stream` (what `serve_noise` runs for every accepted connection) over
a memory stream with `MockClock(autojump_threshold=0)`, so timeouts pass instantly and
deterministically.  Whatever the peer sends -- random bytes, a mutated handshake, or a valid
handshake followed by hostile application bytes, whole or in chunks, then silence or a hang
up -- the server must finish within its timeouts, raise nothing, and never buffer more than
its limits allow.
"""

from __future__ import annotations

import hashlib
import itertools

import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from trustix_p2p.core import wire
from trustix_p2p.core.keys import PrivateKey
from trustix_p2p.core.noise import LocalIdentity, NoiseSession, Role
from trustix_p2p.transport import NoiseStream, TransportLimits, serve_stream

SERVER = LocalIdentity.from_private_key(PrivateKey.from_seed(hashlib.sha256(b"s").digest()))
CLIENT = LocalIdentity.from_private_key(PrivateKey.from_seed(hashlib.sha256(b"c").digest()))
LIMITS = TransportLimits(
    handshake_timeout=10, idle_timeout=60, max_message_size=64 * 1024, max_connections=4
)
# Longest a connection may live: a handshake, then the peer's stream of chunks (at most one
# idle timeout apart), then one more idle timeout, plus closing grace.
DEADLINE = 10 + 60 * 20 + 60 + 10


def run_server_against(client: object) -> None:
    """Run serve_stream against `client(stream)` in virtual time; both must finish."""

    async def main() -> None:
        server_side, client_side = trio.testing.memory_stream_pair()
        finished = False

        async def server() -> None:
            nonlocal finished
            await serve_stream(server_side, SERVER, limits=LIMITS, remote="fuzz")
            finished = True

        with trio.fail_after(DEADLINE):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(server)
                await client(client_side)  # type: ignore[operator]
                # Whatever the client did, the server ends by itself within its timeouts.
                while not finished:
                    await trio.sleep(1)
        await client_side.aclose()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


async def send_chunks(stream: trio.abc.SendStream, chunks: list[bytes], pause: float) -> None:
    for chunk in chunks:
        try:
            await stream.send_all(chunk)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return
        await trio.sleep(pause)


hang_up = st.booleans()
pauses = st.sampled_from([0.0, 1.0, 59.0])
cuts = st.lists(st.integers(min_value=0, max_value=1 << 20), max_size=20)


@settings(max_examples=60, deadline=None)
@given(data=st.binary(max_size=2000), cuts=cuts, pause=pauses, hang_up=hang_up)
def test_random_bytes_before_the_handshake(
    data: bytes, cuts: list[int], pause: float, hang_up: bool
) -> None:
    async def client(stream: trio.testing.MemorySendStream) -> None:
        await send_chunks(stream, chunked(data, cuts), pause)
        if hang_up:
            await stream.aclose()

    run_server_against(client)


# A recorded valid initiator transcript, to mutate.
_i = NoiseSession(Role.INITIATOR, CLIENT, hashlib.sha256(b"ei").digest())
_r = NoiseSession(Role.RESPONDER, SERVER, hashlib.sha256(b"er").digest())
M1 = _i.initiate()
_r.receive_data(M1)
_r.next_event()
_i.receive_data(_r.data_to_send())
_i.next_event()
M3 = _i.data_to_send()


@settings(max_examples=60, deadline=None)
@given(
    position=st.integers(min_value=0),
    bit=st.integers(0, 7),
    replay=st.booleans(),
    cuts=cuts,
    hang_up=hang_up,
)
def test_mutated_or_replayed_handshakes(
    position: int, bit: int, replay: bool, cuts: list[int], hang_up: bool
) -> None:
    transcript = bytearray(M1 + M3)
    if not replay:  # replay sends the recorded transcript unchanged, to a fresh responder
        transcript[position % len(transcript)] ^= 1 << bit

    async def client(stream: trio.testing.MemorySendStream) -> None:
        await send_chunks(stream, chunked(bytes(transcript), cuts), 0.0)
        if hang_up:
            await stream.aclose()

    run_server_against(client)


hostile_app_bytes = st.one_of(
    st.binary(max_size=3000),
    # Oversized length prefixes, valid frames with bad bodies, valid then junk.
    st.integers(min_value=64 * 1024 + 1, max_value=2**32 - 1).map(lambda n: n.to_bytes(4, "big")),
    st.binary(max_size=50).map(lambda b: len(b).to_bytes(4, "big") + b),
    st.just(wire.encode_message(wire.Ping(1))).map(lambda m: m + m[:-1]),
)


@settings(max_examples=60, deadline=None)
@given(data=hostile_app_bytes, cuts=cuts, pause=pauses, hang_up=hang_up)
def test_hostile_application_bytes_after_a_valid_handshake(
    data: bytes, cuts: list[int], pause: float, hang_up: bool
) -> None:
    async def client(raw: trio.abc.Stream) -> None:
        stream = NoiseStream.initiator(raw, CLIENT)
        await stream.do_handshake()
        for chunk in chunked(data, cuts):
            try:
                await stream.send_all(chunk)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                break
            await trio.sleep(pause)
        if hang_up:
            await trio.aclose_forcefully(stream)
            return
        # Drain whatever the server says (an Error at most) until it closes.
        try:
            while await stream.receive_some():
                pass
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        await trio.aclose_forcefully(stream)

    run_server_against(client)


def test_a_ping_still_works_in_virtual_time() -> None:
    # The harness itself must not be what makes every example pass.
    replies: list[bytes] = []

    async def client(raw: trio.abc.Stream) -> None:
        stream = NoiseStream.initiator(raw, CLIENT)
        await stream.do_handshake()
        await stream.send_all(wire.encode_message(wire.Ping(42)))
        replies.append(bytes(await stream.receive_some()))
        await stream.aclose()

    run_server_against(client)
    assert replies == [wire.encode_message(wire.Pong(42))]
