"""Checkpoints and tlog-cosignature/v1: exact formats, strict parsing, tamper and replay checks."""

from __future__ import annotations

import base64
import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trustix_p2p.core.checkpoint import (
    Checkpoint,
    Cosignature,
    SignedCheckpoint,
    add_cosignatures,
    cosign,
    cosignature_key_id,
    cosignature_line,
    cosignature_message,
    cosignatures_in,
    log_id_from_origin,
    origin_for,
    parse_checkpoint_body,
    read_checkpoint_unverified,
    sign_checkpoint,
    verify_checkpoint,
    verify_cosignature,
)
from trustix_p2p.core.keys import PrivateKey
from trustix_p2p.core.note import parse_note, sign_note
from trustix_p2p.errors import DecodeError, LocalProtocolError, VerificationError

LOG = PrivateKey(bytes(range(32)))
OTHER_LOG = PrivateKey(bytes(range(1, 33)))
WITNESS = PrivateKey(bytes(range(2, 34)))
WITNESS_2 = PrivateKey(bytes(range(3, 35)))
ORIGIN = origin_for(LOG.public_key.log_id())
ROOT = hashlib.sha256(b"root").digest()
CP = Checkpoint(ORIGIN, 12345, ROOT, 1_700_000_000)


def test_origin_is_the_prefix_and_hex_log_id():
    log_id = hashlib.sha256(LOG.public_key.raw).digest()
    assert "trustix-p2p/" + log_id.hex() == ORIGIN
    assert log_id_from_origin(ORIGIN) == log_id
    with pytest.raises(LocalProtocolError):
        origin_for(log_id[:31])


def test_body_is_exactly_the_four_documented_lines():
    expected = f"{ORIGIN}\n12345\n{base64.b64encode(ROOT).decode()}\ntime 1700000000\n"
    assert CP.body() == expected.encode()
    assert parse_checkpoint_body(expected) == CP


def test_signed_note_is_body_blank_line_and_one_ed25519_signature_line():
    signed = sign_checkpoint(CP, LOG)
    body, sig_line = signed.note.split(b"\n\n")
    assert body + b"\n" == CP.body()
    assert sig_line.startswith(("— " + ORIGIN + " ").encode())
    payload = base64.b64decode(sig_line.split(b" ")[2])
    key_id = hashlib.sha256(ORIGIN.encode() + b"\n\x01" + LOG.public_key.raw).digest()[:4]
    assert payload[:4] == key_id
    LOG.public_key.verify(CP.body(), payload[4:])
    assert signed.log_id == LOG.public_key.log_id()


@settings(max_examples=50, deadline=None)
@given(
    size=st.integers(min_value=0, max_value=2**63 - 1),
    root=st.binary(min_size=32, max_size=32),
    time=st.integers(min_value=0, max_value=2**63 - 1),
)
def test_sign_then_verify_roundtrips(size: int, root: bytes, time: int):
    cp = Checkpoint(ORIGIN, size, root, time)
    signed = sign_checkpoint(cp, LOG)
    verified = verify_checkpoint(signed.note, LOG.public_key)
    assert verified == signed
    assert verified.checkpoint == cp
    assert read_checkpoint_unverified(signed.note) == cp


def test_every_single_bit_flip_of_a_signed_checkpoint_is_rejected():
    note = sign_checkpoint(CP, LOG).note
    for position in range(len(note)):
        for bit in (0, 5, 7):
            data = bytearray(note)
            data[position] ^= 1 << bit
            with pytest.raises((DecodeError, VerificationError)):
                verify_checkpoint(bytes(data), LOG.public_key)


def test_truncated_or_extended_notes_are_rejected():
    note = sign_checkpoint(CP, LOG).note
    for cut in range(len(note)):
        with pytest.raises((DecodeError, VerificationError)):
            verify_checkpoint(note[:cut], LOG.public_key)
    for junk in [b"x", b"\n", b"\x00", b"\n\n"]:
        with pytest.raises(DecodeError):
            verify_checkpoint(note + junk, LOG.public_key)


def test_a_checkpoint_verifies_only_with_its_own_logs_key():
    note = sign_checkpoint(CP, LOG).note
    with pytest.raises(VerificationError):
        verify_checkpoint(note, OTHER_LOG.public_key)


def test_a_checkpoint_naming_another_logs_origin_is_rejected():
    # OTHER_LOG signs a body that claims LOG's origin: wrong key id for LOG, wrong origin
    # for OTHER_LOG.
    forged = sign_note(CP.body_text(), ORIGIN, OTHER_LOG)
    with pytest.raises(VerificationError):
        verify_checkpoint(forged, LOG.public_key)
    with pytest.raises(VerificationError):
        verify_checkpoint(forged, OTHER_LOG.public_key)


def test_signing_refuses_another_logs_origin_and_invalid_fields():
    with pytest.raises(LocalProtocolError, match="another log"):
        sign_checkpoint(CP, OTHER_LOG)
    for bad in [
        Checkpoint(ORIGIN, -1, ROOT, 0),
        Checkpoint(ORIGIN, 2**63, ROOT, 0),
        Checkpoint(ORIGIN, 1, ROOT[:31], 0),
        Checkpoint(ORIGIN, 1, ROOT, -5),
        Checkpoint(ORIGIN, True, ROOT, 0),
        Checkpoint("example.com/log", 1, ROOT, 0),
    ]:
        with pytest.raises(LocalProtocolError):
            sign_checkpoint(bad, LOG)


def test_a_signature_made_under_another_key_name_is_not_the_logs_signature():
    forged = sign_note(CP.body_text(), "some-other-name", LOG)
    with pytest.raises(VerificationError):
        verify_checkpoint(forged, LOG.public_key)


# --- strict body parsing -----------------------------------------------------------------

B64ROOT = base64.b64encode(ROOT).decode()
HEXID = LOG.public_key.log_id_hex()


@pytest.mark.parametrize(
    "body",
    [
        f"{ORIGIN}\n012\n{B64ROOT}\ntime 1\n",  # leading zero
        f"{ORIGIN}\n+12\n{B64ROOT}\ntime 1\n",
        f"{ORIGIN}\n-1\n{B64ROOT}\ntime 1\n",
        f"{ORIGIN}\n 12\n{B64ROOT}\ntime 1\n",
        f"{ORIGIN}\n1_2\n{B64ROOT}\ntime 1\n",
        f"{ORIGIN}\n١٢\n{B64ROOT}\ntime 1\n",  # non-ASCII digits
        f"{ORIGIN}\n{2**63}\n{B64ROOT}\ntime 1\n",
        f"{ORIGIN}\n{'9' * 40}\n{B64ROOT}\ntime 1\n",
        f"{ORIGIN}\n\n{B64ROOT}\ntime 1\n",
        f"{ORIGIN}\n12\n{base64.b64encode(ROOT[:31]).decode()}\ntime 1\n",
        f"{ORIGIN}\n12\n{base64.b64encode(ROOT + b'x').decode()}\ntime 1\n",
        f"{ORIGIN}\n12\n{B64ROOT.rstrip('=')}\ntime 1\n",
        f"{ORIGIN}\n12\n{ROOT.hex()}\ntime 1\n",
        f"{ORIGIN}\n12\n{B64ROOT}\ntime 01\n",
        f"{ORIGIN}\n12\n{B64ROOT}\ntime  1\n",
        f"{ORIGIN}\n12\n{B64ROOT}\ntime\n",
        f"{ORIGIN}\n12\n{B64ROOT}\ntime=1\n",
        f"{ORIGIN}\n12\n{B64ROOT}\nTime 1\n",
        f"{ORIGIN}\n12\n{B64ROOT}\ntime {2**63}\n",
        f"{ORIGIN}\n12\n{B64ROOT}\n",  # no time line
        f"{ORIGIN}\n12\n{B64ROOT}\ntime 1\nextra 2\n",  # other extension lines
        f"{ORIGIN}\n12\n{B64ROOT}\ntime 1\ntime 2\n",
        f"{ORIGIN}\n12\n{B64ROOT}\ntime 1",  # no final newline
        f"{ORIGIN}\n12\n{B64ROOT}\ntime 1\n\n",
        f"{ORIGIN}\n12\ntime 1\n{B64ROOT}\n",  # lines swapped
        f"example.com/log\n12\n{B64ROOT}\ntime 1\n",
        f"trustix-p2p/{HEXID.upper()}\n12\n{B64ROOT}\ntime 1\n",
        f"trustix-p2p/{HEXID[:-2]}\n12\n{B64ROOT}\ntime 1\n",
        f"trustix-p2p/{HEXID}/\n12\n{B64ROOT}\ntime 1\n",
        f" {ORIGIN}\n12\n{B64ROOT}\ntime 1\n",
        "",
    ],
)
def test_malformed_bodies_are_rejected(body: str):
    with pytest.raises(DecodeError):
        parse_checkpoint_body(body)


def test_limits_are_inclusive_of_2_pow_63_minus_1_and_zero():
    body = f"{ORIGIN}\n{2**63 - 1}\n{B64ROOT}\ntime 0\n"
    cp = parse_checkpoint_body(body)
    assert (cp.size, cp.time) == (2**63 - 1, 0)
    assert parse_checkpoint_body(f"{ORIGIN}\n0\n{B64ROOT}\ntime 0\n").size == 0


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=300))
def test_random_input_raises_only_decode_or_verification_error(data: bytes):
    with pytest.raises((DecodeError, VerificationError)):
        verify_checkpoint(data, LOG.public_key)


@settings(max_examples=200, deadline=None)
@given(text=st.text(alphabet="trustix-p2p/0123456789abcdef\n time=ABCXYZ+", max_size=200))
def test_arbitrary_bodies_parse_only_if_they_reformat_identically(text: str):
    try:
        cp = parse_checkpoint_body(text)
    except DecodeError:
        return
    assert cp.body_text() == text


# --- cosignatures --------------------------------------------------------------------------

W = "witness.example/w1"


def test_cosignature_message_and_key_id_follow_tlog_cosignature_v1():
    assert cosignature_message(CP, 1679315147) == b"cosignature/v1\ntime 1679315147\n" + CP.body()
    expected_id = hashlib.sha256(W.encode() + b"\n\x04" + WITNESS.public_key.raw).digest()[:4]
    assert cosignature_key_id(W, WITNESS.public_key) == expected_id


def test_cosignature_line_payload_is_key_id_big_endian_time_and_signature():
    c = cosign(CP, W, WITNESS, 1679315147)
    line = cosignature_line(c)
    assert line.startswith(f"— {W} ") and line.endswith("\n")
    payload = base64.b64decode(line.split(" ")[2])
    assert len(payload) == 4 + 8 + 64
    assert payload[:4] == c.key_id == cosignature_key_id(W, WITNESS.public_key)
    assert payload[4:12] == (1679315147).to_bytes(8, "big")
    WITNESS.public_key.verify(cosignature_message(CP, 1679315147), payload[12:])


def test_cosign_then_verify():
    c = cosign(CP, W, WITNESS, 1_700_000_100)
    verify_cosignature(CP, c, WITNESS.public_key)


@pytest.mark.parametrize(
    "other",
    [
        Checkpoint(ORIGIN, CP.size + 1, CP.root, CP.time),
        Checkpoint(ORIGIN, CP.size, hashlib.sha256(b"other").digest(), CP.time),
        Checkpoint(ORIGIN, CP.size, CP.root, CP.time + 1),
        Checkpoint(origin_for(OTHER_LOG.public_key.log_id()), CP.size, CP.root, CP.time),
    ],
)
def test_a_cosignature_replayed_over_a_different_checkpoint_is_rejected(other: Checkpoint):
    c = cosign(CP, W, WITNESS, 1_700_000_100)
    with pytest.raises(VerificationError):
        verify_cosignature(other, c, WITNESS.public_key)


def test_a_cosignature_with_altered_time_name_or_key_is_rejected():
    c = cosign(CP, W, WITNESS, 1_700_000_100)
    for bad in [
        Cosignature(c.witness_name, c.key_id, c.time + 1, c.signature),
        Cosignature("witness.example/w2", c.key_id, c.time, c.signature),
        Cosignature(c.witness_name, b"\x00" * 4, c.time, c.signature),
        Cosignature(c.witness_name, c.key_id, c.time, c.signature[:63]),
        Cosignature(c.witness_name, c.key_id, 2**63, c.signature),
    ]:
        with pytest.raises(VerificationError):
            verify_cosignature(CP, bad, WITNESS.public_key)
    with pytest.raises(VerificationError):
        verify_cosignature(CP, c, WITNESS_2.public_key)


def test_a_plain_note_signature_by_the_witness_is_not_a_cosignature():
    # Domain separation: the witness's type-0x01 signature over the bare body must not
    # count as a cosignature, and vice versa.
    plain = WITNESS.sign(CP.body())
    c = Cosignature(W, cosignature_key_id(W, WITNESS.public_key), 0, plain)
    with pytest.raises(VerificationError):
        verify_cosignature(CP, c, WITNESS.public_key)


def test_cosignatures_are_appended_without_breaking_the_logs_signature():
    signed = sign_checkpoint(CP, LOG)
    c1 = cosign(CP, W, WITNESS, 100)
    c2 = cosign(CP, "w2", WITNESS_2, 200)
    note = add_cosignatures(signed, [c1, c2])
    assert note == signed.note + (cosignature_line(c1) + cosignature_line(c2)).encode()
    assert verify_checkpoint(note, LOG.public_key).checkpoint == CP
    assert cosignatures_in(note, W, WITNESS.public_key) == [c1]
    assert cosignatures_in(note, "w2", WITNESS_2.public_key) == [c2]
    # A witness the note does not mention, or a known witness under another name: none.
    assert cosignatures_in(note, W, WITNESS_2.public_key) == []
    assert cosignatures_in(note, "w3", WITNESS.public_key) == []
    assert cosignatures_in(signed.note, W, WITNESS.public_key) == []


def test_adding_the_same_witness_twice_keeps_one_line():
    signed = sign_checkpoint(CP, LOG)
    c1 = cosign(CP, W, WITNESS, 100)
    once = add_cosignatures(signed, [c1])
    again = add_cosignatures(SignedCheckpoint(CP, once), [c1, cosign(CP, W, WITNESS, 101)])
    assert again == once


def test_the_log_key_can_also_cosign_under_its_origin_without_confusion():
    # Types 0x01 and 0x04 give different key ids for the same name and key.
    signed = sign_checkpoint(CP, LOG)
    c = cosign(CP, ORIGIN, LOG, 5)
    note = add_cosignatures(signed, [c])
    assert verify_checkpoint(note, LOG.public_key).note == note
    assert cosignatures_in(note, ORIGIN, LOG.public_key) == [c]


def test_a_matching_but_invalid_cosignature_rejects_the_note():
    signed = sign_checkpoint(CP, LOG)
    replayed = cosign(Checkpoint(ORIGIN, 1, ROOT, 1), W, WITNESS, 100)
    note = add_cosignatures(signed, [replayed])
    with pytest.raises(VerificationError):
        cosignatures_in(note, W, WITNESS.public_key)
    # The log's own signature is untouched by a bad cosignature line.
    verify_checkpoint(note, LOG.public_key)


def test_a_matching_cosignature_line_of_the_wrong_length_is_rejected():
    signed = sign_checkpoint(CP, LOG)
    key_id = cosignature_key_id(W, WITNESS.public_key)
    short = base64.b64encode(key_id + bytes(8) + bytes(63)).decode()
    note = signed.note + f"— {W} {short}\n".encode()
    with pytest.raises(VerificationError):
        cosignatures_in(note, W, WITNESS.public_key)


def test_too_many_cosignatures_cannot_be_added():
    signed = sign_checkpoint(CP, LOG)
    cosigs = [cosign(CP, f"w{i}", WITNESS, i) for i in range(100)]
    with pytest.raises(LocalProtocolError, match="too many"):
        add_cosignatures(signed, cosigs)
    note = add_cosignatures(signed, cosigs[:99])
    assert len(parse_note(note).signatures) == 100


def test_cosign_refuses_invalid_input():
    with pytest.raises(LocalProtocolError):
        cosign(CP, "bad name", WITNESS, 1)
    with pytest.raises(LocalProtocolError):
        cosign(CP, W, WITNESS, -1)
    with pytest.raises(LocalProtocolError):
        cosign(Checkpoint(ORIGIN, 1, b"short", 1), W, WITNESS, 1)
