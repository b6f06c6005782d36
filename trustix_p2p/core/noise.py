"""Sans-IO Noise_XX_25519_ChaChaPoly_<hash> handshake, cipher states and the Trustix session.

This module is the whole cryptographic protocol between nodes (DESIGN §2, §6), with no I/O:
bytes go in, events and bytes come out, so every path can be driven from a test with plain
bytes and replayed against the published cacophony vectors.  It has three layers:

1. The Noise Protocol Framework objects (Noise spec rev. 34, §5): `CipherState`,
   `SymmetricState` and `HandshakeState` for the XX pattern (§7.5), over X25519 and
   ChaCha20-Poly1305 (IETF) from libsodium via pynacl and BLAKE2b or SHA-256 from hashlib.
   The hash is a parameter so that both cacophony suites replay exactly.
2. The Trustix identity rule: the Noise static key is the node's Ed25519 key converted to
   X25519; messages 2 and 3 carry the payload msgpack `[1, <32-byte Ed25519 public key>]`,
   and each side checks the peer's static key against that claim and, if given, against a
   pinned key.  The prologue is `b"trustix-p2p/1"`.
3. `NoiseSession`: framing (each Noise message preceded by its length as 2 bytes,
   big-endian, so at most 65535 bytes) and the transport phase, including an authenticated
   end-of-stream marker.  `trustix_p2p.transport.NoiseStream` drives it over trio.

Failures of the cryptography itself -- an authentication tag that does not verify, a
low-order or otherwise invalid public key (all-zero DH output), a malformed Noise message,
nonce exhaustion -- raise one opaque `NoiseError` and end the session: nothing in the error
says which check failed.  Identity mismatches (a peer proving a key other than the one it
claims or the one we pinned) raise `RemoteProtocolError` naming the keys, which is safe
because those keys are public.

This module must never touch sockets, files or the clock, and never draws randomness: the
ephemeral private key of every handshake is passed in by the caller.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
from collections.abc import Callable
from typing import Any, Final, Protocol

import attrs
import msgpack
import nacl._sodium  # type: ignore[import-not-found]
import nacl.bindings
import nacl.exceptions

from trustix_p2p.core.keys import PrivateKey, PublicKey
from trustix_p2p.errors import DecodeError, LocalProtocolError, RemoteProtocolError

__all__ = [
    "BLAKE2B",
    "DH_LEN",
    "MAX_FRAME_PAYLOAD",
    "MAX_NOISE_MESSAGE",
    "MAX_NONCE",
    "NEED_DATA",
    "PROLOGUE",
    "SHA256",
    "TAG_LEN",
    "CipherState",
    "Data",
    "EndOfStream",
    "HandshakeComplete",
    "HandshakeState",
    "HashFunction",
    "LocalIdentity",
    "NeedData",
    "NoiseError",
    "NoiseSession",
    "Phase",
    "Role",
    "SymmetricState",
    "check_identity_payload",
    "encode_identity_payload",
    "protocol_name",
    "x25519_public",
]

PROLOGUE: Final = b"trustix-p2p/1"
DH_LEN: Final = 32
TAG_LEN: Final = 16
KEY_LEN: Final = 32
# Noise spec §3: "The maximum message length is 65535 bytes"; our 2-byte length prefix
# cannot express more anyway.
MAX_NOISE_MESSAGE: Final = 65535
# Largest plaintext that fits in one transport message.
MAX_FRAME_PAYLOAD: Final = MAX_NOISE_MESSAGE - TAG_LEN
# Noise spec §5.1: nonce 2^64-1 is reserved; reaching it must fail rather than wrap.
MAX_NONCE: Final = 2**64 - 1
_LENGTH_PREFIX: Final = 2
_IDENTITY_VERSION: Final = 1


class NoiseError(RemoteProtocolError):
    """The Noise session failed.  Deliberately opaque: the message never says which check.

    Raised for authentication failures, invalid or low-order public keys, malformed Noise
    messages and nonce exhaustion.  The session is dead afterwards.
    """

    def __init__(self) -> None:
        super().__init__("Noise session failed")


# --------------------------------------------------------------------------------------------
# Crypto primitives (Noise spec §4)
# --------------------------------------------------------------------------------------------


class _Hasher(Protocol):
    def digest(self) -> bytes: ...


@attrs.frozen
class HashFunction:
    """One of the Noise hash functions (spec §4.3, §12.8)."""

    name: str
    hash_len: int
    # Constructor from hashlib; HMAC (RFC 2104) takes its block size from it, which gives
    # BLOCKLEN 128 for BLAKE2b and 64 for SHA-256 as the spec requires.
    new: Callable[[bytes], _Hasher]
    # OpenSSL name for hmac.digest's fast path.
    openssl_name: str

    def hash(self, data: bytes) -> bytes:
        return self.new(data).digest()

    def hkdf(self, chaining_key: bytes, ikm: bytes) -> tuple[bytes, bytes]:
        """HKDF with two outputs, Noise spec §4.3 (RFC 5869 with an empty info)."""
        temp_key = hmac.digest(chaining_key, ikm, self.openssl_name)
        out1 = hmac.digest(temp_key, b"\x01", self.openssl_name)
        out2 = hmac.digest(temp_key, out1 + b"\x02", self.openssl_name)
        return out1, out2


BLAKE2B: Final = HashFunction("BLAKE2b", 64, hashlib.blake2b, "blake2b512")
SHA256: Final = HashFunction("SHA256", 32, hashlib.sha256, "sha256")


def protocol_name(hash_function: HashFunction) -> bytes:
    return f"Noise_XX_25519_ChaChaPoly_{hash_function.name}".encode("ascii")


def x25519_public(private: bytes) -> bytes:
    """The X25519 public key of a 32-byte private key (clamping is done by libsodium)."""
    result: bytes = nacl.bindings.crypto_scalarmult_base(private)
    return result


def _dh(private: bytes, public: bytes) -> bytes:
    """X25519 (RFC 7748 §5) refusing an all-zero result, i.e. a low-order peer key (§6.1)."""
    try:
        shared: bytes = nacl.bindings.crypto_scalarmult(private, public)
    except nacl.exceptions.CryptoError as exc:
        # libsodium itself refuses an all-zero output with an error.
        raise NoiseError() from exc
    if not any(shared):
        raise NoiseError()
    return shared


_aead_encrypt = nacl.bindings.crypto_aead_chacha20poly1305_ietf_encrypt
_aead_decrypt = nacl.bindings.crypto_aead_chacha20poly1305_ietf_decrypt
# The transport phase calls libsodium through pynacl's cffi module directly: that reads
# plaintext and ciphertext in place and writes into preallocated buffers, saving two copies
# and most of the per-call overhead of the checked wrappers, which bulk throughput needs.
_ffi = nacl._sodium.ffi
_lib = nacl._sodium.lib
_NULL: Final = _ffi.NULL
_NONCE_PAD: Final = b"\x00\x00\x00\x00"


@attrs.define(eq=False)
class CipherState:
    """A key and a 64-bit nonce (Noise spec §5.1) with ChaChaPoly (§12.3).

    With no key, encryption is the identity, as in the first handshake messages.  Key
    material never appears in reprs (they end up in logs and tracebacks).
    """

    key: bytes | None = attrs.field(default=None, repr=False)
    nonce: int = 0

    def has_key(self) -> bool:
        return self.key is not None

    def encrypt_with_ad(self, ad: bytes, plaintext: bytes) -> bytes:
        key = self.key
        if key is None:
            return plaintext
        n = self.nonce
        if n >= MAX_NONCE:
            raise NoiseError()
        self.nonce = n + 1
        # §12.3: 32 bits of zeros followed by the 64-bit little-endian nonce.
        result: bytes = _aead_encrypt(plaintext, ad, _NONCE_PAD + n.to_bytes(8, "little"), key)
        return result

    def decrypt_with_ad(self, ad: bytes, ciphertext: bytes) -> bytes:
        key = self.key
        if key is None:
            return ciphertext
        n = self.nonce
        if n >= MAX_NONCE:
            raise NoiseError()
        try:
            result: bytes = _aead_decrypt(ciphertext, ad, _NONCE_PAD + n.to_bytes(8, "little"), key)
        except nacl.exceptions.CryptoError as exc:
            # §5.1: on failure the nonce is not incremented; we end the session anyway.
            raise NoiseError() from exc
        self.nonce = n + 1
        return result

    # Transport fast paths: `out` and `src` are cffi `unsigned char *` pointers.

    def encrypt_into(self, out: Any, src: Any, size: int) -> None:
        """Write ciphertext+tag of `size` plaintext bytes at `src` to `out` (empty AD)."""
        key = self.key
        n = self.nonce
        if key is None or n >= MAX_NONCE:
            raise NoiseError()
        self.nonce = n + 1
        _lib.crypto_aead_chacha20poly1305_ietf_encrypt(
            out, _NULL, src, size, _NULL, 0, _NULL, _NONCE_PAD + n.to_bytes(8, "little"), key
        )

    def decrypt_into(self, out: Any, src: Any, size: int) -> None:
        """Verify and decrypt `size` bytes of ciphertext+tag at `src` into `out`."""
        key = self.key
        n = self.nonce
        if key is None or n >= MAX_NONCE or size < TAG_LEN:
            raise NoiseError()
        rc = _lib.crypto_aead_chacha20poly1305_ietf_decrypt(
            out, _NULL, _NULL, src, size, _NULL, 0, _NONCE_PAD + n.to_bytes(8, "little"), key
        )
        if rc != 0:
            raise NoiseError()
        self.nonce = n + 1


@attrs.define(eq=False)
class SymmetricState:
    """Chaining key, handshake hash and a cipher state (Noise spec §5.2)."""

    hash_function: HashFunction
    chaining_key: bytes = attrs.field(repr=False)
    handshake_hash: bytes
    cipher: CipherState = attrs.field(factory=CipherState)

    @classmethod
    def initialize(cls, hash_function: HashFunction, name: bytes) -> SymmetricState:
        if len(name) <= hash_function.hash_len:
            h = name.ljust(hash_function.hash_len, b"\x00")
        else:
            h = hash_function.hash(name)
        return cls(hash_function, h, h)

    def mix_key(self, ikm: bytes) -> None:
        self.chaining_key, temp_k = self.hash_function.hkdf(self.chaining_key, ikm)
        # §5.2: a 64-byte HASHLEN output is truncated to the 32-byte cipher key.
        self.cipher = CipherState(temp_k[:KEY_LEN])

    def mix_hash(self, data: bytes) -> None:
        self.handshake_hash = self.hash_function.hash(self.handshake_hash + data)

    def encrypt_and_hash(self, plaintext: bytes) -> bytes:
        ciphertext = self.cipher.encrypt_with_ad(self.handshake_hash, plaintext)
        self.mix_hash(ciphertext)
        return ciphertext

    def decrypt_and_hash(self, ciphertext: bytes) -> bytes:
        plaintext = self.cipher.decrypt_with_ad(self.handshake_hash, ciphertext)
        self.mix_hash(ciphertext)
        return plaintext

    def split(self) -> tuple[CipherState, CipherState]:
        k1, k2 = self.hash_function.hkdf(self.chaining_key, b"")
        return CipherState(k1[:KEY_LEN]), CipherState(k2[:KEY_LEN])


# --------------------------------------------------------------------------------------------
# The XX handshake state machine
# --------------------------------------------------------------------------------------------
#
# Theory of operation.
#
# XX (Noise spec §7.5) is three messages:
#
#     -> e
#     <- e, ee, s, es
#     -> s, se
#
# Both sides walk the same three phases, MESSAGE_1 .. MESSAGE_3; in each phase one role writes
# and the other reads, and the tokens processed are the same for both.  So the state of a
# handshake is just (role, phase), and everything a phase means is one row of `_XX_TABLE`:
# who writes, which tokens, and the phase that follows.  The pattern is data, not code:
# `write_message`/`read_message` look up their row, refuse to run if the row says the other
# role acts now (a LocalProtocolError: our caller drove us wrong), process the tokens, and
# move to the next phase.  After MESSAGE_3 the handshake is in TRANSPORT, where `split()`
# yields the two transport cipher states (§5.2).
#
# Any failure while processing a message -- from the peer's bytes or from our own nonce
# running out -- moves the handshake to FAILED, from which nothing leads anywhere: the
# partially mixed hash and keys are never used again, so a half-processed message can
# never leave a usable, wrong state behind.
#
# The Trustix session (`NoiseSession`, below) adds no states of its own to the handshake; in
# TRANSPORT it only tracks, per direction, whether the authenticated end-of-stream marker
# has been sent or received.


class Role(enum.Enum):
    INITIATOR = "initiator"
    RESPONDER = "responder"


class Phase(enum.Enum):
    MESSAGE_1 = 1
    MESSAGE_2 = 2
    MESSAGE_3 = 3
    TRANSPORT = 4
    FAILED = 5


@attrs.frozen
class _Step:
    writer: Role
    tokens: tuple[str, ...]
    next_phase: Phase


_XX_TABLE: Final[dict[Phase, _Step]] = {
    Phase.MESSAGE_1: _Step(Role.INITIATOR, ("e",), Phase.MESSAGE_2),
    Phase.MESSAGE_2: _Step(Role.RESPONDER, ("e", "ee", "s", "es"), Phase.MESSAGE_3),
    Phase.MESSAGE_3: _Step(Role.INITIATOR, ("s", "se"), Phase.TRANSPORT),
}


class HandshakeState:
    """The XX handshake for one role (Noise spec §5.3), driven by plain bytes.

    `static_private` and `ephemeral_private` are 32-byte X25519 private keys; the ephemeral
    one is a parameter (never drawn here) so that test vectors replay exactly.  Callers must
    use a fresh random ephemeral key for every handshake.
    """

    def __init__(
        self,
        role: Role,
        *,
        static_private: bytes,
        ephemeral_private: bytes,
        prologue: bytes = PROLOGUE,
        hash_function: HashFunction = BLAKE2B,
    ) -> None:
        if len(static_private) != DH_LEN or len(ephemeral_private) != DH_LEN:
            raise LocalProtocolError("X25519 private keys must be 32 bytes")
        self.role = role
        self.phase = Phase.MESSAGE_1
        self._symmetric = SymmetricState.initialize(hash_function, protocol_name(hash_function))
        self._symmetric.mix_hash(prologue)
        self._s = static_private
        self._s_pub = x25519_public(static_private)
        self._e = ephemeral_private
        self._e_pub = x25519_public(ephemeral_private)
        self._re: bytes | None = None
        self._rs: bytes | None = None

    @property
    def local_static_public(self) -> bytes:
        return self._s_pub

    @property
    def remote_static(self) -> bytes | None:
        """The peer's X25519 static key once message 2 (initiator) or 3 (responder) is read."""
        return self._rs

    @property
    def handshake_hash(self) -> bytes:
        """h: unique to this handshake, for channel binding (Noise spec §11.2)."""
        return self._symmetric.handshake_hash

    def _step(self, writing: bool) -> _Step:
        step = _XX_TABLE.get(self.phase)
        if step is None:
            raise LocalProtocolError(f"no handshake message can be processed in {self.phase.name}")
        if (step.writer is self.role) != writing:
            verb = "write" if writing else "read"
            raise LocalProtocolError(f"{self.role.value} cannot {verb} {self.phase.name} now")
        return step

    def _dh_token(self, token: str) -> bytes:
        # ee, es, se name (initiator key, responder key); each side uses its own private half.
        initiator = self.role is Role.INITIATOR
        if token == "ee":
            private, public = self._e, self._re
        elif token == "es":
            private, public = (self._e, self._rs) if initiator else (self._s, self._re)
        else:  # se
            private, public = (self._s, self._re) if initiator else (self._e, self._rs)
        if public is None:
            raise LocalProtocolError(f"remote key needed for {token} is missing")
        return _dh(private, public)

    def write_message(self, payload: bytes) -> bytes:
        step = self._step(writing=True)
        try:
            out = bytearray()
            sym = self._symmetric
            for token in step.tokens:
                if token == "e":
                    out += self._e_pub
                    sym.mix_hash(self._e_pub)
                elif token == "s":
                    out += sym.encrypt_and_hash(self._s_pub)
                else:
                    sym.mix_key(self._dh_token(token))
            out += sym.encrypt_and_hash(payload)
        except BaseException:
            self.phase = Phase.FAILED
            raise
        if len(out) > MAX_NOISE_MESSAGE:
            self.phase = Phase.FAILED
            raise LocalProtocolError("handshake payload too large for one Noise message")
        self.phase = step.next_phase
        return bytes(out)

    def read_message(self, message: bytes) -> bytes:
        step = self._step(writing=False)
        try:
            if len(message) > MAX_NOISE_MESSAGE:
                raise NoiseError()
            sym = self._symmetric
            pos = 0
            for token in step.tokens:
                if token == "e":
                    re = message[pos : pos + DH_LEN]
                    if len(re) != DH_LEN:
                        raise NoiseError()
                    pos += DH_LEN
                    self._re = re
                    sym.mix_hash(re)
                elif token == "s":
                    size = DH_LEN + (TAG_LEN if sym.cipher.has_key() else 0)
                    blob = message[pos : pos + size]
                    if len(blob) != size:
                        raise NoiseError()
                    pos += size
                    self._rs = sym.decrypt_and_hash(blob)
                else:
                    sym.mix_key(self._dh_token(token))
            rest = message[pos:]
            if sym.cipher.has_key() and len(rest) < TAG_LEN:
                raise NoiseError()
            payload = sym.decrypt_and_hash(rest)
        except BaseException:
            self.phase = Phase.FAILED
            raise
        self.phase = step.next_phase
        return payload

    def split(self) -> tuple[CipherState, CipherState]:
        """(send, receive) cipher states for this role; only in TRANSPORT (§5.2 Split)."""
        if self.phase is not Phase.TRANSPORT:
            raise LocalProtocolError(f"cannot split a handshake in {self.phase.name}")
        c1, c2 = self._symmetric.split()
        return (c1, c2) if self.role is Role.INITIATOR else (c2, c1)


# --------------------------------------------------------------------------------------------
# Trustix identity (DESIGN §2): payload of messages 2 and 3
# --------------------------------------------------------------------------------------------


def encode_identity_payload(public_key: PublicKey) -> bytes:
    """msgpack `[1, <32-byte Ed25519 public key>]`."""
    result: bytes = msgpack.packb([_IDENTITY_VERSION, public_key.raw], use_bin_type=True)
    return result


def check_identity_payload(
    payload: bytes, remote_static: bytes, pinned: PublicKey | None
) -> PublicKey:
    """The peer's Ed25519 key, after checking its payload against the Noise static key.

    Raises `DecodeError` for a malformed payload and `RemoteProtocolError` when the peer's
    proven X25519 static key is not the conversion of the key it claims, or when the claimed
    key is not `pinned`.
    """
    try:
        value = msgpack.unpackb(
            payload, raw=False, use_list=True, max_array_len=2, max_map_len=0, max_ext_len=0
        )
    except (ValueError, msgpack.UnpackException) as exc:
        raise DecodeError("handshake identity payload is not valid msgpack") from exc
    if (
        type(value) is not list
        or len(value) != 2
        or type(value[0]) is not int
        or type(value[1]) is not bytes
    ):
        raise DecodeError("handshake identity payload must be [version, public key]")
    if value[0] != _IDENTITY_VERSION:
        raise DecodeError(f"unsupported handshake identity version {value[0]}")
    claimed = PublicKey(value[1])
    if encode_identity_payload(claimed) != payload:
        raise DecodeError("handshake identity payload is not canonically encoded")
    if claimed.to_x25519() != remote_static:
        raise RemoteProtocolError(
            f"peer claims key {claimed.to_base64()} but its Noise static key is not that key"
        )
    if pinned is not None and claimed != pinned:
        raise RemoteProtocolError(
            f"peer is {claimed.to_base64()}, expected pinned key {pinned.to_base64()}"
        )
    return claimed


@attrs.frozen(repr=False)
class LocalIdentity:
    """Our side of the handshake: the X25519 form of the node key and our payload.

    Built once per node so that each handshake does not redo the key conversion.
    """

    public_key: PublicKey
    static_private: bytes
    payload: bytes

    @classmethod
    def from_private_key(cls, key: PrivateKey) -> LocalIdentity:
        return cls(key.public_key, key.to_x25519(), encode_identity_payload(key.public_key))

    def __repr__(self) -> str:
        return f"LocalIdentity(public_key={self.public_key.to_base64()!r})"


# --------------------------------------------------------------------------------------------
# The session: framing and transport phase
# --------------------------------------------------------------------------------------------


class NeedData(enum.Enum):
    """More bytes from the peer are needed before anything else can happen."""

    NEED_DATA = "need data"


NEED_DATA: Final = NeedData.NEED_DATA


@attrs.frozen
class HandshakeComplete:
    """The handshake finished; `peer` is the Ed25519 key the peer proved it holds."""

    peer: PublicKey
    handshake_hash: bytes


@attrs.frozen
class Data:
    """Decrypted application bytes (possibly several frames' worth, never empty)."""

    data: bytes | bytearray


@attrs.frozen
class EndOfStream:
    """The peer sent the authenticated end-of-stream marker; it will send nothing more."""


Event = HandshakeComplete | Data | EndOfStream | NeedData

_END_OF_STREAM: Final = EndOfStream()
# Decrypt at most this many bytes of frames per Data event, so one event stays bounded.
_MAX_DATA_EVENT: Final = 4 * (_LENGTH_PREFIX + MAX_NOISE_MESSAGE)


class NoiseSession:
    """One Trustix Noise connection as a bytes-in, events-out state machine.

    Wire format: every Noise message is preceded by its length as 2 bytes, big-endian.  In
    the transport phase every message carries 1..65519 bytes of application data, except
    an empty one, which is the authenticated end-of-stream marker (`send_eof`): a peer that
    merely drops the connection cannot forge a clean end.

    Use: the initiator calls `initiate()` and sends the result.  Then, repeatedly: call
    `next_event()`; on `NEED_DATA` read some bytes from the peer and pass them to
    `receive_data()`; after every event send whatever `data_to_send()` returns (the
    handshake replies).  Application data is encrypted with `send()`; `send_eof()` ends our
    direction.  `receive_data` may only be called after `next_event` returned `NEED_DATA`,
    so the buffer never holds more than one partial frame plus one read.

    Any error from the peer's bytes moves the session to FAILED and is raised as a
    `RemoteProtocolError` (`NoiseError` for cryptographic failures); afterwards every call
    raises `LocalProtocolError`.
    """

    def __init__(
        self,
        role: Role,
        identity: LocalIdentity,
        ephemeral_private: bytes,
        *,
        pinned: PublicKey | None = None,
        prologue: bytes = PROLOGUE,
    ) -> None:
        self.role = role
        self._identity = identity
        self._pinned = pinned
        self._handshake = HandshakeState(
            role,
            static_private=identity.static_private,
            ephemeral_private=ephemeral_private,
            prologue=prologue,
        )
        # Received, unconsumed bytes are self._buf[self._pos:] followed by self._more.  They
        # are never mutated, only replaced, so frames are decrypted straight out of the bytes
        # the socket returned; only a frame split across two reads is copied, once, to join
        # it (then `_buf` is that one frame and `_more` the rest of the read).
        self._buf: bytes | memoryview = b""
        self._pos = 0
        self._more: memoryview | None = None
        self._outgoing = bytearray()
        self._send: CipherState | None = None
        self._recv: CipherState | None = None
        self._failed = False
        self._eof_sent = False
        self._eof_received = False
        self.peer: PublicKey | None = None
        self.handshake_hash: bytes | None = None

    # ---- state -------------------------------------------------------------------------

    @property
    def phase(self) -> Phase:
        return Phase.FAILED if self._failed else self._handshake.phase

    @property
    def eof_sent(self) -> bool:
        return self._eof_sent

    @property
    def eof_received(self) -> bool:
        return self._eof_received

    def buffered(self) -> int:
        """Bytes received but not yet consumed (for tests of bounded buffering)."""
        more = self._more
        return len(self._buf) - self._pos + (len(more) if more is not None else 0)

    def _check_alive(self) -> None:
        if self._failed:
            raise LocalProtocolError("the Noise session has failed and cannot be used")

    def _fail(self) -> None:
        self._failed = True
        self._buf = b""
        self._pos = 0
        self._more = None
        self._send = self._recv = None

    # ---- handshake ---------------------------------------------------------------------

    def initiate(self) -> bytes:
        """The framed first handshake message (initiator only, once)."""
        self._check_alive()
        if self.role is not Role.INITIATOR or self._handshake.phase is not Phase.MESSAGE_1:
            raise LocalProtocolError("only a fresh initiator can start a handshake")
        return self._frame(self._handshake.write_message(b""))

    def _frame(self, message: bytes) -> bytes:
        return len(message).to_bytes(_LENGTH_PREFIX, "big") + message

    def _whole_frame_end(self) -> int:
        """End offset of the whole frame at `_pos`, or -1 if it has not fully arrived."""
        buf, pos = self._buf, self._pos
        if len(buf) - pos < _LENGTH_PREFIX:
            return -1
        end = pos + _LENGTH_PREFIX + ((buf[pos] << 8) | buf[pos + 1])
        return end if end <= len(buf) else -1

    def _take_frame(self) -> bytes | None:
        end = self._whole_frame_end()
        if end < 0:
            return None
        frame = bytes(self._buf[self._pos + _LENGTH_PREFIX : end])
        self._pos = end
        return frame

    def _advance(self) -> None:
        """Move on to `_more` once `_buf` is used up."""
        if self._pos >= len(self._buf) and self._more is not None:
            self._buf, self._pos, self._more = self._more, 0, None

    def _handshake_event(self, message: bytes) -> HandshakeComplete | None:
        hs = self._handshake
        payload = hs.read_message(message)
        if hs.phase is Phase.MESSAGE_2:
            # Read message 1: XX sends it in the clear, so it must carry no payload.
            if payload:
                raise RemoteProtocolError("first handshake message must have an empty payload")
            self._outgoing += self._frame(hs.write_message(self._identity.payload))
            return None
        remote_static = hs.remote_static
        assert remote_static is not None  # XX has sent s by message 2
        self.peer = check_identity_payload(payload, remote_static, self._pinned)
        if hs.phase is Phase.MESSAGE_3:
            self._outgoing += self._frame(hs.write_message(self._identity.payload))
        self._send, self._recv = hs.split()
        self.handshake_hash = hs.handshake_hash
        return HandshakeComplete(self.peer, hs.handshake_hash)

    # ---- receiving ---------------------------------------------------------------------

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Add bytes from the peer.  Allowed only after `next_event()` returned NEED_DATA."""
        self._check_alive()
        if self._more is not None or self._whole_frame_end() >= 0:
            raise LocalProtocolError("receive_data called while a whole frame is unprocessed")
        data = data if type(data) is bytes else bytes(data)
        if self._pos >= len(self._buf):
            self._buf, self._pos = data, 0
            return
        # Complete the partial frame (< 65537 bytes) from the new bytes; keep the rest as is.
        partial = bytes(self._buf[self._pos :])
        rest = memoryview(data)
        if len(partial) < _LENGTH_PREFIX:
            take = _LENGTH_PREFIX - len(partial)
            partial += rest[:take]
            rest = rest[take:]
        if len(partial) >= _LENGTH_PREFIX:
            need = _LENGTH_PREFIX + ((partial[0] << 8) | partial[1]) - len(partial)
            partial += rest[:need]
            rest = rest[need:]
        self._buf, self._pos = partial, 0
        self._more = rest if len(rest) else None

    def next_event(self) -> Event:
        """Process buffered bytes into the next event (see the class docstring)."""
        self._check_alive()
        if self.role is Role.INITIATOR and self._handshake.phase is Phase.MESSAGE_1:
            # Misuse, detected before any state changed: the session stays usable.
            raise LocalProtocolError("initiate() must be called before reading")
        try:
            return self._next_event()
        except BaseException:
            # Whatever went wrong, a half-processed frame leaves no usable state behind.
            self._fail()
            raise

    def _next_event(self) -> Event:
        self._advance()
        if self._recv is None:
            frame = self._take_frame()
            if frame is None:
                return NEED_DATA
            event = self._handshake_event(frame)
            if event is None:
                return self._next_event()
            return event
        if self._eof_received:
            if self.buffered():
                raise RemoteProtocolError("peer sent data after its end of stream")
            return _END_OF_STREAM
        return self._decrypt_frames(self._recv)

    def _decrypt_frames(self, recv: CipherState) -> Data | EndOfStream | NeedData:
        # Hot path: find the whole frames at hand (up to a bound), then decrypt them all
        # straight from the received bytes into one output buffer.
        buf, start = self._buf, self._pos
        total = len(buf)
        frames: list[tuple[int, int]] = []
        plain_size = 0
        pos = start
        eof = False
        while pos + _LENGTH_PREFIX <= total and pos - start < _MAX_DATA_EVENT:
            size = (buf[pos] << 8) | buf[pos + 1]
            end = pos + _LENGTH_PREFIX + size
            if end > total:
                break
            if size < TAG_LEN:
                raise NoiseError()
            if size == TAG_LEN:
                # An empty plaintext is the end-of-stream marker: the last frame we accept.
                eof = True
                break
            frames.append((pos + _LENGTH_PREFIX, size))
            plain_size += size - TAG_LEN
            pos = end
        out = bytearray(plain_size)
        if frames:
            src = _ffi.from_buffer("unsigned char[]", buf)
            dst = _ffi.from_buffer("unsigned char[]", out)
            offset = 0
            for frame_start, size in frames:
                recv.decrypt_into(dst + offset, src + frame_start, size)
                offset += size - TAG_LEN
        self._pos = pos
        if eof:
            # Verify the marker only after the frames before it, in nonce order.
            frame = self._take_frame()
            assert frame is not None
            recv.decrypt_with_ad(b"", frame)  # a bare tag: authenticates the marker
            self._eof_received = True
            if self.buffered():
                raise RemoteProtocolError("peer sent data after its end of stream")
        if frames:
            return Data(out)
        if eof:
            return _END_OF_STREAM
        # Nothing whole in `_buf`; by construction `_more` is then empty too.
        return NEED_DATA

    # ---- sending -----------------------------------------------------------------------

    def data_to_send(self) -> bytes:
        """Handshake bytes that must be sent to the peer now (possibly empty)."""
        out = bytes(self._outgoing)
        self._outgoing.clear()
        return out

    @staticmethod
    def sealed_size(size: int) -> int:
        """Bytes on the wire for `size` bytes of application data."""
        frames = -(-size // MAX_FRAME_PAYLOAD)
        return size + frames * (_LENGTH_PREFIX + TAG_LEN)

    def send(self, data: bytes | bytearray | memoryview) -> bytearray:
        """Encrypt application bytes into framed transport messages (empty in, empty out)."""
        out = bytearray(self.sealed_size(len(data)))
        self.send_into(out, data)
        return out

    def send_into(self, out: bytearray, data: bytes | bytearray | memoryview) -> int:
        """Like `send`, writing into `out` (at least `sealed_size(len(data))` bytes long).

        Returns the number of bytes written; lets a caller reuse one buffer for every send.
        """
        self._check_alive()
        send = self._send
        if send is None:
            raise LocalProtocolError("cannot send application data before the handshake ends")
        if self._eof_sent:
            raise LocalProtocolError("cannot send after send_eof()")
        size = len(data)
        total = self.sealed_size(size)
        if len(out) < total:
            raise LocalProtocolError(f"output buffer of {len(out)} bytes, {total} needed")
        if size == 0:
            return 0
        src = _ffi.from_buffer("unsigned char[]", data)
        dst = _ffi.from_buffer("unsigned char[]", out, require_writable=True)
        offset = 0
        try:
            for start in range(0, size, MAX_FRAME_PAYLOAD):
                chunk = min(MAX_FRAME_PAYLOAD, size - start)
                out[offset : offset + _LENGTH_PREFIX] = (chunk + TAG_LEN).to_bytes(
                    _LENGTH_PREFIX, "big"
                )
                send.encrypt_into(dst + offset + _LENGTH_PREFIX, src + start, chunk)
                offset += _LENGTH_PREFIX + chunk + TAG_LEN
        except NoiseError:
            self._fail()
            raise
        return total

    def send_eof(self) -> bytes:
        """The framed end-of-stream marker (an empty transport message); b"" if already sent."""
        self._check_alive()
        send = self._send
        if send is None:
            raise LocalProtocolError("cannot end the stream before the handshake ends")
        if self._eof_sent:
            return b""
        try:
            ciphertext = send.encrypt_with_ad(b"", b"")
        except NoiseError:
            self._fail()
            raise
        self._eof_sent = True
        return self._frame(ciphertext)
