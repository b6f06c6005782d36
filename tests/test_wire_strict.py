"""The schema-directed reader: it agrees with msgpack plus the specs, and hostile bodies are
refused in memory bounded by the body.

The reference for "what should be accepted" is the decoder this reader replaced: msgpack's
`unpackb` followed by the specs' `decode` checks (`reference_decode_body` below).  The reader
must accept exactly the bodies the reference accepts, with the same values, for any msgpack
input, including encodings msgpack's own packer never writes (wide headers for small values).
"""

from __future__ import annotations

import contextlib
import struct
import tracemalloc
from collections.abc import Callable
from typing import Any

import attrs
import msgpack
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.test_wire import TEST_REGISTRY
from trustix_p2p.control import protocol as p
from trustix_p2p.control.protocol import MAX_LEAVES_PER_SUBMIT
from trustix_p2p.core import wire
from trustix_p2p.core.entry import MAX_ENTRY_BYTES
from trustix_p2p.core.lean.control import submit_request
from trustix_p2p.core.wire import REGISTRY, MessageReader, MessageRegistry, decode_body
from trustix_p2p.errors import DecodeError

MiB = 1 << 20

# ---- a registry exercising every spec, nested ---------------------------------------------

STRICT_REGISTRY = MessageRegistry()


@attrs.frozen
class Pair:
    key: str = wire.field(wire.Text(max_len=8))
    value: int | None = wire.field(wire.Nullable(wire.Integer(-(2**63), 2**63 - 1)))


@attrs.frozen
class Add:
    amount: int = wire.field(wire.Integer(0, 2**64 - 1))


@attrs.frozen
class Reset:
    """A variant with no fields: a bare [tag]."""


@attrs.frozen
class Rename:
    name: str = wire.field(wire.Text(max_len=3, min_len=1))
    salt: bytes = wire.field(wire.Bytes(2, 2))


COMMAND = wire.Tagged({"add": Add, "reset": Reset, "rename": Rename})


@STRICT_REGISTRY.register(16)
@attrs.frozen
class Kitchen(wire.Message):
    flag: bool = wire.field(wire.Boolean())
    small: int = wire.field(wire.Integer(-40, 300))
    leaves: tuple[bytes, ...] = wire.field(wire.ListOf(wire.Bytes(1, 600), max_items=6))
    hashes: tuple[bytes, ...] = wire.field(wire.ListOf(wire.Bytes(32, 32), max_items=3))
    pairs: tuple[Pair, ...] = wire.field(wire.ListOf(wire.Struct(Pair), max_items=3))
    grid: tuple[tuple[int, ...], ...] = wire.field(
        wire.ListOf(wire.ListOf(wire.Integer(), max_items=3), max_items=3, min_items=1)
    )
    maybe: tuple[bytes | None, ...] = wire.field(
        wire.ListOf(wire.Nullable(wire.Bytes(0, 3)), max_items=3)
    )
    pair: Pair | None = wire.field(wire.Nullable(wire.Struct(Pair)))
    command: Add | Reset | Rename = wire.field(COMMAND)


@STRICT_REGISTRY.register(17)
@attrs.frozen
class Blobs(wire.Message):
    """A list long enough that the bins' fast path does the work."""

    blobs: tuple[bytes, ...] = wire.field(wire.ListOf(wire.Bytes(0, 70_000), max_items=200))


@STRICT_REGISTRY.register(18)
@attrs.frozen
class Nothing(wire.Message):
    pass


REGISTRIES = [REGISTRY, TEST_REGISTRY, STRICT_REGISTRY]
MESSAGE_TYPES = [(registry, cls) for registry in REGISTRIES for cls in registry.types().values()]


# ---- hypothesis strategies from specs -----------------------------------------------------


def values_for(spec: wire.Spec) -> st.SearchStrategy[Any]:
    """Python values that satisfy `spec` (sizes capped so examples stay small)."""
    match spec:
        case wire.Integer(low, high):
            return st.integers(low, high)
        case wire.Boolean():
            return st.booleans()
        case wire.Bytes(low, high):
            return st.binary(min_size=low, max_size=min(high, low + 40))
        case wire.Text(high, low):
            return st.text(min_size=low, max_size=min(high, low + 12))
        case wire.Nullable(inner):
            return st.none() | values_for(inner)
        case wire.ListOf(item, high, low):
            items = st.lists(values_for(item), min_size=low, max_size=min(high, low + 4))
            return items.map(tuple)
        case wire.Struct(cls):
            return instances_of(cls)
        case wire.Tagged(classes):
            return st.one_of([instances_of(cls) for _, cls in classes])
    raise TypeError(f"no strategy for {spec!r}: teach values_for about it")


def instances_of(cls: type[Any]) -> st.SearchStrategy[Any]:
    return st.builds(cls, *[values_for(spec) for _, spec in wire.Struct(cls).schema])


def wire_fields(message: wire.Message) -> list[Any]:
    """The msgpack-ready fields of a message (what the encoder packs after the type id)."""
    fields: list[Any] = wire.Struct(type(message)).encode(message, type(message).__name__)
    return fields


# Long lists of bins with little entropy each (hypothesis's buffer is small): one repeated
# byte, which may itself look like a msgpack header.
def filled(low: int, high: int) -> st.SearchStrategy[bytes]:
    return st.builds(
        lambda size, byte: bytes([byte]) * size, st.integers(low, high), st.integers(0, 255)
    )


blobs_messages = st.builds(
    Blobs,
    st.lists(filled(0, 300) | filled(0, 3) | filled(65_536, 70_000), min_size=20, max_size=60).map(
        tuple
    ),
)


def messages_of(registry: MessageRegistry, cls: type[Any]) -> st.SearchStrategy[Any]:
    return blobs_messages if cls is Blobs else instances_of(cls)


any_message = st.one_of([messages_of(registry, cls) for registry, cls in MESSAGE_TYPES])


def registry_of(message: wire.Message) -> MessageRegistry:
    return next(r for r in REGISTRIES if type(message) in r.types().values())


# ---- random msgpack, packed with any header width -----------------------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.integers(-40, 300)
    | st.floats(allow_nan=False)
    | st.binary(max_size=40)
    | st.text(max_size=12)
    | st.builds(msgpack.ExtType, st.integers(0, 127), st.binary(max_size=17))
)
msgpack_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=3), children, max_size=2)
    ),
    max_leaves=12,
)

_INT_FORMS = [
    (0xCC, ">B"),
    (0xCD, ">H"),
    (0xCE, ">I"),
    (0xCF, ">Q"),
    (0xD0, ">b"),
    (0xD1, ">h"),
    (0xD2, ">i"),
    (0xD3, ">q"),
]


def _sized(size: int, forms: list[tuple[int, int]]) -> list[bytes]:
    """Headers `(byte, width of the length)` that can carry `size` (width 0: a fix form)."""
    out = []
    for header, width in forms:
        if width == 0:
            out.append(bytes([header | size]))
        elif size < 1 << (8 * width):
            out.append(bytes([header]) + size.to_bytes(width, "big"))
    return out


def loose_pack(value: Any, draw: Callable[[st.SearchStrategy[Any]], Any]) -> bytes:
    """msgpack bytes for `value`, each header in a width drawn from all that can carry it."""
    out = bytearray()

    def choose(forms: list[bytes]) -> None:
        out.extend(draw(st.sampled_from(forms)))

    def put(v: Any) -> None:
        if v is None:
            out.append(0xC0)
        elif v is True or v is False:
            out.append(0xC3 if v else 0xC2)
        elif type(v) is int:
            forms = [bytes([v])] if 0 <= v <= 0x7F else []
            if -32 <= v < 0:
                forms.append(struct.pack(">b", v))
            for header, fmt in _INT_FORMS:
                with contextlib.suppress(struct.error):  # the value does not fit this form
                    forms.append(bytes([header]) + struct.pack(fmt, v))
            choose(forms)
        elif type(v) is float:
            forms = [b"\xcb" + struct.pack(">d", v)]
            try:
                single = struct.pack(">f", v)
            except OverflowError:
                single = b""
            if single and struct.unpack(">f", single)[0] == v:
                forms.append(b"\xca" + single)
            choose(forms)
        elif type(v) is str:
            raw = v.encode()
            small = [(0xA0, 0)] if len(raw) < 32 else []
            choose(_sized(len(raw), [*small, (0xD9, 1), (0xDA, 2), (0xDB, 4)]))
            out.extend(raw)
        elif type(v) is bytes:
            choose(_sized(len(v), [(0xC4, 1), (0xC5, 2), (0xC6, 4)]))
            out.extend(v)
        elif isinstance(v, msgpack.ExtType):
            fixed = {1: 0xD4, 2: 0xD5, 4: 0xD6, 8: 0xD7, 16: 0xD8}
            forms = [bytes([fixed[len(v.data)]])] if len(v.data) in fixed else []
            forms += _sized(len(v.data), [(0xC7, 1), (0xC8, 2), (0xC9, 4)])
            choose(forms)
            out.append(v.code)
            out.extend(v.data)
        elif isinstance(v, list | tuple):
            small = [(0x90, 0)] if len(v) < 16 else []
            choose(_sized(len(v), [*small, (0xDC, 2), (0xDD, 4)]))
            for item in v:
                put(item)
        elif isinstance(v, dict):
            small = [(0x80, 0)] if len(v) < 16 else []
            choose(_sized(len(v), [*small, (0xDE, 2), (0xDF, 4)]))
            for key, item in v.items():
                put(key)
                put(item)
        else:
            raise TypeError(f"cannot pack {v!r}")

    put(value)
    return bytes(out)


@settings(max_examples=200, deadline=None)
@given(value=msgpack_values, data=st.data())
def test_loose_pack_writes_what_msgpack_reads(value: Any, data: st.DataObject) -> None:
    packed = loose_pack(value, data.draw)
    assert msgpack.unpackb(packed, raw=False, strict_map_key=False) == _listify(value)


def _listify(value: Any) -> Any:
    if isinstance(value, msgpack.ExtType):  # a namedtuple, but not an array
        return value
    if isinstance(value, list | tuple):
        return [_listify(v) for v in value]
    if isinstance(value, dict):
        return {k: _listify(v) for k, v in value.items()}
    return value


# ---- the reference: msgpack, then the specs ------------------------------------------------


def reference_decode_body(registry: MessageRegistry, body: bytes) -> wire.Message:
    """The decoder the reader replaced: msgpack builds everything, then the specs check it."""
    try:
        value = msgpack.unpackb(
            body, raw=False, use_list=True, strict_map_key=True, max_map_len=0, max_ext_len=0
        )
    except (ValueError, msgpack.UnpackException) as exc:
        raise DecodeError(f"not a single valid msgpack value: {exc}") from exc
    if type(value) is not list or not value:
        raise DecodeError("message must be a non-empty msgpack array")
    type_id = value[0]
    if type(type_id) is not int:
        raise DecodeError("message type must be an integer")
    cls = registry.types().get(type_id)
    if cls is None:
        raise DecodeError(f"unknown message type {type_id}")
    decoded: wire.Message = wire.Struct(cls).decode(value[1:], cls.__name__)
    return decoded


def outcome(decode: Callable[[bytes], Any], body: bytes) -> tuple[str, Any]:
    try:
        return ("accepted", decode(body))
    except DecodeError:
        return ("refused", None)


def mutate(body: bytes, data: st.DataObject) -> bytes:
    """The body, or (sometimes) truncated, extended with junk or with one byte changed."""
    kind = data.draw(st.sampled_from(["none", "none", "none", "cut", "cut end", "junk", "byte"]))
    if kind == "cut" and body:
        return body[: data.draw(st.integers(0, len(body) - 1))]
    if kind == "cut end" and body:  # inside the last value, where no later header notices
        return body[: len(body) - data.draw(st.integers(1, min(len(body), 400)))]
    if kind == "junk":
        return body + data.draw(st.binary(min_size=1, max_size=4))
    if kind == "byte" and body:
        at = data.draw(st.integers(0, len(body) - 1))
        return body[:at] + bytes([data.draw(st.integers(0, 255))]) + body[at + 1 :]
    return body


# ---- round trips --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("registry", "cls"), MESSAGE_TYPES, ids=[cls.__name__ for _, cls in MESSAGE_TYPES]
)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_every_message_type_round_trips_through_the_strict_reader(
    registry: MessageRegistry, cls: type[Any], data: st.DataObject
) -> None:
    message = data.draw(messages_of(registry, cls))
    body = bytes(wire.encode_message(message, registry=registry)[4:])
    assert decode_body(body, registry=registry) == message
    assert decode_body(memoryview(body), registry=registry) == message
    assert decode_body(bytearray(body), registry=registry) == message
    # Any header width a peer may choose reads the same message.
    loose = loose_pack([cls.wire_type, *wire_fields(message)], data.draw)
    assert decode_body(loose, registry=registry) == message


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_reader_accepts_exactly_what_msgpack_and_the_specs_accept(data: st.DataObject) -> None:
    registry, cls = data.draw(st.sampled_from(MESSAGE_TYPES))
    valid = wire_fields(data.draw(messages_of(registry, cls)))
    # Mostly valid fields with some replaced by random msgpack values, so that both answers
    # (accept and refuse) come up often; sometimes a field too many or too few.
    fields = [
        value if data.draw(st.integers(0, 3)) else data.draw(msgpack_values) for value in valid
    ]
    if data.draw(st.integers(0, 9)) == 0:
        fields = fields[:-1] if fields and data.draw(st.booleans()) else [*fields, 0]
    type_id = data.draw(st.sampled_from([cls.wire_type, cls.wire_type, 99]))
    body = mutate(loose_pack([type_id, *fields], data.draw), data)
    expected = outcome(lambda b: reference_decode_body(registry, b), body)
    assert outcome(lambda b: decode_body(b, registry=registry), body) == expected
    event(expected[0])


@settings(max_examples=500, deadline=None)
@given(value=msgpack_values, data=st.data())
def test_reader_agrees_with_the_reference_on_arbitrary_msgpack(
    value: Any, data: st.DataObject
) -> None:
    body = mutate(loose_pack(value, data.draw), data)
    for registry in REGISTRIES:
        expected = outcome(lambda b: reference_decode_body(registry, b), body)  # noqa: B023
        assert outcome(lambda b: decode_body(b, registry=registry), body) == expected  # noqa: B023


@settings(max_examples=300, deadline=None)
@given(message=blobs_messages, data=st.data())
def test_the_bins_fast_path_agrees_with_the_reference_under_damage(
    message: Blobs, data: st.DataObject
) -> None:
    # Every way a long list of bins can go wrong, at any item: a wrong header, a length out of
    # range or past the end, a cut anywhere (including inside the last 3 bytes, where the
    # fast path cannot read a whole header).
    body = loose_pack([Blobs.wire_type, *wire_fields(message)], data.draw)
    body = mutate(body, data)
    expected = outcome(lambda b: reference_decode_body(STRICT_REGISTRY, b), body)
    assert outcome(lambda b: decode_body(b, registry=STRICT_REGISTRY), body) == expected
    event(expected[0])


def reference_decode_value(body: bytes, spec: wire.Spec) -> Any:
    try:
        value = msgpack.unpackb(body, raw=False, strict_map_key=True, max_map_len=0)
    except (ValueError, msgpack.UnpackException) as exc:
        raise DecodeError(str(exc)) from exc
    return spec.decode(value, "value")


SHORT_BINS = wire.ListOf(wire.Bytes(2, 300), max_items=50, min_items=1)


@settings(max_examples=300, deadline=None)
@given(
    items=st.lists(
        st.integers(0, 302).map(lambda size: b"b" * size) | msgpack_values, min_size=1, max_size=55
    ),
    data=st.data(),
)
def test_the_bins_fast_path_checks_every_item(items: list[Any], data: st.DataObject) -> None:
    # Lengths just outside [2, 300] in every bin width, other values in the middle of the list,
    # lists just over the limit, and cuts.
    body = mutate(loose_pack(items, data.draw), data)
    expected = outcome(lambda b: reference_decode_value(b, SHORT_BINS), body)
    assert outcome(lambda b: wire.decode_value(b, SHORT_BINS), body) == expected
    event(expected[0])


# ---- the framed reader: whole, byte by byte, trailing junk --------------------------------


def read_all(reader: MessageReader, chunks: list[bytes]) -> list[wire.Message]:
    out: list[wire.Message] = []
    for chunk in chunks:
        while (message := reader.next_message()) is not None:
            out.append(message)
        reader.feed(chunk)
    while (message := reader.next_message()) is not None:
        out.append(message)
    return out


@pytest.mark.parametrize("registry", REGISTRIES, ids=["REGISTRY", "TEST_REGISTRY", "STRICT"])
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_messages_read_whole_and_one_byte_at_a_time(
    registry: MessageRegistry, data: st.DataObject
) -> None:
    # Small lists only: fed one byte at a time, 60 bins of up to 70 kB would take a minute.
    kinds = [instances_of(cls) for cls in registry.types().values()]
    messages = data.draw(st.lists(st.one_of(kinds), min_size=1, max_size=4))
    stream = b"".join(wire.encode_message(m, registry=registry) for m in messages)
    whole = MessageReader(registry=registry)
    assert read_all(whole, [stream]) == messages
    assert whole.at_boundary
    single = MessageReader(registry=registry)
    assert read_all(single, [stream[i : i + 1] for i in range(len(stream))]) == messages
    assert single.at_boundary


@pytest.mark.parametrize(
    ("registry", "cls"), MESSAGE_TYPES, ids=[cls.__name__ for _, cls in MESSAGE_TYPES]
)
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), junk=st.binary(min_size=1, max_size=8))
def test_every_message_type_with_trailing_junk(
    registry: MessageRegistry, cls: type[Any], data: st.DataObject, junk: bytes
) -> None:
    message = data.draw(messages_of(registry, cls))
    framed = bytes(wire.encode_message(message, registry=registry))
    body = framed[4:]
    # Junk inside the frame, after the message's array: refused.
    with pytest.raises(DecodeError, match="trailing byte"):
        decode_body(body + junk, registry=registry)
    inside = (len(body) + len(junk)).to_bytes(4, "big") + body + junk
    reader = MessageReader(registry=registry)
    reader.feed(inside)
    with pytest.raises(DecodeError, match="trailing byte"):
        reader.next_message()
    # Junk after the frame: the message is read, and the junk is an unfinished next frame
    # (or, once it has a length, a frame of its own to judge).
    reader = MessageReader(registry=registry)
    partial = junk[:3]
    assert read_all(reader, [framed + partial]) == [message]
    assert not reader.at_boundary


# ---- hostile bodies: refused, in memory bounded by the body --------------------------------


def peak_memory_refusing(decode: Callable[[], object]) -> int:
    """tracemalloc's peak while `decode()` runs, which must raise DecodeError."""
    tracemalloc.start()
    try:
        with pytest.raises(DecodeError):
            decode()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak


ROOMY = MessageRegistry()


@attrs.frozen
class Point:
    x: int = wire.field(wire.Integer())
    y: int = wire.field(wire.Integer())


# Specs whose bounds are no help: only reading header by header keeps memory bounded.
@ROOMY.register(16)
@attrs.frozen
class RoomyLeaves(wire.Message):
    leaves: tuple[bytes, ...] = wire.field(wire.ListOf(wire.Bytes(0, 2**40), 2**32))


@ROOMY.register(17)
@attrs.frozen
class RoomyPoints(wire.Message):
    points: tuple[Point, ...] = wire.field(wire.ListOf(wire.Struct(Point), 2**32))


@ROOMY.register(18)
@attrs.frozen
class RoomyGrid(wire.Message):
    grid: tuple[tuple[int, ...], ...] = wire.field(
        wire.ListOf(wire.ListOf(wire.Integer(), 2**32), 2**32)
    )


@ROOMY.register(19)
@attrs.frozen
class RoomyBlob(wire.Message):
    blob: bytes = wire.field(wire.Bytes(0, 2**40))


@ROOMY.register(20)
@attrs.frozen
class RoomyText(wire.Message):
    text: str = wire.field(wire.Text(max_len=2**40))


@ROOMY.register(1)
@attrs.frozen
class RoomyPing(wire.Message):
    nonce: int = wire.field(wire.Integer())


@ROOMY.register(21)
@attrs.frozen
class RoomyMaybe(wire.Message):
    maybe: tuple[bytes | None, ...] = wire.field(
        wire.ListOf(wire.Nullable(wire.Bytes(0, 2**40)), 2**32)
    )


def array32(count: int) -> bytes:
    return b"\xdd" + count.to_bytes(4, "big")


EMPTIES = b"\x90" * (4 * MiB)  # 4 MiB of empty msgpack arrays
NESTS = b"\x91" * (4 * MiB)  # 4 MiB of one-item arrays, each holding the next

HOSTILE_BODIES: dict[str, Callable[[], bytes]] = {
    "empty arrays as the fields": lambda: array32(1 + len(EMPTIES)) + b"\x01" + EMPTIES,
    "empty arrays as bins": lambda: b"\x92\x10" + array32(len(EMPTIES)) + EMPTIES,
    "empty arrays as structs": lambda: b"\x92\x11" + array32(len(EMPTIES)) + EMPTIES,
    "empty arrays as nullable bins": lambda: b"\x92\x15" + array32(len(EMPTIES)) + EMPTIES,
    "an array32 claiming 2**32-1 fields": lambda: array32(2**32 - 1) + b"\x01" + EMPTIES,
    "an array32 claiming 2**32-1 bins": lambda: b"\x92\x10" + array32(2**32 - 1) + EMPTIES,
    "deeply nested arrays for an integer": lambda: b"\x92\x01" + NESTS + b"\x00",
    "deeply nested arrays in a list of lists": lambda: b"\x92\x12" + NESTS + b"\x00",
    "deeply nested arrays for a bin": lambda: b"\x92\x10\x91" + NESTS + b"\xc0",
    "a bin32 claiming 4 GiB": lambda: b"\x92\x13\xc6\xff\xff\xff\xff" + EMPTIES,
    "a bin32 claiming 4 GiB in a list": lambda: b"\x92\x10\x91\xc6\xff\xff\xff\xff" + EMPTIES,
    "a str32 claiming 4 GiB": lambda: b"\x92\x14\xdb\xff\xff\xff\xff" + EMPTIES,
    "maps everywhere": lambda: b"\x92\x10" + array32(len(EMPTIES)) + b"\x80" * len(EMPTIES),
}


@pytest.mark.parametrize("name", sorted(HOSTILE_BODIES))
def test_hostile_bodies_are_refused_in_memory_bounded_by_the_body(name: str) -> None:
    body = HOSTILE_BODIES[name]()
    assert len(body) >= 4 * MiB
    assert peak_memory_refusing(lambda: decode_body(body, registry=ROOMY)) < 2 * len(body)
    # The framed reader hands the decoder a memoryview of its buffer: bounded just the same.
    reader = MessageReader(registry=ROOMY, max_message_size=len(body))
    reader.feed(len(body).to_bytes(4, "big") + body)
    assert peak_memory_refusing(reader.next_message) < 2 * len(body)


def test_hostile_bodies_against_the_real_registry() -> None:
    for body in (
        array32(1 + len(EMPTIES)) + b"\x01" + EMPTIES,
        b"\x92\x01" + NESTS + b"\x00",
        b"\x92\x03\xdb\xff\xff\xff\xff" + EMPTIES,
    ):
        assert peak_memory_refusing(lambda: decode_body(body)) < 2 * len(body)  # noqa: B023


def test_the_memory_bound_would_catch_a_decoder_that_builds_first() -> None:
    # The same measurement around the msgpack-first reference, on a smaller body: each empty
    # array costs it a Python list, dozens of times the byte it came from.
    body = b"\x92\x10" + array32(256 * 1024) + b"\x90" * (256 * 1024)
    peak = peak_memory_refusing(lambda: reference_decode_body(ROOMY, body))
    assert peak > 10 * len(body)


def test_what_a_hostile_body_is_refused_for() -> None:
    def error(body: bytes) -> str:
        with pytest.raises(DecodeError) as info:
            decode_body(body, registry=ROOMY)
        return str(info.value)

    assert error(HOSTILE_BODIES["empty arrays as bins"]()) == (
        "RoomyLeaves.leaves[0]: expected bytes, got list"
    )
    assert error(HOSTILE_BODIES["empty arrays as structs"]()) == (
        "RoomyPoints.points[0]: expected 2 fields, got 0"
    )
    assert "RoomyPing: expected 1 fields, got 4194304" in error(
        HOSTILE_BODIES["empty arrays as the fields"]()
    )
    assert error(HOSTILE_BODIES["deeply nested arrays in a list of lists"]()) == (
        "RoomyGrid.grid[0][0]: expected an integer, got list"
    )
    assert "RoomyBlob.blob: not a single valid msgpack value: truncated" in error(
        HOSTILE_BODIES["a bin32 claiming 4 GiB"]()
    )
    assert "RoomyLeaves.leaves: not a single valid msgpack value: an array of 4294967295" in (
        error(HOSTILE_BODIES["an array32 claiming 2**32-1 bins"]())
    )
    assert "maps are refused" in error(HOSTILE_BODIES["maps everywhere"]())


# ---- the reader's own checks, one by one ---------------------------------------------------


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        # Length bounds come from the header, before the payload is even present.
        (b"\x92\x11\xc6\xff\xff\xff\xff", r"Big\.data: 4294967295 bytes outside \[0, 4194304\]"),
        # A string too long for max_len is refused by its byte length, before UTF-8 decoding.
        (b"\x92\x03\xda\x08\x01" + b"\xff" * 2049, r"Error\.reason: string of 2049 bytes"),
        (b"\x92\x01\xcf\x00\x00", r"Ping\.nonce: not a single valid msgpack value: truncated"),
        (b"\x92\x01\xd3\xff\xff\xff\xff\xff\xff\xff\xff", r"Ping\.nonce: integer -1 outside"),
        (b"\x92\x01\xca\x00\x00\x00\x00", r"Ping\.nonce: expected an integer, got float"),
        (b"\x92\x01\xc7\x00\x01", r"Ping\.nonce: not a single valid msgpack value: extension"),
        (b"\x92\x01\x80", r"Ping\.nonce: not a single valid msgpack value: maps are refused"),
        (b"\x92\x01\xc1", r"Ping\.nonce: not a single valid msgpack value: byte 0xc1"),
        (b"\x92\x01\x00\x00", r"Ping: not a single valid msgpack value: 1 trailing byte$"),
        (b"\x92\x80\x01", r"message type: not a single valid msgpack value: maps are refused"),
        (b"\x92\xcb" + bytes(8) + b"\x01", r"message type must be an integer, got float"),
        (b"\x92\xc3\x01", r"message type must be an integer, got bool"),
    ],
)
def test_the_reader_names_the_field_and_the_problem(body: bytes, problem: str) -> None:
    registry = TEST_REGISTRY if body[1] == 0x11 else REGISTRY
    with pytest.raises(DecodeError, match=problem):
        decode_body(body, registry=registry)


@pytest.mark.parametrize(
    "nonce", [b"\x05", b"\xcc\x05", b"\xcd\x00\x05", b"\xce\x00\x00\x00\x05", b"\xd0\x05"]
)
def test_integers_of_any_width_are_read(nonce: bytes) -> None:
    assert decode_body(b"\x92\x01" + nonce) == wire.Ping(5)


def test_integers_at_the_edges_of_64_bits() -> None:
    assert decode_body(b"\x92\x01\xcf" + b"\xff" * 8) == wire.Ping(2**64 - 1)
    pair = wire.decode_value(b"\x92\xa0\xd3\x80" + bytes(7), wire.Struct(Pair))
    assert pair == Pair("", -(2**63))
    spec = wire.Integer(-(2**63), 2**63 - 1)
    assert wire.decode_value(b"\xd3\x80" + bytes(7), spec) == -(2**63)
    assert wire.decode_value(b"\xe0", spec) == -32


def test_bins_fast_path_edge_cases() -> None:
    spec = wire.ListOf(wire.Bytes(0, 2**20), 100)
    # A bin8 in the last two bytes (too short for a 3-byte header read), bin32 items, and
    # non-canonical wide headers for short bins.
    for items, packed in [
        ((b"",), b"\x91\xc4\x00"),
        ((b"ab", b""), b"\x92\xc4\x02ab\xc4\x00"),
        (
            (b"x" * 70_000, b"y"),
            b"\x92\xc6" + (70_000).to_bytes(4, "big") + b"x" * 70_000 + b"\xc4\x01y",
        ),
        ((b"z", b"w"), b"\x92\xc5\x00\x01z\xc6\x00\x00\x00\x01w"),
    ]:
        assert wire.decode_value(packed, spec) == items
    with pytest.raises(DecodeError, match=r"value\[1\]: expected bytes, got str"):
        wire.decode_value(b"\x92\xc4\x00\xa1x", spec)
    with pytest.raises(DecodeError, match=r"value\[1\]: not a single valid msgpack value: trunc"):
        wire.decode_value(b"\x92\xc5\x00\x05abc\xc4\x00", spec)
    with pytest.raises(DecodeError, match=r"value: not a single valid msgpack value: truncated"):
        wire.decode_value(b"\x92\xc4\x00\xc5\x00\x09abc", spec)
    for packed in (b"\x91\xc5\x00\x00", b"\x91\xc6\x00\x00\x00\x00", b"\x91\xc4\x00"):
        with pytest.raises(DecodeError, match=r"value\[0\]: 0 bytes outside \[1, 2\]"):
            wire.decode_value(packed, wire.ListOf(wire.Bytes(1, 2), 9))
    with pytest.raises(DecodeError, match=r"value\[1\]: 256 bytes outside \[0, 255\]"):
        wire.decode_value(
            b"\x92\xc4\x00\xc5\x01\x00" + bytes(256), wire.ListOf(wire.Bytes(0, 255), 9)
        )
    # A payload running past the end is the list's fault, whichever item comes next.
    with pytest.raises(DecodeError, match=r"value: not a single valid msgpack value: truncated"):
        wire.decode_value(b"\x92\xc5\x00\x09abc\xc4\x00", spec)
    with pytest.raises(DecodeError, match=r"value\[2\]: 3 bytes outside \[1, 2\]"):
        wire.decode_value(b"\x93\xc4\x01a\xc4\x02ab\xc4\x03abc", wire.ListOf(wire.Bytes(1, 2), 9))


def test_decode_value_reads_one_value_and_nothing_more() -> None:
    assert wire.decode_value(b"\xc0", wire.Nullable(wire.Bytes())) is None
    assert wire.decode_value(b"\xa3abc", wire.Text(), "name") == "abc"
    with pytest.raises(DecodeError, match=r"name: not a single valid msgpack value: 1 trailing"):
        wire.decode_value(b"\xa3abc\x00", wire.Text(), "name")
    with pytest.raises(DecodeError, match=r"name: not a single valid msgpack value: truncated"):
        wire.decode_value(b"", wire.Text(), "name")


def test_tagged_arrays_are_read_by_their_tag() -> None:
    assert wire.decode_value(b"\x92\xa3add\x05", COMMAND) == Add(5)
    assert wire.decode_value(b"\x91\xa5reset", COMMAND) == Reset()
    assert wire.decode_value(b"\x93\xd9\x06rename\xa1a\xc4\x02xy", COMMAND) == Rename("a", b"xy")
    for body, problem in [
        (b"\x90", r"cmd: expected a tagged array, got an empty one"),
        (b"\x91\x01", r"cmd: expected a string tag, got int"),
        (b"\x91\xa3sub", r"cmd: unknown tag 'sub'"),
        (b"\x91\xdb\xff\xff\xff\xff", r"cmd: unknown tag of 4294967295 bytes"),
        (b"\x91\xa3add", r"cmd\.add: expected 1 fields, got 0"),
        (b"\x92\xa5reset\x00", r"cmd\.reset: expected 0 fields, got 1"),
        (b"\x93\xa6rename\xa0\xc4\x02xy", r"cmd\.rename\.name: string of 0 characters"),
        (b"\xa3add", r"cmd: expected an array, got str"),
    ]:
        with pytest.raises(DecodeError, match=problem):
            wire.decode_value(body, COMMAND, "cmd")


def test_tagged_encodes_and_checks_like_any_spec() -> None:
    assert COMMAND.encode(Rename("a", b"xy"), "cmd") == ["rename", "a", b"xy"]
    assert COMMAND.problem(Rename("", b"xy")) == "name: string of 0 characters outside [1, 3]"
    assert COMMAND.problem(Pair("a", 1)) == "expected one of Add, Reset, Rename"
    assert COMMAND.decode(["add", 3], "cmd") == Add(3)


# ---- control requests ----------------------------------------------------------------------


def reference_decode_request(data: bytes) -> p.Request:
    """msgpack first, then the request checks: what `decode_request` must agree with."""
    try:
        msg = msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=True)
    except (ValueError, msgpack.UnpackException) as exc:
        raise DecodeError(str(exc)) from exc
    if type(msg) is not list or not msg:
        raise DecodeError("not a request")
    kind, args = msg[0], msg[1:]
    if kind == "submit" and len(args) == 1 and type(args[0]) is list:
        leaves = args[0]
        if len(leaves) <= MAX_LEAVES_PER_SUBMIT and all(
            type(leaf) is bytes and 1 <= len(leaf) <= MAX_ENTRY_BYTES for leaf in leaves
        ):
            return p.Submit(tuple(leaves))
    if kind == "status" and not args:
        return p.StatusRequest()
    if kind == "checkpoint" and len(args) == 1:
        log_id = args[0]
        if log_id is None or (type(log_id) is bytes and len(log_id) == 32):
            return p.CheckpointRequest(log_id)
    if kind == "lookup" and len(args) == 1 and type(args[0]) is str and len(args[0]) <= 4096:
        return p.LookupRequest(args[0])
    raise DecodeError("malformed request")


valid_requests = st.one_of(
    st.lists(st.binary(min_size=1, max_size=5), max_size=4).map(lambda leaves: ["submit", leaves]),
    st.just(["status"]),
    (st.none() | st.binary(min_size=32, max_size=32)).map(lambda log_id: ["checkpoint", log_id]),
    st.text(max_size=10).map(lambda path: ["lookup", path]),
)
nearly_valid_args = st.one_of(
    st.lists(st.binary(max_size=5), max_size=4).map(lambda leaves: [leaves]),
    st.just([]),
    st.just([None]),
    st.binary(min_size=31, max_size=33).map(lambda log_id: [log_id]),
    st.text(max_size=10).map(lambda path: [path]),
    st.lists(msgpack_values, max_size=2),
)
tags = st.sampled_from(["submit", "status", "checkpoint", "lookup", "bogus", ""]) | msgpack_values
other_requests = st.builds(lambda tag, args: [tag, *args], tags, nearly_valid_args)


@settings(max_examples=500, deadline=None)
@given(request=valid_requests | other_requests, data=st.data())
def test_control_requests_are_decoded_exactly_as_msgpack_and_the_checks_would(
    request: list[Any], data: st.DataObject
) -> None:
    body = mutate(loose_pack(request, data.draw), data)
    expected = outcome(reference_decode_request, body)
    assert outcome(p.decode_request, body) == expected
    event(expected[0])


def test_lookup_paths_are_bounded_in_characters() -> None:
    for path in ("/" * 4096, "é" * 4096, "😀" * 4096):
        assert p.decode_request(p.encode_request(p.LookupRequest(path))[4:]) == (
            p.LookupRequest(path)
        )
    with pytest.raises(DecodeError, match=r"lookup\.out_path: string of 4097 characters"):
        p.decode_request(msgpack.packb(["lookup", "/" * 4097]))


def test_requests_from_the_hook_decode_as_before() -> None:
    leaves = [bytes([i]) * (i + 1) for i in range(200)]
    assert p.decode_request(submit_request(leaves)[4:]) == p.Submit(tuple(leaves))
    longest = b"x" * MAX_ENTRY_BYTES
    assert p.decode_request(submit_request([longest])[4:]) == p.Submit((longest,))
    with pytest.raises(DecodeError, match=r"submit\.leaves\[0\]: 0 bytes outside"):
        p.decode_request(submit_request([b""])[4:])
    with pytest.raises(DecodeError, match=r"submit\.leaves: list of 100001 items outside"):
        p.decode_request(submit_request([b"x"] * (MAX_LEAVES_PER_SUBMIT + 1))[4:])


CONTROL_FILL = min(p.MAX_FRAME, 16 * MiB) - 64  # hostile frames as big as a frame may be
HOSTILE_REQUESTS: dict[str, Callable[[], bytes]] = {
    "empty arrays as the request": lambda: array32(CONTROL_FILL) + b"\x90" * CONTROL_FILL,
    "empty arrays as leaves": lambda: (
        b"\x92\xa6submit" + array32(CONTROL_FILL) + b"\x90" * CONTROL_FILL
    ),
    "empty arrays as as many leaves as allowed": lambda: (
        b"\x92\xa6submit" + array32(MAX_LEAVES_PER_SUBMIT) + b"\x90" * CONTROL_FILL
    ),
    "an array32 claiming 2**32-1 leaves": lambda: (
        b"\x92\xa6submit" + array32(2**32 - 1) + b"\x90" * CONTROL_FILL
    ),
    "deeply nested arrays as the request": lambda: b"\x91" * CONTROL_FILL + b"\xa6status",
    "deeply nested arrays as a leaf": lambda: (
        b"\x92\xa6submit\x91" + b"\x91" * CONTROL_FILL + b"\xc4\x01x"
    ),
    "deeply nested arrays as a log id": lambda: (
        b"\x92\xaacheckpoint" + b"\x91" * CONTROL_FILL + b"\xc0"
    ),
    "a bin32 claiming 4 GiB as a leaf": lambda: (
        b"\x92\xa6submit\x91\xc6\xff\xff\xff\xff" + b"\x00" * CONTROL_FILL
    ),
    "a str32 claiming 4 GiB as a path": lambda: (
        b"\x92\xa6lookup\xdb\xff\xff\xff\xff" + b"\x00" * CONTROL_FILL
    ),
    "a tag as long as the frame": lambda: (
        b"\x91\xdb" + CONTROL_FILL.to_bytes(4, "big") + b"s" * CONTROL_FILL
    ),
    "a map as the request": lambda: (
        b"\xdf" + (CONTROL_FILL // 2).to_bytes(4, "big") + b"\x90" * CONTROL_FILL
    ),
}


@pytest.mark.parametrize("name", sorted(HOSTILE_REQUESTS))
def test_hostile_control_frames_are_refused_in_memory_bounded_by_the_frame(name: str) -> None:
    body = HOSTILE_REQUESTS[name]()
    assert CONTROL_FILL < len(body) <= p.MAX_FRAME
    assert peak_memory_refusing(lambda: p.decode_request(body)) < 2 * len(body)


def test_every_cut_of_a_valid_body_is_refused() -> None:
    for message in (wire.Error("abc"), wire.Ping(2**64 - 1)):
        body = bytes(wire.encode_message(message)[4:])
        for cut in range(len(body)):
            with pytest.raises(DecodeError, match="not a single valid msgpack value"):
                decode_body(body[:cut])
