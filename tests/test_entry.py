"""Entry v1: exact wire format, one canonical encoding, and strict rejection of everything else."""

from __future__ import annotations

import hashlib
import operator
import re

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trustix_p2p.core.entry import (
    MAX_ENTRY_BYTES,
    MAX_REFERENCES,
    Entry,
    decode_entry,
    encode_entry,
    entry_from_json,
    entry_to_json,
    validate_entry,
)
from trustix_p2p.core.lean.entry import explain_invalid, fields_ok
from trustix_p2p.core.nix32 import ALPHABET, format_nar_hash
from trustix_p2p.errors import DecodeError, LocalProtocolError

H1 = "0c6kzph7l0dcbqmjg96l2v5vqdzkbwbf"
H2 = "1b8m03r63zqhnjf7l5wnldhh7c134ap5"
H3 = "9zyxwvsrqpnmlkjihgfdcba876543210"
NAR = hashlib.sha256(b"nar").digest()

ENTRY = Entry(
    out_path=f"/nix/store/{H1}-hello-2.12.1",
    nar_hash=NAR,
    nar_size=226560,
    references=(f"{H1}-hello-2.12.1", f"{H2}-glibc-2.38"),
    deriver=f"/nix/store/{H3}-hello-2.12.1.drv",
    output_name="out",
    built_at=1_700_000_000,
)


def raw_array(*items: object) -> bytes:
    return bytes(msgpack.packb(list(items), use_bin_type=True))


def fields(entry: Entry = ENTRY) -> list[object]:
    return [
        1,
        entry.out_path,
        entry.nar_hash,
        entry.nar_size,
        list(entry.references),
        entry.deriver,
        entry.output_name,
        entry.built_at,
    ]


def test_encoding_is_the_documented_msgpack_array_byte_for_byte():
    out = ENTRY.out_path.encode()
    drv = ENTRY.deriver.encode()
    refs = [r.encode() for r in ENTRY.references]
    expected = (
        b"\x98"  # fixarray of 8
        + b"\x01"  # version 1 as a positive fixint
        + b"\xd9"
        + bytes([len(out)])
        + out  # str8: 54 chars is over fixstr's 31
        + b"\xc4\x20"
        + NAR  # bin8 of 32 bytes: the NAR hash is bin, never str
        + b"\xce"
        + (226560).to_bytes(4, "big")  # uint32
        + b"\x92"  # fixarray of 2 references
        + b"".join(b"\xd9" + bytes([len(r)]) + r for r in refs)
        + b"\xd9"
        + bytes([len(drv)])
        + drv
        + b"\xa3out"  # fixstr
        + b"\xce"
        + (1_700_000_000).to_bytes(4, "big")
    )
    assert encode_entry(ENTRY) == expected
    assert decode_entry(expected) == ENTRY


def test_an_entry_equals_only_an_entry_with_the_same_fields():
    # Entry is a named tuple (the hook cannot load attrs) with an attrs value's equality.
    same = Entry(*ENTRY)
    assert (operator.eq(same, ENTRY), operator.ne(same, ENTRY)) == (True, False)
    assert hash(same) == hash(ENTRY)
    assert len({ENTRY, same}) == 1
    for plain in (tuple(ENTRY), list(ENTRY)):
        assert (operator.eq(ENTRY, plain), operator.ne(ENTRY, plain)) == (False, True)
        assert (operator.eq(plain, ENTRY), operator.ne(plain, ENTRY)) == (False, True)
    later = ENTRY._replace(built_at=ENTRY.built_at + 1)
    assert (operator.eq(ENTRY, later), operator.ne(ENTRY, later)) == (False, True)
    # Decoding gives back references as a tuple, as the field declares.
    assert type(decode_entry(encode_entry(ENTRY)).references) is tuple


def test_minimal_entry_without_references_or_deriver_roundtrips():
    entry = Entry(f"/nix/store/{H1}-x", bytes(32), 0, (), "", "o", 0)
    assert decode_entry(encode_entry(entry)) == entry


def test_integer_limits_are_inclusive_of_2_pow_63_minus_1():
    entry = Entry(ENTRY.out_path, NAR, 2**63 - 1, (), "", "out", 2**63 - 1)
    assert decode_entry(encode_entry(entry)) == entry


store_hash = st.text(alphabet=ALPHABET, min_size=32, max_size=32)
name = st.text(alphabet="abcXYZ019+-._?=", min_size=1, max_size=40).filter(lambda n: n[0] != ".")
basename = st.builds(lambda h, n: f"{h}-{n}", store_hash, name)
entries = st.builds(
    Entry,
    out_path=basename.map(lambda b: "/nix/store/" + b),
    nar_hash=st.binary(min_size=32, max_size=32),
    nar_size=st.integers(min_value=0, max_value=2**63 - 1),
    references=st.lists(basename, max_size=20, unique=True).map(lambda r: tuple(sorted(r))),
    deriver=st.one_of(st.just(""), basename.map(lambda b: f"/nix/store/{b}.drv")),
    output_name=name,
    built_at=st.integers(min_value=0, max_value=2**63 - 1),
)


@settings(max_examples=150, deadline=None)
@given(entry=entries)
def test_any_valid_entry_roundtrips_and_reencodes_identically(entry: Entry):
    data = encode_entry(entry)
    decoded = decode_entry(data)
    assert decoded == entry
    assert encode_entry(decoded) == data


# --- every field checked, error names the field ------------------------------------------


@pytest.mark.parametrize(
    ("index", "value", "field"),
    [
        (0, 2, "version"),
        (0, 0, "version"),
        (0, True, "version"),
        (0, "1", "version"),
        (1, f"{H1}-hello", "out_path"),
        (1, f"/nix/store/{H1}-.hello", "out_path"),
        (1, f"/nix/store/{H1}-a/b", "out_path"),
        (1, f"/tmp/{H1}-hello", "out_path"),
        (1, ENTRY.out_path.encode(), "out_path"),
        (1, None, "out_path"),
        (2, NAR[:31], "nar_hash"),
        (2, NAR + b"\x00", "nar_hash"),
        (2, NAR.hex(), "nar_hash"),
        (2, b"", "nar_hash"),
        (3, -1, "nar_size"),
        (3, 2**63, "nar_size"),
        (3, 2**64 - 1, "nar_size"),
        (3, True, "nar_size"),
        (3, 1.0, "nar_size"),
        (3, "1", "nar_size"),
        (4, [f"{H2}-b", f"{H1}-a"], "references"),  # unsorted
        (4, [f"{H1}-a", f"{H1}-a"], "references"),  # duplicate
        (4, [f"/nix/store/{H1}-a"], "references[0]"),  # full path, not a base name
        (4, [f"{H1}-a", b"x"], "references[1]"),
        (4, [f"{H1}-a", ""], "references[1]"),
        (4, f"{H1}-a", "references"),
        (4, {"a": 1}, "references"),
        (5, f"/nix/store/{H3}-hello", "deriver"),  # not a .drv
        (5, f"{H3}-hello.drv", "deriver"),
        (5, b"", "deriver"),
        (5, None, "deriver"),
        (6, "", "output_name"),
        (6, ".out", "output_name"),
        (6, "o" * 256, "output_name"),
        (6, "o/ut", "output_name"),
        (6, b"out", "output_name"),
        (7, -1, "built_at"),
        (7, 2**63, "built_at"),
        (7, False, "built_at"),
    ],
)
def test_decode_rejects_each_invalid_field_naming_it(index: int, value: object, field: str):
    items = fields()
    items[index] = value
    with pytest.raises(DecodeError, match=re.escape(f"'{field}'")):
        decode_entry(raw_array(*items))


def test_output_name_of_255_characters_is_accepted():
    items = fields()
    items[6] = "o" * 255
    assert decode_entry(raw_array(*items)).output_name == "o" * 255


@pytest.mark.parametrize("arity", [0, 1, 7, 9, 16])
def test_decode_rejects_wrong_arity(arity: int):
    items = (fields() + [0] * 10)[:arity]
    with pytest.raises(DecodeError, match="exactly 8"):
        decode_entry(raw_array(*items))


@pytest.mark.parametrize(
    "value",
    [{"a": 1}, 1, "x", b"x", None, [], msgpack.ExtType(1, b"x"), 1.5, True],
    ids=repr,
)
def test_decode_rejects_non_array_top_level(value: object):
    with pytest.raises(DecodeError):
        decode_entry(bytes(msgpack.packb(value, use_bin_type=True)))


def test_decode_rejects_trailing_bytes_and_a_second_object():
    data = encode_entry(ENTRY)
    for junk in [b"\x00", b"\xc0", data]:
        with pytest.raises(DecodeError):
            decode_entry(data + junk)


def test_decode_rejects_every_truncation():
    data = encode_entry(ENTRY)
    for cut in range(len(data)):
        with pytest.raises(DecodeError):
            decode_entry(data[:cut])


def test_decode_rejects_oversized_input_before_parsing():
    with pytest.raises(DecodeError, match="over the limit"):
        decode_entry(b"\x00" * (MAX_ENTRY_BYTES + 1))


def test_decode_rejects_invalid_utf8_in_a_string():
    data = encode_entry(ENTRY).replace(b"\xa3out", b"\xa3o\xffo")
    with pytest.raises(DecodeError):
        decode_entry(data)


@pytest.mark.parametrize(
    ("description", "old", "new"),
    [
        ("version as uint8", b"\x98\x01", b"\x98\xcc\x01"),
        ("version as int64", b"\x98\x01", b"\x98\xd3" + (1).to_bytes(8, "big")),
        ("array as array16", b"\x98\x01", b"\xdc\x00\x08\x01"),
        ("short str as str8", b"\xa3out", b"\xd9\x03out"),
        ("short str as str16", b"\xa3out", b"\xda\x00\x03out"),
        (
            "uint32 as uint64",
            b"\xce" + (226560).to_bytes(4, "big"),
            b"\xcf" + (226560).to_bytes(8, "big"),
        ),
        ("bin8 as bin16", b"\xc4\x20", b"\xc5\x00\x20"),
    ],
)
def test_decode_rejects_non_canonical_encodings(description: str, old: bytes, new: bytes):
    data = encode_entry(ENTRY)
    assert data.count(old) == 1, description
    mutated = data.replace(old, new)
    # msgpack itself reads the same values back: only the canonical check can catch this.
    assert msgpack.unpackb(mutated, raw=False) == msgpack.unpackb(data, raw=False)
    with pytest.raises(DecodeError, match="canonical"):
        decode_entry(mutated)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=300))
def test_random_bytes_never_raise_anything_but_decode_error(data: bytes):
    try:
        entry = decode_entry(data)
    except DecodeError:
        return
    assert encode_entry(entry) == data


@settings(max_examples=150, deadline=None)
@given(entry=entries, position=st.integers(min_value=0), bit=st.integers(0, 7))
def test_bit_flips_either_fail_cleanly_or_decode_to_a_different_canonical_entry(
    entry: Entry, position: int, bit: int
):
    data = bytearray(encode_entry(entry))
    data[position % len(data)] ^= 1 << bit
    try:
        decoded = decode_entry(bytes(data))
    except DecodeError:
        return
    # A flip inside a hash or an integer can yield another valid entry, but never the same
    # one, and always one whose canonical encoding is exactly the flipped bytes.
    assert decoded != entry
    assert encode_entry(decoded) == bytes(data)


# --- encoding validates first ------------------------------------------------------------


def test_encode_refuses_an_invalid_entry_with_a_local_error():
    bad = Entry(ENTRY.out_path, NAR[:31], 1, (), "", "out", 0)
    with pytest.raises(LocalProtocolError, match="nar_hash"):
        encode_entry(bad)
    with pytest.raises(LocalProtocolError, match="references"):
        encode_entry(Entry(ENTRY.out_path, NAR, 1, (f"{H2}-b", f"{H1}-a"), "", "out", 0))


def test_more_than_4096_references_are_refused():
    refs = tuple(
        sorted(f"{ALPHABET[i % 32]}{ALPHABET[i // 32 % 32]}{H1[2:]}-r{i}" for i in range(4097))
    )
    with pytest.raises(DecodeError, match="more than 4096"):
        validate_entry(Entry(ENTRY.out_path, NAR, 1, refs, "", "out", 0))
    validate_entry(Entry(ENTRY.out_path, NAR, 1, refs[:4096], "", "out", 0))


def test_every_entry_with_valid_fields_fits_the_size_limit():
    # The limits agree: 4,096 references with the longest names Nix allows still fit.
    refs = tuple(sorted(f"{H1[:-4]}{i:04d}-{'r' * 211}" for i in range(MAX_REFERENCES)))
    entry = Entry(ENTRY.out_path, NAR, 1, refs, "", "out", 0)
    validate_entry(entry)
    assert len(encode_entry(entry)) <= MAX_ENTRY_BYTES
    with pytest.raises(DecodeError, match="over the limit"):
        decode_entry(b"\xc6" + bytes(MAX_ENTRY_BYTES + 1))


def test_store_dir_is_configurable():
    entry = Entry(f"/gnu/store/{H1}-x", NAR, 1, (), f"/gnu/store/{H3}-x.drv", "out", 0)
    data = encode_entry(entry, store_dir="/gnu/store")
    assert decode_entry(data, store_dir="/gnu/store") == entry
    with pytest.raises(DecodeError, match="out_path"):
        decode_entry(data)


# --- JSON submission form ----------------------------------------------------------------


def test_json_form_roundtrips_and_normalises_references():
    obj = {
        "out_path": ENTRY.out_path,
        "nar_hash": format_nar_hash(NAR),
        "nar_size": ENTRY.nar_size,
        # Full paths and base names, unsorted and duplicated: all normalised.
        "references": [
            f"/nix/store/{H2}-glibc-2.38",
            f"{H1}-hello-2.12.1",
            f"/nix/store/{H1}-hello-2.12.1",
        ],
        "deriver": ENTRY.deriver,
        "output": "out",
    }
    entry = entry_from_json(obj, built_at=ENTRY.built_at)
    assert entry == ENTRY
    assert entry_from_json(entry_to_json(entry), built_at=0) == entry


def test_json_defaults_for_optional_fields():
    entry = entry_from_json(
        {"out_path": ENTRY.out_path, "nar_hash": "sha256:" + NAR.hex(), "nar_size": 5}, 42
    )
    assert (entry.references, entry.deriver, entry.output_name, entry.built_at) == (
        (),
        "",
        "out",
        42,
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"extra": 1}, "unknown keys"),
        ({"nar_hash": NAR.hex()}, "sha256"),
        ({"nar_hash": 5}, "nar_hash"),
        ({"nar_size": "5"}, "nar_size"),
        ({"nar_size": -5}, "nar_size"),
        ({"references": "x"}, "references"),
        ({"references": [5]}, "references"),
        ({"references": ["/nix/store/bad"]}, "references"),
        ({"out_path": "/etc/passwd"}, "out_path"),
        ({"output": ""}, "output_name"),
    ],
)
def test_json_form_rejects_bad_input_with_decode_error(change: dict[str, object], message: str):
    obj: dict[str, object] = {
        "out_path": ENTRY.out_path,
        "nar_hash": format_nar_hash(NAR),
        "nar_size": 1,
    }
    obj.update(change)
    with pytest.raises(DecodeError, match=message):
        entry_from_json(obj, 0)


@pytest.mark.parametrize("missing", ["out_path", "nar_hash", "nar_size"])
def test_json_form_requires_the_mandatory_keys(missing: str):
    obj = {"out_path": ENTRY.out_path, "nar_hash": format_nar_hash(NAR), "nar_size": 1}
    del obj[missing]
    with pytest.raises(DecodeError, match=missing):
        entry_from_json(obj, 0)
    with pytest.raises(DecodeError):
        entry_from_json([obj], 0)


msgpack_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**63), max_value=2**64 - 1),
        st.floats(allow_nan=False),
        st.text(max_size=40),
        st.binary(max_size=40),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=9), st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)


@settings(max_examples=100, deadline=None)
@given(items=st.lists(msgpack_values, min_size=8, max_size=8), keep=st.sets(st.integers(0, 7)))
def test_arrays_of_arbitrary_msgpack_values_never_raise_anything_but_decode_error(
    items: list[object], keep: set[int]
):
    # Mix valid fields in so that the checks of later fields are reached too.
    mixed = [fields()[i] if i in keep else items[i] for i in range(8)]
    data = raw_array(*mixed)
    try:
        entry = decode_entry(data)
    except DecodeError:
        return
    assert encode_entry(entry) == data


field_values = st.one_of(
    msgpack_values,
    basename,
    basename.map(lambda b: "/nix/store/" + b),
    basename.map(lambda b: f"/nix/store/{b}.drv"),
    st.lists(basename, max_size=4),
    st.sampled_from(["", ".drv", "out", f"/nix/store/{H1}-.drv", f"/nix/store/{H1}-a.drv"]),
)


@settings(max_examples=300, deadline=None)
@given(values=st.lists(field_values, min_size=7, max_size=7), keep=st.sets(st.integers(1, 7)))
def test_fast_field_check_agrees_with_the_explaining_checks(values: list[object], keep: set[int]):
    items = [fields()[i] if i in keep else values[i - 1] for i in range(1, 8)]
    entry = Entry(*items)  # values of any type: that is what the checks are for
    fast = fields_ok(entry, "/nix/store")
    try:
        explain_invalid(entry, "/nix/store")
    except DecodeError:
        slow = False
    else:
        slow = True
    assert fast == slow


def test_drv_name_length_limit_matches_the_store_path_rule():
    ok = f"/nix/store/{H3}-{'d' * 207}.drv"
    too_long = f"/nix/store/{H3}-{'d' * 208}.drv"
    items = fields()
    items[5] = ok
    assert decode_entry(raw_array(*items)).deriver == ok
    items[5] = too_long
    with pytest.raises(DecodeError, match="'deriver'"):
        decode_entry(raw_array(*items))
