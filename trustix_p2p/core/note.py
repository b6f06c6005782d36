"""C2SP signed notes (https://c2sp.org/signed-note) with Ed25519 signatures.

A signed note is UTF-8 text ending in a newline, a blank line, then one or more signature
lines `— <key name> <base64(4-byte key id || signature)>`.  Checkpoints and cosignatures are
signed notes (see `trustix_p2p.core.checkpoint`).

What this module guarantees:
- `parse_note` accepts only notes the spec allows, within size and signature-count limits,
  and is stricter than the spec in one place: the text may not end in a blank line, so a
  doubled separator is never silently folded into the text.
- Verification follows the spec's key-matching rule exactly: a signature counts only if both
  its key name and key id match the verifier's key; lines from other keys or of other types
  (e.g. cosignatures, type 0x04) are ignored; a matching signature that fails to verify
  rejects the whole note.  Failures raise one opaque `VerificationError`.
- Nothing here re-encodes a note to check a signature: signatures are over the text bytes
  exactly as received.

This module is pure: no I/O, no clock, no randomness (Ed25519 signing is deterministic).
"""

from __future__ import annotations

import hashlib
import re

import attrs

from trustix_p2p.core.b64 import b64decode_strict, b64encode
from trustix_p2p.core.keys import PrivateKey, PublicKey
from trustix_p2p.errors import DecodeError, LocalProtocolError, VerificationError

__all__ = [
    "ALG_ED25519",
    "ALG_ED25519_COSIGNATURE",
    "MAX_NOTE_SIZE",
    "MAX_SIGNATURES",
    "Note",
    "NoteSignature",
    "ed25519_key_id",
    "format_note",
    "format_skey",
    "format_vkey",
    "key_id_for",
    "parse_note",
    "parse_skey",
    "parse_vkey",
    "sign_note",
    "sign_note_text",
    "signature_line",
    "validate_key_name",
    "validate_note_text",
    "verify_note",
]

# Signature type identifier bytes (signed-note §"Signature types").
ALG_ED25519 = 0x01
ALG_ED25519_COSIGNATURE = 0x04

MAX_NOTE_SIZE = 16384
MAX_SIGNATURES = 100
KEY_ID_SIZE = 4
_EM_DASH_PREFIX = "\u2014 "
# Signed notes "MUST NOT contain any ASCII control characters ... other than newline".
_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f]")
# In an ASCII key name: any control character, the space, or "+" (str.isspace() is true in
# ASCII exactly for \t \n \v \f \r, \x1c-\x1f and the space, all inside \x00-\x20).
_ASCII_BAD_NAME = re.compile(r"[\x00-\x20+]")


@attrs.frozen
class NoteSignature:
    """One signature line: key name, 4-byte key id, and the signature bytes after the id."""

    key_name: str
    key_id: bytes
    signature: bytes


@attrs.frozen
class Note:
    """Note text (ending in a newline, without the separating blank line) and its signatures."""

    text: str
    signatures: tuple[NoteSignature, ...]


def validate_key_name(name: str) -> str:
    """Key names are non-empty and contain no Unicode space, no `+` and no control character."""
    if not name:
        raise DecodeError("note key name is empty")
    if name.isascii():
        # The common case, in one regex: ASCII spaces and controls are \x00-\x20.
        bad = _ASCII_BAD_NAME.search(name) is not None
    else:
        bad = "+" in name or any(ch.isspace() for ch in name) or _CONTROL.search(name) is not None
    if bad:
        raise DecodeError(f"note key name {name[:80]!r} contains a space, '+' or control char")
    return name


def validate_note_text(text: str) -> str:
    """Check note text: ends in a newline, no control characters, last line not blank."""
    if not text.endswith("\n"):
        raise DecodeError("note text must end with a newline")
    if text == "\n" or text.endswith("\n\n"):
        raise DecodeError("note text must not end with a blank line (extra blank line)")
    if _CONTROL.search(text):
        raise DecodeError("note text contains a control character")
    return text


def key_id_for(name: str, alg: int, public_key: PublicKey) -> bytes:
    """SHA-256(name || "\\n" || alg || public key)[:4] (signed-note, recommended key ids)."""
    digest = hashlib.sha256(name.encode("utf-8") + b"\n" + bytes([alg]) + public_key.raw)
    return digest.digest()[:KEY_ID_SIZE]


def ed25519_key_id(name: str, public_key: PublicKey) -> bytes:
    """Key id of a plain Ed25519 note signer (type 0x01)."""
    return key_id_for(name, ALG_ED25519, public_key)


def signature_line(sig: NoteSignature) -> str:
    """`— <name> <base64(key id || signature)>\\n`."""
    try:
        validate_key_name(sig.key_name)
    except DecodeError as exc:
        raise LocalProtocolError(str(exc)) from exc
    if len(sig.key_id) != KEY_ID_SIZE or not sig.signature:
        raise LocalProtocolError("note signature needs a 4-byte key id and a non-empty signature")
    return f"{_EM_DASH_PREFIX}{sig.key_name} {b64encode(sig.key_id + sig.signature)}\n"


def format_note(note: Note) -> bytes:
    """Serialise a note: text, blank line, signature lines.  Raises `LocalProtocolError`."""
    try:
        validate_note_text(note.text)
    except DecodeError as exc:
        raise LocalProtocolError(str(exc)) from exc
    if not note.signatures:
        raise LocalProtocolError("a signed note needs at least one signature")
    lines = "".join(signature_line(sig) for sig in note.signatures)
    return (note.text + "\n" + lines).encode("utf-8")


def parse_signature_line(line: str) -> NoteSignature:
    """One signature line (`— <name> <base64>`, without its newline), strictly."""
    return _parse_signature_line(line)


def _parse_signature_line(line: str) -> NoteSignature:
    if not line.startswith(_EM_DASH_PREFIX):
        raise DecodeError("note signature line must start with an em dash and a space")
    parts = line[len(_EM_DASH_PREFIX) :].split(" ")
    if len(parts) != 2:
        raise DecodeError("note signature line must be '— <name> <base64>'")
    name, encoded = parts
    validate_key_name(name)
    payload = b64decode_strict(encoded, "note signature")
    if len(payload) <= KEY_ID_SIZE:
        raise DecodeError("note signature is shorter than a key id plus one byte")
    return NoteSignature(name, payload[:KEY_ID_SIZE], payload[KEY_ID_SIZE:])


def parse_note(
    data: bytes, max_size: int = MAX_NOTE_SIZE, max_signatures: int = MAX_SIGNATURES
) -> Note:
    """Parse a signed note strictly; raise `DecodeError` for anything malformed.

    Signatures are only parsed here, not verified: see `verify_note`.
    """
    if len(data) > max_size:
        raise DecodeError(f"note is {len(data)} bytes, over the limit of {max_size}")
    try:
        whole = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DecodeError("note is not valid UTF-8") from exc
    if _CONTROL.search(whole):
        raise DecodeError("note contains a control character")
    # The text is separated from the signatures by the *last* blank line (signed-note §Format),
    # so no blank line can appear among the signature lines.
    split = whole.rfind("\n\n")
    if split < 0:
        raise DecodeError("note has no blank line before its signatures")
    text, sig_block = whole[: split + 1], whole[split + 2 :]
    validate_note_text(text)
    if not sig_block:
        raise DecodeError("note has no signatures")
    if not sig_block.endswith("\n"):
        raise DecodeError("note does not end with a newline")
    lines = sig_block[:-1].split("\n")
    if len(lines) > max_signatures:
        raise DecodeError(f"note has more than {max_signatures} signatures")
    return Note(text, tuple(_parse_signature_line(line) for line in lines))


def sign_note_text(text: str, key_name: str, key: PrivateKey) -> NoteSignature:
    """An Ed25519 (type 0x01) note signature by `key` under `key_name` over `text`."""
    try:
        validate_note_text(text)
        validate_key_name(key_name)
    except DecodeError as exc:
        raise LocalProtocolError(f"cannot sign note: {exc}") from exc
    return NoteSignature(
        key_name, ed25519_key_id(key_name, key.public_key), key.sign(text.encode("utf-8"))
    )


def sign_note(text: str, key_name: str, key: PrivateKey) -> bytes:
    """A complete signed note with one Ed25519 signature."""
    return format_note(Note(text, (sign_note_text(text, key_name, key),)))


def verify_note(note: Note, key_name: str, public_key: PublicKey) -> NoteSignature:
    """Verify the Ed25519 signature of (`key_name`, `public_key`) on `note`.

    Signatures whose name or key id differ are ignored, as the spec requires.  Raises
    `VerificationError` if no matching signature exists or if any matching one is invalid.
    """
    key_id = ed25519_key_id(key_name, public_key)
    message = note.text.encode("utf-8")
    verified: NoteSignature | None = None
    for sig in note.signatures:
        if sig.key_name == key_name and sig.key_id == key_id:
            # "If a signature from a known key fails to verify, clients SHOULD reject the
            # whole note": we do, rather than look for another line that verifies.
            public_key.verify(message, sig.signature)
            if verified is None:
                verified = sig
    if verified is None:
        raise VerificationError("note is not signed by the expected key")
    return verified


# --- key encodings (signed-note §"Verifier keys" and the Go note package's signer keys) ---

_HEX8 = re.compile(r"[0-9a-f]{8}")


def format_vkey(name: str, public_key: PublicKey, alg: int = ALG_ED25519) -> str:
    """Verifier key `<name>+<hex key id>+<base64(alg || public key)>`."""
    try:
        validate_key_name(name)
    except DecodeError as exc:
        raise LocalProtocolError(str(exc)) from exc
    key_id = key_id_for(name, alg, public_key)
    return f"{name}+{key_id.hex()}+{b64encode(bytes([alg]) + public_key.raw)}"


def parse_vkey(text: str, alg: int = ALG_ED25519) -> tuple[str, PublicKey]:
    """Parse a verifier key of signature type `alg`, checking that its key id matches."""
    # The name cannot contain '+', but the base64 can: split only twice.
    parts = text.split("+", 2)
    if len(parts) != 3:
        raise DecodeError("verifier key must be '<name>+<key id>+<base64 key>'")
    name, key_id_hex, encoded = parts
    validate_key_name(name)
    public = PublicKey(_decode_typed_key(encoded, alg, "verifier key"))
    _check_key_id(key_id_hex, key_id_for(name, alg, public), "verifier key")
    return name, public


def format_skey(name: str, key: PrivateKey) -> str:
    """Signer key `PRIVATE+KEY+<name>+<hex key id>+<base64(0x01 || seed)>` (Go's note format)."""
    try:
        validate_key_name(name)
    except DecodeError as exc:
        raise LocalProtocolError(str(exc)) from exc
    key_id = ed25519_key_id(name, key.public_key)
    return f"PRIVATE+KEY+{name}+{key_id.hex()}+{b64encode(bytes([ALG_ED25519]) + key.seed)}"


def parse_skey(text: str) -> tuple[str, PrivateKey]:
    """Parse an Ed25519 signer key, checking that its key id matches the derived public key."""
    parts = text.split("+", 4)
    if len(parts) != 5 or parts[0] != "PRIVATE" or parts[1] != "KEY":
        raise DecodeError("signer key must be 'PRIVATE+KEY+<name>+<key id>+<base64 key>'")
    name, key_id_hex, encoded = parts[2], parts[3], parts[4]
    validate_key_name(name)
    key = PrivateKey(_decode_typed_key(encoded, ALG_ED25519, "signer key"))
    _check_key_id(key_id_hex, ed25519_key_id(name, key.public_key), "signer key")
    return name, key


def _decode_typed_key(encoded: str, alg: int, what: str) -> bytes:
    raw = b64decode_strict(encoded, what)
    if len(raw) != 33 or raw[0] != alg:
        raise DecodeError(f"{what} must encode type byte 0x{alg:02x} and 32 key bytes")
    return raw[1:]


def _check_key_id(key_id_hex: str, expected: bytes, what: str) -> None:
    if not _HEX8.fullmatch(key_id_hex):
        raise DecodeError(f"{what} id must be 8 lowercase hex digits")
    if bytes.fromhex(key_id_hex) != expected:
        raise DecodeError(f"{what} id does not match its name and key")
