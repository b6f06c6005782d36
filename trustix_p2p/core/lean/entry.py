"""Log entry v1: the value, the rules of its fields and its canonical leaf bytes (DESIGN §3).

A leaf of a trustix-p2p log is the msgpack array

    [1, out_path, nar_hash, nar_size, references, deriver, output_name, built_at]

(str and bin kept distinct), and every hash and signature is computed over those bytes.
`Entry` declares the seven fields, in that order, and this is the only place they are
declared: `pack_entry` packs an entry's fields in declaration order, the post-build hook
builds `Entry` values directly, and `trustix_p2p.core.entry` re-exports it next to strict
decoding and the JSON form.

`Entry` is a named tuple, not an attrs class, because the hook must not load attrs; it keeps
an attrs value's equality all the same (an entry equals only an entry, never a plain tuple).

Validation runs once per leaf on the append path, so it is one fused pass (`fields_ok`); only
a rejected entry goes through the step-by-step checks that explain it (`explain_invalid`),
and tests/test_entry.py holds the two to agree.  The store path rules are
`trustix_p2p.core.lean.storepath`'s.

Lean layer (see `trustix_p2p.core.lean`): pure (no I/O, no clock: `built_at` is always passed
in, no randomness), no attrs, no `typing` at run time.
"""

from __future__ import annotations

import re

import msgpack

from trustix_p2p.core.lean.storepath import (
    BASENAME_PATTERN,
    DEFAULT_STORE_DIR,
    is_valid_basename,
    is_valid_store_path,
    name_pattern,
    split_store_path,
    store_path_regex,
    validate_basename,
)
from trustix_p2p.errors import DecodeError, LocalProtocolError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NamedTuple, NoReturn
else:
    from trustix_p2p.core.lean import NamedTuple

__all__ = [
    "ENTRY_VERSION",
    "MAX_ENTRY_BYTES",
    "MAX_OUTPUT_NAME_LEN",
    "MAX_REFERENCES",
    "NAR_HASH_SIZE",
    "Entry",
    "encode_entry",
    "explain_invalid",
    "field_error",
    "fields_ok",
    "is_uint63",
    "pack_entry",
    "validate_entry",
]

ENTRY_VERSION = 1
MAX_REFERENCES = 4096
# The limits agree: 4,096 references of the longest base name Nix allows (32 + 1 + 211 = 244
# characters, 246 bytes each in msgpack) encode to 1,007,619 bytes, and with every other field
# at its longest an entry is below 1,009,000 bytes, so any entry whose fields are valid fits.
MAX_ENTRY_BYTES = 1024 * 1024
MAX_OUTPUT_NAME_LEN = 255
NAR_HASH_SIZE = 32
_MAX_UINT63 = 2**63  # exclusive; keeps every integer a signed 64-bit value everywhere
_DRV_SUFFIX = ".drv"

_BASENAME_RE = re.compile(BASENAME_PATTERN)
# Output names follow the character rules of store path names (Nix's checkName), since Nix
# appends them to the derivation name to form the output's store path name.
_OUTPUT_NAME_RE = re.compile(name_pattern(MAX_OUTPUT_NAME_LEN))


class Entry(NamedTuple):
    """One logged build output.  Construction does not validate; encoding and decoding do.

    `references` are the sorted, unique base names (no store directory) of the paths the
    output refers to; `deriver` is the full `.drv` path or "".
    """

    out_path: str
    nar_hash: bytes
    nar_size: int
    references: tuple[str, ...]
    deriver: str
    output_name: str
    built_at: int

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and tuple.__eq__(self, other)

    def __ne__(self, other: object) -> bool:
        return not self == other


def is_uint63(value: object) -> bool:
    """Whether `value` is an int (not a bool) in 0 .. 2**63-1, as every integer field is."""
    # `type(...) is int` on purpose: bool is an int subclass and must not pass as one.
    return type(value) is int and 0 <= value < _MAX_UINT63


def field_error(field: str, problem: str) -> DecodeError:
    return DecodeError(f"entry field {field!r}: {problem}")


def fields_ok(entry: Entry, store_dir: str) -> bool:
    """All of `explain_invalid`'s rules as one fast yes/no (the per-leaf hot path).

    The fields may hold anything (a decoded entry is checked before it is trusted).
    """
    path_re = store_path_regex(store_dir)
    out_path = entry.out_path
    if type(out_path) is not str or path_re.fullmatch(out_path) is None:
        return False
    nar_hash = entry.nar_hash
    if type(nar_hash) is not bytes or len(nar_hash) != NAR_HASH_SIZE:
        return False
    if not is_uint63(entry.nar_size):
        return False
    references: object = entry.references
    if type(references) is not list and type(references) is not tuple:
        return False
    if len(references) > MAX_REFERENCES:
        return False
    previous = ""
    for ref in references:
        # `ref > previous` also rejects "" (the first) and enforces strict sorting.
        if type(ref) is not str or ref <= previous or _BASENAME_RE.fullmatch(ref) is None:
            return False
        previous = ref
    deriver = entry.deriver
    if type(deriver) is not str:
        return False
    if deriver and (path_re.fullmatch(deriver) is None or not deriver.endswith(_DRV_SUFFIX)):
        return False
    output_name = entry.output_name
    if type(output_name) is not str or _OUTPUT_NAME_RE.fullmatch(output_name) is None:
        return False
    return is_uint63(entry.built_at)


def _check_uint63(field: str, value: object) -> None:
    if type(value) is not int:
        raise field_error(field, f"must be an integer, not {type(value).__name__}")
    if not is_uint63(value):
        raise field_error(field, "must be in 0 .. 2**63-1")


def _check_str(field: str, value: object) -> str:
    if type(value) is not str:
        raise field_error(field, f"must be a string, not {type(value).__name__}")
    return value


def _explain_store_path(field: str, text: str, store_dir: str) -> NoReturn:
    try:
        split_store_path(text, store_dir)
    except DecodeError as exc:
        raise field_error(field, str(exc)) from exc
    raise field_error(field, "is not a valid store path")


def explain_invalid(entry: Entry, store_dir: str) -> None:
    """Raise the `DecodeError` that names the first invalid field (slow, exact messages)."""
    out_path = _check_str("out_path", entry.out_path)
    if not is_valid_store_path(out_path, store_dir):
        _explain_store_path("out_path", out_path, store_dir)

    nar_hash: object = entry.nar_hash
    if type(nar_hash) is not bytes:
        raise field_error("nar_hash", f"must be bytes, not {type(nar_hash).__name__}")
    if len(nar_hash) != NAR_HASH_SIZE:
        raise field_error("nar_hash", f"must be {NAR_HASH_SIZE} bytes, got {len(nar_hash)}")

    _check_uint63("nar_size", entry.nar_size)

    references: object = entry.references
    if not isinstance(references, list | tuple):
        raise field_error("references", f"must be an array, not {type(references).__name__}")
    if len(references) > MAX_REFERENCES:
        raise field_error("references", f"more than {MAX_REFERENCES} references")
    previous = ""
    for i, ref in enumerate(references):
        if not is_valid_basename(_check_str(f"references[{i}]", ref)):
            try:
                validate_basename(ref)
            except DecodeError as exc:
                raise field_error(f"references[{i}]", str(exc)) from exc
        # Code point order equals byte order here: store path names are ASCII.
        if i and ref <= previous:
            raise field_error("references", "must be sorted and without duplicates")
        previous = ref

    deriver = _check_str("deriver", entry.deriver)
    if deriver:
        if not is_valid_store_path(deriver, store_dir):
            _explain_store_path("deriver", deriver, store_dir)
        if not deriver.endswith(_DRV_SUFFIX):
            raise field_error("deriver", "must be a .drv store path or empty")

    if not _OUTPUT_NAME_RE.fullmatch(_check_str("output_name", entry.output_name)):
        raise field_error(
            "output_name",
            f"must be 1..{MAX_OUTPUT_NAME_LEN} characters of [A-Za-z0-9+-._?=], "
            "not starting with '.'",
        )

    _check_uint63("built_at", entry.built_at)


def validate_entry(entry: Entry, store_dir: str = DEFAULT_STORE_DIR) -> None:
    """Check every field of `entry`, raising `DecodeError` naming the first bad field."""
    if not fields_ok(entry, store_dir):
        explain_invalid(entry, store_dir)
        # Only reached if the two checks disagree, which the tests rule out.
        raise DecodeError("entry is invalid")


def pack_entry(entry: Entry) -> bytes:
    """The canonical msgpack bytes of `entry`'s fields, unchecked (`encode_entry` checks).

    msgpack packs a tuple as the same array as a list, so `references` may be either.
    """
    packed: bytes = msgpack.packb([ENTRY_VERSION, *entry], use_bin_type=True)
    return packed


def encode_entry(entry: Entry, store_dir: str = DEFAULT_STORE_DIR) -> bytes:
    """The leaf bytes of `entry`; raises `LocalProtocolError` if any field is invalid."""
    try:
        validate_entry(entry, store_dir)
    except DecodeError as exc:
        raise LocalProtocolError(f"refusing to encode an invalid entry: {exc}") from exc
    data = pack_entry(entry)
    if len(data) > MAX_ENTRY_BYTES:
        raise LocalProtocolError(f"entry encodes to {len(data)} bytes, over {MAX_ENTRY_BYTES}")
    return data
