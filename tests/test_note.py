"""C2SP signed notes: the published vector byte for byte, strict parsing, key-matching rules."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trustix_p2p.core.keys import PrivateKey
from trustix_p2p.core.note import (
    ALG_ED25519_COSIGNATURE,
    Note,
    NoteSignature,
    ed25519_key_id,
    format_note,
    format_skey,
    format_vkey,
    key_id_for,
    parse_note,
    parse_skey,
    parse_vkey,
    sign_note,
    sign_note_text,
    signature_line,
    verify_note,
)
from trustix_p2p.errors import DecodeError, LocalProtocolError, VerificationError

VECTOR = json.loads((Path(__file__).parent / "vectors" / "signed-note.json").read_text())
KEY = PrivateKey(bytes(range(32)))
OTHER = PrivateKey(bytes(range(1, 33)))
TEXT = "example.org/log\n42\nsome text\n"


def vector_note() -> bytes:
    return (VECTOR["text"] + "\n" + VECTOR["signature_line"]).encode()


# --- the published example -----------------------------------------------------------------


def test_signing_the_vector_text_gives_exactly_the_published_signature_line():
    name, key = parse_skey(VECTOR["signer_key"])
    assert name == "PeterNeumann"
    sig = sign_note_text(VECTOR["text"], name, key)
    assert signature_line(sig) == VECTOR["signature_line"]
    assert sign_note(VECTOR["text"], name, key) == vector_note()


def test_the_vector_note_verifies_with_the_published_verifier_key():
    name, public = parse_vkey(VECTOR["verifier_key"])
    note = parse_note(vector_note())
    assert note.text == VECTOR["text"]
    sig = verify_note(note, name, public)
    assert sig.key_id == bytes.fromhex("c74f20a3") == ed25519_key_id(name, public)
    assert format_note(note) == vector_note()


def test_vector_keys_reformat_identically():
    name, key = parse_skey(VECTOR["signer_key"])
    assert format_skey(name, key) == VECTOR["signer_key"]
    assert format_vkey(name, key.public_key) == VECTOR["verifier_key"]
    assert parse_vkey(VECTOR["verifier_key"]) == (name, key.public_key)


def test_the_vector_does_not_verify_under_another_name_or_key():
    name, public = parse_vkey(VECTOR["verifier_key"])
    note = parse_note(vector_note())
    with pytest.raises(VerificationError):
        verify_note(note, "PeterNeumanm", public)
    with pytest.raises(VerificationError):
        verify_note(note, name, KEY.public_key)


# --- roundtrip -----------------------------------------------------------------------------

line_text = st.text(
    alphabet=st.characters(blacklist_categories=["Cc", "Cs"]), min_size=1, max_size=30
)
texts = st.lists(line_text, min_size=1, max_size=5).map(lambda lines: "\n".join(lines) + "\n")
names = st.text(
    alphabet=st.characters(blacklist_categories=["Cc", "Cs", "Zs", "Zl", "Zp"]),
    min_size=1,
    max_size=20,
).filter(lambda n: "+" not in n and not any(c.isspace() for c in n))


@settings(max_examples=100, deadline=None)
@given(text=texts, name=names)
def test_signed_notes_roundtrip_and_verify(text: str, name: str):
    data = sign_note(text, name, KEY)
    note = parse_note(data)
    assert note.text == text
    assert format_note(note) == data
    verify_note(note, name, KEY.public_key)


def test_text_may_contain_blank_lines_but_not_end_with_one():
    text = "a\n\nb\n"
    note = parse_note(sign_note(text, "n", KEY))
    assert note.text == text
    verify_note(note, "n", KEY.public_key)
    with pytest.raises(LocalProtocolError, match="blank line"):
        sign_note("a\n\n", "n", KEY)


# --- key matching (signed-note §Signatures) ------------------------------------------------


def _with_extra_lines(*lines: str) -> bytes:
    return sign_note(TEXT, "log", KEY) + "".join(lines).encode()


def test_signatures_from_unknown_keys_and_other_types_are_ignored():
    cosig_id = key_id_for("log", ALG_ED25519_COSIGNATURE, KEY.public_key)
    junk = base64.b64encode(b"\x00" * 64).decode()
    data = _with_extra_lines(
        signature_line(sign_note_text(TEXT, "other", OTHER)),
        # Same name, different key id (another key): ignored, even though it is invalid.
        signature_line(NoteSignature("log", ed25519_key_id("log", OTHER.public_key), b"\x00" * 64)),
        # Same key id, different name: ignored too.
        signature_line(NoteSignature("gol", ed25519_key_id("log", KEY.public_key), b"x")),
        # A type 0x04 cosignature line by the same key and name: a different key id.
        f"— log {base64.b64encode(cosig_id + bytes(8)).decode()}{junk}\n",
    )
    note = parse_note(data)
    assert len(note.signatures) == 5
    assert verify_note(note, "log", KEY.public_key) == note.signatures[0]
    assert verify_note(note, "other", OTHER.public_key) == note.signatures[1]


def test_a_matching_signature_that_fails_rejects_the_whole_note():
    good = sign_note_text(TEXT, "log", KEY)
    bad = NoteSignature("log", good.key_id, bytes(64))
    for sigs in [(bad,), (bad, good), (good, bad)]:
        note = parse_note(format_note(Note(TEXT, sigs)))
        with pytest.raises(VerificationError):
            verify_note(note, "log", KEY.public_key)


def test_a_matching_signature_of_the_wrong_length_fails_verification():
    good = sign_note_text(TEXT, "log", KEY)
    for signature in [good.signature[:63], good.signature + b"\x00", b"\x01"]:
        note = Note(TEXT, (NoteSignature("log", good.key_id, signature),))
        with pytest.raises(VerificationError):
            verify_note(parse_note(format_note(note)), "log", KEY.public_key)


def test_a_note_without_a_matching_signature_is_rejected():
    note = parse_note(sign_note(TEXT, "other", OTHER))
    with pytest.raises(VerificationError):
        verify_note(note, "log", KEY.public_key)


def test_a_signature_over_different_text_is_rejected():
    sig = sign_note_text(TEXT, "log", KEY)
    note = parse_note(format_note(Note(TEXT.replace("42", "43"), (sig,))))
    with pytest.raises(VerificationError):
        verify_note(note, "log", KEY.public_key)


# --- strict parsing ------------------------------------------------------------------------

GOOD = sign_note(TEXT, "log", KEY)
LINE = signature_line(sign_note_text(TEXT, "log", KEY))
B64 = LINE.split(" ")[2].rstrip("\n")


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\xff" + GOOD, "UTF-8"),
        (GOOD.replace(b"\n\n", b"\n"), "blank line"),
        (TEXT.encode() + LINE.encode(), "blank line"),
        (TEXT.encode() + b"\n\n" + LINE.encode(), "blank line"),  # extra blank line
        (GOOD + b"\n", "no signatures"),
        (TEXT.encode() + b"\n", "no signatures"),
        (GOOD[:-1], "newline"),
        (GOOD + b"junk", "newline"),
        (TEXT.encode() + b"\n- log " + B64.encode() + b"\n", "em dash"),
        (TEXT.encode() + b"\n\xe2\x80\x94log " + B64.encode() + b"\n", "em dash"),
        (TEXT.encode() + f"\n—  log {B64}\n".encode(), "name"),
        (TEXT.encode() + f"\n— log  {B64}\n".encode(), "'— <name> <base64>'"),
        (TEXT.encode() + f"\n— log {B64} \n".encode(), "'— <name> <base64>'"),
        (TEXT.encode() + "\n— log\n".encode(), "'— <name> <base64>'"),
        (TEXT.encode() + f"\n— {B64}\n".encode(), "'— <name> <base64>'"),
        (TEXT.encode() + f"\n— lo+g {B64}\n".encode(), "'\\+'"),
        (TEXT.encode() + f"\n— lo\u00a0g {B64}\n".encode(), "space"),
        (TEXT.encode() + f"\n— log {B64[:-2]}\n".encode(), "base64"),
        (TEXT.encode() + f"\n— log {B64.rstrip('=')}\n".encode(), "base64"),
        (TEXT.encode() + f"\n— log {B64[:-1]}!\n".encode(), "base64"),
        (TEXT.encode() + b"\n\xe2\x80\x94 log AAAAAA==\n", "shorter"),  # 4-byte payload
        (TEXT.encode() + b"\n\xe2\x80\x94 log \n", "shorter"),  # empty payload
        (GOOD.replace(b"\n", b"\r\n"), "control"),
        (GOOD.replace(b"some text", b"some\ttext"), "control"),
        (GOOD.replace(b"some text", b"some\x00text"), "control"),
        (b"\n" + LINE.encode(), "blank line"),
        (b"", "blank line"),
    ],
)
def test_malformed_notes_are_rejected(data: bytes, reason: str):
    with pytest.raises(DecodeError, match=reason):
        parse_note(data)


def test_a_blank_line_between_signatures_moves_lines_into_the_text_and_fails_verification():
    # The last blank line separates text from signatures (signed-note §Format), so the first
    # signature line becomes text and the remaining signature no longer covers the text.
    note = parse_note(GOOD + b"\n" + LINE.encode())
    assert note.text == TEXT + "\n" + LINE
    with pytest.raises(VerificationError):
        verify_note(note, "log", KEY.public_key)


def test_size_and_signature_count_limits():
    line = LINE.encode()
    many = TEXT.encode() + b"\n" + line * 100
    assert len(parse_note(many, max_size=len(many)).signatures) == 100
    with pytest.raises(DecodeError, match="more than 100"):
        parse_note(many + line, max_size=len(many) * 2)
    with pytest.raises(DecodeError, match="over the limit"):
        parse_note(many, max_size=len(many) - 1)
    big = ("x" * 16400 + "\n").encode() + b"\n" + line
    with pytest.raises(DecodeError, match="over the limit of 16384"):
        parse_note(big)


def test_every_truncation_of_a_single_signature_note_is_rejected():
    for cut in range(len(GOOD)):
        with pytest.raises(DecodeError):
            parse_note(GOOD[:cut])


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=200))
def test_random_bytes_raise_only_decode_error(data: bytes):
    try:
        note = parse_note(data)
    except DecodeError:
        return
    assert format_note(note) == data


@settings(max_examples=300, deadline=None)
@given(position=st.integers(min_value=0, max_value=len(GOOD) - 1), bit=st.integers(0, 7))
def test_any_bit_flip_in_a_signed_note_is_rejected(position: int, bit: int):
    data = bytearray(GOOD)
    data[position] ^= 1 << bit
    with pytest.raises((DecodeError, VerificationError)):
        verify_note(parse_note(bytes(data)), "log", KEY.public_key)


# --- formatting refuses what parsing would reject ---------------------------------------


@pytest.mark.parametrize("text", ["", "no newline", "a\n\n", "\n", "tab\there\n"])
def test_signing_invalid_text_is_a_local_error(text: str):
    with pytest.raises(LocalProtocolError):
        sign_note_text(text, "log", KEY)


@pytest.mark.parametrize("name", ["", "a+b", "a b", "a\tb", "a\u2003b"])
def test_signing_under_an_invalid_key_name_is_a_local_error(name: str):
    with pytest.raises(LocalProtocolError):
        sign_note_text(TEXT, name, KEY)
    with pytest.raises(LocalProtocolError):
        format_vkey(name, KEY.public_key)


def test_format_note_needs_a_signature_and_4_byte_key_ids():
    with pytest.raises(LocalProtocolError):
        format_note(Note(TEXT, ()))
    with pytest.raises(LocalProtocolError):
        format_note(Note(TEXT, (NoteSignature("log", b"abc", b"sig"),)))
    with pytest.raises(LocalProtocolError):
        format_note(Note(TEXT, (NoteSignature("log", b"abcd", b""),)))


# --- verifier and signer keys ----------------------------------------------------------


def test_vkey_and_skey_roundtrip():
    assert parse_vkey(format_vkey("example.org/log", KEY.public_key)) == (
        "example.org/log",
        KEY.public_key,
    )
    assert parse_skey(format_skey("example.org/log", KEY)) == ("example.org/log", KEY)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda v: v.replace("c74f20a3", "c74f20a4"),  # wrong key id
        lambda v: v.replace("c74f20a3", "C74F20A3"),  # non-canonical hex
        lambda v: v.replace("c74f20a3", "c74f20a"),
        lambda v: v.replace("PeterNeumann", "PeterNeumanm"),  # id no longer matches the name
        lambda v: v.replace("+ARpc", "+AhpC"),  # type byte 0x02
        lambda v: v[:-4],
        lambda v: v + "AAAA",
        lambda v: v.replace("+", " ", 1),
        lambda v: "PeterNeumann+c74f20a3",
        lambda v: "",
    ],
)
def test_malformed_verifier_keys_are_rejected(mutate):
    with pytest.raises(DecodeError):
        parse_vkey(mutate(VECTOR["verifier_key"]))


@pytest.mark.parametrize(
    "mutate",
    [
        lambda s: s.replace("PRIVATE+KEY", "PRIVATE+KEX"),
        lambda s: s.replace("PRIVATE+KEY+", ""),
        lambda s: s.replace("c74f20a3", "00000000"),
        lambda s: s.replace("+AYEK", "+AoEK"),  # type byte 0x02
        lambda s: s[:-4],
    ],
)
def test_malformed_signer_keys_are_rejected(mutate):
    with pytest.raises(DecodeError):
        parse_skey(mutate(VECTOR["signer_key"]))


def test_cosignature_key_ids_differ_from_signer_key_ids():
    assert key_id_for("w", ALG_ED25519_COSIGNATURE, KEY.public_key) != ed25519_key_id(
        "w", KEY.public_key
    )
    assert (
        format_vkey("w", KEY.public_key, ALG_ED25519_COSIGNATURE)
        .split("+")[2]
        .startswith(base64.b64encode(bytes([4]) + KEY.public_key.raw).decode()[:4])
    )
