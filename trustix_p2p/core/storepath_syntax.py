"""The syntax of Nix store paths as fast predicates, without the `StorePath` value.

Nix (libstore `StorePath` / `checkName`) accepts a base name only if its hash part is 32
characters of the nix32 alphabet (a 160-bit digest), followed by `-`, followed by a name of 1
to 211 characters from `[A-Za-z0-9+-._?=]` that does not start with `.`.  This module holds
those rules as one regular expression and two yes/no checks; `trustix_p2p.core.storepath`
re-exports them next to the `StorePath` value and the checks that explain a rejection.

It exists apart from `storepath` so the Nix post-build hook, which runs once per build and
pays for every import, can validate paths without loading attrs.  It must stay pure (no I/O,
no clock) and import nothing heavier than `re`; only `why_invalid`, which words an error,
loads `storepath`.
"""

from __future__ import annotations

import re

from trustix_p2p.core.nix32 import ALPHABET

__all__ = [
    "BASENAME_PATTERN",
    "DEFAULT_STORE_DIR",
    "HASH_PART_LEN",
    "MAX_NAME_LEN",
    "is_valid_basename",
    "is_valid_store_path",
    "why_invalid",
]

DEFAULT_STORE_DIR = "/nix/store"
HASH_PART_LEN = 32
MAX_NAME_LEN = 211

# All of the rules at once, for the hot paths (entry decoding, the hook); the step-by-step
# checks in `storepath` run only to explain a rejection.
BASENAME_PATTERN = f"[{ALPHABET}]{{{HASH_PART_LEN}}}-(?!\\.)[A-Za-z0-9+\\-._?=]{{1,{MAX_NAME_LEN}}}"
_BASENAME_RE = re.compile(BASENAME_PATTERN)


def is_valid_basename(text: str) -> bool:
    """Whether `text` is a valid `<hash>-<name>`; the fast form of `validate_basename`."""
    return _BASENAME_RE.fullmatch(text) is not None


def is_valid_store_path(text: str, store_dir: str = DEFAULT_STORE_DIR) -> bool:
    """Whether `text` is a valid store path in `store_dir` (fast, no explanation)."""
    prefix_len = len(store_dir) + 1
    return (
        text.startswith(store_dir)
        and text[prefix_len - 1 : prefix_len] == "/"
        and _BASENAME_RE.fullmatch(text, prefix_len) is not None
    )


def why_invalid(text: str, store_dir: str = DEFAULT_STORE_DIR) -> str:
    """Why `text` is not a valid store path in `store_dir`, in one line, for error messages.

    Slow on purpose: it runs the step-by-step checks of `storepath` (which loads attrs), so
    call it only once the fast check has failed.
    """
    from trustix_p2p.core.storepath import parse_store_path
    from trustix_p2p.errors import DecodeError

    try:
        parse_store_path(text, store_dir)
    except DecodeError as exc:
        return str(exc)
    return f"{text!r} is a valid store path"
