"""Canonical standard base64 (RFC 4648 §4) for every base64 field this project parses.

Signed notes, checkpoints, vkeys and key files all carry base64, and a value must have exactly
one textual form: otherwise two different notes (or files) would decode to the same bytes and
"the bytes as received" would stop identifying one value.  `b64decode_strict` therefore accepts
only what `b64encode` would have produced: the standard alphabet, mandatory `=` padding, no
whitespace and zero unused bits in the last character (RFC 4648 §3.5, "canonical encoding").

This module is pure: no I/O, no clock, no randomness.
"""

from __future__ import annotations

import base64
import binascii

from trustix_p2p.errors import DecodeError

__all__ = ["b64decode_strict", "b64encode"]


def b64encode(data: bytes) -> str:
    """Standard base64 with padding, as text."""
    return base64.b64encode(data).decode("ascii")


def b64decode_strict(text: str, what: str = "base64 value") -> bytes:
    """Decode canonical standard base64, raising `DecodeError` naming `what` otherwise."""
    if not text.isascii():
        raise DecodeError(f"{what}: not ASCII base64")
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise DecodeError(f"{what}: invalid base64 ({exc})") from exc
    # validate=True still tolerates some non-canonical forms (non-zero pad bits, extra '=');
    # re-encoding is the simplest exact check that this is the one canonical spelling.
    if b64encode(raw) != text:
        raise DecodeError(f"{what}: non-canonical base64")
    return raw
