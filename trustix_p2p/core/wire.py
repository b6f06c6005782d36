"""Application messages between nodes: framing, attrs message classes and a strict reader.

On the wire (inside a Noise stream, DESIGN §6) every message is a 4-byte big-endian length
followed by that many bytes of one msgpack array whose first element is the message type id
and whose other elements are the message's fields, in declaration order.  Every message type
is an attrs class registered in a `MessageRegistry`, and every field declares a `Spec` (type,
lengths, integer range, list size).  Encoding checks the same specs and raises
`LocalProtocolError`, so we never send what a peer would refuse; it goes through msgpack's
packer.

Adding a message type is one declaration::

    @wire.message(16)
    @attrs.frozen
    class GetCheckpoint(wire.Message):
        log_id: bytes = wire.field(wire.Bytes(32, 32))

Decoding never hands peer bytes to a general msgpack unpacker.  A `Reader` walks the body
directed by the schema: for each field it reads the msgpack header byte at the current offset
and checks it against the field's `Spec` (`Spec.read`) before any Python object exists for the
value: the header's type, then the length or item count it declares against the spec's bounds
and against the bytes that are left, and only then the payload.  So a peer cannot make us
allocate for bytes that do not fit the schema (a megabyte of empty msgpack arrays costs
nothing but the first header), the work is linear in the message, and recursion is as deep as
the schema, never as deep as the input.  Maps, extension types and floats are never accepted;
neither are truncated bodies or bytes after the message.  Any width of a msgpack integer,
string, bin or array header is accepted (msgpack's own packer picks the shortest).  Malformed
input raises `DecodeError` naming the message type and field at fault.  `decode_value` reads
any body against one spec; `Tagged` reads `[<str tag>, field, ...]` arrays, as the control
socket uses.

`Spec.decode` (checking a value msgpack has already built) remains for values that are not
read from peer bytes and as the reference the tests hold the reader to.

This module is pure: no I/O, no clock, no randomness.  It must never build Python objects from
peer bytes before a spec has accepted their header.
"""

from __future__ import annotations

import abc
import struct
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, Final, TypeVar

import attrs
import msgpack

from trustix_p2p.core.lean.frame import LENGTH_PREFIX_SIZE, FrameReader
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
    "Reader",
    "Spec",
    "Struct",
    "Tagged",
    "Text",
    "decode_body",
    "decode_value",
    "encode_message",
    "field",
    "message",
]

DEFAULT_MAX_MESSAGE_SIZE: Final = 4 * 1024 * 1024
UINT64_MAX: Final = 2**64 - 1
MAX_TYPE_ID: Final = 0xFFFF

_SPEC_KEY: Final = "trustix_wire_spec"


# --------------------------------------------------------------------------------------------
# The reader: msgpack headers, read one at a time
# --------------------------------------------------------------------------------------------
#
# Header bytes of the msgpack format (msgpack spec, "Formats"), as this reader sees them.
# What a value is called in "expected X, got Y" messages: the Python type msgpack would have
# built, as the messages said when decoding went through msgpack.


def _kinds() -> tuple[str, ...]:
    kinds = ["int"] * 256  # positive (0x00..0x7f) and negative (0xe0..0xff) fixints
    for first, last, kind in (
        (0x80, 0x8F, "map"),
        (0x90, 0x9F, "list"),
        (0xA0, 0xBF, "str"),
        (0xC0, 0xC0, "NoneType"),
        (0xC1, 0xC1, "reserved"),
        (0xC2, 0xC3, "bool"),
        (0xC4, 0xC6, "bytes"),
        (0xC7, 0xC9, "ext"),
        (0xCA, 0xCB, "float"),
        (0xD4, 0xD8, "ext"),
        (0xD9, 0xDB, "str"),
        (0xDC, 0xDD, "list"),
        (0xDE, 0xDF, "map"),
    ):
        kinds[first : last + 1] = [kind] * (last - first + 1)
    return tuple(kinds)


_KIND: Final = _kinds()
# Headers no spec accepts, and that the old msgpack-based decoder refused before any spec
# saw them; their errors keep saying the body is not valid msgpack for this protocol.
_REFUSED: Final = {"map": "maps are refused", "ext": "extension types are refused"}
_REFUSED["reserved"] = "byte 0xc1 is never used"
# Integer headers other than fixints: payload size and signedness.
_INT_FORMS: Final = {
    0xCC: (1, False),
    0xCD: (2, False),
    0xCE: (4, False),
    0xCF: (8, False),
    0xD0: (1, True),
    0xD1: (2, True),
    0xD2: (4, True),
    0xD3: (8, True),
}
# Sizes of the length field after bin8/16/32, str8/16/32 and array16/32 headers.
_BIN_LENGTH_SIZE: Final = {0xC4: 1, 0xC5: 2, 0xC6: 4}
_STR_LENGTH_SIZE: Final = {0xD9: 1, 0xDA: 2, 0xDB: 4}
_ARRAY_LENGTH_SIZE: Final = {0xDC: 2, 0xDD: 4}
# A header byte and the big-endian 16-bit field after it (the length of a bin16).
_HEADER_AND_U16: Final = struct.Struct(">BH").unpack_from


def _malformed(where: str, reason: str) -> DecodeError:
    return DecodeError(f"{where}: not a single valid msgpack value: {reason}")


class Reader:
    """A position in one msgpack body, advanced by `Spec.read` one value at a time.

    `data` is the body (bytes, or a byte-format memoryview), `pos` the offset of the next
    header and `end == len(data)`.  Every method checks the header at `pos` against what its
    caller expects and the bytes that are left, and advances `pos` only past what it returns;
    on failure it raises `DecodeError` naming `where`.
    """

    __slots__ = ("data", "end", "pos")

    def __init__(self, body: bytes | bytearray | memoryview) -> None:
        data: bytes | memoryview
        if type(body) is bytes:
            data = body
        else:
            data = memoryview(body)
            if data.format != "B" or data.ndim != 1:
                data = data.cast("B")
        self.data: bytes | memoryview = data
        self.pos = 0
        self.end = len(data)

    # -- errors ---------------------------------------------------------------------------

    def truncated(self, where: str) -> DecodeError:
        return _malformed(where, f"truncated at offset {self.pos} of {self.end}")

    def refuse(self, where: str, expected: str) -> DecodeError:
        """The error for the value at `pos`, whose header the caller's spec does not allow."""
        if self.pos >= self.end:
            return self.truncated(where)
        kind = _KIND[self.data[self.pos]]
        refused = _REFUSED.get(kind)
        if refused is not None:
            return _malformed(where, refused)
        return DecodeError(f"{where}: expected {expected}, got {kind}")

    # -- headers --------------------------------------------------------------------------

    def peek(self, where: str) -> int:
        """The header byte at `pos`, not consumed."""
        if self.pos >= self.end:
            raise self.truncated(where)
        return self.data[self.pos]

    def _length(self, pos: int, size: int, where: str) -> int:
        # The big-endian length field of `size` bytes after the header at `pos`.
        stop = pos + 1 + size
        if stop > self.end:
            raise self.truncated(where)
        self.pos = stop
        return int.from_bytes(self.data[pos + 1 : stop], "big")

    def read_int(self, where: str, expected: str = "an integer") -> int:
        """An integer of any msgpack width (fixints, uint8..64, int8..64)."""
        pos = self.pos
        if pos >= self.end:
            raise self.truncated(where)
        h = self.data[pos]
        if h < 0x80:
            self.pos = pos + 1
            return h
        if h >= 0xE0:
            self.pos = pos + 1
            return h - 0x100
        form = _INT_FORMS.get(h)
        if form is None:
            raise self.refuse(where, expected)
        size, signed = form
        stop = pos + 1 + size
        if stop > self.end:
            raise self.truncated(where)
        self.pos = stop
        return int.from_bytes(self.data[pos + 1 : stop], "big", signed=signed)

    def read_bin_header(self, where: str, expected: str = "bytes") -> int:
        """The length a bin8/16/32 header declares; `pos` is left at its payload."""
        pos = self.pos
        if pos >= self.end:
            raise self.truncated(where)
        size = _BIN_LENGTH_SIZE.get(self.data[pos])
        if size is None:
            raise self.refuse(where, expected)
        return self._length(pos, size, where)

    def read_str_header(self, where: str, expected: str = "a string") -> int:
        """The length in bytes a fixstr/str8/16/32 header declares; `pos` is left at its payload."""
        pos = self.pos
        if pos >= self.end:
            raise self.truncated(where)
        h = self.data[pos]
        if 0xA0 <= h <= 0xBF:
            self.pos = pos + 1
            return h & 0x1F
        size = _STR_LENGTH_SIZE.get(h)
        if size is None:
            raise self.refuse(where, expected)
        return self._length(pos, size, where)

    def read_array_header(self, where: str, expected: str = "a list") -> int:
        """The item count a fixarray/array16/32 header declares; `pos` is left at item 0.

        A count above the bytes left is refused here: every item takes at least one byte.
        """
        pos = self.pos
        if pos >= self.end:
            raise self.truncated(where)
        h = self.data[pos]
        if 0x90 <= h <= 0x9F:
            self.pos = pos + 1
            count = h & 0x0F
        else:
            size = _ARRAY_LENGTH_SIZE.get(h)
            if size is None:
                raise self.refuse(where, expected)
            count = self._length(pos, size, where)
        if count > self.end - self.pos:
            raise _malformed(where, f"an array of {count} items in {self.end - self.pos} bytes")
        return count

    # -- payloads -------------------------------------------------------------------------

    def _payload_end(self, size: int, where: str) -> int:
        stop = self.pos + size
        if stop > self.end:
            raise self.truncated(where)
        return stop

    def read_bytes(self, size: int, where: str) -> bytes:
        """The next `size` bytes (a payload whose header was read and checked)."""
        start, stop = self.pos, self._payload_end(size, where)
        self.pos = stop
        return bytes(self.data[start:stop])

    def read_utf8(self, size: int, where: str) -> str:
        """The next `size` bytes as strict UTF-8 (as msgpack's own decoder checks it)."""
        start, stop = self.pos, self._payload_end(size, where)
        try:
            text = str(self.data[start:stop], "utf-8")
        except UnicodeDecodeError as exc:
            raise _malformed(where, f"invalid UTF-8: {exc.reason}") from exc
        self.pos = stop
        return text

    def finish(self, where: str) -> None:
        """Refuse bytes after the value just read."""
        if self.pos != self.end:
            extra = self.end - self.pos
            raise _malformed(where, f"{extra} trailing byte{'' if extra == 1 else 's'}")


def decode_value(body: bytes | bytearray | memoryview, spec: Spec, where: str = "value") -> Any:
    """Strictly read a body that is exactly one msgpack value of `spec`, or `DecodeError`."""
    reader = Reader(body)
    value = spec.read(reader, where)
    reader.finish(where)
    return value


# --------------------------------------------------------------------------------------------
# Field specs
# --------------------------------------------------------------------------------------------


class Spec(abc.ABC):
    """What one field may hold.

    `read()` decodes a value from peer bytes, checking each header before building anything;
    `problem()` says why an already-built value is unacceptable, which is what `encode()` (and
    `decode()`, for values msgpack built) check.  A new kind of spec implements both.
    """

    @abc.abstractmethod
    def problem(self, value: object) -> str | None:
        """None if `value` is acceptable, else a short reason naming what is wrong."""

    @abc.abstractmethod
    def read(self, reader: Reader, where: str) -> Any:
        """Read one value at `reader.pos`, or `DecodeError` naming `where`.

        Must check the header against the spec before building any object for the value.
        """

    def read_list(self, reader: Reader, start: int, count: int, where: str) -> tuple[Any, ...]:
        """Read the `count` items of a list of this spec, whose header began at `start`.

        `count` has been checked against the list's bounds and the bytes left.  A spec may
        override this with a faster path for lists of it (`Bytes` does).
        """
        read = self.read
        return tuple([read(reader, f"{where}[{index}]") for index in range(count)])

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

    def _range_problem(self, value: int) -> str | None:
        if not self.min_value <= value <= self.max_value:
            return f"integer {value} outside [{self.min_value}, {self.max_value}]"
        return None

    def problem(self, value: object) -> str | None:
        if type(value) is not int:
            return f"expected an integer, got {type(value).__name__}"
        return self._range_problem(value)

    def read(self, reader: Reader, where: str) -> int:
        value = reader.read_int(where)
        if not self.min_value <= value <= self.max_value:
            raise DecodeError(f"{where}: {self._range_problem(value)}")
        return value


@attrs.frozen
class Boolean(Spec):
    def problem(self, value: object) -> str | None:
        if type(value) is not bool:
            return f"expected a boolean, got {type(value).__name__}"
        return None

    def read(self, reader: Reader, where: str) -> bool:
        h = reader.peek(where)
        if h == 0xC2 or h == 0xC3:
            reader.pos += 1
            return h == 0xC3
        raise reader.refuse(where, "a boolean")


@attrs.frozen
class Bytes(Spec):
    """Raw bytes (msgpack bin) of min_len..max_len bytes."""

    min_len: int = 0
    max_len: int = DEFAULT_MAX_MESSAGE_SIZE

    def _length_problem(self, size: int) -> str | None:
        if not self.min_len <= size <= self.max_len:
            if self.min_len == self.max_len:
                return f"expected exactly {self.min_len} bytes, got {size}"
            return f"{size} bytes outside [{self.min_len}, {self.max_len}]"
        return None

    def problem(self, value: object) -> str | None:
        if type(value) is not bytes:
            return f"expected bytes, got {type(value).__name__}"
        return self._length_problem(len(value))

    def read(self, reader: Reader, where: str) -> bytes:
        size = reader.read_bin_header(where)
        if not self.min_len <= size <= self.max_len:
            raise DecodeError(f"{where}: {self._length_problem(size)}")
        return reader.read_bytes(size, where)

    def read_list(self, reader: Reader, start: int, count: int, where: str) -> tuple[Any, ...]:
        # Lists of leaves and hashes are most of what peers send, and a Python loop that reads
        # and slices each item costs several times what msgpack does.  So one tight pass checks
        # every item's header and length without building anything, and then msgpack builds
        # the tuple from the array just checked (whose header is at `start`): by then it can
        # hold nothing but bins of allowed lengths.  The pass reads a header byte and a 16-bit
        # length with one struct call; what that does not cover (bin32, a header too close to
        # the end, anything refused) goes through `_read_item`, which also words the errors.
        data, pos = reader.data, reader.pos
        low, high = self.min_len, self.max_len
        resume = index = 0
        while resume < count:
            try:
                # `index` outlives the loop: it is the item the exact path takes over at.
                for index in range(resume, count):  # noqa: B007
                    h, size = _HEADER_AND_U16(data, pos)
                    if h == 0xC5 and low <= size <= high:
                        pos += 3 + size
                    elif h == 0xC4 and low <= (size >> 8) <= high:
                        pos += 2 + (size >> 8)
                    else:
                        break
                else:
                    break
            except struct.error:
                pass  # fewer than 3 bytes left at `pos`
            pos = self._read_item(reader, pos, f"{where}[{index}]", where)
            resume = index + 1
        if pos > reader.end:
            reader.pos = reader.end
            raise reader.truncated(where)
        reader.pos = pos
        items: tuple[bytes, ...] = msgpack.unpackb(memoryview(data)[start:pos], use_list=False)
        return items

    def _read_item(self, reader: Reader, pos: int, where: str, list_where: str) -> int:
        """Check the item at `pos` as `read` would, without building it; where it ends."""
        if pos > reader.end:
            # An earlier item's payload ran past the end; the list, not this item, is short.
            reader.pos = reader.end
            raise reader.truncated(list_where)
        reader.pos = pos
        size = reader.read_bin_header(where)
        if not self.min_len <= size <= self.max_len:
            raise DecodeError(f"{where}: {self._length_problem(size)}")
        return reader.pos + size


@attrs.frozen
class Text(Spec):
    """A UTF-8 string (msgpack str) of at most max_len characters."""

    max_len: int = 1024
    min_len: int = 0

    def _length_problem(self, text: str) -> str | None:
        if not self.min_len <= len(text) <= self.max_len:
            return f"string of {len(text)} characters outside [{self.min_len}, {self.max_len}]"
        return None

    def problem(self, value: object) -> str | None:
        if type(value) is not str:
            return f"expected a string, got {type(value).__name__}"
        return self._length_problem(value)

    def read(self, reader: Reader, where: str) -> str:
        size = reader.read_str_header(where)
        # A UTF-8 character takes at most 4 bytes, so this many bytes cannot fit: refused
        # before they are decoded.
        if size > 4 * self.max_len:
            raise DecodeError(
                f"{where}: string of {size} bytes is longer than {self.max_len} characters"
            )
        text = reader.read_utf8(size, where)
        problem = self._length_problem(text)
        if problem is not None:
            raise DecodeError(f"{where}: {problem}")
        return text


@attrs.frozen
class Nullable(Spec):
    """Either nil or a value of `inner`."""

    inner: Spec

    def problem(self, value: object) -> str | None:
        return None if value is None else self.inner.problem(value)

    def read(self, reader: Reader, where: str) -> Any:
        if reader.peek(where) == 0xC0:
            reader.pos += 1
            return None
        return self.inner.read(reader, where)

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

    def _count_problem(self, count: int) -> str | None:
        if not self.min_items <= count <= self.max_items:
            return f"list of {count} items outside [{self.min_items}, {self.max_items}]"
        return None

    def _size_problem(self, value: object) -> str | None:
        if not isinstance(value, list | tuple):
            return f"expected a list, got {type(value).__name__}"
        return self._count_problem(len(value))

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

    def read(self, reader: Reader, where: str) -> tuple[Any, ...]:
        start = reader.pos
        count = reader.read_array_header(where, "a list")
        if not self.min_items <= count <= self.max_items:
            raise DecodeError(f"{where}: {self._count_problem(count)}")
        if count == 0:
            return ()
        return self.item.read_list(reader, start, count, where)

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
        if type(item).encode is Spec.encode:
            problem = item.problem
            for i, v in enumerate(value):
                p = problem(v)
                if p is not None:
                    raise LocalProtocolError(f"{where}[{i}]: {p}")
            return list(value)
        return [item.encode(v, f"{where}[{i}]") for i, v in enumerate(value)]


@attrs.frozen
class Struct(Spec):
    """A nested attrs class whose fields all carry specs, encoded as an array of its fields."""

    cls: type[Any]
    schema: tuple[tuple[str, Spec], ...] = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "schema", _schema_of(self.cls))

    def problem(self, value: object) -> str | None:
        if not isinstance(value, self.cls):
            return f"expected {self.cls.__name__}"
        return _fields_problem(self.schema, value)

    def read(self, reader: Reader, where: str) -> Any:
        count = reader.read_array_header(where, "an array")
        return _read_fields(reader, self.cls, self.schema, count, where)

    def decode(self, value: object, where: str) -> Any:
        return _decode_fields(self.cls, self.schema, value, where)

    def encode(self, value: object, where: str) -> Any:
        if not isinstance(value, self.cls):
            raise LocalProtocolError(f"{where}: expected {self.cls.__name__}")
        return _encode_fields(self.schema, value, where)


@attrs.frozen
class _Variant:
    tag: str
    cls: type[Any]
    schema: tuple[tuple[str, Spec], ...]


def _tag_table(classes: Mapping[str, type[Any]]) -> tuple[tuple[str, type[Any]], ...]:
    return tuple(classes.items())


@attrs.frozen
class Tagged(Spec):
    """An array `[tag, field, ...]`: a string tag naming an attrs class, then its fields.

    `classes` maps each tag to a class whose fields all carry specs (a class with no fields is
    a bare `[tag]`); it is kept as (tag, class) pairs.  Reads as an instance of the tagged
    class; errors name `where.tag.field`.
    """

    classes: tuple[tuple[str, type[Any]], ...] = attrs.field(converter=_tag_table)
    _by_tag: dict[bytes, _Variant] = attrs.field(init=False, eq=False, repr=False)
    _by_class: dict[type[Any], _Variant] = attrs.field(init=False, eq=False, repr=False)
    _longest_tag: int = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        variants = tuple(_Variant(tag, cls, _schema_of(cls)) for tag, cls in self.classes)
        by_tag = {variant.tag.encode(): variant for variant in variants}
        by_class = {variant.cls: variant for variant in variants}
        if len(by_class) != len(variants):
            raise TypeError("Tagged: a class may carry only one tag")
        object.__setattr__(self, "_by_tag", by_tag)
        object.__setattr__(self, "_by_class", by_class)
        object.__setattr__(self, "_longest_tag", max(map(len, by_tag), default=0))

    def _variant_of(self, value: object) -> _Variant | None:
        return self._by_class.get(type(value))

    def problem(self, value: object) -> str | None:
        variant = self._variant_of(value)
        if variant is None:
            return f"expected one of {', '.join(cls.__name__ for _, cls in self.classes)}"
        return _fields_problem(variant.schema, value)

    def read(self, reader: Reader, where: str) -> Any:
        count = reader.read_array_header(where, "an array")
        if count == 0:
            raise DecodeError(f"{where}: expected a tagged array, got an empty one")
        size = reader.read_str_header(where, "a string tag")
        # No tag is longer than the longest known one, so a longer string is never decoded.
        if size > self._longest_tag:
            raise DecodeError(f"{where}: unknown tag of {size} bytes")
        raw = reader.read_bytes(size, where)
        variant = self._by_tag.get(raw)
        if variant is None:
            raise DecodeError(f"{where}: unknown tag {raw.decode('utf-8', 'replace')!r}")
        return _read_fields(
            reader, variant.cls, variant.schema, count - 1, f"{where}.{variant.tag}"
        )

    def decode(self, value: object, where: str) -> Any:
        if type(value) is not list or not value:
            raise DecodeError(f"{where}: expected a tagged array")
        tag = value[0]
        variant = self._by_tag.get(tag.encode()) if type(tag) is str else None
        if variant is None:
            raise DecodeError(f"{where}: unknown tag {tag!r}")
        return _decode_fields(variant.cls, variant.schema, value[1:], f"{where}.{tag}")

    def encode(self, value: object, where: str) -> Any:
        variant = self._variant_of(value)
        if variant is None:
            raise LocalProtocolError(f"{where}: {self.problem(value)}")
        return [variant.tag, *_encode_fields(variant.schema, value, f"{where}.{variant.tag}")]


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


def _read_fields(
    reader: Reader, cls: type[Any], schema: Sequence[tuple[str, Spec]], count: int, where: str
) -> Any:
    if count != len(schema):
        raise DecodeError(f"{where}: expected {len(schema)} fields, got {count}")
    return cls(*[spec.read(reader, f"{where}.{name}") for name, spec in schema])


def _fields_problem(schema: Sequence[tuple[str, Spec]], value: object) -> str | None:
    for name, spec in schema:
        problem = spec.problem(getattr(value, name))
        if problem is not None:
            return f"{name}: {problem}"
    return None


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
    out: list[Any] = []
    for name, spec in schema:
        item = getattr(value, name)
        if type(spec).encode is Spec.encode:
            # A leaf spec: check it, and name the field only if it fails (building every
            # field's name for an error that almost never comes cost more than the check).
            problem = spec.problem(item)
            if problem is not None:
                raise LocalProtocolError(f"{where}.{name}: {problem}")
            out.append(item)
        else:
            out.append(spec.encode(item, f"{where}.{name}"))
    return out


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
    # ("Ping.nonce", spec) for each field: the names errors use, built once.
    fields: tuple[tuple[str, Spec], ...] = attrs.field(init=False, eq=False)

    def __attrs_post_init__(self) -> None:
        name = self.cls.__name__
        fields = tuple((f"{name}.{field}", spec) for field, spec in self.schema)
        object.__setattr__(self, "fields", fields)


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
        reader = Reader(body)
        data = reader.data
        if not reader.end:
            raise reader.truncated("message")
        kind = _KIND[data[0]]
        if kind != "list":
            if kind in _REFUSED:
                raise reader.refuse("message", "an array")
            raise DecodeError("message must be a non-empty msgpack array")
        count = reader.read_array_header("message", "an array")
        if count == 0:
            raise DecodeError("message must be a non-empty msgpack array")
        h = data[reader.pos]  # count >= 1 was checked against the bytes left
        if h < 0x80:  # a positive fixint, as every type id below 128 is packed: read inline
            reader.pos += 1
            type_id = h
        elif _KIND[h] == "int":
            type_id = reader.read_int("message type")
        elif _KIND[h] in _REFUSED:
            raise reader.refuse("message type", "an integer")
        else:
            raise DecodeError(f"message type must be an integer, got {_KIND[h]}")
        entry = self._by_id.get(type_id)
        if entry is None:
            raise DecodeError(f"unknown message type {type_id}")
        name = entry.cls.__name__
        if count - 1 != len(entry.fields):
            raise DecodeError(f"{name}: expected {len(entry.fields)} fields, got {count - 1}")
        args = [spec.read(reader, where) for where, spec in entry.fields]
        reader.finish(name)
        return entry.cls(*args)


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

    The framing is the project's one frame reader (`trustix_p2p.core.lean.frame.FrameReader`,
    which documents the buffering); this adds the registry's strict decoding of each body.
    Call `next_message()`; when it returns None, `feed()` more bytes.  A length above
    `max_message_size` is refused as soon as its 4 bytes arrive.  After a `DecodeError` the
    reader is unusable (the stream has lost its framing).
    """

    __slots__ = ("_frames", "_registry", "last_size")

    def __init__(
        self,
        *,
        registry: MessageRegistry = REGISTRY,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    ) -> None:
        self._registry = registry
        self._frames = FrameReader(max_message_size, "message")
        #: The framed size (length prefix included) of the message returned last.
        self.last_size = 0

    def buffered(self) -> int:
        return self._frames.buffered()

    @property
    def at_boundary(self) -> bool:
        """True when no partial message is buffered (a clean place for the stream to end)."""
        return self._frames.at_boundary

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Add bytes; the reader keeps a reference, so do not mutate `data` afterwards.

        Allowed only after `next_message()` returned None.
        """
        self._frames.feed(data)

    def next_message(self) -> Message | None:
        body = self._frames.next_frame()
        if body is None:
            return None
        self.last_size = LENGTH_PREFIX_SIZE + len(body)
        try:
            return self._registry.decode_body(body)
        except DecodeError:
            self._frames.fail()
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
