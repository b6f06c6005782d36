"""Nix store paths: `<store dir>/<32-char nix32 hash>-<name>`, validated as Nix does.

Nix (libstore `StorePath` / `checkName`) accepts a base name only if its hash part is 32
characters of the nix32 alphabet (a 160-bit digest), followed by `-`, followed by a name of 1
to 211 characters from `[A-Za-z0-9+-._?=]` that does not start with `.` (which also rules out
`.` and `..`).  Everything that reaches a log entry passes through here, so an entry can never
name something Nix itself would refuse, and never a path with `/` or `..` inside.

This module is pure: it never touches the file system, never reads the clock.
"""

from __future__ import annotations

import re
from typing import Any

import attrs

from trustix_p2p.core.nix32 import ALPHABET
from trustix_p2p.core.storepath_syntax import (
    BASENAME_PATTERN,
    DEFAULT_STORE_DIR,
    HASH_PART_LEN,
    MAX_NAME_LEN,
    is_valid_basename,
    is_valid_store_path,
)
from trustix_p2p.errors import DecodeError

__all__ = [
    "BASENAME_PATTERN",
    "DEFAULT_STORE_DIR",
    "HASH_PART_LEN",
    "MAX_NAME_LEN",
    "StorePath",
    "is_valid_basename",
    "is_valid_store_path",
    "parse_store_path",
    "validate_basename",
    "validate_name",
]

_HASH_RE = re.compile(f"[{ALPHABET}]{{{HASH_PART_LEN}}}")
# Same set as Nix's checkName; `\Z`-anchored via fullmatch so a trailing newline cannot slip by.
# The fused all-rules pattern and the fast checks live in `storepath_syntax` (re-exported here).
_NAME_RE = re.compile(r"[A-Za-z0-9+\-._?=]{1,211}")


def _show(text: str) -> str:
    # Error messages quote the offending input, but never more than a line of it.
    return repr(text) if len(text) <= 80 else repr(text[:77]) + "..."


def validate_name(name: str, what: str = "store path name") -> str:
    """Check a store path name (the part after `<hash>-`) against Nix's rules; return it."""
    if not name:
        raise DecodeError(f"{what} is empty")
    if len(name) > MAX_NAME_LEN:
        raise DecodeError(f"{what} is longer than {MAX_NAME_LEN} characters")
    if not _NAME_RE.fullmatch(name):
        bad = next(c for c in name if not _NAME_RE.fullmatch(c))
        raise DecodeError(f"{what} contains the illegal character {bad!r}")
    if name.startswith("."):
        raise DecodeError(f"{what} must not start with '.'")
    return name


def _validate_hash_part(hash_part: str) -> str:
    # The 160-bit hash spans exactly 32 characters, so any 32 alphabet characters decode
    # without leftover bits; no separate bit check is needed.
    if not _HASH_RE.fullmatch(hash_part):
        raise DecodeError(
            f"store path hash part {_show(hash_part)} is not {HASH_PART_LEN} nix32 characters"
        )
    return hash_part


def _check_store_dir(_instance: Any, _attribute: Any, value: str) -> None:
    if not value.startswith("/") or value.endswith("/") or "\n" in value or "\0" in value:
        raise DecodeError(f"store directory {_show(value)} must be absolute without a trailing '/'")


def _check_hash(_instance: Any, _attribute: Any, value: str) -> None:
    _validate_hash_part(value)


def _check_name(_instance: Any, _attribute: Any, value: str) -> None:
    validate_name(value)


@attrs.frozen
class StorePath:
    """A valid Nix store path, split into its parts (checked on construction)."""

    store_dir: str = attrs.field(validator=_check_store_dir)
    hash_part: str = attrs.field(validator=_check_hash)
    name: str = attrs.field(validator=_check_name)

    @property
    def basename(self) -> str:
        return f"{self.hash_part}-{self.name}"

    @property
    def path(self) -> str:
        return f"{self.store_dir}/{self.basename}"

    def __str__(self) -> str:
        return self.path


def validate_basename(text: str) -> str:
    """Check `<hash>-<name>` (a store path without its directory) and return it unchanged."""
    if not is_valid_basename(text):
        _split_basename(text)  # raises, explaining which rule failed
        raise DecodeError(f"store path base name {_show(text)} is invalid")
    return text


def _split_basename(text: str) -> tuple[str, str]:
    if len(text) < HASH_PART_LEN + 2:
        raise DecodeError(f"store path base name {_show(text)} is too short")
    if text[HASH_PART_LEN] != "-":
        raise DecodeError(f"store path base name {_show(text)} lacks '-' after the hash part")
    hash_part, name = text[:HASH_PART_LEN], text[HASH_PART_LEN + 1 :]
    _validate_hash_part(hash_part)
    validate_name(name)
    return hash_part, name


def parse_store_path(text: str, store_dir: str = DEFAULT_STORE_DIR) -> StorePath:
    """Parse a full store path in `store_dir`, e.g. `/nix/store/<hash>-hello-2.12`."""
    prefix = store_dir + "/"
    if not text.startswith(prefix):
        raise DecodeError(f"{_show(text)} is not a path in the store directory {store_dir}")
    hash_part, name = _split_basename(text[len(prefix) :])
    return StorePath(store_dir, hash_part, name)
