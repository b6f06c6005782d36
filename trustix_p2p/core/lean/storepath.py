"""Nix store path syntax: `<store dir>/<32-char nix32 hash>-<name>`, validated as Nix does.

Nix (libstore `StorePath` / `checkName`) accepts a base name only if its hash part is 32
characters of the nix32 alphabet (a 160-bit digest), followed by `-`, followed by a name of 1
to 211 characters from `[A-Za-z0-9+-._?=]` that does not start with `.` (which also rules out
`.` and `..`).  Everything that reaches a log entry passes through here, so an entry can never
name something Nix itself would refuse, and never a path with `/` or `..` inside.

The rules are written once, here, in two forms: fast yes/no checks (`is_valid_basename`,
`is_valid_store_path`: one regular expression) for the hot paths, and step-by-step checks
that raise a `DecodeError` saying which rule failed (`validate_name`, `validate_basename`,
`split_store_path`), run only to explain a rejection; tests/test_storepath.py holds the two
to agree.  `trustix_p2p.core.storepath` re-exports all of it next to the attrs `StorePath`.

Lean layer (see `trustix_p2p.core.lean`): pure, no attrs, no `typing` at run time.  The
regular expressions of the explaining checks are compiled on first use (`re`'s own cache),
so loading this module for the fast checks compiles only the one pattern they need.
"""

from __future__ import annotations

import functools
import re

from trustix_p2p.core.nix32 import ALPHABET
from trustix_p2p.errors import DecodeError

__all__ = [
    "BASENAME_PATTERN",
    "DEFAULT_STORE_DIR",
    "HASH_PART_LEN",
    "MAX_NAME_LEN",
    "is_valid_basename",
    "is_valid_store_path",
    "name_pattern",
    "split_store_path",
    "store_path_regex",
    "validate_basename",
    "validate_hash_part",
    "validate_name",
    "validate_store_dir",
    "why_invalid",
]

DEFAULT_STORE_DIR = "/nix/store"
HASH_PART_LEN = 32
MAX_NAME_LEN = 211
# One character of a store path name: the set of Nix's checkName.
_NAME_CHAR = r"[A-Za-z0-9+\-._?=]"
_HASH_PATTERN = f"[{ALPHABET}]{{{HASH_PART_LEN}}}"


def name_pattern(max_len: int) -> str:
    """A regular expression for 1 to `max_len` name characters, the first not a `.`.

    Store path names obey it with `MAX_NAME_LEN`; output names (`out`, `dev`, ...) too, with
    their own limit, because Nix appends them to the derivation's name.
    """
    return f"(?!\\.){_NAME_CHAR}{{1,{max_len}}}"


#: All of a base name's rules at once, for the hot paths (entry checks, the hook).
BASENAME_PATTERN = f"{_HASH_PATTERN}-{name_pattern(MAX_NAME_LEN)}"
_BASENAME_RE = re.compile(BASENAME_PATTERN)


def is_valid_basename(text: str) -> bool:
    """Whether `text` is a valid `<hash>-<name>`; the fast form of `validate_basename`."""
    return _BASENAME_RE.fullmatch(text) is not None


@functools.lru_cache(maxsize=8)
def store_path_regex(store_dir: str) -> re.Pattern[str]:
    """All the rules of a whole store path in `store_dir`, as one compiled expression.

    For loops that check many paths (`fullmatch`, never `match`: `\\Z`-anchored, so a
    trailing newline cannot slip by); `is_valid_store_path` is the same check as a function.
    """
    return re.compile(re.escape(store_dir) + "/" + BASENAME_PATTERN)


def is_valid_store_path(text: str, store_dir: str = DEFAULT_STORE_DIR) -> bool:
    """Whether `text` is a valid store path in `store_dir`; the fast form of `split_store_path`."""
    return store_path_regex(store_dir).fullmatch(text) is not None


# --- The same rules, step by step, saying which one failed ---------------------------------


def _show(text: str) -> str:
    # Error messages quote the offending input, but never more than a line of it.
    return repr(text) if len(text) <= 80 else repr(text[:77]) + "..."


def validate_name(name: str, what: str = "store path name") -> str:
    """Check a store path name (the part after `<hash>-`) against Nix's rules; return it."""
    if not name:
        raise DecodeError(f"{what} is empty")
    if len(name) > MAX_NAME_LEN:
        raise DecodeError(f"{what} is longer than {MAX_NAME_LEN} characters")
    # fullmatch: `\Z`-anchored, so a trailing newline cannot slip by.
    if not re.fullmatch(f"{_NAME_CHAR}*", name):
        bad = next(c for c in name if not re.fullmatch(_NAME_CHAR, c))
        raise DecodeError(f"{what} contains the illegal character {bad!r}")
    if name.startswith("."):
        raise DecodeError(f"{what} must not start with '.'")
    return name


def validate_hash_part(hash_part: str) -> str:
    """Check a store path's hash part: 32 characters of the nix32 alphabet; return it."""
    # The 160-bit hash spans exactly 32 characters, so any 32 alphabet characters decode
    # without leftover bits; no separate bit check is needed.
    if not re.fullmatch(_HASH_PATTERN, hash_part):
        raise DecodeError(
            f"store path hash part {_show(hash_part)} is not {HASH_PART_LEN} nix32 characters"
        )
    return hash_part


def _split_basename(text: str) -> tuple[str, str]:
    if len(text) < HASH_PART_LEN + 2:
        raise DecodeError(f"store path base name {_show(text)} is too short")
    if text[HASH_PART_LEN] != "-":
        raise DecodeError(f"store path base name {_show(text)} lacks '-' after the hash part")
    hash_part, name = text[:HASH_PART_LEN], text[HASH_PART_LEN + 1 :]
    validate_hash_part(hash_part)
    validate_name(name)
    return hash_part, name


def validate_basename(text: str) -> str:
    """Check `<hash>-<name>` (a store path without its directory) and return it unchanged."""
    if not is_valid_basename(text):
        _split_basename(text)  # raises, explaining which rule failed
        raise DecodeError(f"store path base name {_show(text)} is invalid")
    return text


def validate_store_dir(store_dir: str) -> str:
    """Check a store directory: absolute, without a trailing `/`, no newline or NUL."""
    if (
        not store_dir.startswith("/")
        or store_dir.endswith("/")
        or "\n" in store_dir
        or "\0" in store_dir
    ):
        raise DecodeError(
            f"store directory {_show(store_dir)} must be absolute without a trailing '/'"
        )
    return store_dir


def split_store_path(text: str, store_dir: str = DEFAULT_STORE_DIR) -> tuple[str, str]:
    """The (hash part, name) of a full store path in `store_dir`; `DecodeError` says why not."""
    prefix = store_dir + "/"
    if not text.startswith(prefix):
        raise DecodeError(f"{_show(text)} is not a path in the store directory {store_dir}")
    return _split_basename(text[len(prefix) :])


def why_invalid(text: str, store_dir: str = DEFAULT_STORE_DIR) -> str:
    """Why `text` is not a valid store path in `store_dir`, in one line, for error messages.

    Call it once the fast check has failed: it runs the step-by-step checks.
    """
    try:
        split_store_path(text, store_dir)
    except DecodeError as exc:
        return str(exc)
    return f"{text!r} is a valid store path"
