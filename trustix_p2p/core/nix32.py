"""Nix's base-32 encoding ("nix32") and the NAR hash spellings users hand us.

Nix writes hashes in a base-32 of its own (libutil `printHash32` / `parseHash32`): the
alphabet `0123456789abcdfghijklmnpqrsvwxyz` (no e, o, u, t) and a reversed bit order.  Read
left to right, the text is the big-endian base-32 numeral of the bytes taken as one
*little-endian* integer, zero-padded to `ceil(8 * n / 5)` digits; that is exactly what Nix's
per-character loop computes, and a whole-integer conversion is both simpler and faster here.

Decoding is strict: an unknown character, a length no byte string encodes to, or set bits
beyond the last byte (Nix's "invalid base-32 hash" case) raise `DecodeError`, so every byte
string has exactly one nix32 spelling.

This module is pure: no I/O, no clock, no randomness.
"""

from __future__ import annotations

import re

from trustix_p2p.errors import DecodeError, LocalProtocolError

__all__ = [
    "ALPHABET",
    "SHA256_NIX32_LEN",
    "decode",
    "encode",
    "encoded_length",
    "format_nar_hash",
    "parse_nar_hash",
]

ALPHABET = "0123456789abcdfghijklmnpqrsvwxyz"
_DIGIT = {c: i for i, c in enumerate(ALPHABET)}
SHA256_SIZE = 32
SHA256_NIX32_LEN = 52


def encoded_length(size: int) -> int:
    """Number of nix32 characters for `size` bytes (Nix `base32Len`), 0 for 0 bytes."""
    return (size * 8 + 4) // 5


def encode(data: bytes) -> str:
    """Nix base-32 of `data`."""
    length = encoded_length(len(data))
    value = int.from_bytes(data, "little")
    digits = []
    for _ in range(length):
        digits.append(ALPHABET[value & 31])
        value >>= 5
    # The least significant 5 bits are the last character.
    return "".join(reversed(digits))


def decode(text: str) -> bytes:
    """Parse Nix base-32, raising `DecodeError` for anything `encode` would not produce."""
    size = len(text) * 5 // 8
    if encoded_length(size) != len(text):
        raise DecodeError(f"nix32: {len(text)} characters is not a valid encoded length")
    value = 0
    for ch in text:
        digit = _DIGIT.get(ch)
        if digit is None:
            raise DecodeError(f"nix32: invalid character {ch!r}")
        value = (value << 5) | digit
    if value >> (8 * size):
        # The top character carries bits beyond the last byte; Nix rejects these too.
        raise DecodeError("nix32: non-zero bits beyond the encoded bytes")
    return value.to_bytes(size, "little")


# Compiled on first use (re caches it), like `b64` imported on first use: the Nix post-build
# hook imports this module for `ALPHABET` on every build and never parses a NAR hash.
_HEX64 = r"[0-9a-fA-F]{64}"


def parse_nar_hash(text: str) -> bytes:
    """Parse a SHA-256 NAR hash as Nix prints it; return the 32 raw bytes.

    Accepted: `sha256:<52 nix32>` (narinfo, `nix-store -q --hash`), `sha256:<64 hex>`,
    `sha256:<44 base64>` and SRI `sha256-<44 base64>` (`nix path-info --json` in newer Nix).
    The algorithm must be sha256: it is the only one a NAR hash in an entry can hold.
    """
    from trustix_p2p.core.b64 import b64decode_strict

    if text.startswith("sha256-"):
        raw = b64decode_strict(text[len("sha256-") :], "NAR hash (SRI base64)")
    elif text.startswith("sha256:"):
        body = text[len("sha256:") :]
        if len(body) == SHA256_NIX32_LEN:
            raw = decode(body)
        elif len(body) == 64:
            if not re.fullmatch(_HEX64, body):
                raise DecodeError("NAR hash: invalid hexadecimal digits")
            raw = bytes.fromhex(body)
        elif len(body) == 44:
            raw = b64decode_strict(body, "NAR hash (base64)")
        else:
            raise DecodeError(
                f"NAR hash: sha256 digest of {len(body)} characters is neither nix32 (52), "
                "hex (64) nor base64 (44)"
            )
    else:
        raise DecodeError("NAR hash must start with 'sha256:' or 'sha256-' (SRI)")
    if len(raw) != SHA256_SIZE:
        raise DecodeError(f"NAR hash must be {SHA256_SIZE} bytes, got {len(raw)}")
    return raw


def format_nar_hash(raw: bytes) -> str:
    """`sha256:<nix32>`, the spelling used in narinfo files."""
    if len(raw) != SHA256_SIZE:
        raise LocalProtocolError(f"NAR hash must be {SHA256_SIZE} bytes, got {len(raw)}")
    return "sha256:" + encode(raw)
