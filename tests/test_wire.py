"""The message codec: framing, declarative specs, strict decoding, the registry."""

from __future__ import annotations

import itertools

import attrs
import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trustix_p2p.core import wire
from trustix_p2p.core.wire import (
    REGISTRY,
    Error,
    MessageReader,
    MessageRegistry,
    Ping,
    Pong,
    decode_body,
    encode_message,
)
from trustix_p2p.errors import DecodeError, LocalProtocolError

# A registry of the test's own, exercising every spec.
TEST_REGISTRY = MessageRegistry()


@attrs.frozen
class Hash(wire.Message):
    algorithm: str = wire.field(wire.Text(max_len=10, min_len=1))
    digest: bytes = wire.field(wire.Bytes(32, 32))


@TEST_REGISTRY.register(16)
@attrs.frozen
class Everything(wire.Message):
    size: int = wire.field(wire.Integer(0, 1000))
    delta: int = wire.field(wire.Integer(-5, 5))
    flag: bool = wire.field(wire.Boolean())
    blob: bytes = wire.field(wire.Bytes(0, 8))
    note: str | None = wire.field(wire.Nullable(wire.Text(max_len=4)))
    hashes: tuple[Hash, ...] = wire.field(wire.ListOf(wire.Struct(Hash), max_items=2))
    numbers: tuple[int, ...] = wire.field(wire.ListOf(wire.Integer(), max_items=3, min_items=1))


@TEST_REGISTRY.register(17)
@attrs.frozen
class Big(wire.Message):
    data: bytes = wire.field(wire.Bytes(0, 4 * 1024 * 1024))


GOOD = Everything(7, -2, True, b"abc", None, (Hash("sha256", b"h" * 32),), (1, 2))


def body(*fields: object) -> bytes:
    return msgpack.packb([16, *fields], use_bin_type=True)


GOOD_FIELDS: list[object] = [7, -2, True, b"abc", None, [["sha256", b"h" * 32]], [1, 2]]


def test_round_trip_and_exact_wire_format() -> None:
    framed = encode_message(GOOD, registry=TEST_REGISTRY)
    assert framed[:4] == (len(framed) - 4).to_bytes(4, "big")
    assert msgpack.unpackb(framed[4:]) == [16, *GOOD_FIELDS]
    assert decode_body(framed[4:], registry=TEST_REGISTRY) == GOOD


def test_ping_pong_error_are_registered() -> None:
    # Ids 0..15 are the connection-level messages of this module; gossip messages, registered
    # by their own modules, start at 16.
    assert {i: t for i, t in REGISTRY.types().items() if i < 16} == {1: Ping, 2: Pong, 3: Error}
    for message in (Ping(0), Pong(2**64 - 1), Error("why")):
        assert decode_body(encode_message(message)[4:]) == message
    assert encode_message(Ping(5)) == b"\x00\x00\x00\x03\x92\x01\x05"


@pytest.mark.parametrize(
    ("index", "value", "problem"),
    [
        (0, 1001, r"Everything\.size: integer 1001 outside \[0, 1000\]"),
        (0, True, r"Everything\.size: expected an integer, got bool"),
        (0, 1.0, r"Everything\.size: expected an integer, got float"),
        (1, -6, r"Everything\.delta: integer -6 outside"),
        (2, 1, r"Everything\.flag: expected a boolean, got int"),
        (3, "abc", r"Everything\.blob: expected bytes, got str"),
        (3, b"123456789", r"Everything\.blob: 9 bytes outside \[0, 8\]"),
        (4, "toolong", r"Everything\.note: string of 7 characters outside"),
        (4, b"x", r"Everything\.note: expected a string, got bytes"),
        (5, [["sha256", b"h" * 32]] * 3, r"Everything\.hashes: list of 3 items outside"),
        (5, [["sha256", b"h" * 31]], r"Everything\.hashes\[0\]\.digest: expected exactly 32"),
        (5, [["", b"h" * 32]], r"Everything\.hashes\[0\]\.algorithm: string of 0 characters"),
        (5, [["sha256"]], r"Everything\.hashes\[0\]: expected 2 fields, got 1"),
        (5, ["sha256"], r"Everything\.hashes\[0\]: expected an array, got str"),
        (6, [], r"Everything\.numbers: list of 0 items outside \[1, 3\]"),
        (6, [1, -1], r"Everything\.numbers\[1\]: integer -1 outside"),
        (6, 5, r"Everything\.numbers: expected a list, got int"),
    ],
)
def test_decoding_names_the_field_and_the_problem(index: int, value: object, problem: str) -> None:
    fields = list(GOOD_FIELDS)
    fields[index] = value
    with pytest.raises(DecodeError, match=problem):
        decode_body(body(*fields), registry=TEST_REGISTRY)


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        (b"", "not a single valid msgpack value"),
        (b"\xc1", "not a single valid msgpack value"),
        (msgpack.packb([1, 2]) + b"\x00", "not a single valid msgpack value"),
        (msgpack.packb({"type": 1}), "not a single valid msgpack value"),
        (msgpack.packb([1, {"a": 1}]), "not a single valid msgpack value"),
        (msgpack.packb([1, msgpack.ExtType(1, b"x")]), "not a single valid msgpack value"),
        (msgpack.packb([]), "non-empty msgpack array"),
        (msgpack.packb(5), "non-empty msgpack array"),
        (msgpack.packb(["ping", 1]), "message type must be an integer, got str"),
        (msgpack.packb([99, 1]), "unknown message type 99"),
        (msgpack.packb([1]), r"Ping: expected 1 fields, got 0"),
        (msgpack.packb([1, 1, 2]), r"Ping: expected 1 fields, got 2"),
        (b"\xdc\xff\xff" + b"\x90" * 10, "not a single valid msgpack value"),
        (msgpack.packb([3, b"\xff"]), r"Error\.reason: expected a string, got bytes"),
        (b"\x92\x03\xa1\xff", "not a single valid msgpack value"),  # invalid UTF-8
    ],
)
def test_malformed_messages_are_decode_errors(raw: bytes, problem: str) -> None:
    with pytest.raises(DecodeError, match=problem):
        decode_body(raw)


def test_deep_nesting_is_refused_without_crashing() -> None:
    deep = b"\x92\x01" + b"\x91" * 100_000 + b"\x00"
    with pytest.raises(DecodeError):
        decode_body(deep)


def test_encoding_checks_the_same_specs() -> None:
    with pytest.raises(LocalProtocolError, match=r"Everything\.blob: 9 bytes outside"):
        encode_message(attrs.evolve(GOOD, blob=b"123456789"), registry=TEST_REGISTRY)
    with pytest.raises(LocalProtocolError, match=r"Ping\.nonce: integer -1 outside"):
        encode_message(Ping(-1))
    with pytest.raises(LocalProtocolError, match="not a registered message type"):
        encode_message(GOOD)  # registered elsewhere
    with pytest.raises(LocalProtocolError, match="above the 10-byte limit"):
        encode_message(Error("a long reason"), max_message_size=10)


def test_registering_is_checked() -> None:
    registry = MessageRegistry()

    @registry.register(20)
    @attrs.frozen
    class Fine(wire.Message):
        x: int = wire.field(wire.Integer())

    assert Fine.wire_type == 20
    with pytest.raises(TypeError, match="already taken by Fine"):

        @registry.register(20)
        @attrs.frozen
        class Clash(wire.Message):
            x: int = wire.field(wire.Integer())

    with pytest.raises(TypeError, match=r"needs wire\.field"):

        @registry.register(21)
        @attrs.frozen
        class Unspecified(wire.Message):
            x: int

    with pytest.raises(TypeError, match=r"must subclass wire\.Message"):

        @registry.register(22)  # type: ignore[type-var]
        @attrs.frozen
        class NotAMessage:
            x: int = wire.field(wire.Integer())

    with pytest.raises(TypeError, match="type id"):
        registry.register(70_000)


# ---- the framed reader ------------------------------------------------------------------------

STREAM_MESSAGES: list[wire.Message] = [Ping(1), Error("é" * 100), Pong(2**63), Ping(0)]
STREAM = b"".join(encode_message(m) for m in STREAM_MESSAGES)


def read_all(reader: MessageReader, chunks: list[bytes]) -> list[wire.Message]:
    out: list[wire.Message] = []
    for chunk in chunks:
        while (message := reader.next_message()) is not None:
            out.append(message)
        reader.feed(chunk)
    while (message := reader.next_message()) is not None:
        out.append(message)
    return out


def test_reader_whole_and_byte_by_byte() -> None:
    assert read_all(MessageReader(), [STREAM]) == STREAM_MESSAGES
    reader = MessageReader()
    assert read_all(reader, [STREAM[i : i + 1] for i in range(len(STREAM))]) == STREAM_MESSAGES
    assert reader.at_boundary


def test_reader_with_trailing_partial_message_is_not_at_boundary() -> None:
    reader = MessageReader()
    assert read_all(reader, [STREAM + b"\x00\x00"]) == STREAM_MESSAGES
    assert not reader.at_boundary


def test_reader_refuses_an_oversized_length_before_buffering_it() -> None:
    reader = MessageReader(max_message_size=100)
    reader.feed(b"\x00\x00\x00\x65")  # 101
    with pytest.raises(DecodeError, match="101 bytes is above the 100-byte limit"):
        reader.next_message()
    with pytest.raises(LocalProtocolError):
        reader.feed(b"x")
    default = MessageReader()
    default.feed(b"\xff\xff\xff\xff")
    with pytest.raises(DecodeError, match="above the 4194304-byte limit"):
        default.next_message()


def test_reader_fails_for_good_after_a_malformed_message() -> None:
    reader = MessageReader()
    reader.feed(b"\x00\x00\x00\x01\xc1" + encode_message(Ping(1)))
    with pytest.raises(DecodeError):
        reader.next_message()
    with pytest.raises(LocalProtocolError):
        reader.next_message()


# ---- properties -------------------------------------------------------------------------------

hashes = st.builds(Hash, st.text(min_size=1, max_size=10), st.binary(min_size=32, max_size=32))
everything = st.builds(
    Everything,
    st.integers(0, 1000),
    st.integers(-5, 5),
    st.booleans(),
    st.binary(max_size=8),
    st.one_of(st.none(), st.text(max_size=4)),
    st.lists(hashes, max_size=2).map(tuple),
    st.lists(st.integers(0, 2**64 - 1), min_size=1, max_size=3).map(tuple),
)


@settings(max_examples=200, deadline=None)
@given(messages=st.lists(everything, max_size=5), cuts=st.lists(st.integers(0, 2000)))
def test_valid_messages_round_trip_in_any_chunking(
    messages: list[Everything], cuts: list[int]
) -> None:
    data = b"".join(encode_message(m, registry=TEST_REGISTRY) for m in messages)
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    chunks = [data[a:b] for a, b in itertools.pairwise(points)]
    reader = MessageReader(registry=TEST_REGISTRY)
    assert read_all(reader, chunks) == messages
    assert reader.at_boundary


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=200), cuts=st.lists(st.integers(0, 300), max_size=8))
def test_random_bytes_only_ever_raise_decode_error(data: bytes, cuts: list[int]) -> None:
    reader = MessageReader(registry=TEST_REGISTRY, max_message_size=150)
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    try:
        for a, b in itertools.pairwise(points):
            while reader.next_message() is not None:
                pass
            reader.feed(data[a:b])
            # Bounded: one maximal message plus the latest chunk.
            assert reader.buffered() <= 4 + 150 + (b - a)
        while reader.next_message() is not None:
            pass
    except DecodeError:
        pass


@settings(max_examples=300, deadline=None)
@given(
    message=everything,
    position=st.integers(min_value=0),
    bit=st.integers(0, 7),
)
def test_bit_flipped_bodies_decode_to_valid_messages_or_fail(
    message: Everything, position: int, bit: int
) -> None:
    raw = bytearray(encode_message(message, registry=TEST_REGISTRY)[4:])
    raw[position % len(raw)] ^= 1 << bit
    try:
        decoded = decode_body(bytes(raw), registry=TEST_REGISTRY)
    except DecodeError:
        return
    # Whatever survives decoding satisfies every spec: it re-encodes without complaint.
    encode_message(decoded, registry=TEST_REGISTRY)


def test_large_messages_reassemble_from_small_chunks() -> None:
    messages = [Big(bytes(range(256)) * 4096), Big(b"p"), Big(b"x" * 70_000), Big(b"")]
    data = b"".join(encode_message(m, registry=TEST_REGISTRY) for m in messages)
    for size in (3, 4096, 65_536, len(data)):
        chunks = [data[i : i + size] for i in range(0, len(data), size)]
        reader = MessageReader(registry=TEST_REGISTRY)
        assert read_all(reader, chunks) == messages
        assert reader.at_boundary and reader.buffered() == 0


def test_feeding_before_consuming_is_a_local_error() -> None:
    reader = MessageReader()
    reader.feed(encode_message(Ping(1)))
    with pytest.raises(LocalProtocolError, match="before the previous bytes were consumed"):
        reader.feed(b"more")
