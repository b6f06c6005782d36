"""Verified bulk reading of a node's logs: every entry of a log, checked against its checkpoint.

The light client (`trustix_p2p.client.light`) verifies one entry at a time, each with its own
inclusion proof.  A report over whole logs (`trustix_p2p.client.reports`) needs every entry of
every log, and checking ~log2(n) proof hashes per entry would cost far more than rebuilding
the tree: so here the node's latest checkpoint note of the log is verified with the log's key,
all leaves [0, size) are fetched in batches, the RFC 9162 root is rebuilt from them with a
`MerkleFrontier` (one hash per leaf, one per interior node: O(n), no proofs at all) and compared
with the signed root.  If it matches, every leaf is exactly what the builder signed, whatever
node served it; if not, nothing of that log is believed.

Only the signature and the rebuilt root count.  The node's status numbers (sizes, heads) are
never used for a report: a node that lies about them can only make a read fail, not change
what it says.

The I/O is a passed-in object with the two blocking methods of `ControlClient` this needs
(`checkpoint(log_id)` and `entries(log_id, start, count)`), so tests can hand in a fake node.
"""

from __future__ import annotations

from typing import Protocol

import attrs

from trustix_p2p.control.protocol import MAX_ENTRIES_PER_REPLY
from trustix_p2p.core.checkpoint import SignedCheckpoint, verify_checkpoint
from trustix_p2p.core.entry import Entry, decode_entry
from trustix_p2p.core.keys import PublicKey
from trustix_p2p.core.merkle import MerkleFrontier, leaf_hash
from trustix_p2p.errors import DecodeError, LocalProtocolError, TrustixError, VerificationError

__all__ = [
    "DEFAULT_MAX_ENTRIES",
    "EntrySource",
    "LogTooLarge",
    "NoCheckpoint",
    "VerifiedLog",
    "read_verified_log",
]

# Entries are kept decoded (a report needs them all at once): a few hundred bytes each, so
# this bound keeps one log's read to a few GiB at worst.  A caller may raise or lower it.
DEFAULT_MAX_ENTRIES = 10_000_000


class EntrySource(Protocol):
    """What `read_verified_log` asks of a node (`ControlClient` has exactly these)."""

    def checkpoint(self, log_id: bytes | None = None) -> bytes | None: ...

    def entries(self, log_id: bytes, start: int, count: int) -> list[bytes]: ...


class NoCheckpoint(TrustixError):
    """The node holds no checkpoint of the log: there is nothing to verify its entries by."""


class LogTooLarge(TrustixError):
    """The log's checkpoint is over the caller's `max_entries`."""


@attrs.frozen
class VerifiedLog:
    """A whole log whose entries rebuild the root of a checkpoint signed by its key."""

    log_id: bytes
    public_key: bytes  # raw 32 bytes
    name: str | None
    mode: str  # own | mirror (what the node said it does with the log; informative only)
    checkpoint: SignedCheckpoint  # verified with the log's key
    entries: tuple[Entry, ...]  # leaves [0, checkpoint.size), decoded, in log order

    @property
    def label(self) -> str:
        """The log's name, else the start of its base64 key (names come from other people)."""
        return self.name if self.name else key_prefix(self.public_key)


def key_prefix(public_key: bytes) -> str:
    """The first 12 characters of a base64 key: enough to tell logs apart by eye."""
    return PublicKey(public_key).to_base64()[:12]


def read_verified_log(
    client: EntrySource,
    log_id: bytes,
    public_key: PublicKey,
    *,
    batch: int = MAX_ENTRIES_PER_REPLY,
    name: str | None = None,
    mode: str = "mirror",
    max_entries: int = DEFAULT_MAX_ENTRIES,
) -> VerifiedLog:
    """Fetch, verify and decode every entry of the log `log_id` signed by `public_key`.

    Raises `VerificationError` (naming the log) if the checkpoint note does not verify with
    `public_key`, if the leaves the node serves do not rebuild the signed root, or if a leaf
    the builder signed is not a valid entry; `NoCheckpoint` if the node has no checkpoint of
    the log; `LogTooLarge` above `max_entries`; and whatever the client raises for I/O
    (`NodeUnavailableError`, a node's refusal).  `batch` is the leaves asked per call, at most
    the 4096 the control protocol allows; a node may answer fewer, never none or more.
    """
    if not 1 <= batch <= MAX_ENTRIES_PER_REPLY:
        raise LocalProtocolError(f"batch must be between 1 and {MAX_ENTRIES_PER_REPLY}")
    what = f"log {name} ({log_id.hex()[:16]})" if name else f"log {log_id.hex()[:16]}"
    if public_key.log_id() != log_id:
        raise VerificationError(f"{what} is not the log of key {public_key.to_base64()}")
    note = client.checkpoint(log_id)
    if note is None:
        raise NoCheckpoint(f"{what}: the node holds no checkpoint of it")
    try:
        signed = verify_checkpoint(note, public_key)
    except (DecodeError, VerificationError) as exc:
        raise VerificationError(f"{what}: its checkpoint does not verify ({exc})") from exc
    size = signed.checkpoint.size
    if size > max_entries:
        raise LogTooLarge(f"{what} has {size} entries, over the {max_entries} a report reads")
    frontier = MerkleFrontier()
    entries: list[Entry] = []
    # Decoding runs as leaves arrive (so raw leaves are not all held at once), but a failure
    # is reported only after the root check: if the root does not match, the node served
    # wrong bytes; if it does, the builder itself signed a leaf that is not an entry.
    bad_leaf: tuple[int, str] | None = None
    while frontier.size < size:
        start = frontier.size
        want = min(batch, size - start)
        leaves = client.entries(log_id, start, want)
        if not leaves or len(leaves) > want:
            raise VerificationError(
                f"{what}: the node answered {len(leaves)} leaves for {want} asked at {start} "
                f"of the {size} its checkpoint covers"
            )
        frontier.extend_grouped([leaf_hash(leaf) for leaf in leaves])
        for offset, leaf in enumerate(leaves):
            try:
                entries.append(decode_entry(leaf))
            except DecodeError as exc:
                if bad_leaf is None:
                    bad_leaf = (start + offset, str(exc))
    if frontier.root() != signed.checkpoint.root:
        raise VerificationError(
            f"{what}: the {size} leaves the node served do not rebuild its checkpoint's root"
        )
    if bad_leaf is not None:
        raise VerificationError(f"{what}: leaf {bad_leaf[0]} is not a valid entry ({bad_leaf[1]})")
    return VerifiedLog(log_id, public_key.raw, name, mode, signed, tuple(entries))
