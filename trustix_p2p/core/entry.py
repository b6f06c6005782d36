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

Every rejection is a `DecodeError` whose message names the field.  The `Entry` value, the
field rules and the packing live in `trustix_p2p.core.lean.entry` (so the Nix post-build hook
can encode leaves without loading anything heavy) and are re-exported here; this module adds
strict decoding and the JSON form.

This module is pure: no I/O, no clock (`built_at` is always passed in), no randomness.
"""

from __future__ import annotations

from collections.abc import Mapping

import msgpack

from trustix_p2p.core.lean.entry import (
    ENTRY_VERSION,
    MAX_ENTRY_BYTES,
    MAX_OUTPUT_NAME_LEN,
    MAX_REFERENCES,
    Entry,
    encode_entry,
    field_error,
    pack_entry,
    validate_entry,
)
from trustix_p2p.core.lean.storepath import DEFAULT_STORE_DIR
from trustix_p2p.core.nix32 import format_nar_hash, parse_nar_hash
from trustix_p2p.errors import DecodeError

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
    "pack_entry",
    "validate_entry",
]

_ARITY = 1 + len(Entry._fields)  # the version, then the fields


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
        raise field_error("version", f"unsupported entry version {version!r}")
    if type(obj[4]) is list:  # the references, as the field declares them (else: refused)
        obj[4] = tuple(obj[4])
    entry = Entry(*obj[1:])
    validate_entry(entry, store_dir)
    # Canonical form: the validated values must pack back to exactly these bytes, or some
    # other encoding of the same entry would hash to a different leaf.
    if pack_entry(entry) != data:
        raise DecodeError("entry is not in canonical msgpack encoding")
    return entry


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
        raise field_error("nar_hash", "must be a string such as 'sha256:<nix32>'")
    references = obj.get("references", [])
    if type(references) is not list:
        raise field_error("references", "must be a list of store paths")
    prefix = store_dir + "/"
    basenames = set()
    for i, ref in enumerate(references):
        if type(ref) is not str:
            raise field_error(f"references[{i}]", "must be a string")
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
