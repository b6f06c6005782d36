"""Ed25519 keys, log ids, X25519 conversion, key files and the keygen/pubkey commands."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import stat
from pathlib import Path

import nacl.bindings
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trustix_p2p.commands import keys as keys_command
from trustix_p2p.core.b64 import b64decode_strict, b64encode
from trustix_p2p.core.keys import PrivateKey, PublicKey, log_id
from trustix_p2p.errors import DecodeError, KeyFileError, VerificationError
from trustix_p2p.keyfile import (
    format_key_file,
    generate_key_file,
    load_key_file,
    load_public_key,
    parse_key_file,
    write_key_file,
)

# RFC 8032 §7.1, TEST 1 and TEST 2.
RFC8032 = [
    (
        "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
        "",
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
    ),
    (
        "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
        "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
        "72",
        "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
    ),
]

SEED = bytes(range(32))


@pytest.mark.parametrize(("seed", "public", "message", "signature"), RFC8032)
def test_signing_matches_rfc8032_vectors(seed: str, public: str, message: str, signature: str):
    key = PrivateKey.from_seed(bytes.fromhex(seed))
    assert key.public_key.raw == bytes.fromhex(public)
    assert key.sign(bytes.fromhex(message)) == bytes.fromhex(signature)
    PublicKey(bytes.fromhex(public)).verify(bytes.fromhex(message), bytes.fromhex(signature))


def test_log_id_is_sha256_of_raw_public_key():
    key = PrivateKey(SEED)
    expected = hashlib.sha256(key.public_key.raw).digest()
    assert key.public_key.log_id() == expected == log_id(key.public_key.raw)
    assert key.public_key.log_id_hex() == expected.hex()


@pytest.mark.parametrize("size", [0, 1, 31, 33, 64])
def test_public_key_of_wrong_length_is_refused(size: int):
    with pytest.raises(DecodeError, match="32 bytes"):
        PublicKey(bytes(size))


@pytest.mark.parametrize("size", [0, 31, 33, 64])
def test_seed_of_wrong_length_is_refused(size: int):
    with pytest.raises(DecodeError, match="32 bytes"):
        PrivateKey(bytes(size))


def test_public_key_base64_roundtrips_and_is_strict():
    pub = PrivateKey(SEED).public_key
    text = pub.to_base64()
    assert PublicKey.from_base64(text) == pub
    for bad in [text[:-1], text + "=", " " + text, text.replace("=", ""), "!" + text[1:], ""]:
        with pytest.raises(DecodeError):
            PublicKey.from_base64(bad)
    # 31 bytes of well-formed base64: right syntax, wrong key length.
    with pytest.raises(DecodeError, match="32 bytes"):
        PublicKey.from_base64(b64encode(bytes(31)))


def test_strict_base64_rejects_nonzero_padding_bits():
    assert b64decode_strict("AA==") == b"\x00"
    with pytest.raises(DecodeError, match="non-canonical"):
        b64decode_strict("AB==")
    with pytest.raises(DecodeError):
        b64decode_strict("AA=\n=")
    with pytest.raises(DecodeError):
        b64decode_strict("AAé=")


def test_verify_rejects_wrong_message_key_or_signature_length():
    key = PrivateKey(SEED)
    sig = key.sign(b"message")
    key.public_key.verify(b"message", sig)
    with pytest.raises(VerificationError):
        key.public_key.verify(b"messagf", sig)
    with pytest.raises(VerificationError):
        PrivateKey(bytes(32)).public_key.verify(b"message", sig)
    with pytest.raises(VerificationError):
        key.public_key.verify(b"message", sig[:63])
    with pytest.raises(VerificationError):
        key.public_key.verify(b"message", sig + b"\x00")


@settings(max_examples=50, deadline=None)
@given(message=st.binary(max_size=200), bit=st.integers(min_value=0, max_value=511))
def test_any_flipped_signature_bit_fails_verification(message: bytes, bit: int):
    key = PrivateKey(SEED)
    sig = bytearray(key.sign(message))
    sig[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(VerificationError):
        key.public_key.verify(message, bytes(sig))


@settings(max_examples=30, deadline=None)
@given(seed=st.binary(min_size=32, max_size=32), message=st.binary(max_size=100))
def test_sign_then_verify_roundtrips(seed: bytes, message: bytes):
    key = PrivateKey(seed)
    key.public_key.verify(message, key.sign(message))


def test_x25519_conversion_gives_a_working_diffie_hellman_pair():
    alice, bob = PrivateKey(SEED), PrivateKey(bytes(range(1, 33)))
    # The converted private key must match the converted public key...
    assert nacl.bindings.crypto_scalarmult_base(alice.to_x25519()) == alice.public_key.to_x25519()
    # ...and both sides must agree on the shared secret, as Noise needs.
    ab = nacl.bindings.crypto_scalarmult(alice.to_x25519(), bob.public_key.to_x25519())
    ba = nacl.bindings.crypto_scalarmult(bob.to_x25519(), alice.public_key.to_x25519())
    assert ab == ba


def test_x25519_conversion_of_an_invalid_point_raises_decode_error():
    # All-zero bytes encode a small-order point that libsodium refuses to convert.
    with pytest.raises(DecodeError):
        PublicKey(bytes(32)).to_x25519()


def test_private_key_repr_never_shows_the_seed():
    key = PrivateKey(SEED)
    text = repr(key) + str(key)
    assert SEED.hex() not in text
    assert b64encode(SEED) not in text
    assert key.public_key.to_base64() in text


def test_private_keys_compare_by_seed():
    assert PrivateKey(SEED) == PrivateKey(bytes(SEED))
    assert PrivateKey(SEED) != PrivateKey(bytes(32))


# --- key files ---------------------------------------------------------------------------


def test_generated_key_file_is_0600_and_loads_back(tmp_path: Path):
    path = tmp_path / "node.key"
    old_umask = os.umask(0o277)  # a umask that would strip the owner's write bit
    try:
        key = generate_key_file(path)
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_key_file(path) == key
    assert load_public_key(str(path)) == key.public_key


def test_key_file_has_the_documented_one_line_format(tmp_path: Path):
    path = tmp_path / "k"
    write_key_file(path, PrivateKey(SEED))
    assert path.read_bytes() == b"trustix-p2p-ed25519:" + b64encode(SEED).encode() + b"\n"
    assert format_key_file(PrivateKey(SEED)) == path.read_bytes()


def test_writing_never_overwrites_an_existing_file(tmp_path: Path):
    path = tmp_path / "k"
    path.write_bytes(b"precious")
    with pytest.raises(KeyFileError, match="already exists"):
        generate_key_file(path)
    with pytest.raises(KeyFileError, match="already exists"):
        write_key_file(path, PrivateKey(SEED))
    assert path.read_bytes() == b"precious"


def test_writing_into_a_missing_directory_is_a_key_file_error(tmp_path: Path):
    with pytest.raises(KeyFileError, match="cannot create"):
        write_key_file(tmp_path / "nope" / "k", PrivateKey(SEED))


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660, 0o602, 0o610, 0o601])
def test_loading_a_key_file_others_can_access_is_refused_with_the_fix(tmp_path: Path, mode: int):
    path = tmp_path / "k"
    write_key_file(path, PrivateKey(SEED))
    os.chmod(path, mode)
    with pytest.raises(KeyFileError) as info:
        load_key_file(path)
    message = str(info.value)
    assert str(path) in message
    assert f"chmod 600 {path}" in message
    assert "\n" not in message


@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_owner_only_modes_are_accepted(tmp_path: Path, mode: int):
    path = tmp_path / "k"
    write_key_file(path, PrivateKey(SEED))
    os.chmod(path, mode)
    assert load_key_file(path) == PrivateKey(SEED)


def test_loading_a_missing_key_file_says_how_to_create_one(tmp_path: Path):
    path = tmp_path / "absent"
    with pytest.raises(KeyFileError, match=f"trustix-p2p keygen {path}"):
        load_key_file(path)


def test_loading_a_directory_or_fifo_is_refused(tmp_path: Path):
    with pytest.raises(KeyFileError, match="not a regular file"):
        load_key_file(tmp_path)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo, 0o600)
    with pytest.raises(KeyFileError, match="not a regular file"):
        load_key_file(fifo)


GOOD = format_key_file(PrivateKey(SEED))


@pytest.mark.parametrize(
    "content",
    [
        b"",
        GOOD[:-1],  # no newline
        GOOD + b"\n",  # trailing junk
        GOOD + b"x",
        GOOD.replace(b"ed25519", b"ed25518"),
        b"trustix-p2p-ed25519:" + b64encode(bytes(31)).encode() + b"\n",  # short seed
        b"trustix-p2p-ed25519:" + b64encode(bytes(33)).encode() + b"\n",  # long seed
        b"trustix-p2p-ed25519:" + b64encode(bytes(64)).encode() + b"\n",  # expanded key
        GOOD.replace(b"=", b""),
        b"\xff" * 10,
        b"x" * 5000,
    ],
)
def test_malformed_key_files_are_refused_with_a_one_line_message(tmp_path: Path, content: bytes):
    path = tmp_path / "k"
    fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
    os.write(fd, content)
    os.close(fd)
    with pytest.raises(KeyFileError) as info:
        load_key_file(path)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


@settings(max_examples=100, deadline=None)
@given(data=st.binary(max_size=80))
def test_parse_key_file_accepts_only_the_canonical_form_and_raises_only_key_file_error(
    data: bytes,
):
    try:
        key = parse_key_file(data)
    except KeyFileError:
        return
    assert format_key_file(key) == data


@settings(max_examples=60, deadline=None)
@given(cut=st.integers(min_value=0, max_value=len(GOOD) - 1))
def test_truncated_key_file_is_refused(cut: int):
    with pytest.raises(KeyFileError):
        parse_key_file(GOOD[:cut])


# --- keygen / pubkey commands ------------------------------------------------------------


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="trustix-p2p")
    sub = parser.add_subparsers(dest="command", required=True)
    keys_command.register(sub)
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


def test_keygen_writes_key_and_prints_identity_json(tmp_path: Path, capsys):
    path = tmp_path / "node.key"
    assert _run(["keygen", str(path)]) == 0
    printed = json.loads(capsys.readouterr().out)
    key = load_key_file(path)
    assert printed == {
        "public_key": key.public_key.to_base64(),
        "log_id": hashlib.sha256(key.public_key.raw).hexdigest(),
    }
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_pubkey_prints_the_same_identity_as_keygen(tmp_path: Path, capsys):
    path = tmp_path / "node.key"
    _run(["keygen", str(path)])
    generated = capsys.readouterr().out
    assert _run(["pubkey", str(path)]) == 0
    assert capsys.readouterr().out == generated


def test_keygen_refuses_to_overwrite(tmp_path: Path, capsys):
    path = tmp_path / "node.key"
    _run(["keygen", str(path)])
    before = path.read_bytes()
    with pytest.raises(KeyFileError):
        _run(["keygen", str(path)])
    assert path.read_bytes() == before
