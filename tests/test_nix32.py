"""Nix base-32: the published vector, a naive port of Nix's loop as reference, strict parsing."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trustix_p2p.core import nix32
from trustix_p2p.errors import DecodeError, LocalProtocolError

VECTORS = json.loads((Path(__file__).parent / "vectors" / "nar.json").read_text())
ABC = hashlib.sha256(b"abc").digest()


def reference_encode(data: bytes) -> str:
    """Character-by-character port of the loop in Nix's `printHash32` (libutil/hash.cc)."""
    length = (len(data) * 8 - 1) // 5 + 1 if data else 0
    out = []
    for n in range(length - 1, -1, -1):
        b = n * 5
        i, j = b // 8, b % 8
        c = data[i] >> j
        if i + 1 < len(data):
            c |= data[i + 1] << (8 - j)
        out.append(nix32.ALPHABET[c & 0x1F])
    return "".join(out)


def test_sha256_of_abc_matches_the_nix_vector():
    assert nix32.encode(ABC) == VECTORS["nix32_of_sha256_abc"]
    assert nix32.decode(VECTORS["nix32_of_sha256_abc"]) == ABC


@pytest.mark.parametrize("case", VECTORS["cases"], ids=lambda c: c["name"])
def test_every_nar_vector_hash_decodes_to_32_bytes_and_reencodes(case: dict[str, object]):
    text = case["nar_sha256_nix32"]
    assert isinstance(text, str)
    raw = nix32.decode(text)
    assert len(raw) == 32
    assert nix32.encode(raw) == text


def test_alphabet_is_nix_without_e_o_u_t():
    assert len(nix32.ALPHABET) == 32
    assert not set("eout") & set(nix32.ALPHABET)


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=70))
def test_encoding_matches_reference_loop_and_roundtrips(data: bytes):
    text = nix32.encode(data)
    assert text == reference_encode(data)
    assert len(text) == nix32.encoded_length(len(data))
    assert nix32.decode(text) == data


def test_empty_input_encodes_to_empty_text():
    assert nix32.encode(b"") == ""
    assert nix32.decode("") == b""


@pytest.mark.parametrize("bad", ["e", "o", "u", "t", "A", " ", "-", "é"])
def test_decode_rejects_characters_outside_the_alphabet(bad: str):
    text = VECTORS["nix32_of_sha256_abc"]
    with pytest.raises(DecodeError, match="invalid character"):
        nix32.decode(bad + text[1:])


@pytest.mark.parametrize("length", [1, 3, 6, 51, 54])
def test_decode_rejects_lengths_no_byte_string_encodes_to(length: int):
    with pytest.raises(DecodeError, match="length"):
        nix32.decode("0" * length)


def test_decode_rejects_bits_beyond_the_last_byte():
    # 52 characters hold 260 bits, 4 more than 32 bytes: the first character carries bits
    # 255..259, of which only bit 255 exists, so it may only be 0 or 1.
    assert nix32.decode("1" + "0" * 51) == (1 << 255).to_bytes(32, "little")
    for first in "2z":
        with pytest.raises(DecodeError, match="non-zero bits"):
            nix32.decode(first + "0" * 51)


@settings(max_examples=200, deadline=None)
@given(text=st.text(alphabet=nix32.ALPHABET + "eotuZ-", max_size=60))
def test_decode_of_arbitrary_text_roundtrips_or_raises_decode_error(text: str):
    try:
        raw = nix32.decode(text)
    except DecodeError:
        return
    assert nix32.encode(raw) == text


# --- NAR hash spellings ------------------------------------------------------------------


def test_parse_nar_hash_accepts_nix32_hex_base64_and_sri():
    b64 = base64.b64encode(ABC).decode()
    for text in [
        "sha256:" + nix32.encode(ABC),
        "sha256:" + ABC.hex(),
        "sha256:" + ABC.hex().upper(),
        "sha256:" + b64,
        "sha256-" + b64,
    ]:
        assert nix32.parse_nar_hash(text) == ABC, text


def test_format_nar_hash_is_sha256_colon_nix32_and_parses_back():
    text = nix32.format_nar_hash(ABC)
    assert text == "sha256:" + VECTORS["nix32_of_sha256_abc"]
    assert nix32.parse_nar_hash(text) == ABC


def test_format_nar_hash_refuses_wrong_length():
    with pytest.raises(LocalProtocolError):
        nix32.format_nar_hash(b"\x00" * 31)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "sha256",
        "sha256:",
        "sha1:" + ABC.hex(),
        "sha512:" + ABC.hex(),
        "md5-" + base64.b64encode(ABC).decode(),
        "SHA256:" + ABC.hex(),
        nix32.encode(ABC),  # no algorithm prefix
        "sha256:" + ABC.hex()[:-1],
        "sha256:" + ABC.hex() + "0",
        "sha256:" + ABC.hex()[:-1] + "g",
        "sha256:" + nix32.encode(ABC)[:-1],
        "sha256:" + nix32.encode(ABC) + "0",
        "sha256-" + base64.b64encode(ABC).decode().rstrip("="),
        "sha256-" + base64.b64encode(ABC[:31]).decode(),
        "sha256-" + base64.b64encode(ABC + b"\x00").decode(),
        "sha256-" + base64.urlsafe_b64encode(b"\xff" * 32).decode(),
        " sha256:" + ABC.hex(),
        "sha256:" + ABC.hex() + "\n",
    ],
)
def test_parse_nar_hash_rejects_malformed_hashes(text: str):
    with pytest.raises(DecodeError):
        nix32.parse_nar_hash(text)


@settings(max_examples=200, deadline=None)
@given(text=st.one_of(st.text(max_size=80), st.text(max_size=60).map(lambda t: "sha256:" + t)))
def test_parse_nar_hash_raises_only_decode_error(text: str):
    try:
        raw = nix32.parse_nar_hash(text)
    except DecodeError:
        return
    assert len(raw) == 32


def test_every_truncation_or_extension_of_a_nar_hash_is_rejected():
    for text in [
        "sha256:" + VECTORS["nix32_of_sha256_abc"],
        "sha256:" + ABC.hex(),
        "sha256-" + base64.b64encode(ABC).decode(),
    ]:
        assert nix32.parse_nar_hash(text) == ABC
        for cut in range(len(text)):
            with pytest.raises(DecodeError):
                nix32.parse_nar_hash(text[:cut])
        for junk in ["0", "=", " ", "\n", "\x00"]:
            with pytest.raises(DecodeError):
                nix32.parse_nar_hash(text + junk)
