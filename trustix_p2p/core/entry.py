"""Log entry v1: the leaf bytes of a trustix-p2p log (DESIGN §3).

An entry records one build output:

    [1, out_path, nar_hash, nar_size, references, deriver, output_name, built_at]

as a msgpack array (str and bin kept distinct).  The builder writes these bytes once; every
hash and signature is computed over them exactly as received, and nobody re-encodes an entry
to check it.  That only works if each entry has exactly one encoding, so `decode_entry` is
strict in every direction: one msgpack object and nothing after it, exact arity and types,
Nix's store-path rules, range limits, sorted unique references, and finally a canonical-form
check (decode then encode must give back the same bytes), which rules out e.g. a small integer
spelled as a uint64 or a short string with a str16 header.

Every rejection is a `DecodeError` whose message names the field.  Decoding runs once per
leaf on the append path, so validation is one fused pass (`_fields_ok`); only a rejected entry
goes through the step-by-step checks that explain it, and the tests hold the two to agree.

This module is pure: no I/O, no clock (`built_at` is always passed in), no randomness.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import NoReturn

import attrs
import msgpack

from trustix_p2p.core.nix32 import format_nar_hash, parse_nar_hash
from trustix_p2p.core.storepath import (
    BASENAME_PATTERN,
    DEFAULT_STORE_DIR,
    is_valid_basename,
    is_valid_store_path,
    parse_store_path,
    validate_basename,
)
from trustix_p2p.errors import DecodeError, LocalProtocolError

__all__ = [
    "ENTRY_VERSION",
    "MAX_ENTRY_BYTES",
    "MAX_OUTPUT_NAME_LEN",
    "MAX_REFERENCES",
    "Entry",
    "decode_entry",
    "encode_entry",
    "entry_from_json",
    "entry_to_json",
    "validate_entry",
]

ENTRY_VERSION = 1
MAX_ENTRY_BYTES = 64 * 1024
MAX_REFERENCES = 4096
MAX_OUTPUT_NAME_LEN = 255
_NAR_HASH_SIZE = 32
_ARITY = 8
_MAX_UINT63 = 2**63  # exclusive; keeps every integer a signed 64-bit value everywhere

_BASENAME_RE = re.compile(BASENAME_PATTERN)
# Output names follow the character rules of store path names (Nix's checkName), since Nix
# appends them to the derivation name to form the output's store path name.
_OUTPUT_NAME_RE = re.compile(r"[A-Za-z0-9+\-_?=][A-Za-z0-9+\-._?=]{0,254}")


@attrs.frozen
class Entry:
    """One logged build output.  Construction does not validate; encoding and decoding do."""

    out_path: str
    nar_hash: bytes
    nar_size: int
    references: tuple[str, ...]
    deriver: str
    output_name: str
    built_at: int


def _field_error(field: str, problem: str) -> DecodeError:
    return DecodeError(f"entry field {field!r}: {problem}")


def _check_uint63(field: str, value: object) -> None:
    # `type(...) is int` on purpose: bool is an int subclass and must not pass as one.
    if type(value) is not int:
        raise _field_error(field, f"must be an integer, not {type(value).__name__}")
    if not 0 <= value < _MAX_UINT63:
        raise _field_error(field, "must be in 0 .. 2**63-1")


def _check_str(field: str, value: object) -> str:
    if type(value) is not str:
        raise _field_error(field, f"must be a string, not {type(value).__name__}")
    return value


def _explain_store_path(field: str, text: str, store_dir: str) -> NoReturn:
    # Only reached once the fast check failed: let the step-by-step parser say why.
    try:
        parse_store_path(text, store_dir)
    except DecodeError as exc:
        raise _field_error(field, str(exc)) from exc
    raise _field_error(field, "is not a valid store path")


@functools.lru_cache(maxsize=8)
def _path_patterns(store_dir: str) -> tuple[re.Pattern[str], re.Pattern[str]]:
    # Whole store path and whole .drv path of `store_dir` as single regexes.  A .drv name
    # still obeys the 211-character limit and the no-leading-dot rule (`.drv` alone is not
    # a valid name).
    base = re.escape(store_dir) + "/"
    drv = base + BASENAME_PATTERN.replace("{1,211}", "{0,207}") + r"\.drv"
    return re.compile(base + BASENAME_PATTERN), re.compile(drv)


def _fields_ok(
    out_path: object,
    nar_hash: object,
    nar_size: object,
    references: object,
    deriver: object,
    output_name: object,
    built_at: object,
    store_dir: str,
) -> bool:
    """All of `_explain_invalid_fields`'s rules as one fast yes/no (the per-leaf hot path)."""
    path_re, drv_re = _path_patterns(store_dir)
    if type(out_path) is not str or path_re.fullmatch(out_path) is None:
        return False
    if type(nar_hash) is not bytes or len(nar_hash) != _NAR_HASH_SIZE:
        return False
    if type(nar_size) is not int or not 0 <= nar_size < _MAX_UINT63:
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
    return type(built_at) is int and 0 <= built_at < _MAX_UINT63


def _validate_fields(
    out_path: object,
    nar_hash: object,
    nar_size: object,
    references: object,
    deriver: object,
    output_name: object,
    built_at: object,
    store_dir: str,
) -> None:
    fields = (out_path, nar_hash, nar_size, references, deriver, output_name, built_at)
    if not _fields_ok(*fields, store_dir):
        _explain_invalid_fields(*fields, store_dir)
        # Only reached if the two checks disagree, which the tests rule out.
        raise DecodeError("entry is invalid")


def _explain_invalid_fields(
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
        raise _field_error("nar_hash", f"must be bytes, not {type(nar_hash).__name__}")
    if len(nar_hash) != _NAR_HASH_SIZE:
        raise _field_error("nar_hash", f"must be {_NAR_HASH_SIZE} bytes, got {len(nar_hash)}")

    _check_uint63("nar_size", nar_size)

    if not isinstance(references, list | tuple):
        raise _field_error("references", f"must be an array, not {type(references).__name__}")
    if len(references) > MAX_REFERENCES:
        raise _field_error("references", f"more than {MAX_REFERENCES} references")
    previous = ""
    for i, ref in enumerate(references):
        if not is_valid_basename(_check_str(f"references[{i}]", ref)):
            try:
                validate_basename(ref)
            except DecodeError as exc:
                raise _field_error(f"references[{i}]", str(exc)) from exc
        # Code point order equals byte order here: store path names are ASCII.
        if i and ref <= previous:
            raise _field_error("references", "must be sorted and without duplicates")
        previous = ref

    deriver_text = _check_str("deriver", deriver)
    if deriver_text:
        if not is_valid_store_path(deriver_text, store_dir):
            _explain_store_path("deriver", deriver_text, store_dir)
        if not deriver_text.endswith(".drv"):
            raise _field_error("deriver", "must be a .drv store path or empty")

    if not _OUTPUT_NAME_RE.fullmatch(_check_str("output_name", output_name)):
        raise _field_error(
            "output_name",
            f"must be 1..{MAX_OUTPUT_NAME_LEN} characters of [A-Za-z0-9+-._?=], "
            "not starting with '.'",
        )

    _check_uint63("built_at", built_at)


def validate_entry(entry: Entry, store_dir: str = DEFAULT_STORE_DIR) -> None:
    """Check every field of `entry`, raising `DecodeError` naming the first bad field."""
    _validate_fields(
        entry.out_path,
        entry.nar_hash,
        entry.nar_size,
        entry.references,
        entry.deriver,
        entry.output_name,
        entry.built_at,
        store_dir,
    )


def _pack(entry: Entry) -> bytes:
    packed: bytes = msgpack.packb(
        [
            ENTRY_VERSION,
            entry.out_path,
            entry.nar_hash,
            entry.nar_size,
            list(entry.references),
            entry.deriver,
            entry.output_name,
            entry.built_at,
        ],
        use_bin_type=True,
    )
    return packed


def encode_entry(entry: Entry, store_dir: str = DEFAULT_STORE_DIR) -> bytes:
    """The leaf bytes of `entry`; raises `LocalProtocolError` if any field is invalid."""
    try:
        validate_entry(entry, store_dir)
    except DecodeError as exc:
        raise LocalProtocolError(f"refusing to encode an invalid entry: {exc}") from exc
    data = _pack(entry)
    if len(data) > MAX_ENTRY_BYTES:
        raise LocalProtocolError(f"entry encodes to {len(data)} bytes, over {MAX_ENTRY_BYTES}")
    return data


def decode_entry(data: bytes, store_dir: str = DEFAULT_STORE_DIR) -> Entry:
    """Parse leaf bytes into an `Entry`, accepting only the one canonical v1 encoding."""
    if len(data) > MAX_ENTRY_BYTES:
        raise DecodeError(f"entry is {len(data)} bytes, over the limit of {MAX_ENTRY_BYTES}")
    try:
        # raw=False keeps msgpack str and bin apart (str -> str, bin -> bytes); unpackb
        # itself rejects trailing bytes after the one object (ExtraData).
        obj = msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=True)
    except (msgpack.UnpackException, ValueError, TypeError) as exc:
        raise DecodeError(f"entry is not a single msgpack object: {exc}") from exc
    if type(obj) is not list:
        raise DecodeError(f"entry must be a msgpack array, not {type(obj).__name__}")
    if len(obj) != _ARITY:
        raise DecodeError(f"entry must have exactly {_ARITY} elements, got {len(obj)}")
    version = obj[0]
    if type(version) is not int or version != ENTRY_VERSION:
        raise _field_error("version", f"unsupported entry version {version!r}")
    _validate_fields(obj[1], obj[2], obj[3], obj[4], obj[5], obj[6], obj[7], store_dir)
    # Canonical form: the validated values must pack back to exactly these bytes, or some
    # other encoding of the same entry would hash to a different leaf.
    if msgpack.packb(obj, use_bin_type=True) != data:
        raise DecodeError("entry is not in canonical msgpack encoding")
    return Entry(obj[1], obj[2], obj[3], tuple(obj[4]), obj[5], obj[6], obj[7])


_JSON_KEYS = frozenset(
    {"out_path", "nar_hash", "nar_size", "references", "deriver", "output", "built_at"}
)


def entry_from_json(obj: object, built_at: int, store_dir: str = DEFAULT_STORE_DIR) -> Entry:
    """Build and validate an entry from the JSON submission form used by the CLI and hook.

    Keys: `out_path`, `nar_hash` (`sha256:<nix32>`, hex, or SRI), `nar_size`, `references`
    (full store paths or base names, any order; they are reduced to sorted unique base names),
    `deriver` (optional, default ""), `output` (optional, default "out") and `built_at`
    (optional; the caller passes the default, since this module reads no clock).
    """
    if not isinstance(obj, Mapping):
        raise DecodeError("entry JSON must be an object")
    unknown = set(obj) - _JSON_KEYS
    if unknown:
        raise DecodeError(f"entry JSON has unknown keys: {', '.join(sorted(map(str, unknown)))}")
    for key in ("out_path", "nar_hash", "nar_size"):
        if key not in obj:
            raise DecodeError(f"entry JSON lacks {key!r}")
    nar_hash_text = obj["nar_hash"]
    if type(nar_hash_text) is not str:
        raise _field_error("nar_hash", "must be a string such as 'sha256:<nix32>'")
    references = obj.get("references", [])
    if type(references) is not list:
        raise _field_error("references", "must be a list of store paths")
    prefix = store_dir + "/"
    basenames = set()
    for i, ref in enumerate(references):
        if type(ref) is not str:
            raise _field_error(f"references[{i}]", "must be a string")
        basenames.add(ref[len(prefix) :] if ref.startswith(prefix) else ref)
    entry = Entry(
        out_path=obj["out_path"],
        nar_hash=parse_nar_hash(nar_hash_text),
        nar_size=obj["nar_size"],
        references=tuple(sorted(basenames)),
        deriver=obj.get("deriver", ""),
        output_name=obj.get("output", "out"),
        built_at=obj.get("built_at", built_at),
    )
    validate_entry(entry, store_dir)
    return entry


def entry_to_json(entry: Entry, store_dir: str = DEFAULT_STORE_DIR) -> dict[str, object]:
    """The JSON form of `entry` (inverse of `entry_from_json`; references as full paths)."""
    return {
        "out_path": entry.out_path,
        "nar_hash": format_nar_hash(entry.nar_hash),
        "nar_size": entry.nar_size,
        "references": [f"{store_dir}/{ref}" for ref in entry.references],
        "deriver": entry.deriver,
        "output": entry.output_name,
        "built_at": entry.built_at,
    }
