"""The rules and canonical bytes of a log entry v1, over plain values (DESIGN §3).

A leaf of a trustix-p2p log is the msgpack array

    [1, out_path, nar_hash, nar_size, references, deriver, output_name, built_at]

(str and bin kept distinct), and every hash and signature is computed over those bytes.  This
module holds what a field may be and how the array is packed, as functions of the seven field
values; `trustix_p2p.core.entry` wraps them around its `Entry` value and adds strict decoding.
It exists apart from `entry` so the Nix post-build hook, which runs once per build and pays for
every import, can encode leaves without loading attrs; both paths validate with the same code.

Validation runs once per leaf on the append path, so it is one fused pass (`fields_ok`); only
a rejected entry goes through the step-by-step checks that explain it
(`explain_invalid_fields`), and the tests hold the two to agree.

This module is pure: no I/O, no clock (`built_at` is always passed in), no randomness.  It must
never import attrs or anything that does, except on the way to explaining a rejected entry
(`storepath` words the store-path errors).
"""

from __future__ import annotations

import functools
import re

import msgpack

from trustix_p2p.core.storepath_syntax import (
    BASENAME_PATTERN,
    DEFAULT_STORE_DIR,
    is_valid_basename,
    is_valid_store_path,
)
from trustix_p2p.errors import DecodeError, LocalProtocolError

# Not `from typing import TYPE_CHECKING`: importing typing adds milliseconds to the start of
# the post-build hook, on every build.  Type checkers treat this name as true all the same.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import NoReturn

__all__ = [
    "ENTRY_VERSION",
    "MAX_ENTRY_BYTES",
    "MAX_OUTPUT_NAME_LEN",
    "MAX_REFERENCES",
    "encode_leaf",
    "explain_invalid_fields",
    "fields_ok",
    "pack_leaf",
    "validate_fields",
]

ENTRY_VERSION = 1
MAX_REFERENCES = 4096
# The limits agree: 4,096 references of the longest base name Nix allows (32 + 1 + 211 = 244
# characters, 246 bytes each in msgpack) encode to 1,007,619 bytes, and with every other field
# at its longest an entry is below 1,009,000 bytes, so any entry whose fields are valid fits.
MAX_ENTRY_BYTES = 1024 * 1024
MAX_OUTPUT_NAME_LEN = 255
NAR_HASH_SIZE = 32
MAX_UINT63 = 2**63  # exclusive; keeps every integer a signed 64-bit value everywhere

_BASENAME_RE = re.compile(BASENAME_PATTERN)
# Output names follow the character rules of store path names (Nix's checkName), since Nix
# appends them to the derivation name to form the output's store path name.
_OUTPUT_NAME_RE = re.compile(r"[A-Za-z0-9+\-_?=][A-Za-z0-9+\-._?=]{0,254}")


def field_error(field: str, problem: str) -> DecodeError:
    return DecodeError(f"entry field {field!r}: {problem}")


def _check_uint63(field: str, value: object) -> None:
    # `type(...) is int` on purpose: bool is an int subclass and must not pass as one.
    if type(value) is not int:
        raise field_error(field, f"must be an integer, not {type(value).__name__}")
    if not 0 <= value < MAX_UINT63:
        raise field_error(field, "must be in 0 .. 2**63-1")


def _check_str(field: str, value: object) -> str:
    if type(value) is not str:
        raise field_error(field, f"must be a string, not {type(value).__name__}")
    return value


def _explain_store_path(field: str, text: str, store_dir: str) -> NoReturn:
    # Only reached once the fast check failed: let the step-by-step parser say why.  Imported
    # here because `storepath` loads attrs, which the hook's success path must not pay for.
    from trustix_p2p.core.storepath import parse_store_path

    try:
        parse_store_path(text, store_dir)
    except DecodeError as exc:
        raise field_error(field, str(exc)) from exc
    raise field_error(field, "is not a valid store path")


@functools.lru_cache(maxsize=8)
def _path_patterns(store_dir: str) -> tuple[re.Pattern[str], re.Pattern[str]]:
    # Whole store path and whole .drv path of `store_dir` as single regexes.  A .drv name
    # still obeys the 211-character limit and the no-leading-dot rule (`.drv` alone is not
    # a valid name).
    base = re.escape(store_dir) + "/"
    drv = base + BASENAME_PATTERN.replace("{1,211}", "{0,207}") + r"\.drv"
    return re.compile(base + BASENAME_PATTERN), re.compile(drv)


def fields_ok(
    out_path: object,
    nar_hash: object,
    nar_size: object,
    references: object,
    deriver: object,
    output_name: object,
    built_at: object,
    store_dir: str,
) -> bool:
    """All of `explain_invalid_fields`'s rules as one fast yes/no (the per-leaf hot path)."""
    path_re, drv_re = _path_patterns(store_dir)
    if type(out_path) is not str or path_re.fullmatch(out_path) is None:
        return False
    if type(nar_hash) is not bytes or len(nar_hash) != NAR_HASH_SIZE:
        return False
    if type(nar_size) is not int or not 0 <= nar_size < MAX_UINT63:
        return False
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
    if type(deriver) is not str or (deriver and drv_re.fullmatch(deriver) is None):
        return False
    if type(output_name) is not str or _OUTPUT_NAME_RE.fullmatch(output_name) is None:
        return False
    return type(built_at) is int and 0 <= built_at < MAX_UINT63


def validate_fields(
    out_path: object,
    nar_hash: object,
    nar_size: object,
    references: object,
    deriver: object,
    output_name: object,
    built_at: object,
    store_dir: str = DEFAULT_STORE_DIR,
) -> None:
    """Check every field, raising `DecodeError` naming the first bad one."""
    fields = (out_path, nar_hash, nar_size, references, deriver, output_name, built_at)
    if not fields_ok(*fields, store_dir):
        explain_invalid_fields(*fields, store_dir)
        # Only reached if the two checks disagree, which the tests rule out.
        raise DecodeError("entry is invalid")


def explain_invalid_fields(
    out_path: object,
    nar_hash: object,
    nar_size: object,
    references: object,
    deriver: object,
    output_name: object,
    built_at: object,
    store_dir: str,
) -> None:
    """Raise the `DecodeError` that names the first invalid field (slow, exact messages)."""
    out_path_text = _check_str("out_path", out_path)
    if not is_valid_store_path(out_path_text, store_dir):
        _explain_store_path("out_path", out_path_text, store_dir)

    if type(nar_hash) is not bytes:
        raise field_error("nar_hash", f"must be bytes, not {type(nar_hash).__name__}")
    if len(nar_hash) != NAR_HASH_SIZE:
        raise field_error("nar_hash", f"must be {NAR_HASH_SIZE} bytes, got {len(nar_hash)}")

    _check_uint63("nar_size", nar_size)

    if not isinstance(references, list | tuple):
        raise field_error("references", f"must be an array, not {type(references).__name__}")
    if len(references) > MAX_REFERENCES:
        raise field_error("references", f"more than {MAX_REFERENCES} references")
    previous = ""
    for i, ref in enumerate(references):
        if not is_valid_basename(_check_str(f"references[{i}]", ref)):
            from trustix_p2p.core.storepath import validate_basename  # explaining path only

            try:
                validate_basename(ref)
            except DecodeError as exc:
                raise field_error(f"references[{i}]", str(exc)) from exc
        # Code point order equals byte order here: store path names are ASCII.
        if i and ref <= previous:
            raise field_error("references", "must be sorted and without duplicates")
        previous = ref

    deriver_text = _check_str("deriver", deriver)
    if deriver_text:
        if not is_valid_store_path(deriver_text, store_dir):
            _explain_store_path("deriver", deriver_text, store_dir)
        if not deriver_text.endswith(".drv"):
            raise field_error("deriver", "must be a .drv store path or empty")

    if not _OUTPUT_NAME_RE.fullmatch(_check_str("output_name", output_name)):
        raise field_error(
            "output_name",
            f"must be 1..{MAX_OUTPUT_NAME_LEN} characters of [A-Za-z0-9+-._?=], "
            "not starting with '.'",
        )

    _check_uint63("built_at", built_at)


def pack_leaf(
    out_path: str,
    nar_hash: bytes,
    nar_size: int,
    references: Sequence[str],
    deriver: str,
    output_name: str,
    built_at: int,
) -> bytes:
    """The canonical msgpack bytes of the fields, unchecked (`encode_leaf` checks first)."""
    packed: bytes = msgpack.packb(
        [
            ENTRY_VERSION,
            out_path,
            nar_hash,
            nar_size,
            list(references),
            deriver,
            output_name,
            built_at,
        ],
        use_bin_type=True,
    )
    return packed


def encode_leaf(
    out_path: str,
    nar_hash: bytes,
    nar_size: int,
    references: Sequence[str],
    deriver: str,
    output_name: str,
    built_at: int,
    store_dir: str = DEFAULT_STORE_DIR,
) -> bytes:
    """The leaf bytes of these fields; raises `LocalProtocolError` if any field is invalid."""
    fields = (out_path, nar_hash, nar_size, references, deriver, output_name, built_at)
    try:
        validate_fields(*fields, store_dir)
    except DecodeError as exc:
        raise LocalProtocolError(f"refusing to encode an invalid entry: {exc}") from exc
    data = pack_leaf(*fields)
    if len(data) > MAX_ENTRY_BYTES:
        raise LocalProtocolError(f"entry encodes to {len(data)} bytes, over {MAX_ENTRY_BYTES}")
    return data
