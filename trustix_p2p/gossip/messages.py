"""The gossip protocol's messages (wire ids 16..31), declared once in the wire codec.

docs/protocol.md describes each with the rules the engine follows.  In short:

- `Hello` opens every connection (both sides): the addresses where the sender can be dialled.
- `GetPeers` / `Peers`: peer exchange, at most `MAX_PEERS` addresses `<key>@host:port`.
- `Heads`: checkpoints, each with the public key of its log (a receiver needs the key to verify
  the note and may never have heard of the log) and the consistency proof from the sender's
  previous head when it has one.  Pushed once per new checkpoint, and sent in
  full by anti-entropy; `want_reply` asks the peer for its own heads in return.
- `GetConsistency` / `Consistency`: the responder's checkpoint note of exactly `new_size`, the
  root of the first `old_size` leaves of that tree (`prefix_root`, carried explicitly as in the
  evidence document of DESIGN §4) and the RFC 9162 consistency proof between them.
- `GetEntries` / `Entries`: leaves [start, start + n) of a mirrored log, with the responder's
  checkpoint note of exactly `target_size` and the consistency proof from (start + n) to it; a
  receiver stores them only once they rebuild that signed root.
- `Cosigned`: a witness's C2SP tlog-cosignature/v1 of a checkpoint note.
- `NoData`: the responder cannot answer a request (it does not mirror the log, or has no
  checkpoint of that size); the requester asks someone else.
- `GetPathEntries` / `PathEntries`: what a light client asks a node: every entry the node
  holds about a store path, each with its log's key, checkpoint note and inclusion proof.
- Evidence travels as `trustix_p2p.core.evidence.EvidenceMessage` (id 24).

Limits are in the specs, so a message that breaks one is refused by the strict reader before
anything is built for it.  This module is pure.
"""

from __future__ import annotations

from typing import Final

import attrs

from trustix_p2p.core import wire
from trustix_p2p.core.entry import MAX_ENTRY_BYTES
from trustix_p2p.core.note import MAX_NOTE_SIZE

__all__ = [
    "MAX_ADDRESS",
    "MAX_ENTRIES",
    "MAX_HEADS",
    "MAX_PEERS",
    "MAX_PROOF",
    "Consistency",
    "Cosigned",
    "Entries",
    "GetConsistency",
    "GetEntries",
    "GetPeers",
    "Head",
    "Heads",
    "Hello",
    "NoData",
    "PathEntries",
    "PathHit",
    "Peers",
]

MAX_ADDRESS: Final = 300
MAX_PEERS: Final = 64
MAX_HEADS: Final = 256
MAX_ENTRIES: Final = 4096
# A consistency proof in a tree of at most 2**63 leaves has fewer than 2 * 63 hashes.
MAX_PROOF: Final = 128
_UINT63: Final = wire.Integer(0, 2**63 - 1)
_HASH: Final = wire.Bytes(32, 32)
_KEY: Final = wire.Bytes(32, 32)
_NOTE: Final = wire.Bytes(1, MAX_NOTE_SIZE)


@wire.message(16)
@attrs.frozen
class Hello(wire.Message):
    """Where the sender can be dialled (`host:port`; the receiver adds the key it saw)."""

    addresses: tuple[str, ...] = wire.field(wire.ListOf(wire.Text(max_len=MAX_ADDRESS), 8))


@wire.message(17)
@attrs.frozen
class GetPeers(wire.Message):
    """Ask for addresses of other nodes."""


@wire.message(18)
@attrs.frozen
class Peers(wire.Message):
    addresses: tuple[str, ...] = wire.field(wire.ListOf(wire.Text(max_len=MAX_ADDRESS), MAX_PEERS))


@attrs.frozen
class Head:
    """One checkpoint note and the public key of its log, and optionally the consistency
    proof from the sender's previous head of that log (`prev_size`, with the root of the
    note's tree at that size, `prefix_root`), so a receiver whose head is that previous one
    judges the note without asking; `prev_size` 0 and no proof when there is none."""

    public_key: bytes = wire.field(_KEY)
    note: bytes = wire.field(_NOTE)
    prev_size: int = wire.field(_UINT63)
    prefix_root: bytes | None = wire.field(wire.Nullable(_HASH))
    proof: tuple[bytes, ...] = wire.field(wire.ListOf(_HASH, MAX_PROOF))


@wire.message(19)
@attrs.frozen
class Heads(wire.Message):
    heads: tuple[Head, ...] = wire.field(wire.ListOf(wire.Struct(Head), MAX_HEADS))
    want_reply: bool = wire.field(wire.Boolean())


@wire.message(20)
@attrs.frozen
class Cosigned(wire.Message):
    """`witness_key` cosigned `note` (the log's note) at `time`: tlog-cosignature/v1, with
    the witness name `trustix-p2p/<hex SHA-256 of witness_key>`."""

    public_key: bytes = wire.field(_KEY)
    note: bytes = wire.field(_NOTE)
    witness_key: bytes = wire.field(_KEY)
    time: int = wire.field(_UINT63)
    signature: bytes = wire.field(wire.Bytes(64, 64))


@wire.message(21)
@attrs.frozen
class GetEntries(wire.Message):
    log_id: bytes = wire.field(_HASH)
    start: int = wire.field(_UINT63)
    count: int = wire.field(wire.Integer(1, MAX_ENTRIES))
    target_size: int = wire.field(_UINT63)


@wire.message(22)
@attrs.frozen
class Entries(wire.Message):
    log_id: bytes = wire.field(_HASH)
    start: int = wire.field(_UINT63)
    leaves: tuple[bytes, ...] = wire.field(
        wire.ListOf(wire.Bytes(1, MAX_ENTRY_BYTES), MAX_ENTRIES, 1)
    )
    note: bytes = wire.field(_NOTE)
    proof: tuple[bytes, ...] = wire.field(wire.ListOf(_HASH, MAX_PROOF))


@wire.message(23)
@attrs.frozen
class GetConsistency(wire.Message):
    log_id: bytes = wire.field(_HASH)
    old_size: int = wire.field(wire.Integer(1, 2**63 - 1))
    new_size: int = wire.field(wire.Integer(1, 2**63 - 1))


@wire.message(25)
@attrs.frozen
class Consistency(wire.Message):
    log_id: bytes = wire.field(_HASH)
    old_size: int = wire.field(wire.Integer(1, 2**63 - 1))
    prefix_root: bytes = wire.field(_HASH)
    note: bytes = wire.field(_NOTE)
    proof: tuple[bytes, ...] = wire.field(wire.ListOf(_HASH, MAX_PROOF))


@wire.message(26)
@attrs.frozen
class NoData(wire.Message):
    log_id: bytes = wire.field(_HASH)
    reason: str = wire.field(wire.Text(max_len=200))


MAX_PATH_HITS: Final = 256


@wire.message(27)
@attrs.frozen
class GetPathEntries(wire.Message):
    out_path: str = wire.field(wire.Text(max_len=4096, min_len=1))


@attrs.frozen
class PathHit:
    """One entry about a path, provable: the leaf at `index` of the log of `public_key`,
    with the inclusion proof against `note` (None and () when no checkpoint covers it)."""

    public_key: bytes = wire.field(_KEY)
    index: int = wire.field(_UINT63)
    leaf: bytes = wire.field(wire.Bytes(1, MAX_ENTRY_BYTES))
    note: bytes | None = wire.field(wire.Nullable(_NOTE))
    proof: tuple[bytes, ...] = wire.field(wire.ListOf(_HASH, 64))


@wire.message(28)
@attrs.frozen
class PathEntries(wire.Message):
    out_path: str = wire.field(wire.Text(max_len=4096, min_len=1))
    hits: tuple[PathHit, ...] = wire.field(wire.ListOf(wire.Struct(PathHit), MAX_PATH_HITS))
