"""Checkpoints (signed tree heads) and witness cosignatures, as C2SP signed notes.

Formats followed exactly:
- https://c2sp.org/tlog-checkpoint: the note text is the origin line, the tree size in
  decimal without leading zeros, the base64 root hash, then extension lines.  trustix-p2p
  fixes the origin to `trustix-p2p/<hex log id>` and uses the extension line
  `time <unix seconds>` (DESIGN §3), so a body is exactly four lines; the one exception is
  a log's *final* checkpoint, which closes the log and names the key that succeeds it in a
  second extension line, `successor <base64 Ed25519 public key>` (`trustix-p2p log
  retire`).  Parsing accepts nothing else.
- https://c2sp.org/signed-note: the log signs with Ed25519 (type 0x01) under key name = origin.
- https://c2sp.org/tlog-cosignature (Ed25519, type 0x04): a witness signs
  `cosignature/v1\\ntime <t>\\n` + body; its signature line carries
  key id || 8-byte big-endian t || 64-byte signature.

A `SignedCheckpoint` keeps the note bytes exactly as signed or received, never re-encoded,
so they can be stored, served and re-verified byte for byte; cosignatures are appended as
extra signature lines, which leaves the log's own signature valid.

This module is pure: no I/O, no clock (times are always passed in), no randomness.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Iterable

import attrs

from trustix_p2p.core.b64 import b64decode_strict, b64encode
from trustix_p2p.core.keys import PrivateKey, PublicKey
from trustix_p2p.core.note import (
    ALG_ED25519_COSIGNATURE,
    MAX_NOTE_SIZE,
    MAX_SIGNATURES,
    Note,
    NoteSignature,
    format_note,
    key_id_for,
    parse_note,
    sign_note_text,
    signature_line,
    validate_key_name,
    verify_note,
)
from trustix_p2p.errors import DecodeError, LocalProtocolError, VerificationError

__all__ = [
    "ORIGIN_PREFIX",
    "Checkpoint",
    "Cosignature",
    "SignedCheckpoint",
    "add_cosignatures",
    "cosign",
    "cosignature_key_id",
    "cosignature_line",
    "cosignature_message",
    "cosignatures_in",
    "log_id_from_origin",
    "origin_for",
    "parse_checkpoint_body",
    "read_checkpoint_unverified",
    "sign_checkpoint",
    "validate_checkpoint",
    "verify_checkpoint",
    "verify_cosignature",
]

ORIGIN_PREFIX = "trustix-p2p/"
_LOG_ID_SIZE = 32
_ROOT_SIZE = 32
_MAX_INT = 2**63 - 1  # tlog-cosignature: timestamps MUST NOT exceed 2^63 - 1; sizes likewise
_SIG_SIZE = 64
_TIMESTAMP_SIZE = 8
_ORIGIN_RE = re.compile(r"trustix-p2p/([0-9a-f]{64})")
# Decimal without leading zeros; at most 19 digits so no huge integer is ever parsed.
_DECIMAL_RE = re.compile(r"0|[1-9][0-9]{0,18}")
_COSIGNATURE_HEADER = b"cosignature/v1\ntime "
_SUCCESSOR_PREFIX = "successor "
_KEY_SIZE = 32


def origin_for(log_id: bytes) -> str:
    """The checkpoint origin line of a log: `trustix-p2p/<hex log id>`."""
    if len(log_id) != _LOG_ID_SIZE:
        raise LocalProtocolError(f"log id must be {_LOG_ID_SIZE} bytes, got {len(log_id)}")
    return ORIGIN_PREFIX + log_id.hex()


def log_id_from_origin(origin: str) -> bytes:
    """Inverse of `origin_for`; `DecodeError` for any other origin."""
    match = _ORIGIN_RE.fullmatch(origin)
    if match is None:
        raise DecodeError(f"checkpoint origin {origin[:100]!r} is not 'trustix-p2p/<64 hex>'")
    return bytes.fromhex(match.group(1))


def _parse_decimal(text: str, what: str) -> int:
    if not _DECIMAL_RE.fullmatch(text):
        raise DecodeError(f"checkpoint {what} {text[:40]!r} is not a decimal without leading zeros")
    value = int(text)
    if value > _MAX_INT:
        raise DecodeError(f"checkpoint {what} exceeds 2**63-1")
    return value


@attrs.frozen
class Checkpoint:
    """A tree head: log origin, tree size, RFC 9162 root hash and signing time (unix s).

    `successor` (raw 32-byte Ed25519 public key) is set only in a log's final checkpoint: the
    log is closed at this size and its builder continues under that key.
    """

    origin: str
    size: int
    root: bytes
    time: int
    successor: bytes | None = None

    def body_text(self) -> str:
        text = f"{self.origin}\n{self.size}\n{b64encode(self.root)}\ntime {self.time}\n"
        if self.successor is not None:
            text += f"{_SUCCESSOR_PREFIX}{b64encode(self.successor)}\n"
        return text

    @property
    def final(self) -> bool:
        """Whether this checkpoint closes its log (it names a successor)."""
        return self.successor is not None

    @functools.cached_property
    def _body(self) -> bytes:
        return self.body_text().encode("utf-8")

    def body(self) -> bytes:
        """The note text that is signed: exactly four newline-terminated lines (computed
        once per checkpoint: gossip compares and hashes it on every receipt)."""
        return self._body

    @property
    def log_id(self) -> bytes:
        return log_id_from_origin(self.origin)


def validate_checkpoint(cp: Checkpoint) -> None:
    """Raise `DecodeError` unless `cp` has a trustix origin and in-range fields."""
    log_id_from_origin(cp.origin)
    for what, value in (("size", cp.size), ("time", cp.time)):
        if type(value) is not int or not 0 <= value <= _MAX_INT:
            raise DecodeError(f"checkpoint {what} must be an integer in 0 .. 2**63-1")
    if type(cp.root) is not bytes or len(cp.root) != _ROOT_SIZE:
        raise DecodeError(f"checkpoint root must be {_ROOT_SIZE} bytes")
    if cp.successor is not None:
        if type(cp.successor) is not bytes or len(cp.successor) != _KEY_SIZE:
            raise DecodeError(f"checkpoint successor must be a {_KEY_SIZE}-byte public key")
        if hashlib.sha256(cp.successor).digest() == log_id_from_origin(cp.origin):
            raise DecodeError("a log cannot name its own key as its successor")


def parse_checkpoint_body(text: str) -> Checkpoint:
    """Parse the four-line checkpoint body strictly, or the five-line body of a final
    checkpoint (`successor <base64 key>` after the time line); nothing else is accepted."""
    lines = text.split("\n")
    if len(lines) not in (5, 6) or lines[-1] != "":
        raise DecodeError(
            "checkpoint body must be exactly 4 newline-terminated lines "
            "(5 in a final checkpoint naming its successor)"
        )
    origin, size_text, root_text, time_line = lines[:4]
    log_id_from_origin(origin)
    size = _parse_decimal(size_text, "size")
    root = b64decode_strict(root_text, "checkpoint root hash")
    if len(root) != _ROOT_SIZE:
        raise DecodeError(f"checkpoint root hash must be {_ROOT_SIZE} bytes, got {len(root)}")
    if not time_line.startswith("time "):
        raise DecodeError("checkpoint must have exactly one 'time <unix seconds>' extension line")
    time = _parse_decimal(time_line[len("time ") :], "time")
    successor: bytes | None = None
    if len(lines) == 6:
        line = lines[4]
        if not line.startswith(_SUCCESSOR_PREFIX):
            raise DecodeError("a checkpoint's fifth line must be 'successor <base64 public key>'")
        successor = b64decode_strict(line[len(_SUCCESSOR_PREFIX) :], "checkpoint successor key")
        if len(successor) != _KEY_SIZE:
            raise DecodeError(
                f"checkpoint successor key must be {_KEY_SIZE} bytes, got {len(successor)}"
            )
        if hashlib.sha256(successor).digest() == log_id_from_origin(origin):
            raise DecodeError("a log cannot name its own key as its successor")
    return Checkpoint(origin, size, root, time, successor)


@attrs.frozen
class SignedCheckpoint:
    """A checkpoint and the complete signed note carrying it, bytes exactly as signed/received.

    Only `sign_checkpoint` and `verify_checkpoint` build these with a verified signature;
    constructing one by hand proves nothing.
    """

    checkpoint: Checkpoint
    note: bytes

    @property
    def log_id(self) -> bytes:
        return self.checkpoint.log_id


def sign_checkpoint(cp: Checkpoint, key: PrivateKey) -> SignedCheckpoint:
    """Sign `cp` as its log (key name = origin); the origin must be this key's log."""
    try:
        validate_checkpoint(cp)
    except DecodeError as exc:
        raise LocalProtocolError(f"refusing to sign an invalid checkpoint: {exc}") from exc
    if cp.origin != origin_for(key.public_key.log_id()):
        raise LocalProtocolError("refusing to sign a checkpoint of another log's origin")
    text = cp.body_text()
    note = format_note(Note(text, (sign_note_text(text, cp.origin, key),)))
    return SignedCheckpoint(cp, note)


def read_checkpoint_unverified(note_bytes: bytes) -> Checkpoint:
    """Parse a checkpoint note WITHOUT verifying any signature.

    Only for routing (e.g. to learn which log's key to verify with); never trust the result.
    """
    return parse_checkpoint_body(parse_note(note_bytes).text)


def verify_checkpoint(note_bytes: bytes, public_key: PublicKey) -> SignedCheckpoint:
    """Parse a checkpoint note and verify the log's own signature by `public_key`.

    Raises `DecodeError` if malformed and `VerificationError` if the origin is not this
    key's log or the signature is missing or invalid.  Signature lines of other keys
    (cosignatures) are ignored here and stay in the returned note bytes.
    """
    note = parse_note(note_bytes)
    cp = parse_checkpoint_body(note.text)
    if cp.origin != origin_for(public_key.log_id()):
        raise VerificationError("checkpoint is not for this key's log")
    verify_note(note, cp.origin, public_key)
    return SignedCheckpoint(cp, note_bytes)


# --- tlog-cosignature/v1 (Ed25519) -------------------------------------------------------


@attrs.frozen
class Cosignature:
    """A witness's statement that, at `time`, `checkpoint` was the largest consistent one seen."""

    witness_name: str
    key_id: bytes
    time: int
    signature: bytes


def cosignature_key_id(witness_name: str, public_key: PublicKey) -> bytes:
    """SHA-256(name || "\\n" || 0x04 || public key)[:4] (tlog-cosignature §Format)."""
    return key_id_for(witness_name, ALG_ED25519_COSIGNATURE, public_key)


def cosignature_message(cp: Checkpoint, time: int) -> bytes:
    """`cosignature/v1\\ntime <time>\\n` followed by the checkpoint body."""
    return _COSIGNATURE_HEADER + str(time).encode("ascii") + b"\n" + cp.body()


def cosign(cp: Checkpoint, witness_name: str, key: PrivateKey, time: int) -> Cosignature:
    """Cosign `cp` as witness `witness_name` at `time` (the caller supplies the clock)."""
    try:
        validate_checkpoint(cp)
        validate_key_name(witness_name)
    except DecodeError as exc:
        raise LocalProtocolError(f"refusing to cosign: {exc}") from exc
    if type(time) is not int or not 0 <= time <= _MAX_INT:
        raise LocalProtocolError("cosignature time must be an integer in 0 .. 2**63-1")
    return Cosignature(
        witness_name,
        cosignature_key_id(witness_name, key.public_key),
        time,
        key.sign(cosignature_message(cp, time)),
    )


def _to_note_signature(c: Cosignature) -> NoteSignature:
    if len(c.signature) != _SIG_SIZE or not 0 <= c.time <= _MAX_INT:
        raise LocalProtocolError("cosignature needs a 64-byte signature and a time in range")
    return NoteSignature(
        c.witness_name, c.key_id, c.time.to_bytes(_TIMESTAMP_SIZE, "big") + c.signature
    )


def cosignature_line(c: Cosignature) -> str:
    """`— <witness name> <base64(key id || timestamp || signature)>\\n`."""
    return signature_line(_to_note_signature(c))


def verify_cosignature(cp: Checkpoint, c: Cosignature, witness_public: PublicKey) -> None:
    """Check that `c` is `witness_public`'s cosignature of exactly `cp`; opaque failure."""
    if (
        c.key_id != cosignature_key_id(c.witness_name, witness_public)
        or not 0 <= c.time <= _MAX_INT
    ):
        raise VerificationError("cosignature did not verify")
    witness_public.verify(cosignature_message(cp, c.time), c.signature)


def cosignatures_in(
    note_bytes: bytes, witness_name: str, witness_public: PublicKey
) -> list[Cosignature]:
    """The valid cosignatures by this witness in a checkpoint note (usually zero or one).

    Does NOT verify the log's own signature (use `verify_checkpoint` for that).  Lines of
    other names, key ids or types are ignored; a line that matches this witness but does not
    verify rejects the note with `VerificationError`, as signed-note requires.
    """
    note = parse_note(note_bytes)
    cp = parse_checkpoint_body(note.text)
    key_id = cosignature_key_id(witness_name, witness_public)
    found = []
    for sig in note.signatures:
        if sig.key_name != witness_name or sig.key_id != key_id:
            continue
        if len(sig.signature) != _TIMESTAMP_SIZE + _SIG_SIZE:
            raise VerificationError("cosignature did not verify")
        time = int.from_bytes(sig.signature[:_TIMESTAMP_SIZE], "big")
        c = Cosignature(witness_name, key_id, time, sig.signature[_TIMESTAMP_SIZE:])
        verify_cosignature(cp, c, witness_public)
        found.append(c)
    return found


def add_cosignatures(signed: SignedCheckpoint, cosigs: Iterable[Cosignature]) -> bytes:
    """The note bytes with cosignature lines appended (one per witness name and key id).

    A cosignature from a witness that already has a line in the note is skipped, so adding
    the same cosignatures twice is harmless.  The caller verifies cosignatures first; this
    only appends.  Raises `LocalProtocolError` if the result would exceed the note limits
    that `parse_note` enforces, since nobody could then parse it.
    """
    existing = parse_note(signed.note).signatures
    present = {(sig.key_name, sig.key_id) for sig in existing}
    lines = []
    for c in cosigs:
        if (c.witness_name, c.key_id) in present:
            continue
        present.add((c.witness_name, c.key_id))
        lines.append(cosignature_line(c))
    result = signed.note + "".join(lines).encode("utf-8")
    if len(result) > MAX_NOTE_SIZE or len(existing) + len(lines) > MAX_SIGNATURES:
        raise LocalProtocolError("too many cosignatures for one checkpoint note")
    return result
