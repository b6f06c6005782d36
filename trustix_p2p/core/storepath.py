"""Nix store paths as a value: `StorePath`, checked on construction, and `parse_store_path`.

The rules themselves (Nix's libstore `StorePath` / `checkName`: a 32-character nix32 hash
part, `-`, a name of 1 to 211 characters of `[A-Za-z0-9+-._?=]` not starting with `.`) are
written once, in `trustix_p2p.core.lean.storepath`, as fast checks and as checks that explain
a rejection; this module re-exports them and adds the attrs value that holds a path's parts.

This module is pure: it never touches the file system, never reads the clock.
"""

from __future__ import annotations

from typing import Any

import attrs

from trustix_p2p.core.lean.storepath import (
    BASENAME_PATTERN,
    DEFAULT_STORE_DIR,
    HASH_PART_LEN,
    MAX_NAME_LEN,
    is_valid_basename,
    is_valid_store_path,
    split_store_path,
    validate_basename,
    validate_hash_part,
    validate_name,
    validate_store_dir,
    why_invalid,
)

__all__ = [
    "BASENAME_PATTERN",
    "DEFAULT_STORE_DIR",
    "HASH_PART_LEN",
    "MAX_NAME_LEN",
    "StorePath",
    "is_valid_basename",
    "is_valid_store_path",
    "parse_store_path",
    "split_store_path",
    "validate_basename",
    "validate_hash_part",
    "validate_name",
    "validate_store_dir",
    "why_invalid",
]


def _check_store_dir(_instance: Any, _attribute: Any, value: str) -> None:
    validate_store_dir(value)


def _check_hash(_instance: Any, _attribute: Any, value: str) -> None:
    validate_hash_part(value)


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


def parse_store_path(text: str, store_dir: str = DEFAULT_STORE_DIR) -> StorePath:
    """Parse a full store path in `store_dir`, e.g. `/nix/store/<hash>-hello-2.12`."""
    return StorePath(store_dir, *split_store_path(text, store_dir))
