"""Control-socket messages: declarative request and reply classes in the wire codec.

Frames are a 4-byte big-endian length and a msgpack array whose first element names the
message.  The socket is local and owner-only, but its input is still treated as untrusted
bytes: every field is type- and range-checked, and nothing reaches the node as a dict.

Requests:  ["submit", [leaf bytes, ...]]   -> ["ok", [index, ...]]
           ["status"]                      -> ["ok", [Status fields...]]
           ["checkpoint", log_id | nil]    -> ["ok", note bytes | nil]
           ["lookup", out_path]            -> ["ok", [[LookupHit fields...], ...]]
           ["peers"]                       -> ["ok", [[PeerRow fields...], ...]]
           ["evidence-list"]               -> ["ok", [[EvidenceRow fields...], ...]]
           ["evidence", id or id prefix]   -> ["ok", evidence document (JSON text)]
           ["consistency", log_id, old, new] -> ["ok", [prefix_root, note, [hash, ...]]]
           ["entries", log_id, start, count] -> ["ok", [leaf, ...]]  (at most 4096 / 8 MiB)
Any request can instead be answered ["error", message] (refused: do not retry as is) or
["unavailable", message] (the node cannot take it now, e.g. after a failed write: retry later,
or spool).

Every message, request or reply, is an attrs class whose fields carry `wire` specs, in the
control protocol's own tables: `REQUESTS` (a `wire.Tagged` spec over the request classes) and,
per request class, the `Tagged` spec of its replies (`reply_spec`).  Both sides encode through
these specs (so neither sends what the other would refuse) and read with the schema-directed
reader of `trustix_p2p.core.wire`, so a hostile frame is refused at the first header that does
not fit, before anything is built for it; no frame is handed to a general msgpack unpacker
here.  Streams are split into frames by the project's one frame reader,
`trustix_p2p.core.lean.frame.FrameReader` (`frame_reader()` makes one for this socket).

The one exception is the post-build hook's submission: the hook must not load attrs, so it
frames `["submit", leaves]` and checks the `["ok", [index, ...]]` reply in the lean layer
(`trustix_p2p.core.lean.control`); tests/test_control_protocol.py holds the two to the same
answers on arbitrary input.  This module does no I/O.
"""

from __future__ import annotations

from typing import Final

import attrs

from trustix_p2p.core import wire
from trustix_p2p.core.lean.control import (
    MAX_FRAME,
    MAX_HITS,
    MAX_LEAVES_PER_SUBMIT,
    MAX_MESSAGE,
    frame,
    frame_reader,
)
from trustix_p2p.core.lean.entry import MAX_ENTRY_BYTES
from trustix_p2p.core.note import MAX_NOTE_SIZE
from trustix_p2p.errors import NodeUnavailableError, RemoteProtocolError

# Store paths are far shorter; this only bounds what a lookup request may carry.
MAX_LOOKUP_PATH: Final = 4096
# Bounds of what a node says about itself: the addresses it listens on, and their text.
MAX_LISTEN: Final = 64
MAX_ADDRESS: Final = 300
# An inclusion proof in a log of at most 2**63 leaves has at most 63 hashes.
MAX_PROOF: Final = 64
MAX_FOLLOWED: Final = 1_000_000
MAX_PEER_ROWS: Final = 4096
MAX_EVIDENCE_ROWS: Final = 100_000
MAX_DOCUMENT: Final = 1 << 20
MAX_ENTRIES_PER_REPLY: Final = 4096
MAX_ENTRIES_REPLY_BYTES: Final = 8 << 20

__all__ = [
    "MAX_FRAME",
    "MAX_HITS",
    "MAX_LEAVES_PER_SUBMIT",
    "REQUESTS",
    "CheckpointReply",
    "CheckpointRequest",
    "ConsistencyReply",
    "ConsistencyRequest",
    "EntriesReply",
    "EntriesRequest",
    "EvidenceListReply",
    "EvidenceListRequest",
    "EvidenceReply",
    "EvidenceRequest",
    "EvidenceRow",
    "FollowedLog",
    "LookupHit",
    "LookupReply",
    "LookupRequest",
    "OkReply",
    "PeerRow",
    "PeersReply",
    "PeersRequest",
    "Refused",
    "Reply",
    "Request",
    "RetireRequest",
    "Status",
    "StatusReply",
    "StatusRequest",
    "Submit",
    "SubmitReply",
    "Unavailable",
    "decode_ok",
    "decode_reply",
    "decode_request",
    "encode_reply",
    "encode_request",
    "frame_reader",
    "reply_spec",
]

_UINT63: Final = wire.Integer(0, 2**63 - 1)
_KEY: Final = wire.Bytes(32, 32)


# -- requests -------------------------------------------------------------------------------


@attrs.frozen
class Submit:
    leaves: tuple[bytes, ...] = wire.field(
        wire.ListOf(wire.Bytes(1, MAX_ENTRY_BYTES), MAX_LEAVES_PER_SUBMIT)
    )


@attrs.frozen
class StatusRequest:
    """Ask for the node's Status; it carries no fields."""


@attrs.frozen
class CheckpointRequest:
    log_id: bytes | None = wire.field(wire.Nullable(_KEY))


@attrs.frozen
class LookupRequest:
    out_path: str = wire.field(wire.Text(max_len=MAX_LOOKUP_PATH))


@attrs.frozen
class PeersRequest:
    """Ask for the node's peers and known addresses."""


@attrs.frozen
class EvidenceListRequest:
    """Ask for the evidence the node holds."""


@attrs.frozen
class EvidenceRequest:
    """Ask for one evidence document, by its id or a unique prefix of it."""

    id: str = wire.field(wire.Text(max_len=64, min_len=1))


@attrs.frozen
class ConsistencyRequest:
    """Ask for the consistency proof from size `old_size` to the node's checkpoint of exactly
    `new_size`, with that checkpoint and the root of its tree at `old_size`."""

    log_id: bytes = wire.field(_KEY)
    old_size: int = wire.field(wire.Integer(1, 2**63 - 1))
    new_size: int = wire.field(wire.Integer(1, 2**63 - 1))


@attrs.frozen
class RetireRequest:
    """Retire the node's own log: sign its final checkpoint naming `successor` (a raw
    Ed25519 public key); the reply is that checkpoint (`CheckpointReply`)."""

    successor: bytes = wire.field(_KEY)


@attrs.frozen
class EntriesRequest:
    """Ask for the leaves [start, start + count) of a log the node holds entries of."""

    log_id: bytes = wire.field(_KEY)
    start: int = wire.field(_UINT63)
    count: int = wire.field(wire.Integer(1, MAX_ENTRIES_PER_REPLY))


Request = (
    Submit
    | ConsistencyRequest
    | EntriesRequest
    | StatusRequest
    | CheckpointRequest
    | LookupRequest
    | PeersRequest
    | EvidenceListRequest
    | EvidenceRequest
    | RetireRequest
)

# The request table: the tag each request's array starts with.
REQUESTS: Final = wire.Tagged(
    {
        "submit": Submit,
        "status": StatusRequest,
        "checkpoint": CheckpointRequest,
        "lookup": LookupRequest,
        "peers": PeersRequest,
        "evidence-list": EvidenceListRequest,
        "evidence": EvidenceRequest,
        "consistency": ConsistencyRequest,
        "entries": EntriesRequest,
        "retire": RetireRequest,
    }
)


# -- replies --------------------------------------------------------------------------------


_INT32: Final = wire.Integer(-(2**31), 2**31 - 1)


@attrs.frozen
class FollowedLog:
    """One log the node follows: how, how far, and what it knows of it."""

    log_id: bytes = wire.field(_KEY)
    public_key: bytes = wire.field(_KEY)
    name: str | None = wire.field(wire.Nullable(wire.Text(max_len=64)))
    mode: str = wire.field(wire.Text(max_len=16))  # own, mirror, witness
    size: int = wire.field(_UINT63)  # entries stored
    head_size: int | None = wire.field(wire.Nullable(_UINT63))
    head_time: int | None = wire.field(wire.Nullable(_UINT63))
    cosignatures: int = wire.field(_UINT63)
    evidence: int = wire.field(_UINT63)
    # While a mirror syncs: entries per second and seconds left (None otherwise).
    sync_rate: int | None = wire.field(wire.Nullable(_UINT63))
    sync_eta: int | None = wire.field(wire.Nullable(_UINT63))
    # The peer the latest checkpoint came from first, and how often it was received.
    head_from: bytes | None = wire.field(wire.Nullable(_KEY), default=None)
    head_receipts: int = wire.field(_UINT63, default=0)
    # The successor key named by the log's final checkpoint (the log is retired).
    successor: bytes | None = wire.field(wire.Nullable(_KEY), default=None)


@attrs.frozen
class Status:
    """What `trustix-p2p status` shows."""

    public_key: bytes | None = wire.field(wire.Nullable(_KEY))
    log_id: bytes | None = wire.field(wire.Nullable(_KEY))
    size: int = wire.field(_UINT63)
    checkpoint_size: int = wire.field(_UINT63)
    checkpoint_time: int = wire.field(_UINT63)
    spool_pending: int = wire.field(_UINT63)
    logs: int = wire.field(_UINT63)
    listen: tuple[str, ...] = wire.field(
        wire.ListOf(wire.Text(max_len=MAX_ADDRESS), MAX_LISTEN), converter=tuple
    )
    peers: int = wire.field(_UINT63, default=0)
    follows: tuple[FollowedLog, ...] = wire.field(
        wire.ListOf(wire.Struct(FollowedLog), MAX_FOLLOWED), converter=tuple, default=()
    )
    evidence: int = wire.field(_UINT63, default=0)
    # The own log is retired: the successor key its final checkpoint names.
    successor: bytes | None = wire.field(wire.Nullable(_KEY), default=None)


@attrs.frozen
class PeerRow:
    address: str = wire.field(wire.Text(max_len=MAX_ADDRESS + 60))
    key: str = wire.field(wire.Text(max_len=64))
    direction: str = wire.field(wire.Text(max_len=8))
    state: str = wire.field(wire.Text(max_len=16))
    score: int = wire.field(_INT32)
    last_reason: str = wire.field(wire.Text(max_len=MAX_MESSAGE))


@attrs.frozen
class EvidenceRow:
    id: str = wire.field(wire.Text(max_len=64))
    kind: str = wire.field(wire.Text(max_len=32))
    log_id: bytes = wire.field(_KEY)
    public_key: bytes = wire.field(_KEY)
    found_at: int = wire.field(_UINT63)


@attrs.frozen
class LookupHit:
    """One leaf about the looked-up path, with its proof against the log's latest checkpoint.

    `checkpoint` and `proof` are None when the leaf is not yet covered by a signed checkpoint.
    """

    log_id: bytes = wire.field(_KEY)
    index: int = wire.field(_UINT63)
    leaf: bytes = wire.field(wire.Bytes(1, MAX_ENTRY_BYTES))
    checkpoint: bytes | None = wire.field(wire.Nullable(wire.Bytes(1, MAX_NOTE_SIZE)))
    proof: tuple[bytes, ...] | None = wire.field(wire.Nullable(wire.ListOf(_KEY, MAX_PROOF)))


@attrs.frozen
class SubmitReply:
    """The log index of each submitted leaf, in order, once durable."""

    indices: tuple[int, ...] = wire.field(
        wire.ListOf(_UINT63, MAX_LEAVES_PER_SUBMIT), converter=tuple
    )


@attrs.frozen
class StatusReply:
    status: Status = wire.field(wire.Struct(Status))


@attrs.frozen
class CheckpointReply:
    """The latest signed checkpoint note of the log asked about, or None."""

    note: bytes | None = wire.field(wire.Nullable(wire.Bytes(1, MAX_NOTE_SIZE)))


@attrs.frozen
class LookupReply:
    hits: tuple[LookupHit, ...] = wire.field(
        wire.ListOf(wire.Struct(LookupHit), MAX_HITS), converter=tuple
    )


@attrs.frozen
class PeersReply:
    peers: tuple[PeerRow, ...] = wire.field(
        wire.ListOf(wire.Struct(PeerRow), MAX_PEER_ROWS), converter=tuple
    )


@attrs.frozen
class EvidenceListReply:
    items: tuple[EvidenceRow, ...] = wire.field(
        wire.ListOf(wire.Struct(EvidenceRow), MAX_EVIDENCE_ROWS), converter=tuple
    )


@attrs.frozen
class ConsistencyReply:
    prefix_root: bytes = wire.field(_KEY)
    note: bytes = wire.field(wire.Bytes(1, MAX_NOTE_SIZE))
    proof: tuple[bytes, ...] = wire.field(wire.ListOf(_KEY, 2 * MAX_PROOF), converter=tuple)


@attrs.frozen
class EntriesReply:
    leaves: tuple[bytes, ...] = wire.field(
        wire.ListOf(wire.Bytes(1, MAX_ENTRY_BYTES), MAX_ENTRIES_PER_REPLY), converter=tuple
    )


@attrs.frozen
class EvidenceReply:
    document: str = wire.field(wire.Text(max_len=MAX_DOCUMENT))


def _clip(message: str) -> str:
    return message[:MAX_MESSAGE]


@attrs.frozen
class Refused:
    """The node refused the request: do not retry it as is."""

    message: str = wire.field(wire.Text(max_len=MAX_MESSAGE), converter=_clip)


@attrs.frozen
class Unavailable:
    """The node cannot take the request now (a failed write, say): retry later, or spool."""

    message: str = wire.field(wire.Text(max_len=MAX_MESSAGE), converter=_clip)


OkReply = (
    SubmitReply
    | StatusReply
    | CheckpointReply
    | LookupReply
    | PeersReply
    | EvidenceListReply
    | EvidenceReply
    | ConsistencyReply
    | EntriesReply
)
Reply = OkReply | Refused | Unavailable

_OK_REPLY: Final[dict[type[Request], type[OkReply]]] = {
    Submit: SubmitReply,
    StatusRequest: StatusReply,
    CheckpointRequest: CheckpointReply,
    LookupRequest: LookupReply,
    PeersRequest: PeersReply,
    EvidenceListRequest: EvidenceListReply,
    EvidenceRequest: EvidenceReply,
    ConsistencyRequest: ConsistencyReply,
    EntriesRequest: EntriesReply,
    RetireRequest: CheckpointReply,
}
# Per request class, the table of its replies.
_REPLIES: Final[dict[type[Request], wire.Tagged]] = {
    request: wire.Tagged({"ok": ok, "error": Refused, "unavailable": Unavailable})
    for request, ok in _OK_REPLY.items()
}
# Each reply class to a table that encodes it.
_ENCODERS: Final[dict[type[Reply], wire.Tagged]] = {
    **{ok: _REPLIES[request] for request, ok in _OK_REPLY.items()},
    Refused: _REPLIES[Submit],
    Unavailable: _REPLIES[Submit],
}


def reply_spec(request: Request | type[Request]) -> wire.Tagged:
    """The table of replies to this request (or request class)."""
    return _REPLIES[request if isinstance(request, type) else type(request)]


# -- encoding and decoding ------------------------------------------------------------------


def encode_request(request: Request) -> bytes:
    """The framed request (a Submit frames to what the lean layer's `submit_request` does)."""
    return frame(REQUESTS.encode(request, "control request"))


def decode_request(body: bytes | bytearray | memoryview) -> Request:
    """The request a frame's body holds, or `DecodeError` for anything malformed."""
    request: Request = wire.decode_value(body, REQUESTS, "control request")
    return request


def encode_reply(reply: Reply) -> bytes:
    """The framed reply; `LocalProtocolError` if it breaks its own spec (a bug of ours)."""
    return frame(_ENCODERS[type(reply)].encode(reply, "control reply"))


def decode_reply(request: Request, body: bytes | bytearray | memoryview) -> Reply:
    """The reply to `request` a frame's body holds, or `DecodeError` if malformed."""
    reply: Reply = wire.decode_value(body, reply_spec(request), "control reply")
    return reply


def decode_ok(request: Request, body: bytes | bytearray | memoryview) -> OkReply:
    """The ok reply to `request`.

    RemoteProtocolError carries the node's message when it refused the request, and
    NodeUnavailableError when it cannot take it now (the caller may retry or spool).
    """
    reply = decode_reply(request, body)
    match reply:
        case Refused(message):
            raise RemoteProtocolError(f"node refused the request: {message}")
        case Unavailable(message):
            raise NodeUnavailableError(f"node cannot take the request now: {message}")
    return reply
