"""What the post-build hook needs of the control socket: framing, submitting, the answer.

Frames are a 4-byte big-endian length (read by the one frame reader,
`trustix_p2p.core.lean.frame`) and a msgpack array whose first element names the message; the
message tables are in `trustix_p2p.control.protocol`.  This module holds the frame limit, the
submit request and the check of its `["ok", [index, ...]]` reply, so that the hook submits
without loading attrs; tests/test_control_protocol.py holds `submit_indices` to the answers of
the declarative `protocol.SubmitReply` on arbitrary input.

Lean layer (see `trustix_p2p.core.lean`): no I/O (`trustix_p2p.control.client` owns the
socket), no attrs, no `typing` at run time.
"""

from __future__ import annotations

import msgpack

from trustix_p2p.core.lean.entry import is_uint63
from trustix_p2p.core.lean.frame import FrameReader, frame_header
from trustix_p2p.errors import DecodeError, NodeUnavailableError, RemoteProtocolError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = [
    "MAX_FRAME",
    "MAX_HITS",
    "MAX_LEAVES_PER_SUBMIT",
    "frame",
    "frame_reader",
    "submit_chunks",
    "submit_indices",
    "submit_request",
]

# What a request can need: a submission is sent in frames of at most SUBMIT_FRAME_BYTES of
# leaves (`submit_chunks`), and an entry is at most 1 MiB (`MAX_ENTRY_BYTES`), so 16 MiB
# bounds every request.
MAX_FRAME = 16 << 20
SUBMIT_FRAME_BYTES = 8 << 20
SUBMIT_FRAME_LEAVES = 1000
MAX_LEAVES_PER_SUBMIT = 100_000
MAX_HITS = 10_000
MAX_MESSAGE = 4096


def frame(obj: Any) -> bytes:
    data: bytes = msgpack.packb(obj, use_bin_type=True)
    if len(data) > MAX_FRAME:
        raise RemoteProtocolError(f"control message of {len(data)} bytes exceeds {MAX_FRAME}")
    return frame_header(len(data)) + data


def frame_reader() -> FrameReader:
    """A reader of control-socket frames, refusing any above MAX_FRAME."""
    return FrameReader(MAX_FRAME, "control message")


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


def submit_indices(body: bytes | bytearray | memoryview, expected: int) -> list[int]:
    """The indices an ok reply to a submission of `expected` leaves carries.

    RemoteProtocolError carries the node's message when it refused the request, and
    NodeUnavailableError when it cannot take it now (the caller may retry or spool);
    DecodeError is any other reply.
    """
    try:
        msg = msgpack.unpackb(
            body, raw=False, use_list=True, strict_map_key=True, max_array_len=expected + 2
        )
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise DecodeError(f"control reply is not valid msgpack: {exc}") from exc
    if type(msg) is not list or len(msg) != 2:
        raise DecodeError("malformed control reply")
    tag, value = msg
    # Messages beyond MAX_MESSAGE characters are malformed, as `protocol.Refused` reads them.
    if tag == "error" and type(value) is str and len(value) <= MAX_MESSAGE:
        raise RemoteProtocolError(f"node refused the request: {value}")
    if tag == "unavailable" and type(value) is str and len(value) <= MAX_MESSAGE:
        raise NodeUnavailableError(f"node cannot take the request now: {value}")
    if tag != "ok" or type(value) is not list or len(value) != expected:
        raise DecodeError("malformed submit reply")
    if not all(is_uint63(x) for x in value):
        raise DecodeError("malformed submit reply: an index is not a non-negative integer")
    return value
