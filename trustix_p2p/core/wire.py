"""Application messages between nodes: framing, attrs message classes and strict decoders.

On the wire (inside a Noise stream, DESIGN §6) every message is a 4-byte big-endian length
followed by that many bytes of one msgpack array whose first element is the message type id
and whose other elements are the message's fields, in declaration order.  Every message type
is an attrs class registered in a `MessageRegistry`, and every field declares a `Spec` (type,
lengths, integer range, list size), so decoding checks everything before a message object
exists: nothing from the wire reaches the node as an unchecked dict or list.  Encoding checks
the same specs and raises `LocalProtocolError`, so we never send what a peer would refuse.

Adding a message type is one declaration::

    @wire.message(16)
    @attrs.frozen
    class GetCheckpoint(wire.Message):
        log_id: bytes = wire.field(wire.Bytes(32, 32))

Decoding is bounded: a length prefix above the configured maximum (default 4 MiB) is refused
before its body is buffered, msgpack maps and extension types are refused outright, and every
list has a maximum size.  Malformed input raises `DecodeError` naming the message type and
field at fault.  This module is pure: no I/O, no clock, no randomness.
"""

from __future__ import annotations

import abc
import threading
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Final, TypeVar

import attrs
import msgpack

from trustix_p2p.errors import DecodeError, LocalProtocolError

__all__ = [
    "DEFAULT_MAX_MESSAGE_SIZE",
    "LENGTH_PREFIX_SIZE",
    "REGISTRY",
    "Boolean",
    "Bytes",
    "Error",
    "Integer",
    "ListOf",
    "Message",
    "MessageReader",
    "MessageRegistry",
    "Nullable",
    "Ping",
    "Pong",
    "Spec",
    "Struct",
    "Text",
    "decode_body",
    "encode_message",
    "field",
    "message",
]

DEFAULT_MAX_MESSAGE_SIZE: Final = 4 * 1024 * 1024
LENGTH_PREFIX_SIZE: Final = 4
UINT64_MAX: Final = 2**64 - 1
MAX_TYPE_ID: Final = 0xFFFF

_SPEC_KEY: Final = "trustix_wire_spec"


# --------------------------------------------------------------------------------------------
# Field specs
# --------------------------------------------------------------------------------------------


class Spec(abc.ABC):
    """What one field may hold.  `problem()` returns why a wire value is unacceptable."""

    @abc.abstractmethod
    def problem(self, value: object) -> str | None:
        """None if `value` is acceptable, else a short reason naming what is wrong."""

    def decode(self, value: object, where: str) -> Any:
        """The checked Python value for a wire value, or `DecodeError` naming `where`."""
        problem = self.problem(value)
        if problem is not None:
            raise DecodeError(f"{where}: {problem}")
        return value

    def encode(self, value: object, where: str) -> Any:
        """The wire value for a Python value, or `LocalProtocolError` naming `where`."""
        problem = self.problem(value)
        if problem is not None:
            raise LocalProtocolError(f"{where}: {problem}")
        return value


@attrs.frozen
class Integer(Spec):
    """An integer (never a bool) in [min_value, max_value]; msgpack carries up to 64 bits."""

    min_value: int = 0
    max_value: int = UINT64_MAX

    def problem(self, value: object) -> str | None:
        if type(value) is not int:
            return f"expected an integer, got {type(value).__name__}"
        if not self.min_value <= value <= self.max_value:
            return f"integer {value} outside [{self.min_value}, {self.max_value}]"
        return None


@attrs.frozen
class Boolean(Spec):
    def problem(self, value: object) -> str | None:
        if type(value) is not bool:
            return f"expected a boolean, got {type(value).__name__}"
        return None


@attrs.frozen
class Bytes(Spec):
    """Raw bytes (msgpack bin) of min_len..max_len bytes."""

    min_len: int = 0
    max_len: int = DEFAULT_MAX_MESSAGE_SIZE

    def problem(self, value: object) -> str | None:
        if type(value) is not bytes:
            return f"expected bytes, got {type(value).__name__}"
        if not self.min_len <= len(value) <= self.max_len:
            if self.min_len == self.max_len:
                return f"expected exactly {self.min_len} bytes, got {len(value)}"
            return f"{len(value)} bytes outside [{self.min_len}, {self.max_len}]"
        return None


@attrs.frozen
class Text(Spec):
    """A UTF-8 string (msgpack str) of at most max_len characters."""

    max_len: int = 1024
    min_len: int = 0

    def problem(self, value: object) -> str | None:
        if type(value) is not str:
            return f"expected a string, got {type(value).__name__}"
        if not self.min_len <= len(value) <= self.max_len:
            return f"string of {len(value)} characters outside [{self.min_len}, {self.max_len}]"
        return None


@attrs.frozen
class Nullable(Spec):
    """Either nil or a value of `inner`."""

    inner: Spec

    def problem(self, value: object) -> str | None:
        return None if value is None else self.inner.problem(value)

    def decode(self, value: object, where: str) -> Any:
        return None if value is None else self.inner.decode(value, where)

    def encode(self, value: object, where: str) -> Any:
        return None if value is None else self.inner.encode(value, where)


@attrs.frozen
class ListOf(Spec):
    """A list of at most max_items values of `item`; decoded as a tuple."""

    item: Spec
    max_items: int
    min_items: int = 0

    def _size_problem(self, value: object) -> str | None:
        if not isinstance(value, list | tuple):
            return f"expected a list, got {type(value).__name__}"
        if not self.min_items <= len(value) <= self.max_items:
            return f"list of {len(value)} items outside [{self.min_items}, {self.max_items}]"
        return None

    def problem(self, value: object) -> str | None:
        size = self._size_problem(value)
        if size is not None:
            return size
        assert isinstance(value, list | tuple)
        for index, item in enumerate(value):
            problem = self.item.problem(item)
            if problem is not None:
                return f"item {index}: {problem}"
        return None

    def decode(self, value: object, where: str) -> Any:
        size = self._size_problem(value)
        if size is not None or type(value) is not list:
            raise DecodeError(f"{where}: {size or 'expected a list'}")
        item = self.item
        return tuple(item.decode(v, f"{where}[{i}]") for i, v in enumerate(value))

    def encode(self, value: object, where: str) -> Any:
        size = self._size_problem(value)
        if size is not None:
            raise LocalProtocolError(f"{where}: {size}")
        assert isinstance(value, list | tuple)
        item = self.item
        return [item.encode(v, f"{where}[{i}]") for i, v in enumerate(value)]


@attrs.frozen
class Struct(Spec):
    """A nested attrs class whose fields all carry specs, encoded as an array of its fields."""

    cls: type[Any]
    _schema: tuple[tuple[str, Spec], ...] = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "_schema", _schema_of(self.cls))

    def problem(self, value: object) -> str | None:
        if not isinstance(value, self.cls):
            return f"expected {self.cls.__name__}"
        for name, spec in self._schema:
            problem = spec.problem(getattr(value, name))
            if problem is not None:
                return f"{name}: {problem}"
        return None

    def decode(self, value: object, where: str) -> Any:
        return _decode_fields(self.cls, self._schema, value, where)

    def encode(self, value: object, where: str) -> Any:
        if not isinstance(value, self.cls):
            raise LocalProtocolError(f"{where}: expected {self.cls.__name__}")
        return _encode_fields(self._schema, value, where)


def field(spec: Spec, **kwargs: Any) -> Any:
    """An attrs field carrying its wire spec (use as the default of a class attribute)."""
    metadata = dict(kwargs.pop("metadata", {}))
    metadata[_SPEC_KEY] = spec
    return attrs.field(metadata=metadata, **kwargs)


def _schema_of(cls: type[Any]) -> tuple[tuple[str, Spec], ...]:
    if not attrs.has(cls):
        raise TypeError(f"{cls.__name__} must be an attrs class")
    schema: list[tuple[str, Spec]] = []
    for attribute in attrs.fields(cls):
        spec = attribute.metadata.get(_SPEC_KEY)
        if not isinstance(spec, Spec) or not attribute.init:
            raise TypeError(f"{cls.__name__}.{attribute.name} needs wire.field(spec)")
        schema.append((attribute.name, spec))
    return tuple(schema)


def _decode_fields(
    cls: type[Any], schema: Sequence[tuple[str, Spec]], value: object, where: str
) -> Any:
    if type(value) is not list:
        raise DecodeError(f"{where}: expected an array, got {type(value).__name__}")
    if len(value) != len(schema):
        raise DecodeError(f"{where}: expected {len(schema)} fields, got {len(value)}")
    args = [
        spec.decode(item, f"{where}.{name}")
        for (name, spec), item in zip(schema, value, strict=True)
    ]
    return cls(*args)


def _encode_fields(schema: Sequence[tuple[str, Spec]], value: object, where: str) -> list[Any]:
    return [spec.encode(getattr(value, name), f"{where}.{name}") for name, spec in schema]


# --------------------------------------------------------------------------------------------
# Messages and the registry
# --------------------------------------------------------------------------------------------


class Message:
    """Base class of every registered message type; `wire_type` is set by registration."""

    __slots__ = ()
    wire_type: ClassVar[int]


M = TypeVar("M", bound=Message)


@attrs.frozen
class _Entry:
    cls: type[Message]
    schema: tuple[tuple[str, Spec], ...]


class MessageRegistry:
    """Message type ids and their classes, for encoding and strict decoding."""

    def __init__(self) -> None:
        self._by_id: dict[int, _Entry] = {}
        self._by_class: dict[type[Message], tuple[int, _Entry]] = {}

    def register(self, type_id: int) -> Callable[[type[M]], type[M]]:
        """Class decorator: register an attrs `Message` subclass under `type_id`."""
        if type(type_id) is not int or not 0 <= type_id <= MAX_TYPE_ID:
            raise TypeError(f"message type id must be an int in [0, {MAX_TYPE_ID}]")

        def decorate(cls: type[M]) -> type[M]:
            if not issubclass(cls, Message):
                raise TypeError(f"{cls.__name__} must subclass wire.Message")
            if type_id in self._by_id:
                raise TypeError(
                    f"message type {type_id} already taken by {self._by_id[type_id].cls.__name__}"
                )
            entry = _Entry(cls, _schema_of(cls))
            cls.wire_type = type_id
            self._by_id[type_id] = entry
            self._by_class[cls] = (type_id, entry)
            return cls

        return decorate

    def types(self) -> dict[int, type[Message]]:
        return {type_id: entry.cls for type_id, entry in self._by_id.items()}

    def _array(self, msg: Message) -> list[Any]:
        found = self._by_class.get(type(msg))
        if found is None:
            raise LocalProtocolError(f"{type(msg).__name__} is not a registered message type")
        type_id, entry = found
        array = _encode_fields(entry.schema, msg, entry.cls.__name__)
        array.insert(0, type_id)
        return array

    def encode_body(self, msg: Message) -> bytes:
        """The msgpack array of `msg` (no length prefix); `LocalProtocolError` if invalid."""
        body: bytes = msgpack.packb(self._array(msg), use_bin_type=True)
        return body

    def encode_framed(self, msg: Message, max_message_size: int) -> bytearray:
        """Length prefix and msgpack array of `msg`, written with a single copy of the body."""
        array = self._array(msg)
        packer = _packer()
        try:
            packer.pack(array)
            with packer.getbuffer() as body:
                size = len(body)
                if size > max_message_size:
                    raise LocalProtocolError(
                        f"{type(msg).__name__} is {size} bytes, "
                        f"above the {max_message_size}-byte limit"
                    )
                framed = bytearray(size.to_bytes(LENGTH_PREFIX_SIZE, "big"))
                framed += body
        finally:
            packer.reset()
        return framed

    def decode_body(self, body: bytes | bytearray | memoryview) -> Message:
        """Strictly decode one msgpack array into a registered message, or `DecodeError`."""
        try:
            value = msgpack.unpackb(
                body,
                raw=False,
                use_list=True,
                strict_map_key=True,
                max_map_len=0,
                max_ext_len=0,
            )
        except (ValueError, msgpack.UnpackException) as exc:
            raise DecodeError(f"message is not a single valid msgpack value: {exc}") from exc
        if type(value) is not list or not value:
            raise DecodeError("message must be a non-empty msgpack array")
        type_id = value[0]
        if type(type_id) is not int:
            raise DecodeError(f"message type must be an integer, got {type(type_id).__name__}")
        entry = self._by_id.get(type_id)
        if entry is None:
            raise DecodeError(f"unknown message type {type_id}")
        decoded: Message = _decode_fields(entry.cls, entry.schema, value[1:], entry.cls.__name__)
        return decoded


_local = threading.local()


def _packer() -> msgpack.Packer:
    """This thread's reusable packer (its internal buffer is kept between messages)."""
    packer = getattr(_local, "packer", None)
    if packer is None:
        packer = _local.packer = msgpack.Packer(use_bin_type=True, autoreset=False)
    return packer


REGISTRY: Final = MessageRegistry()
message: Final = REGISTRY.register


def encode_message(
    msg: Message,
    *,
    registry: MessageRegistry = REGISTRY,
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
) -> bytearray:
    """One framed message: 4-byte big-endian length, then the msgpack array."""
    return registry.encode_framed(msg, max_message_size)


def decode_body(
    body: bytes | bytearray | memoryview, *, registry: MessageRegistry = REGISTRY
) -> Message:
    return registry.decode_body(body)


class MessageReader:
    """Splits a byte stream into framed messages and decodes them; bytes in, messages out.

    Call `next_message()`; when it returns None, `feed()` more bytes.  A length above
    `max_message_size` is refused as soon as its 4 bytes arrive, so the reader never holds
    more than one maximal message plus the last `feed`.  After a `DecodeError` the reader is
    unusable (the stream has lost its framing).

    Messages that arrive whole inside one fed chunk are decoded in place; only a message
    split across chunks is copied, into a reassembly buffer that grows in amortised linear
    time, so a 4 MiB message fed in small chunks costs one copy, not one per chunk.
    """

    def __init__(
        self,
        *,
        registry: MessageRegistry = REGISTRY,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    ) -> None:
        self._registry = registry
        self._max = max_message_size
        # Unconsumed bytes: first `_partial` (the start of a message split across chunks),
        # then self._chunk[self._pos:] (the rest of the last fed chunk, never mutated).
        self._partial = bytearray()
        self._chunk: bytes | bytearray | memoryview = b""
        self._pos = 0
        self._failed = False

    def buffered(self) -> int:
        return len(self._partial) + len(self._chunk) - self._pos

    @property
    def at_boundary(self) -> bool:
        """True when no partial message is buffered (a clean place for the stream to end)."""
        return self.buffered() == 0

    def _check(self) -> None:
        if self._failed:
            raise LocalProtocolError("the message reader failed earlier")

    def _size_of(self, prefix: bytes | bytearray | memoryview) -> int:
        size = int.from_bytes(prefix, "big")
        if size > self._max:
            self._failed = True
            raise DecodeError(f"message of {size} bytes is above the {self._max}-byte limit")
        return size

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Add bytes; the reader keeps a reference, so do not mutate `data` afterwards.

        Allowed only after `next_message()` returned None.
        """
        self._check()
        if self._pos < len(self._chunk):
            raise LocalProtocolError("feed() called before the previous bytes were consumed")
        partial = self._partial
        if not partial:
            self._chunk, self._pos = data, 0
            return
        rest = memoryview(data)
        if len(partial) < LENGTH_PREFIX_SIZE:
            take = LENGTH_PREFIX_SIZE - len(partial)
            partial += rest[:take]
            rest = rest[take:]
        if len(partial) >= LENGTH_PREFIX_SIZE:
            need = LENGTH_PREFIX_SIZE + self._size_of(partial[:LENGTH_PREFIX_SIZE]) - len(partial)
            partial += rest[:need]
            rest = rest[need:]
        self._chunk, self._pos = rest, 0

    def next_message(self) -> Message | None:
        self._check()
        partial = self._partial
        if partial:
            if len(partial) < LENGTH_PREFIX_SIZE:
                return None
            end = LENGTH_PREFIX_SIZE + self._size_of(partial[:LENGTH_PREFIX_SIZE])
            if len(partial) < end:
                return None
            # A fresh buffer for the next split message; this one is decoded and dropped.
            self._partial = bytearray()
            return self._decode(memoryview(partial)[LENGTH_PREFIX_SIZE:end])
        chunk, pos = self._chunk, self._pos
        start = pos + LENGTH_PREFIX_SIZE
        if len(chunk) < start:
            self._carry_over()
            return None
        end = start + self._size_of(chunk[pos:start])
        if len(chunk) < end:
            self._carry_over()
            return None
        self._pos = end
        return self._decode(memoryview(chunk)[start:end])

    def _carry_over(self) -> None:
        # The rest of the chunk starts a message that continues in the next feed.
        self._partial += self._chunk[self._pos :]
        self._chunk, self._pos = b"", 0

    def _decode(self, body: memoryview) -> Message:
        try:
            return self._registry.decode_body(body)
        except DecodeError:
            self._failed = True
            raise


# --------------------------------------------------------------------------------------------
# Connection-level messages.  Ids 0..15 are reserved for this module; gossip starts at 16.
# --------------------------------------------------------------------------------------------


@message(1)
@attrs.frozen
class Ping(Message):
    """Liveness probe; the peer answers with a `Pong` carrying the same nonce."""

    nonce: int = field(Integer())


@message(2)
@attrs.frozen
class Pong(Message):
    nonce: int = field(Integer())


@message(3)
@attrs.frozen
class Error(Message):
    """Sent (best effort) just before closing a connection: says why, for the peer's logs."""

    reason: str = field(Text(max_len=512))
