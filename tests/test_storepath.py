"""Store path parsing follows Nix's rules exactly: hash part, name characters, length, dots."""

from __future__ import annotations

import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trustix_p2p.core.nix32 import ALPHABET
from trustix_p2p.core.storepath import (
    StorePath,
    is_valid_basename,
    is_valid_store_path,
    parse_store_path,
    validate_basename,
    validate_name,
)
from trustix_p2p.errors import DecodeError

HASH = "0c6kzph7l0dcbqmjg96l2v5vqdzkbwbf"
NAME_CHARS = "ABCXYZabcxyz0189+-._?="


def test_parse_splits_a_typical_store_path():
    sp = parse_store_path(f"/nix/store/{HASH}-hello-2.12.1")
    assert sp == StorePath("/nix/store", HASH, "hello-2.12.1")
    assert sp.basename == f"{HASH}-hello-2.12.1"
    assert sp.path == f"/nix/store/{HASH}-hello-2.12.1"
    assert str(sp) == sp.path


def test_parse_honours_a_custom_store_dir():
    sp = parse_store_path(f"/gnu/store/{HASH}-x", store_dir="/gnu/store")
    assert sp.store_dir == "/gnu/store"
    with pytest.raises(DecodeError, match="store directory"):
        parse_store_path(f"/nix/store/{HASH}-x", store_dir="/gnu/store")


def test_every_allowed_character_and_the_maximum_length_are_accepted():
    assert validate_name(NAME_CHARS) == NAME_CHARS
    assert validate_name("a" * 211) == "a" * 211
    assert validate_basename(f"{HASH}-{'a' * 211}")
    assert validate_name("foo.drv") == "foo.drv"
    assert validate_name("-") == "-"


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("", "empty"),
        ("a" * 212, "longer than 211"),
        (".", "start with '.'"),
        ("..", "start with '.'"),
        (".hidden", "start with '.'"),
        ("a/b", "illegal character '/'"),
        ("a b", "illegal character ' '"),
        ("a\n", "illegal character"),
        ("é", "illegal character"),
        ("a\x00", "illegal character"),
        ("a:b", "illegal character"),
        ("a~", "illegal character"),
    ],
)
def test_names_nix_rejects_are_rejected_with_the_reason(name: str, reason: str):
    with pytest.raises(DecodeError, match=reason):
        validate_name(name)
    with pytest.raises(DecodeError):
        parse_store_path(f"/nix/store/{HASH}-{name}")


@pytest.mark.parametrize(
    "text",
    [
        f"{HASH}",
        f"{HASH}-",
        f"{HASH}_x",
        f"{HASH[:-1]}-x",
        f"{HASH}x-x",
        f"{HASH[:-1]}e-x",  # 'e' is not in the nix32 alphabet
        f"{HASH[:-1]}E-x",
        f"{HASH.upper()}-x",
        f"-{HASH}-x",
        "",
    ],
)
def test_malformed_basenames_are_rejected(text: str):
    with pytest.raises(DecodeError):
        validate_basename(text)


@pytest.mark.parametrize(
    "text",
    [
        f"nix/store/{HASH}-x",
        f"/nix/store/{HASH}-x/bin/hello",
        f"/nix/store//{HASH}-x",
        f"/nix/store/../{HASH}-x",
        f"/nix/storex/{HASH}-x",
        f"/nix/store/{HASH}-x\n",
        f" /nix/store/{HASH}-x",
        "/nix/store/",
        "/nix/store",
    ],
)
def test_paths_outside_the_store_or_below_a_store_path_are_rejected(text: str):
    with pytest.raises(DecodeError):
        parse_store_path(text)


def test_construction_validates_each_field():
    with pytest.raises(DecodeError):
        StorePath("nix/store", HASH, "x")
    with pytest.raises(DecodeError):
        StorePath("/nix/store/", HASH, "x")
    with pytest.raises(DecodeError):
        StorePath("/nix/store", HASH[1:], "x")
    with pytest.raises(DecodeError):
        StorePath("/nix/store", HASH, ".x")


def test_error_messages_do_not_echo_huge_inputs():
    with pytest.raises(DecodeError) as info:
        parse_store_path("/x" * 100_000)
    assert len(str(info.value)) < 300


hashes = st.text(alphabet=ALPHABET, min_size=32, max_size=32)
names = st.text(alphabet=NAME_CHARS, min_size=1, max_size=211).filter(lambda n: n[0] != ".")


@settings(max_examples=200, deadline=None)
@given(hash_part=hashes, name=names)
def test_valid_paths_roundtrip(hash_part: str, name: str):
    sp = parse_store_path(f"/nix/store/{hash_part}-{name}")
    assert (sp.hash_part, sp.name) == (hash_part, name)
    assert parse_store_path(sp.path) == sp


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=260))
def test_arbitrary_text_is_either_a_valid_basename_or_a_decode_error(text: str):
    try:
        validate_basename(text)
    except DecodeError:
        return
    # Whatever was accepted must satisfy every rule independently checked here.
    assert text[32] == "-"
    assert set(text[:32]) <= set(ALPHABET)
    assert set(text[33:]) <= set(string.ascii_letters + string.digits + "+-._?=")
    assert 1 <= len(text[33:]) <= 211
    assert not text[33:].startswith(".")


near_basenames = st.builds(
    lambda h, sep, n: h + sep + n,
    st.text(alphabet=ALPHABET + "eE", min_size=31, max_size=33),
    st.sampled_from(["-", "_", ""]),
    st.text(alphabet=NAME_CHARS + "/ \n.é", max_size=215),
)


@settings(max_examples=300, deadline=None)
@given(text=st.one_of(near_basenames, st.text(max_size=60)))
def test_fast_checks_agree_with_the_step_by_step_parser(text: str):
    try:
        hash_part, name = text[:32], text[33:]
        StorePath("/nix/store", hash_part, name)
        slow = text[32:33] == "-"
    except DecodeError:
        slow = False
    assert is_valid_basename(text) == slow
    assert is_valid_store_path("/nix/store/" + text) == slow
    assert is_valid_store_path("/nix/store" + text) is False or text.startswith("/")
    try:
        validate_basename(text)
        accepted = True
    except DecodeError:
        accepted = False
    assert accepted == slow
