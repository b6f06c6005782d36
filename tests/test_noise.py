"""The Noise core: cacophony vectors, noiseprotocol interop, identity, attacks, failures."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import msgpack
import pytest
from noise.connection import Keypair, NoiseConnection

from trustix_p2p.core.keys import PrivateKey
from trustix_p2p.core.noise import (
    BLAKE2B,
    MAX_FRAME_PAYLOAD,
    MAX_NONCE,
    NEED_DATA,
    PROLOGUE,
    SHA256,
    CipherState,
    Data,
    EndOfStream,
    HandshakeComplete,
    HandshakeState,
    LocalIdentity,
    NoiseError,
    NoiseSession,
    Phase,
    Role,
    _dh,
    check_identity_payload,
    encode_identity_payload,
    x25519_public,
)
from trustix_p2p.errors import DecodeError, LocalProtocolError, RemoteProtocolError

VECTORS = json.loads(
    (Path(__file__).parent / "vectors" / "noise" / "cacophony-xx.json").read_text()
)["vectors"]


def key(name: str) -> PrivateKey:
    return PrivateKey.from_seed(hashlib.sha256(b"noise test " + name.encode()).digest())


def eph(name: str) -> bytes:
    return hashlib.sha256(b"ephemeral " + name.encode()).digest()


ALICE, BOB, MALLORY = key("alice"), key("bob"), key("mallory")


def session(role: Role, who: PrivateKey, tag: str, **kw: Any) -> NoiseSession:
    return NoiseSession(role, LocalIdentity.from_private_key(who), eph(tag), **kw)


def handshake(i: NoiseSession, r: NoiseSession) -> list[bytes]:
    """Run a whole handshake; returns the three framed messages."""
    m1 = i.initiate()
    r.receive_data(m1)
    assert r.next_event() is NEED_DATA
    m2 = r.data_to_send()
    i.receive_data(m2)
    done_i = i.next_event()
    m3 = i.data_to_send()
    r.receive_data(m3)
    done_r = r.next_event()
    assert isinstance(done_i, HandshakeComplete) and isinstance(done_r, HandshakeComplete)
    assert done_i.handshake_hash == done_r.handshake_hash
    return [m1, m2, m3]


# ---- cacophony vectors ----------------------------------------------------------------------


@pytest.mark.parametrize("vector", VECTORS, ids=[v["protocol_name"] for v in VECTORS])
def test_cacophony_vector_reproduced_exactly(vector: dict[str, Any]) -> None:
    hash_function = BLAKE2B if vector["protocol_name"].endswith("BLAKE2b") else SHA256
    assert vector["protocol_name"] == f"Noise_XX_25519_ChaChaPoly_{hash_function.name}"
    i = HandshakeState(
        Role.INITIATOR,
        static_private=bytes.fromhex(vector["init_static"]),
        ephemeral_private=bytes.fromhex(vector["init_ephemeral"]),
        prologue=bytes.fromhex(vector["init_prologue"]),
        hash_function=hash_function,
    )
    r = HandshakeState(
        Role.RESPONDER,
        static_private=bytes.fromhex(vector["resp_static"]),
        ephemeral_private=bytes.fromhex(vector["resp_ephemeral"]),
        prologue=bytes.fromhex(vector["resp_prologue"]),
        hash_function=hash_function,
    )
    messages = vector["messages"]
    for index, (writer, reader) in enumerate([(i, r), (r, i), (i, r)]):
        payload = bytes.fromhex(messages[index]["payload"])
        ciphertext = writer.write_message(payload)
        assert ciphertext.hex() == messages[index]["ciphertext"]
        assert reader.read_message(ciphertext) == payload
    assert i.phase is r.phase is Phase.TRANSPORT
    assert i.handshake_hash.hex() == r.handshake_hash.hex() == vector["handshake_hash"]
    assert i.remote_static == x25519_public(bytes.fromhex(vector["resp_static"]))
    i_send, i_recv = i.split()
    r_send, r_recv = r.split()
    # After the handshake, cacophony's messages keep alternating where the handshake left
    # off: message 3 is the responder's, 4 the initiator's, and so on.
    for index in range(3, len(messages)):
        sender, receiver = (i_send, r_recv) if index % 2 == 0 else (r_send, i_recv)
        payload = bytes.fromhex(messages[index]["payload"])
        ciphertext = sender.encrypt_with_ad(b"", payload)
        assert ciphertext.hex() == messages[index]["ciphertext"]
        assert receiver.decrypt_with_ad(b"", ciphertext) == payload


def test_both_cacophony_suites_are_present() -> None:
    names = sorted(v["protocol_name"] for v in VECTORS)
    assert names == [
        "Noise_XX_25519_ChaChaPoly_BLAKE2b",
        "Noise_XX_25519_ChaChaPoly_SHA256",
    ]


# ---- interoperability with the noiseprotocol package -----------------------------------------


def _their(role: Role, static: bytes) -> NoiseConnection:
    conn = NoiseConnection.from_name(b"Noise_XX_25519_ChaChaPoly_BLAKE2b")
    if role is Role.INITIATOR:
        conn.set_as_initiator()
    else:
        conn.set_as_responder()
    conn.set_keypair_from_private_bytes(Keypair.STATIC, static)
    conn.set_prologue(PROLOGUE)
    conn.start_handshake()
    return conn


@pytest.mark.parametrize("our_role", [Role.INITIATOR, Role.RESPONDER])
def test_interoperates_with_noiseprotocol(our_role: Role) -> None:
    ours = HandshakeState(
        our_role, static_private=ALICE.to_x25519(), ephemeral_private=eph("interop")
    )
    their_role = Role.RESPONDER if our_role is Role.INITIATOR else Role.INITIATOR
    theirs = _their(their_role, BOB.to_x25519())
    payloads = [b"", encode_identity_payload(BOB.public_key), b"third"]
    for index in range(3):
        we_write = (index % 2 == 0) == (our_role is Role.INITIATOR)
        if we_write:
            theirs_got = theirs.read_message(ours.write_message(payloads[index]))
            assert bytes(theirs_got) == payloads[index]
        else:
            assert (
                ours.read_message(bytes(theirs.write_message(payloads[index]))) == (payloads[index])
            )
    assert theirs.handshake_finished
    assert ours.handshake_hash == theirs.get_handshake_hash()
    assert ours.remote_static == x25519_public(BOB.to_x25519())
    send, recv = ours.split()
    for text in (b"hello", b"x" * 1000, b""):
        assert bytes(theirs.decrypt(send.encrypt_with_ad(b"", text))) == text
        assert recv.decrypt_with_ad(b"", bytes(theirs.encrypt(text))) == text


# ---- the Trustix session: identity -----------------------------------------------------------


def test_session_handshake_proves_both_node_keys() -> None:
    i = session(Role.INITIATOR, ALICE, "i", pinned=BOB.public_key)
    r = session(Role.RESPONDER, BOB, "r")
    messages = handshake(i, r)
    assert i.peer == BOB.public_key and r.peer == ALICE.public_key
    assert i.phase is r.phase is Phase.TRANSPORT
    # Every Noise message is preceded by its 2-byte big-endian length.
    for framed in messages:
        assert int.from_bytes(framed[:2], "big") == len(framed) - 2
    # Message 1 is e alone; 2 and 3 carry [1, key] encrypted.
    assert len(messages[0]) == 2 + 32
    assert len(messages[1]) == 2 + 32 + 48 + len(encode_identity_payload(BOB.public_key)) + 16


def test_identity_payload_is_msgpack_version_and_key() -> None:
    assert msgpack.unpackb(encode_identity_payload(ALICE.public_key)) == [
        1,
        ALICE.public_key.raw,
    ]


def test_pinned_key_mismatch_is_refused() -> None:
    i = session(Role.INITIATOR, ALICE, "i", pinned=MALLORY.public_key)
    r = session(Role.RESPONDER, BOB, "r")
    r.receive_data(i.initiate())
    r.next_event()
    i.receive_data(r.data_to_send())
    with pytest.raises(RemoteProtocolError, match="expected pinned key"):
        i.next_event()
    assert i.phase is Phase.FAILED
    assert i.data_to_send() == b""  # message 3 was never produced


def test_responder_pin_is_checked_on_message_3() -> None:
    i = session(Role.INITIATOR, MALLORY, "i")
    r = session(Role.RESPONDER, BOB, "r", pinned=ALICE.public_key)
    r.receive_data(i.initiate())
    r.next_event()
    i.receive_data(r.data_to_send())
    assert isinstance(i.next_event(), HandshakeComplete)
    r.receive_data(i.data_to_send())
    with pytest.raises(RemoteProtocolError, match="expected pinned key"):
        r.next_event()


def test_mitm_claiming_another_nodes_key_is_refused() -> None:
    # Mallory uses her own Noise static key but claims to be Bob in the payload.
    lying = LocalIdentity(
        MALLORY.public_key, MALLORY.to_x25519(), encode_identity_payload(BOB.public_key)
    )
    i = session(Role.INITIATOR, ALICE, "i", pinned=BOB.public_key)
    r = NoiseSession(Role.RESPONDER, lying, eph("r"))
    r.receive_data(i.initiate())
    r.next_event()
    i.receive_data(r.data_to_send())
    with pytest.raises(RemoteProtocolError, match=r"claims key .* Noise static key is not"):
        i.next_event()


def test_mitm_swapping_keys_between_two_handshakes_is_refused() -> None:
    # Mallory sits in the middle and runs one handshake with each side.  Alice pinned Bob,
    # so the handshake with Mallory fails for her, whatever Mallory relays.
    alice = session(Role.INITIATOR, ALICE, "a", pinned=BOB.public_key)
    mallory_as_responder = session(Role.RESPONDER, MALLORY, "m1")
    mallory_as_initiator = session(Role.INITIATOR, MALLORY, "m2")
    bob = session(Role.RESPONDER, BOB, "b")
    handshake(mallory_as_initiator, bob)
    mallory_as_responder.receive_data(alice.initiate())
    mallory_as_responder.next_event()
    alice.receive_data(mallory_as_responder.data_to_send())
    with pytest.raises(RemoteProtocolError):
        alice.next_event()
    # Relaying Bob's genuine message 2 (to Mallory's ephemeral key) fails cryptographically.
    alice2 = session(Role.INITIATOR, ALICE, "a2", pinned=BOB.public_key)
    bob2 = session(Role.RESPONDER, BOB, "b2")
    first = alice2.initiate()
    swapped = first[:2] + x25519_public(eph("m3"))  # Mallory substitutes her ephemeral
    bob2.receive_data(swapped)
    bob2.next_event()
    alice2.receive_data(bob2.data_to_send())
    with pytest.raises(NoiseError):
        alice2.next_event()


def test_replayed_handshake_is_refused() -> None:
    i = session(Role.INITIATOR, ALICE, "i")
    r = session(Role.RESPONDER, BOB, "r")
    m1, m2, m3 = handshake(i, r)
    # Replaying the initiator's messages to a fresh responder: its new ephemeral key makes
    # the recorded message 3 undecryptable.
    fresh = session(Role.RESPONDER, BOB, "r-again")
    fresh.receive_data(m1)
    assert fresh.next_event() is NEED_DATA
    fresh.receive_data(m3)
    with pytest.raises(NoiseError):
        fresh.next_event()
    # Replaying the responder's message 2 to a fresh initiator fails the same way.
    fresh_i = session(Role.INITIATOR, ALICE, "i-again")
    fresh_i.initiate()
    fresh_i.receive_data(m2)
    with pytest.raises(NoiseError):
        fresh_i.next_event()


def test_replayed_transport_message_is_refused() -> None:
    i = session(Role.INITIATOR, ALICE, "i")
    r = session(Role.RESPONDER, BOB, "r")
    handshake(i, r)
    frame = bytes(i.send(b"pay me"))
    r.receive_data(frame)
    assert r.next_event() == Data(bytearray(b"pay me"))
    r.receive_data(frame)
    with pytest.raises(NoiseError):
        r.next_event()


def test_first_message_with_payload_is_refused() -> None:
    state = HandshakeState(
        Role.INITIATOR, static_private=ALICE.to_x25519(), ephemeral_private=eph("x")
    )
    message = state.write_message(b"smuggled")
    r = session(Role.RESPONDER, BOB, "r")
    r.receive_data(len(message).to_bytes(2, "big") + message)
    with pytest.raises(RemoteProtocolError, match="empty payload"):
        r.next_event()


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        (b"\xc1", "not valid msgpack"),
        (msgpack.packb([1]), r"\[version, public key\]"),
        (msgpack.packb([1, "a" * 32]), r"\[version, public key\]"),
        (msgpack.packb([True, b"a" * 32]), r"\[version, public key\]"),
        (msgpack.packb([2, b"a" * 32]), "unsupported handshake identity version 2"),
        (msgpack.packb([1, b"a" * 31]), "32 bytes"),
        (msgpack.packb({1: 2}), "not valid msgpack"),
        (b"\x92\xcc\x01\xc4\x20" + b"a" * 32, "not canonically encoded"),
        (msgpack.packb([1, b"a" * 32]) + b"\x00", "not valid msgpack"),
    ],
)
def test_malformed_identity_payload_is_a_decode_error(payload: bytes, problem: str) -> None:
    with pytest.raises(DecodeError, match=problem):
        check_identity_payload(payload, ALICE.public_key.to_x25519(), None)


# ---- low-order keys, nonces, opaque failures ---------------------------------------------------

# Curve25519 u-coordinates of small order, including the non-canonical p, p+1 (u + p for
# u = 0, 1) and p-1; X25519 with any of them gives an all-zero shared secret (RFC 7748 §6.1).
_CANONICAL_LOW_ORDER = [
    bytes(32),
    b"\x01" + bytes(31),
    bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
    bytes.fromhex("5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157"),
    bytes.fromhex("ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"),
    bytes.fromhex("edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"),
    bytes.fromhex("eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"),
]
# X25519 ignores the top bit of the encoding (RFC 7748 §5), so each also has a twin.
LOW_ORDER_POINTS = _CANONICAL_LOW_ORDER + [
    point[:31] + bytes([point[31] | 0x80]) for point in _CANONICAL_LOW_ORDER
]


@pytest.mark.parametrize("point", LOW_ORDER_POINTS, ids=lambda p: p.hex()[:8])
def test_low_order_public_keys_are_rejected(point: bytes) -> None:
    with pytest.raises(NoiseError):
        _dh(eph("scalar"), point)
    # As a peer's ephemeral key in message 1: the responder's ee DH refuses it.
    r = session(Role.RESPONDER, BOB, "r")
    r.receive_data(b"\x00\x20" + point)
    with pytest.raises(NoiseError):
        r.next_event()
    assert r.phase is Phase.FAILED


def test_nonce_exhaustion_fails_instead_of_wrapping() -> None:
    send = CipherState(b"k" * 32, MAX_NONCE - 1)
    recv = CipherState(b"k" * 32, MAX_NONCE - 1)
    assert recv.decrypt_with_ad(b"", send.encrypt_with_ad(b"", b"last")) == b"last"
    assert send.nonce == recv.nonce == MAX_NONCE
    with pytest.raises(NoiseError):
        send.encrypt_with_ad(b"", b"one more")
    with pytest.raises(NoiseError):
        recv.decrypt_with_ad(b"", b"\x00" * 20)


def test_nonce_exhaustion_ends_the_session() -> None:
    i = session(Role.INITIATOR, ALICE, "i")
    r = session(Role.RESPONDER, BOB, "r")
    handshake(i, r)
    i._send.nonce = MAX_NONCE  # type: ignore[union-attr]
    with pytest.raises(NoiseError):
        i.send(b"x")
    assert i.phase is Phase.FAILED
    with pytest.raises(LocalProtocolError):
        i.send(b"x")


def test_decrypt_failures_are_one_opaque_error() -> None:
    i = session(Role.INITIATOR, ALICE, "i")
    r = session(Role.RESPONDER, BOB, "r")
    handshake(i, r)
    frame = bytes(i.send(b"some secret payload"))
    messages = set()
    for position in (2, 10, len(frame) - 1):  # ciphertext and tag
        probe = session(Role.RESPONDER, BOB, "r")
        handshake(session(Role.INITIATOR, ALICE, "i"), probe)
        flipped = bytearray(frame)
        flipped[position] ^= 0x01
        probe.receive_data(bytes(flipped))
        with pytest.raises(NoiseError) as info:
            probe.next_event()
        messages.add(str(info.value))
    short = session(Role.RESPONDER, BOB, "r")
    handshake(session(Role.INITIATOR, ALICE, "i"), short)
    short.receive_data(b"\x00\x05hello")  # shorter than a tag
    with pytest.raises(NoiseError) as info:
        short.next_event()
    messages.add(str(info.value))
    assert messages == {"Noise session failed"}


# ---- state machine misuse ---------------------------------------------------------------------


def test_handshake_table_refuses_out_of_turn_calls() -> None:
    i = HandshakeState(Role.INITIATOR, static_private=ALICE.to_x25519(), ephemeral_private=eph("i"))
    with pytest.raises(LocalProtocolError, match="initiator cannot read MESSAGE_1"):
        i.read_message(b"")
    i.write_message(b"")
    with pytest.raises(LocalProtocolError, match="initiator cannot write MESSAGE_2"):
        i.write_message(b"")
    with pytest.raises(LocalProtocolError, match="cannot split"):
        i.split()


def test_failed_handshake_state_stays_failed() -> None:
    r = HandshakeState(Role.RESPONDER, static_private=BOB.to_x25519(), ephemeral_private=eph("r"))
    with pytest.raises(NoiseError):
        r.read_message(b"short")
    assert r.phase is Phase.FAILED
    with pytest.raises(LocalProtocolError):
        r.write_message(b"")


def test_session_misuse_is_a_local_error() -> None:
    i = session(Role.INITIATOR, ALICE, "i")
    with pytest.raises(LocalProtocolError, match="initiate"):
        i.next_event()
    with pytest.raises(LocalProtocolError, match="before the handshake"):
        i.send(b"x")
    r = session(Role.RESPONDER, BOB, "r")
    with pytest.raises(LocalProtocolError):
        r.initiate()
    i2 = session(Role.INITIATOR, ALICE, "i2")
    r2 = session(Role.RESPONDER, BOB, "r2")
    handshake(i2, r2)
    r2.receive_data(bytes(i2.send(b"a")))
    with pytest.raises(LocalProtocolError, match="whole frame is unprocessed"):
        r2.receive_data(b"more")


def test_end_of_stream_marker_and_data_after_it() -> None:
    i = session(Role.INITIATOR, ALICE, "i")
    r = session(Role.RESPONDER, BOB, "r")
    handshake(i, r)
    r.receive_data(bytes(i.send(b"last words")) + i.send_eof())
    assert r.next_event() == Data(bytearray(b"last words"))
    assert r.next_event() == EndOfStream()
    assert r.next_event() == EndOfStream()
    assert i.send_eof() == b""
    with pytest.raises(LocalProtocolError):
        i.send(b"after eof")
    # A peer that keeps sending after its marker is refused.
    i2 = session(Role.INITIATOR, ALICE, "i2")
    r2 = session(Role.RESPONDER, BOB, "r2")
    handshake(i2, r2)
    eof = i2.send_eof()
    i2._eof_sent = False  # simulate a misbehaving peer
    r2.receive_data(eof + bytes(i2.send(b"zombie")))
    with pytest.raises(RemoteProtocolError, match="after its end of stream"):
        r2.next_event()


def test_large_sends_are_split_into_maximal_noise_messages() -> None:
    i = session(Role.INITIATOR, ALICE, "i")
    r = session(Role.RESPONDER, BOB, "r")
    handshake(i, r)
    data = bytes(range(256)) * 1000  # 256,000 bytes: 3 full frames and a partial one
    wire = bytes(i.send(data))
    sizes = []
    pos = 0
    while pos < len(wire):
        size = int.from_bytes(wire[pos : pos + 2], "big")
        sizes.append(size)
        pos += 2 + size
    assert sizes == [65535, 65535, 65535, len(data) - 3 * MAX_FRAME_PAYLOAD + 16]
    got = bytearray()
    for pos in range(0, len(wire), 70_000):
        r.receive_data(wire[pos : pos + 70_000])
        while isinstance(event := r.next_event(), Data):
            got += event.data
    assert got == data


def test_session_accepts_input_byte_by_byte() -> None:
    i = session(Role.INITIATOR, ALICE, "i")
    r = session(Role.RESPONDER, BOB, "r")
    m1 = i.initiate()
    for index in range(len(m1)):
        assert r.next_event() is NEED_DATA
        r.receive_data(m1[index : index + 1])
    assert r.next_event() is NEED_DATA
    m2 = r.data_to_send()
    events = []
    for index in range(len(m2)):
        i.receive_data(m2[index : index + 1])
        events.append(i.next_event())
    assert events[:-1] == [NEED_DATA] * (len(m2) - 1)
    assert isinstance(events[-1], HandshakeComplete)


def test_low_order_static_key_in_message_2_is_rejected() -> None:
    # A responder whose Noise static key is a low-order point: the initiator's es DH refuses.
    i = HandshakeState(Role.INITIATOR, static_private=ALICE.to_x25519(), ephemeral_private=eph("i"))
    r = HandshakeState(Role.RESPONDER, static_private=BOB.to_x25519(), ephemeral_private=eph("r"))
    r._s_pub = LOW_ORDER_POINTS[2]  # what a malicious peer would put on the wire
    r.read_message(i.write_message(b""))
    message_2 = r.write_message(b"")
    with pytest.raises(NoiseError):
        i.read_message(message_2)
    assert i.phase is Phase.FAILED


def test_claimed_key_that_is_not_a_usable_point_is_a_decode_error() -> None:
    payload = msgpack.packb([1, bytes(32)])  # the identity point: no X25519 conversion
    with pytest.raises(DecodeError, match="cannot be converted to X25519"):
        check_identity_payload(payload, ALICE.public_key.to_x25519(), None)


def test_reprs_never_show_key_material() -> None:
    cipher = CipherState(b"\xab" * 32, 5)
    assert "ab" not in repr(cipher) and "nonce=5" in repr(cipher)
    identity = LocalIdentity.from_private_key(ALICE)
    assert repr(identity) == f"LocalIdentity(public_key={ALICE.public_key.to_base64()!r})"
