"""Ed25519 node keys, log ids and their conversion to X25519 for Noise (DESIGN §2).

A node has one Ed25519 key.  Its log id is SHA-256 of the raw 32-byte public key, and its
Noise static key is the same key converted to X25519 with libsodium's
`crypto_sign_ed25519_{pk,sk}_to_curve25519`, so a Noise handshake proves which node key a peer
holds.  Key objects check their lengths when built (like pynacl's `SigningKey`/`VerifyKey`),
so a wrong-sized key can never travel further into the code.

Verification failures raise one opaque `VerificationError`; malformed key bytes raise
`DecodeError`.  This module is pure: it never reads files (see `trustix_p2p.keyfile`), never
reads the clock and never draws randomness (a seed is always passed in).  A private key's
repr never shows its seed.
"""

from __future__ import annotations

import hashlib
from typing import Any

import attrs
import nacl.bindings
import nacl.exceptions

from trustix_p2p.core.b64 import b64decode_strict, b64encode
from trustix_p2p.errors import DecodeError, VerificationError

__all__ = [
    "PUBLIC_KEY_SIZE",
    "SEED_SIZE",
    "SIGNATURE_SIZE",
    "PrivateKey",
    "PublicKey",
    "log_id",
]

PUBLIC_KEY_SIZE = 32
SEED_SIZE = 32
SIGNATURE_SIZE = 64


def log_id(public_key_raw: bytes) -> bytes:
    """The log id of a builder: SHA-256 of its raw 32-byte Ed25519 public key (DESIGN §2)."""
    return hashlib.sha256(public_key_raw).digest()


def _check_public_raw(_instance: Any, _attribute: Any, value: bytes) -> None:
    if not isinstance(value, bytes) or len(value) != PUBLIC_KEY_SIZE:
        raise DecodeError(f"Ed25519 public key must be {PUBLIC_KEY_SIZE} bytes")


def _check_seed(_instance: Any, _attribute: Any, value: bytes) -> None:
    if not isinstance(value, bytes) or len(value) != SEED_SIZE:
        raise DecodeError(f"Ed25519 private key seed must be {SEED_SIZE} bytes")


@attrs.frozen
class PublicKey:
    """A raw 32-byte Ed25519 public key (RFC 8032 §5.1.5 encoding)."""

    raw: bytes = attrs.field(validator=_check_public_raw)

    def log_id(self) -> bytes:
        """SHA-256 of the raw key: the id of the log this key signs."""
        return log_id(self.raw)

    def log_id_hex(self) -> str:
        return self.log_id().hex()

    def to_base64(self) -> str:
        return b64encode(self.raw)

    @classmethod
    def from_base64(cls, text: str) -> PublicKey:
        """Parse canonical base64 of exactly 32 bytes, raising `DecodeError` otherwise."""
        return cls(b64decode_strict(text, "Ed25519 public key"))

    def verify(self, message: bytes, signature: bytes) -> None:
        """Check a detached Ed25519 signature; raise an opaque `VerificationError` if invalid."""
        if len(signature) != SIGNATURE_SIZE:
            raise VerificationError("signature did not verify")
        try:
            # libsodium's crypto_sign_open also rejects small-order and non-canonical keys
            # and non-canonical S values (RFC 8032 §5.1.7 plus its stricter checks).
            nacl.bindings.crypto_sign_open(signature + message, self.raw)
        except nacl.exceptions.CryptoError as exc:
            raise VerificationError("signature did not verify") from exc

    def to_x25519(self) -> bytes:
        """The X25519 public key for Noise (libsodium `crypto_sign_ed25519_pk_to_curve25519`).

        Raises `DecodeError` for bytes that are not a usable Ed25519 point.
        """
        try:
            return nacl.bindings.crypto_sign_ed25519_pk_to_curve25519(self.raw)
        except nacl.exceptions.CryptoError as exc:
            raise DecodeError("Ed25519 public key cannot be converted to X25519") from exc


@attrs.frozen(repr=False)
class PrivateKey:
    """An Ed25519 private key held as its 32-byte RFC 8032 seed.

    The expanded 64-byte libsodium secret key and the public key are derived once at
    construction, so signing and `public_key` cost nothing extra per call.
    """

    seed: bytes = attrs.field(validator=_check_seed)
    _secret: bytes = attrs.field(init=False, eq=False, repr=False)
    _public: PublicKey = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        public_raw, secret = nacl.bindings.crypto_sign_seed_keypair(self.seed)
        # Frozen class: the derived fields are filled once, here, and never change.
        object.__setattr__(self, "_secret", secret)
        object.__setattr__(self, "_public", PublicKey(public_raw))

    @classmethod
    def from_seed(cls, seed: bytes) -> PrivateKey:
        return cls(seed)

    @property
    def public_key(self) -> PublicKey:
        return self._public

    def sign(self, message: bytes) -> bytes:
        """A 64-byte detached Ed25519 signature over `message` (deterministic, RFC 8032)."""
        signed: bytes = nacl.bindings.crypto_sign(message, self._secret)
        return signed[:SIGNATURE_SIZE]

    def to_x25519(self) -> bytes:
        """The X25519 private key for Noise (libsodium `crypto_sign_ed25519_sk_to_curve25519`)."""
        return nacl.bindings.crypto_sign_ed25519_sk_to_curve25519(self._secret)

    def __repr__(self) -> str:
        # Never show the seed: reprs end up in logs and tracebacks.
        return f"PrivateKey(public_key={self._public.to_base64()!r})"
