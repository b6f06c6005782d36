"""Portable evidence that a log misbehaved (DESIGN §4): build, verify, identify, (de)serialise.

A builder that shows two peers different histories has signed two checkpoints that cannot
both be true.  Evidence is those two signed notes, exactly as signed, plus (for a history
that forks) the Merkle proof that shows the fork, so that anyone holding nothing but the
builder's public key can check it.  Only signatures and proofs count, never a peer's word;
that is what makes false evidence impossible:

- **Split view** (`SplitView`): two checkpoints of the same log and size with different roots.
- **Inconsistent history** (`InconsistentHistory`): a checkpoint of size m and one of size
  n > m, plus `prefix_root`, the root of the first m leaves of the size-n tree, and the
  RFC 9162 §2.1.4 consistency proof from (m, prefix_root) to (n, newer root), with
  prefix_root different from the size-m checkpoint's root.  `prefix_root` travels explicitly
  because for m a power of two the RFC proof omits the old root: without it the proof alone
  could not say which size-m tree the size-n tree extends.  A *rollback* (a checkpoint signed
  after, but smaller than, another) is this case with the smaller one as "older": the order
  is by tree size, never by signing time.
- **Retirement conflict** (`RetirementConflict`): a log's final checkpoint, which closes the
  log and names its successor key (`trustix-p2p log retire`), and another checkpoint of the
  same log that contradicts it: a larger one (the log went on after it was closed) or another
  final one naming a different successor.  An honest node never signs either, so both
  signatures together show that the key is used by someone else (it was stolen) or that its
  builder lies.

Three encodings of the same fields, each strict on input:
- the JSON document of DESIGN §4 (`to_document`/`to_json`, `from_document`/`from_json`),
  which `trustix-p2p evidence verify` reads;
- the wire message `EvidenceMessage` (type 24), the same fields as msgpack
  (`to_message`/`from_message`);
- the attrs values themselves.
Decoding checks shapes (and that each note parses as a checkpoint note) but never verifies;
`verify_evidence` does that, and `split_view`/`inconsistent_history` build only verified
evidence.

Unlike the rest of the package, `VerificationError`s here name the check that failed: every
input is public (two signed notes and a proof), so there is no secret for an oracle to leak,
and a user looking at rejected evidence needs to know why.

This module is pure: no I/O, no clock, no randomness.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any, ClassVar, Final, TypeAlias

import attrs
import msgpack

from trustix_p2p.core import merkle, wire
from trustix_p2p.core.b64 import b64decode_strict, b64encode
from trustix_p2p.core.checkpoint import (
    Checkpoint,
    origin_for,
    read_checkpoint_unverified,
    verify_checkpoint,
)
from trustix_p2p.core.keys import PUBLIC_KEY_SIZE, PublicKey
from trustix_p2p.core.note import MAX_NOTE_SIZE, ed25519_key_id, parse_note, signature_line
from trustix_p2p.errors import DecodeError, VerificationError

__all__ = [
    "EVIDENCE_VERSION",
    "KINDS",
    "MAX_DOCUMENT_SIZE",
    "MAX_PROOF_HASHES",
    "Evidence",
    "EvidenceMessage",
    "InconsistentHistory",
    "RetirementConflict",
    "SplitView",
    "describe_evidence",
    "evidence_id",
    "evidence_log_id",
    "from_document",
    "from_json",
    "from_message",
    "inconsistent_history",
    "retirement_conflict",
    "split_view",
    "to_document",
    "to_json",
    "to_message",
    "verify_evidence",
]

EVIDENCE_VERSION: Final = 1
# A consistency proof between trees of at most 2**63 - 1 leaves (the largest size a
# checkpoint may carry) has at most 1 + 63 hashes: the old tree's last perfect subtree, then
# its inclusion path in the new tree.
MAX_PROOF_HASHES: Final = 64
# The largest evidence document is two notes of MAX_NOTE_SIZE bytes (a little more once JSON
# escapes them) and 64 base64 hashes: far below this bound, which only stops a reader from
# being fed an arbitrarily large file.
MAX_DOCUMENT_SIZE: Final = 1 << 20
_HASH_SIZE: Final = merkle.HASH_SIZE


@attrs.frozen
class SplitView:
    """Two checkpoints of one log with the same size and different roots, both signed.

    `checkpoints` are the notes exactly as signed or received; they may carry cosignature
    lines, which neither verification nor `evidence_id` depends on.
    """

    public_key: PublicKey
    checkpoints: tuple[bytes, bytes]
    kind: ClassVar[str] = "split-view"


@attrs.frozen
class InconsistentHistory:
    """Checkpoints of sizes m < n whose trees disagree on the first m leaves, and the proof.

    `checkpoints` is (older note of size m, newer note of size n), ordered by size.
    `prefix_root` is the root of the first m leaves of the newer tree and
    `consistency_proof` the RFC 9162 proof from (m, prefix_root) to (n, newer root).
    """

    public_key: PublicKey
    checkpoints: tuple[bytes, bytes]
    prefix_root: bytes
    consistency_proof: tuple[bytes, ...]
    kind: ClassVar[str] = "inconsistent-history"


@attrs.frozen
class RetirementConflict:
    """A log's final checkpoint (it names a successor) and a checkpoint that contradicts it.

    `checkpoints` is (final note, other note): the other is larger than the final one, or
    is itself final and names another successor (then the two are in canonical order:
    smaller size first, then smaller body).
    """

    public_key: PublicKey
    checkpoints: tuple[bytes, bytes]
    kind: ClassVar[str] = "retirement-conflict"


Evidence: TypeAlias = SplitView | InconsistentHistory | RetirementConflict
KINDS: Final = (SplitView.kind, InconsistentHistory.kind, RetirementConflict.kind)


# --------------------------------------------------------------------------------------------
# Verification
# --------------------------------------------------------------------------------------------


def _verified_checkpoint(public_key: PublicKey, note: bytes, index: int) -> Checkpoint:
    """The checkpoint in `note` if the log of `public_key` signed it, else VerificationError."""
    where = f"checkpoints[{index}]"
    try:
        cp = read_checkpoint_unverified(note)
    except DecodeError as exc:
        raise VerificationError(f"{where} is not a checkpoint note: {exc}") from exc
    expected = origin_for(public_key.log_id())
    if cp.origin != expected:
        # A checkpoint of another log proves nothing about this one, however well signed.
        raise VerificationError(
            f"{where} has origin {cp.origin!r}, not this key's log {expected!r}"
        )
    try:
        verify_checkpoint(note, public_key)
    except (VerificationError, DecodeError) as exc:
        raise VerificationError(f"{where} is not validly signed by the log's key") from exc
    return cp


def _verify_split_view(ev: SplitView) -> None:
    a, b = (_verified_checkpoint(ev.public_key, note, i) for i, note in enumerate(ev.checkpoints))
    if a.body() == b.body():
        # The same tree head signed twice (or with other cosignatures) is no misbehaviour.
        raise VerificationError("the two checkpoints are the same checkpoint (identical bodies)")
    if a.size != b.size:
        raise VerificationError(
            f"split-view checkpoints differ in size ({a.size} and {b.size}); "
            "checkpoints of different sizes are inconsistent-history evidence"
        )
    if a.root == b.root:
        raise VerificationError(
            f"both checkpoints of size {a.size} have the same root (only their times differ)"
        )


def _verify_inconsistent_history(ev: InconsistentHistory) -> None:
    older, newer = (
        _verified_checkpoint(ev.public_key, note, i) for i, note in enumerate(ev.checkpoints)
    )
    m, n = older.size, newer.size
    if m >= n:
        raise VerificationError(
            f"the older checkpoint (size {m}) must be smaller than the newer one (size {n})"
        )
    if m == 0:
        # Every tree extends the empty tree, so no proof can show a fork from it.
        raise VerificationError("the older checkpoint has size 0, which every tree extends")
    if len(ev.prefix_root) != _HASH_SIZE:
        raise VerificationError(f"prefix_root must be {_HASH_SIZE} bytes")
    if ev.prefix_root == older.root:
        raise VerificationError(
            f"prefix_root equals the size-{m} checkpoint's root: the history is consistent"
        )
    if len(ev.consistency_proof) > MAX_PROOF_HASHES:
        raise VerificationError(
            f"consistency proof has {len(ev.consistency_proof)} hashes, "
            f"more than {MAX_PROOF_HASHES}"
        )
    try:
        merkle.verify_consistency(m, n, ev.consistency_proof, ev.prefix_root, newer.root)
    except VerificationError as exc:
        raise VerificationError(
            f"the consistency proof from size {m} (prefix_root) to the size-{n} checkpoint's "
            "root does not verify"
        ) from exc


def _verify_retirement_conflict(ev: RetirementConflict) -> None:
    final, other = (
        _verified_checkpoint(ev.public_key, note, i) for i, note in enumerate(ev.checkpoints)
    )
    if final.successor is None:
        raise VerificationError("checkpoints[0] is not a final checkpoint (it names no successor)")
    if other.size > final.size:
        return  # signed beyond the size at which the log was closed
    if other.successor is not None and other.successor != final.successor:
        if (final.size, final.body()) > (other.size, other.body()):
            raise VerificationError("two final checkpoints must be in canonical order")
        return  # two final checkpoints naming different successors
    raise VerificationError(
        f"checkpoints[1] (size {other.size}) does not contradict the final checkpoint of size "
        f"{final.size}: it is neither larger nor a final checkpoint naming another successor"
    )


def verify_evidence(ev: Evidence) -> None:
    """Check that `ev` proves misbehaviour by the log of `ev.public_key`.

    Raises `VerificationError` with a one-line message naming the first check that fails:
    a note that is not a checkpoint of this key's log (origin `trustix-p2p/<hex log id>`), a
    signature that does not verify, identical checkpoints, a split view whose sizes differ or
    whose roots are equal, or an inconsistent history with m >= n, m == 0, prefix_root equal
    to the older root, or a consistency proof that does not verify, or a retirement conflict
    whose first checkpoint names no successor or whose second does not contradict it.
    """
    if isinstance(ev, SplitView):
        _verify_split_view(ev)
    elif isinstance(ev, RetirementConflict):
        _verify_retirement_conflict(ev)
    else:
        _verify_inconsistent_history(ev)


def split_view(public_key: PublicKey, a: bytes, b: bytes) -> SplitView:
    """Split-view evidence from two signed notes; `VerificationError` unless it is evidence."""
    ev = SplitView(public_key, (a, b))
    verify_evidence(ev)
    return ev


def inconsistent_history(
    public_key: PublicKey,
    older: bytes,
    newer: bytes,
    prefix_root: bytes,
    proof: Sequence[bytes],
) -> InconsistentHistory:
    """Inconsistent-history evidence (older = size m < n = newer); verified before it returns.

    `prefix_root` is the root of the first m leaves of the newer checkpoint's tree and `proof`
    its RFC 9162 consistency proof to the newer root (`merkle.consistency_proof(m, n, ...)`
    over that tree).  For a rollback, `older` is the smaller checkpoint even though it was
    signed later.
    """
    ev = InconsistentHistory(public_key, (older, newer), prefix_root, tuple(proof))
    verify_evidence(ev)
    return ev


def retirement_conflict(public_key: PublicKey, final: bytes, other: bytes) -> RetirementConflict:
    """Retirement-conflict evidence: `final` names a successor and `other` contradicts it.

    Two final checkpoints are put in canonical order; `VerificationError` unless evidence.
    """
    a, b = read_checkpoint_unverified(final), read_checkpoint_unverified(other)
    if b.successor is not None and b.size <= a.size and (b.size, b.body()) < (a.size, a.body()):
        final, other = other, final
    ev = RetirementConflict(public_key, (final, other))
    verify_evidence(ev)
    return ev


def evidence_log_id(ev: Evidence) -> bytes:
    """The id of the accused log: SHA-256 of the raw public key."""
    return ev.public_key.log_id()


def describe_evidence(ev: Evidence) -> str:
    """One line saying what `ev` shows, for the CLI; assumes `verify_evidence` passed."""
    head = (
        f"{ev.kind} evidence against log {ev.public_key.log_id_hex()} "
        f"(key {ev.public_key.to_base64()})"
    )
    a, b = (read_checkpoint_unverified(note) for note in ev.checkpoints)
    if isinstance(ev, SplitView):
        return f"{head}: two checkpoints of size {a.size} with different roots"
    if isinstance(ev, RetirementConflict):
        if b.size > a.size:
            return (
                f"{head}: a checkpoint of size {b.size} signed after the log was closed at size "
                f"{a.size} (the key is in other hands)"
            )
        return f"{head}: two final checkpoints naming different successors"
    return (
        f"{head}: the size-{b.size} checkpoint's tree does not extend the size-{a.size} "
        f"checkpoint (its first {a.size} leaves have a different root)"
    )


# --------------------------------------------------------------------------------------------
# Identity
# --------------------------------------------------------------------------------------------


def _reduced_note(public_key: PublicKey, note: bytes) -> bytes:
    """The note's text and only the log's own signature lines (sorted, without repeats).

    Witnesses add cosignature lines as a checkpoint travels, so one checkpoint reaches nodes
    with different bytes; the log's own signature is what the evidence rests on.  Lines are
    re-formatted from the parsed signatures, which gives back the received bytes: note
    parsing accepts only canonical base64.  Sorting and removing repeats makes the result
    independent of line order too.  A note that lacks the log's line reduces to its text.
    """
    parsed = parse_note(note)
    name = origin_for(public_key.log_id())
    key_id = ed25519_key_id(name, public_key)
    own = sorted(
        {
            signature_line(sig)
            for sig in parsed.signatures
            if sig.key_name == name and sig.key_id == key_id
        }
    )
    return (parsed.text + "\n" + "".join(own)).encode("utf-8")


def evidence_id(ev: Evidence) -> str:
    """A stable id of the misbehaviour `ev` shows: lowercase hex SHA-256 over its fields.

    Hashed: `msgpack.packb([version, kind, raw public key, notes, prefix_root or None,
    proof], use_bin_type=True)`, where each note is reduced to its text plus the log's own
    signature line(s) (cosignatures dropped, see `_reduced_note`) and, for a split view, the
    two reduced notes are sorted by bytes.  So the same two checkpoints give the same id
    whichever order they arrive in and whichever witnesses cosigned them, and nodes can
    deduplicate evidence they store and gossip.  Needs notes that parse (`from_document` and
    `from_message` check that); `DecodeError` otherwise.  Does not verify.
    """
    notes = [_reduced_note(ev.public_key, note) for note in ev.checkpoints]
    prefix_root: bytes | None = None
    proof: list[bytes] = []
    if isinstance(ev, SplitView):
        notes.sort()
    elif isinstance(ev, InconsistentHistory):
        prefix_root = ev.prefix_root
        proof = list(ev.consistency_proof)
    packed: bytes = msgpack.packb(
        [EVIDENCE_VERSION, ev.kind, ev.public_key.raw, notes, prefix_root, proof],
        use_bin_type=True,
    )
    return hashlib.sha256(packed).hexdigest()


# --------------------------------------------------------------------------------------------
# The JSON document (DESIGN §4)
# --------------------------------------------------------------------------------------------

_COMMON_KEYS: Final = ("version", "kind", "public_key", "checkpoints")
_KEYS: Final = {
    SplitView.kind: _COMMON_KEYS,
    RetirementConflict.kind: _COMMON_KEYS,
    InconsistentHistory.kind: (*_COMMON_KEYS, "prefix_root", "consistency_proof"),
}


def _note_text(note: bytes) -> str:
    return note.decode("utf-8")


def to_document(ev: Evidence) -> dict[str, Any]:
    """The JSON object of DESIGN §4, keys in its order; notes as text exactly as signed."""
    doc: dict[str, Any] = {
        "version": EVIDENCE_VERSION,
        "kind": ev.kind,
        "public_key": ev.public_key.to_base64(),
        "checkpoints": [_note_text(note) for note in ev.checkpoints],
    }
    if isinstance(ev, InconsistentHistory):
        doc["prefix_root"] = b64encode(ev.prefix_root)
        doc["consistency_proof"] = [b64encode(h) for h in ev.consistency_proof]
    return doc


def to_json(ev: Evidence) -> str:
    """The document as indented JSON text ending in a newline (what `evidence show` prints)."""
    return json.dumps(to_document(ev), indent=2) + "\n"


def _decode_note(note: bytes, where: str) -> bytes:
    """`note` if it parses as a checkpoint note (signatures unchecked), else DecodeError."""
    try:
        read_checkpoint_unverified(note)
    except DecodeError as exc:
        raise DecodeError(f"{where}: {exc}") from exc
    return note


def _doc_str(obj: dict[str, Any], key: str) -> str:
    value = obj[key]
    if type(value) is not str:
        raise DecodeError(f"evidence {key}: expected a string, got {type(value).__name__}")
    return value


def _doc_hash(value: object, where: str) -> bytes:
    if type(value) is not str:
        raise DecodeError(f"{where}: expected a base64 string, got {type(value).__name__}")
    raw = b64decode_strict(value, where)
    if len(raw) != _HASH_SIZE:
        raise DecodeError(f"{where}: expected {_HASH_SIZE} bytes, got {len(raw)}")
    return raw


def _doc_list(obj: dict[str, Any], key: str) -> list[Any]:
    value = obj[key]
    if type(value) is not list:
        raise DecodeError(f"evidence {key}: expected a list, got {type(value).__name__}")
    return value


def _doc_notes(obj: dict[str, Any]) -> tuple[bytes, bytes]:
    texts = _doc_list(obj, "checkpoints")
    if len(texts) != 2:
        raise DecodeError(f"evidence checkpoints: expected 2 notes, got {len(texts)}")
    notes: list[bytes] = []
    for index, text in enumerate(texts):
        where = f"evidence checkpoints[{index}]"
        if type(text) is not str:
            raise DecodeError(f"{where}: expected note text, got {type(text).__name__}")
        try:
            # JSON can spell lone surrogates ("\ud800"), which are not UTF-8 text.
            note = text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise DecodeError(f"{where}: note is not valid UTF-8 text") from exc
        notes.append(_decode_note(note, where))
    return notes[0], notes[1]


def from_document(obj: object) -> Evidence:
    """Strictly read a DESIGN §4 evidence document (a parsed JSON value).

    Raises `DecodeError` naming the field for anything else: not an object, a missing or
    unknown key, a wrong type, non-canonical base64, a key or hash of the wrong length, a
    note that is not checkpoint note text, a proof of more than 64 hashes, a version other
    than 1 or an unknown kind.  Does NOT verify signatures or proofs (`verify_evidence`).
    """
    if type(obj) is not dict:
        raise DecodeError(f"evidence must be a JSON object, got {type(obj).__name__}")
    version = obj.get("version")
    if type(version) is not int:
        raise DecodeError("evidence version: expected the integer 1")
    if version != EVIDENCE_VERSION:
        raise DecodeError(f"evidence version {version} is not supported (expected 1)")
    kind = obj.get("kind")
    if type(kind) is not str or kind not in _KEYS:
        shown = repr(kind[:40]) if type(kind) is str else type(kind).__name__
        raise DecodeError(f"evidence kind {shown} is not one of {', '.join(KINDS)}")
    keys = _KEYS[kind]
    for key in obj:
        if key not in keys:
            shown = repr(key[:40]) if type(key) is str else type(key).__name__
            raise DecodeError(f"evidence: unknown key {shown} for kind {kind}")
    for key in keys:
        if key not in obj:
            raise DecodeError(f"evidence: missing key {key!r}")
    public_raw = b64decode_strict(_doc_str(obj, "public_key"), "evidence public_key")
    if len(public_raw) != PUBLIC_KEY_SIZE:
        raise DecodeError(
            f"evidence public_key: expected {PUBLIC_KEY_SIZE} bytes, got {len(public_raw)}"
        )
    public_key = PublicKey(public_raw)
    notes = _doc_notes(obj)
    if kind == SplitView.kind:
        return SplitView(public_key, notes)
    if kind == RetirementConflict.kind:
        return RetirementConflict(public_key, notes)
    prefix_root = _doc_hash(obj["prefix_root"], "evidence prefix_root")
    hashes = _doc_list(obj, "consistency_proof")
    if len(hashes) > MAX_PROOF_HASHES:
        raise DecodeError(
            f"evidence consistency_proof: {len(hashes)} hashes, more than {MAX_PROOF_HASHES}"
        )
    proof = tuple(
        _doc_hash(h, f"evidence consistency_proof[{index}]") for index, h in enumerate(hashes)
    )
    return InconsistentHistory(public_key, notes, prefix_root, proof)


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            # Two parsers could otherwise read two different documents from the same bytes.
            raise DecodeError(f"evidence JSON: duplicate key {key[:40]!r}")
        obj[key] = value
    return obj


def _no_constant(name: str) -> Any:
    raise DecodeError(f"evidence JSON: {name} is not JSON")


def from_json(text: str | bytes) -> Evidence:
    """Read an evidence document from JSON text (UTF-8 if bytes), strictly; `DecodeError`.

    Refuses input over `MAX_DOCUMENT_SIZE` bytes, invalid JSON, duplicate keys, NaN and
    Infinity, then reads the value with `from_document`.  Does not verify.
    """
    size = len(text) if isinstance(text, bytes) else len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_DOCUMENT_SIZE:
        raise DecodeError(f"evidence document is larger than {MAX_DOCUMENT_SIZE} bytes")
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DecodeError(f"evidence document is not UTF-8: {exc.reason}") from exc
    try:
        obj = json.loads(text, object_pairs_hook=_no_duplicate_keys, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise DecodeError(f"evidence document is not valid JSON: {exc}") from exc
    except RecursionError as exc:
        raise DecodeError("evidence document is nested too deeply") from exc
    return from_document(obj)


# --------------------------------------------------------------------------------------------
# The wire message
# --------------------------------------------------------------------------------------------


@wire.message(24)
@attrs.frozen
class EvidenceMessage(wire.Message):
    """Evidence between peers: the document's fields as msgpack (`prefix_root` nil and the
    proof empty for a split view).  Decoding checks only sizes; see `from_message`."""

    kind: str = wire.field(wire.Text(max_len=32))
    public_key: bytes = wire.field(wire.Bytes(PUBLIC_KEY_SIZE, PUBLIC_KEY_SIZE))
    checkpoints: tuple[bytes, ...] = wire.field(
        wire.ListOf(wire.Bytes(1, MAX_NOTE_SIZE), max_items=2, min_items=2)
    )
    prefix_root: bytes | None = wire.field(wire.Nullable(wire.Bytes(_HASH_SIZE, _HASH_SIZE)))
    consistency_proof: tuple[bytes, ...] = wire.field(
        wire.ListOf(wire.Bytes(_HASH_SIZE, _HASH_SIZE), max_items=MAX_PROOF_HASHES)
    )


def to_message(ev: Evidence) -> EvidenceMessage:
    """The wire form of `ev`."""
    if isinstance(ev, SplitView | RetirementConflict):
        return EvidenceMessage(ev.kind, ev.public_key.raw, ev.checkpoints, None, ())
    return EvidenceMessage(
        ev.kind, ev.public_key.raw, ev.checkpoints, ev.prefix_root, ev.consistency_proof
    )


def from_message(m: EvidenceMessage) -> Evidence:
    """The evidence a decoded message carries; `DecodeError` if its fields do not fit its kind.

    The codec has checked sizes; this checks the kind, that each note parses as a checkpoint
    note, and that a split view carries no prefix_root or proof and an inconsistent history
    a prefix_root.  Does not verify.
    """
    where = "EvidenceMessage"
    if m.kind not in KINDS:
        raise DecodeError(f"{where}.kind: unknown evidence kind {m.kind!r}")
    if len(m.checkpoints) != 2:
        raise DecodeError(f"{where}.checkpoints: expected 2 notes, got {len(m.checkpoints)}")
    notes = (
        _decode_note(m.checkpoints[0], f"{where}.checkpoints[0]"),
        _decode_note(m.checkpoints[1], f"{where}.checkpoints[1]"),
    )
    public_key = PublicKey(m.public_key)
    if m.kind in (SplitView.kind, RetirementConflict.kind):
        what = "a split view" if m.kind == SplitView.kind else "a retirement conflict"
        if m.prefix_root is not None:
            raise DecodeError(f"{where}.prefix_root: {what} carries none")
        if m.consistency_proof:
            raise DecodeError(f"{where}.consistency_proof: {what} carries none")
        if m.kind == RetirementConflict.kind:
            return RetirementConflict(public_key, notes)
        return SplitView(public_key, notes)
    if m.prefix_root is None:
        raise DecodeError(f"{where}.prefix_root: inconsistent-history evidence needs one")
    return InconsistentHistory(public_key, notes, m.prefix_root, tuple(m.consistency_proof))
