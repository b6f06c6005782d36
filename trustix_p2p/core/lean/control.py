"""Control-socket framing, the submit request and the checks of the node's replies.

Frames are a 4-byte big-endian length and a msgpack array whose first element names the
message (the message table is in `trustix_p2p.control.protocol`).  This module holds the
framing, the field checks the replies go through and what the post-build hook needs to submit
leaves and read the answer; `protocol` re-exports all of it next to its attrs message classes
and the schema-directed request reader.

Lean layer (see `trustix_p2p.core.lean`): no I/O (`trustix_p2p.control.client` owns the
socket), no attrs, no `typing` at run time.
"""

from __future__ import annotations

import struct

import msgpack

from trustix_p2p.core.lean.entry import is_uint63
from trustix_p2p.errors import DecodeError, NodeUnavailableError, RemoteProtocolError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = [
    "MAX_FRAME",
    "MAX_HITS",
    "MAX_LEAVES_PER_SUBMIT",
    "check_bytes",
    "check_int",
    "decode_reply",
    "frame",
    "frame_length",
    "indices_from_wire",
    "submit_chunks",
    "submit_request",
    "unpack",
]

# What a request can need: a submission is sent in frames of at most SUBMIT_FRAME_BYTES of
# leaves (`submit_chunks`), and an entry is at most 1 MiB (`MAX_ENTRY_BYTES`), so 16 MiB
# bounds every request.
MAX_FRAME = 16 << 20
SUBMIT_FRAME_BYTES = 8 << 20
SUBMIT_FRAME_LEAVES = 1000
MAX_LEAVES_PER_SUBMIT = 100_000
MAX_HITS = 10_000
_LEN = struct.Struct(">I")


def frame(obj: Any) -> bytes:
    data: bytes = msgpack.packb(obj, use_bin_type=True)
    if len(data) > MAX_FRAME:
        raise RemoteProtocolError(f"control message of {len(data)} bytes exceeds {MAX_FRAME}")
    return _LEN.pack(len(data)) + data


def frame_length(header: bytes) -> int:
    (n,) = _LEN.unpack(header)
    if n > MAX_FRAME:
        raise RemoteProtocolError(f"control message of {n} bytes exceeds {MAX_FRAME}")
    return int(n)


def unpack(data: bytes) -> list[Any]:
    try:
        obj = msgpack.unpackb(
            data, raw=False, use_list=True, strict_map_key=True, max_array_len=MAX_LEAVES_PER_SUBMIT
        )
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise DecodeError(f"control message is not valid msgpack: {exc}") from exc
    if not isinstance(obj, list) or not obj or not isinstance(obj[0], str):
        raise DecodeError("control message must be an array starting with its type")
    return obj


def check_bytes(value: Any, what: str, size: int | None = None) -> bytes:
    if not isinstance(value, bytes) or (size is not None and len(value) != size):
        raise DecodeError(f"{what} must be {size or 'some'} bytes")
    return value


def check_int(value: Any, what: str) -> int:
    # The entry's integer rule: every integer on the wire is a signed 64-bit value.
    if not is_uint63(value):
        raise DecodeError(f"{what} must be a non-negative integer")
    result: int = value
    return result


def submit_chunks(leaves: list[bytes]) -> list[list[bytes]]:
    """Split leaves into submissions of at most SUBMIT_FRAME_LEAVES leaves and
    SUBMIT_FRAME_BYTES bytes (a single larger leaf goes alone; the node judges it)."""
    chunks: list[list[bytes]] = []
    current: list[bytes] = []
    size = 0
    for leaf in leaves:
        if current and (
            len(current) >= SUBMIT_FRAME_LEAVES or size + len(leaf) > SUBMIT_FRAME_BYTES
        ):
            chunks.append(current)
            current, size = [], 0
        current.append(leaf)
        size += len(leaf) + 5  # a bin32 header at most
    if current or not chunks:
        chunks.append(current)
    return chunks


def submit_request(leaves: list[bytes]) -> bytes:
    """The framed `["submit", [leaf, ...]]` request (what `protocol.Submit` encodes to)."""
    return frame(["submit", leaves])


def decode_reply(data: bytes) -> Any:
    """The payload of an ok reply.

    RemoteProtocolError carries the node's message when it refused the request, and
    NodeUnavailableError when it cannot take it now (the caller may retry or spool).
    """
    msg = unpack(data)
    if msg[0] == "ok" and len(msg) == 2:
        return msg[1]
    if msg[0] == "error" and len(msg) == 2 and isinstance(msg[1], str):
        raise RemoteProtocolError(f"node refused the request: {msg[1]}")
    if msg[0] == "unavailable" and len(msg) == 2 and isinstance(msg[1], str):
        raise NodeUnavailableError(f"node cannot take the request now: {msg[1]}")
    raise DecodeError("malformed control reply")


def indices_from_wire(v: Any, expected: int) -> list[int]:
    if not isinstance(v, list) or len(v) != expected:
        raise DecodeError("malformed submit reply")
    return [check_int(x, "index") for x in v]
