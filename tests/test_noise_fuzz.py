"""Property and fuzz tests of the sans-IO Noise session: hostile bytes never crash it.

Every input -- random, truncated, bit-flipped, replayed, oversized; whole, byte by byte or in
random chunks -- must end in NEED_DATA (waiting for more) or a `RemoteProtocolError`, never in
another exception, a silent success on tampered data, or an unbounded buffer.
"""

from __future__ import annotations

import hashlib
import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from trustix_p2p.core.keys import PrivateKey
from trustix_p2p.core.noise import (
    NEED_DATA,
    Data,
    EndOfStream,
    HandshakeComplete,
    LocalIdentity,
    NoiseSession,
    Phase,
    Role,
)
from trustix_p2p.errors import RemoteProtocolError

ALICE = LocalIdentity.from_private_key(PrivateKey.from_seed(hashlib.sha256(b"a").digest()))
BOB = LocalIdentity.from_private_key(PrivateKey.from_seed(hashlib.sha256(b"b").digest()))
MAX_BUFFER = 2 + 65535

# One recorded handshake and transport exchange, used as the seed of mutations.
_I = NoiseSession(Role.INITIATOR, ALICE, hashlib.sha256(b"ei").digest())
_R = NoiseSession(Role.RESPONDER, BOB, hashlib.sha256(b"er").digest())
M1 = _I.initiate()
_R.receive_data(M1)
assert _R.next_event() is NEED_DATA
M2 = _R.data_to_send()
_I.receive_data(M2)
assert isinstance(_I.next_event(), HandshakeComplete)
M3 = _I.data_to_send()
_R.receive_data(M3)
assert isinstance(_R.next_event(), HandshakeComplete)
TRANSPORT = bytes(_I.send(b"first message")) + bytes(_I.send(b"second" * 100)) + _I.send_eof()
EOF_FRAME_SIZE = 2 + 16


def fresh_responder() -> NoiseSession:
    return NoiseSession(Role.RESPONDER, BOB, hashlib.sha256(b"er").digest())


def fresh_initiator() -> NoiseSession:
    session = NoiseSession(Role.INITIATOR, ALICE, hashlib.sha256(b"ei").digest())
    session.initiate()
    return session


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


chunkings = st.one_of(
    st.just("whole"),
    st.just("bytes"),
    st.lists(st.integers(min_value=0, max_value=1 << 20), max_size=12),
)


def chunks_of(data: bytes, chunking: str | list[int]) -> list[bytes]:
    if chunking == "whole":
        return [data]
    if chunking == "bytes":
        return [data[i : i + 1] for i in range(len(data))]
    assert isinstance(chunking, list)
    return split(data, chunking)


def feed(
    session: NoiseSession, chunks: list[bytes], events: list[object] | None = None
) -> list[object]:
    """Feed chunks the way NoiseStream does, appending events to `events` as they come."""
    events = [] if events is None else events
    for chunk in chunks:
        while True:
            event = session.next_event()
            assert session.buffered() <= MAX_BUFFER
            if event is NEED_DATA:
                break
            events.append(event)
            if isinstance(event, EndOfStream):
                return events
        session.receive_data(chunk)
        assert session.buffered() <= MAX_BUFFER + len(chunk)
    while (event := session.next_event()) is not NEED_DATA:
        events.append(event)
        if isinstance(event, EndOfStream):
            break
    return events


def run_hostile(
    session: NoiseSession, data: bytes, chunking: str | list[int]
) -> tuple[list[object], bool]:
    """(events before any error, whether the session failed with a RemoteProtocolError)."""
    events: list[object] = []
    try:
        feed(session, chunks_of(data, chunking), events)
    except RemoteProtocolError:
        assert session.phase is Phase.FAILED
        assert session.buffered() == 0
        return events, True
    return events, False


FIRST, SECOND = b"first message", b"second" * 100


def received(events: list[object]) -> bytes:
    return b"".join(bytes(e.data) for e in events if isinstance(e, Data))


@settings(max_examples=150, deadline=None)
@given(data=st.binary(max_size=300), chunking=chunkings)
def test_random_bytes_never_crash_a_responder(data: bytes, chunking: str | list[int]) -> None:
    events, _ = run_hostile(fresh_responder(), data, chunking)
    assert not any(isinstance(e, HandshakeComplete | Data) for e in events)


@settings(max_examples=150, deadline=None)
@given(data=st.binary(max_size=300), chunking=chunkings)
def test_random_bytes_never_crash_an_initiator(data: bytes, chunking: str | list[int]) -> None:
    events, _ = run_hostile(fresh_initiator(), data, chunking)
    assert events == []


@settings(max_examples=150, deadline=None)
@given(
    position=st.integers(min_value=0),
    bit=st.integers(min_value=0, max_value=7),
    chunking=chunkings,
)
def test_bit_flipped_handshake_is_refused(
    position: int, bit: int, chunking: str | list[int]
) -> None:
    transcript = bytearray(M1 + M3)
    position %= len(transcript)
    transcript[position] ^= 1 << bit
    events, _ = run_hostile(fresh_responder(), bytes(transcript), chunking)
    # A flip may only ever make the handshake fail or wait (a length grew); never succeed.
    assert not any(isinstance(e, HandshakeComplete) for e in events)


@settings(max_examples=150, deadline=None)
@given(cut=st.integers(min_value=0), chunking=chunkings)
def test_truncated_handshake_just_waits(cut: int, chunking: str | list[int]) -> None:
    transcript = M1 + M3
    cut %= len(transcript)
    events = feed(fresh_responder(), chunks_of(transcript[:cut], chunking))
    assert events == []


@settings(max_examples=150, deadline=None)
@given(
    position=st.integers(min_value=0),
    bit=st.integers(min_value=0, max_value=7),
    chunking=chunkings,
)
def test_bit_flipped_transport_is_refused(
    position: int, bit: int, chunking: str | list[int]
) -> None:
    stream = bytearray(TRANSPORT)
    position %= len(stream)
    stream[position] ^= 1 << bit
    responder = fresh_responder()
    feed(responder, [M1, M3])
    events, _ = run_hostile(responder, bytes(stream), chunking)
    # Frames before the flipped one may arrive intact; the tampered one and later never do,
    # and the stream never ends cleanly.
    assert received(events) in (b"", FIRST, FIRST + SECOND)
    assert not any(isinstance(e, EndOfStream) for e in events)


@settings(max_examples=100, deadline=None)
@given(chunking=chunkings, junk=st.binary(min_size=1, max_size=40))
def test_intact_stream_in_any_chunking_then_trailing_junk(
    chunking: str | list[int], junk: bytes
) -> None:
    responder = fresh_responder()
    events = feed(responder, chunks_of(M1 + M3 + TRANSPORT, chunking))
    assert received(events) == FIRST + SECOND
    assert isinstance(events[-1], EndOfStream)
    # Anything after the end-of-stream marker is refused.
    responder.receive_data(junk)
    try:
        responder.next_event()
    except RemoteProtocolError:
        pass
    else:
        raise AssertionError("junk after end of stream was accepted")


@settings(max_examples=50, deadline=None)
@given(repeat=st.integers(min_value=1, max_value=3), chunking=chunkings)
def test_replayed_messages_are_refused(repeat: int, chunking: str | list[int]) -> None:
    responder = fresh_responder()
    feed(responder, [M1, M3])
    # The whole recorded transport stream, replayed after itself, must fail at the replay.
    first = TRANSPORT[:-EOF_FRAME_SIZE]  # without the end-of-stream marker
    events, failed = run_hostile(responder, first * (repeat + 1), chunking)
    assert failed
    assert received(events) in (b"", FIRST, FIRST + SECOND)


def test_oversized_lengths_cannot_exceed_one_noise_message() -> None:
    responder = fresh_responder()
    feed(responder, [M1, M3])
    # The largest length a prefix can announce, with the body arriving slowly.
    responder.receive_data(b"\xff\xff" + b"\x00" * 1000)
    for _ in range(64):
        assert responder.next_event() is NEED_DATA
        responder.receive_data(b"\x00" * 1000)
        assert responder.buffered() <= MAX_BUFFER
    assert responder.next_event() is NEED_DATA
    responder.receive_data(b"\x00" * 1000)
    try:
        responder.next_event()
    except RemoteProtocolError:
        assert responder.buffered() == 0
    else:
        raise AssertionError("garbage frame accepted")
