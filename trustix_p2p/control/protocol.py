"""Control-socket messages: framing, attrs message classes and strict decoders.

Frames are a 4-byte big-endian length and a msgpack array whose first element names the
message.  The socket is local and owner-only, but its input is still treated as untrusted
bytes: every field is type- and range-checked here, and nothing reaches the node as a dict.

Requests:  ["submit", [leaf bytes, ...]]   -> ["ok", [index, ...]]
           ["status"]                      -> ["ok", Status fields...]
           ["checkpoint", log_id | nil]    -> ["ok", note bytes | nil]
           ["lookup", out_path]            -> ["ok", [LookupHit fields...], ...]
Any request can instead be answered ["error", message] (refused: do not retry as is) or
["unavailable", message] (the node cannot take it now, e.g. after a failed write: retry later,
or spool).

Requests are read by the schema-directed reader of `trustix_p2p.core.wire` (a `Tagged` spec
over the request classes below), so a hostile frame is refused at the first header that does
not fit, before anything is built for it; this module must never hand a request frame to a
general msgpack unpacker.  Replies come from our own node and are read with msgpack.

The framing, the submit request and the reply checks live in the lean layer,
`trustix_p2p.core.lean.control` (the post-build hook submits through it, with plain msgpack),
and are re-exported here.  This module does no I/O.
"""

from __future__ import annotations

from typing import Any, Final

import attrs

from trustix_p2p.core import wire
from trustix_p2p.core.lean.control import (
    MAX_FRAME,
    MAX_HITS,
    MAX_LEAVES_PER_SUBMIT,
    decode_reply,
    frame,
    frame_length,
    indices_from_wire,
    submit_request,
    unpack,
)
from trustix_p2p.core.lean.control import check_bytes as _bytes
from trustix_p2p.core.lean.control import check_int as _int
from trustix_p2p.core.lean.entry import MAX_ENTRY_BYTES
from trustix_p2p.errors import DecodeError

# Store paths are far shorter; this only bounds what a lookup request may carry.
MAX_LOOKUP_PATH: Final = 4096

__all__ = [
    "MAX_FRAME",
    "MAX_HITS",
    "MAX_LEAVES_PER_SUBMIT",
    "CheckpointRequest",
    "LookupHit",
    "LookupRequest",
    "Request",
    "Status",
    "StatusRequest",
    "Submit",
    "decode_reply",
    "decode_request",
    "encode_error",
    "encode_ok",
    "encode_request",
    "encode_unavailable",
    "frame",
    "frame_length",
    "hit_to_wire",
    "hits_from_wire",
    "indices_from_wire",
    "status_from_wire",
    "status_to_wire",
    "submit_request",
    "unpack",
]


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
    log_id: bytes | None = wire.field(wire.Nullable(wire.Bytes(32, 32)))


@attrs.frozen
class LookupRequest:
    out_path: str = wire.field(wire.Text(max_len=MAX_LOOKUP_PATH))


Request = Submit | StatusRequest | CheckpointRequest | LookupRequest

# The request table: the tag each request's array starts with.
_REQUESTS: Final = wire.Tagged(
    {
        "submit": Submit,
        "status": StatusRequest,
        "checkpoint": CheckpointRequest,
        "lookup": LookupRequest,
    }
)


@attrs.frozen
class Status:
    """What `trustix-p2p status` shows."""

    public_key: bytes | None
    log_id: bytes | None
    size: int
    checkpoint_size: int
    checkpoint_time: int
    spool_pending: int
    logs: int
    listen: tuple[str, ...]


@attrs.frozen
class LookupHit:
    """One leaf about the looked-up path, with its proof against the log's latest checkpoint.

    `checkpoint` and `proof` are None when the leaf is not yet covered by a signed checkpoint.
    """

    log_id: bytes
    index: int
    leaf: bytes
    checkpoint: bytes | None
    proof: tuple[bytes, ...] | None


def encode_request(req: Request) -> bytes:
    match req:
        case Submit(leaves):
            return submit_request(list(leaves))
        case StatusRequest():
            return frame(["status"])
        case CheckpointRequest(log_id):
            return frame(["checkpoint", log_id])
        case LookupRequest(out_path):
            return frame(["lookup", out_path])
    raise AssertionError(f"unknown request {req!r}")


def decode_request(data: bytes) -> Request:
    """The request a frame's body holds, or `DecodeError` for anything malformed."""
    request: Request = wire.decode_value(data, _REQUESTS, "control request")
    return request


def encode_ok(payload: Any) -> bytes:
    return frame(["ok", payload])


def encode_error(message: str) -> bytes:
    return frame(["error", message[:4096]])


def encode_unavailable(message: str) -> bytes:
    return frame(["unavailable", message[:4096]])


def status_to_wire(s: Status) -> list[Any]:
    return [
        s.public_key,
        s.log_id,
        s.size,
        s.checkpoint_size,
        s.checkpoint_time,
        s.spool_pending,
        s.logs,
        list(s.listen),
    ]


def status_from_wire(v: Any) -> Status:
    if not isinstance(v, list) or len(v) != 8:
        raise DecodeError("malformed status reply")
    pub = None if v[0] is None else _bytes(v[0], "public key", 32)
    log_id = None if v[1] is None else _bytes(v[1], "log id", 32)
    if not isinstance(v[7], list) or not all(isinstance(x, str) for x in v[7]):
        raise DecodeError("malformed status reply")
    return Status(
        pub,
        log_id,
        _int(v[2], "size"),
        _int(v[3], "checkpoint size"),
        _int(v[4], "checkpoint time"),
        _int(v[5], "spool"),
        _int(v[6], "logs"),
        tuple(v[7]),
    )


def hit_to_wire(h: LookupHit) -> list[Any]:
    return [h.log_id, h.index, h.leaf, h.checkpoint, None if h.proof is None else list(h.proof)]


def hits_from_wire(v: Any) -> list[LookupHit]:
    if not isinstance(v, list) or len(v) > MAX_HITS:
        raise DecodeError("malformed lookup reply")
    hits = []
    for item in v:
        if not isinstance(item, list) or len(item) != 5:
            raise DecodeError("malformed lookup hit")
        proof = item[4]
        if proof is not None:
            if not isinstance(proof, list) or len(proof) > 64:
                raise DecodeError("malformed lookup proof")
            proof = tuple(_bytes(p, "proof hash", 32) for p in proof)
        hits.append(
            LookupHit(
                _bytes(item[0], "log id", 32),
                _int(item[1], "index"),
                _bytes(item[2], "leaf"),
                None if item[3] is None else _bytes(item[3], "checkpoint"),
                proof,
            )
        )
    return hits
