"""Nix binary-cache metadata: narinfo files, the path-info fingerprint and Nix signing keys.

A binary cache answers `GET /<hash part>.narinfo` with a small `Key: value` text file (Nix
`src/libstore/nar-info.cc`), signed with an Ed25519 key over a *fingerprint* of the path
(`ValidPathInfo::fingerprint` in `src/libstore/path-info.cc`):

    1;<store path>;sha256:<nix32 NAR hash>;<NAR size>;<full reference paths, comma-joined>

Nix keys and signatures are all `name:base64(bytes)` (`src/libutil/signature/local-keys.cc`
in newer Nix, `crypto.cc` in 2.8): a secret key carries the 64-byte libsodium secret key
(seed then public key), a public key the 32 raw bytes, a signature the 64-byte detached
signature.  The name says which key a signature claims, so verification looks the key up by
name and a signature under an unknown name simply does not count.

`render_narinfo` writes the fields in the order Nix's `NarInfo::to_string` does, so a narinfo
that Nix wrote parses and renders back to the same bytes.  Parsing is strict about what this
project relies on (store paths, hashes, sizes, references) and, like Nix, ignores unknown keys.

This module is pure: no I/O, no clock, no randomness (a key is made from a seed passed in).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import attrs

from trustix_p2p.core.b64 import b64decode_strict, b64encode
from trustix_p2p.core.keys import SEED_SIZE, SIGNATURE_SIZE, PrivateKey, PublicKey
from trustix_p2p.core.nix32 import format_nar_hash, parse_nar_hash
from trustix_p2p.core.storepath import (
    DEFAULT_STORE_DIR,
    parse_store_path,
    validate_basename,
)
from trustix_p2p.errors import DecodeError, LocalProtocolError, VerificationError

__all__ = [
    "NarInfo",
    "NixPublicKey",
    "NixSigningKey",
    "fingerprint",
    "parse_narinfo",
    "parse_signature",
    "render_narinfo",
    "verify_any",
]

_SECRET_KEY_SIZE = 64  # libsodium crypto_sign secret key: seed || public key
MAX_NARINFO_BYTES = 1024 * 1024


def fingerprint(
    store_path: str,
    nar_hash: bytes,
    nar_size: int,
    references: Iterable[str],
    store_dir: str = DEFAULT_STORE_DIR,
) -> bytes:
    """The bytes a narinfo signature covers (Nix `ValidPathInfo::fingerprint`).

    `references` are base names or full paths; the fingerprint holds them as full paths in
    sorted order, as Nix's `printStorePathSet` does.  Nix refuses to fingerprint a path with
    a zero NAR size (its "unknown" marker); so does this.
    """
    parse_store_path(store_path, store_dir)
    if nar_size <= 0:
        raise LocalProtocolError("cannot fingerprint a path whose NAR size is unknown (0)")
    prefix = store_dir + "/"
    full: set[str] = set()
    for ref in references:
        base = ref[len(prefix) :] if ref.startswith(prefix) else ref
        full.add(prefix + validate_basename(base))
    text = f"1;{store_path};{format_nar_hash(nar_hash)};{nar_size};{','.join(sorted(full))}"
    return text.encode("ascii")


def _split_named(text: str, what: str) -> tuple[str, bytes]:
    name, sep, body = text.partition(":")
    if not sep or not name:
        raise DecodeError(f"{what} must look like 'name:base64'")
    if any(c.isspace() for c in name) or not name.isascii():
        raise DecodeError(f"{what}: key name must be ASCII without spaces")
    return name, b64decode_strict(body, what)


@attrs.frozen
class NixPublicKey:
    """A Nix public key, `name:base64(32 bytes)`, as in nix.conf `trusted-public-keys`."""

    name: str
    key: PublicKey

    @classmethod
    def parse(cls, text: str) -> NixPublicKey:
        name, raw = _split_named(text.strip(), "Nix public key")
        try:
            return cls(name, PublicKey(raw))
        except DecodeError as exc:
            raise DecodeError(f"Nix public key {name!r}: {exc}") from exc

    def __str__(self) -> str:
        return f"{self.name}:{self.key.to_base64()}"

    def verify(self, message: bytes, signature: str) -> None:
        """Check one `name:base64` signature; opaque `VerificationError` if it does not hold."""
        try:
            name, raw = parse_signature(signature)
        except DecodeError as exc:
            raise VerificationError("signature did not verify") from exc
        if name != self.name:
            raise VerificationError("signature did not verify")
        self.key.verify(message, raw)


@attrs.frozen(repr=False)
class NixSigningKey:
    """A Nix secret key, `name:base64(64 bytes)`, as `nix-store --generate-binary-cache-key`
    writes it."""

    name: str
    private: PrivateKey

    @classmethod
    def from_seed(cls, name: str, seed: bytes) -> NixSigningKey:
        """A key named `name` from a 32-byte seed the caller drew from a CSPRNG."""
        if not name or ":" in name or any(c.isspace() for c in name) or not name.isascii():
            raise LocalProtocolError("Nix key name must be non-empty ASCII without ':' or spaces")
        return cls(name, PrivateKey(seed))

    @classmethod
    def parse(cls, text: str) -> NixSigningKey:
        name, raw = _split_named(text.strip(), "Nix secret key")
        if len(raw) != _SECRET_KEY_SIZE:
            raise DecodeError(f"Nix secret key {name!r} must hold {_SECRET_KEY_SIZE} bytes")
        key = PrivateKey(raw[:SEED_SIZE])
        # The second half is the public key; a mismatch means a corrupted or forged file.
        if key.public_key.raw != raw[SEED_SIZE:]:
            raise DecodeError(f"Nix secret key {name!r}: public half does not match the seed")
        return cls(name, key)

    def render(self) -> str:
        """The secret key file's contents (keep it private)."""
        return f"{self.name}:{b64encode(self.private.seed + self.private.public_key.raw)}"

    @property
    def public(self) -> NixPublicKey:
        return NixPublicKey(self.name, self.private.public_key)

    def sign(self, message: bytes) -> str:
        """`name:base64(signature)`, the value of a narinfo `Sig:` line."""
        return f"{self.name}:{b64encode(self.private.sign(message))}"

    def __repr__(self) -> str:
        return f"NixSigningKey(public={str(self.public)!r})"


def parse_signature(text: str) -> tuple[str, bytes]:
    """Split a `name:base64` signature into its key name and 64 raw bytes."""
    name, raw = _split_named(text, "Nix signature")
    if len(raw) != SIGNATURE_SIZE:
        raise DecodeError(f"Nix signature must hold {SIGNATURE_SIZE} bytes")
    return name, raw


def verify_any(message: bytes, signatures: Iterable[str], keys: Sequence[NixPublicKey]) -> str:
    """Return the name of the first trusted key with a valid signature among `signatures`.

    Raises one opaque `VerificationError` if none verifies, whatever the reason.
    """
    by_name: Mapping[str, NixPublicKey] = {k.name: k for k in keys}
    for sig in signatures:
        name = sig.partition(":")[0]
        key = by_name.get(name)
        if key is None:
            continue
        try:
            key.verify(message, sig)
        except VerificationError:
            continue
        return name
    raise VerificationError("no signature verified")


@attrs.frozen
class NarInfo:
    """The fields of a narinfo file that this project reads or writes.

    `references` are base names in sorted order and `deriver` is a base name or "" (both as
    in the file); `nar_hash` and `file_hash` are raw SHA-256 digests.
    """

    store_path: str
    url: str
    compression: str
    nar_hash: bytes
    nar_size: int
    references: tuple[str, ...] = ()
    deriver: str = ""
    file_hash: bytes | None = None
    file_size: int | None = None
    system: str = ""
    sigs: tuple[str, ...] = ()
    ca: str = ""

    def fingerprint(self, store_dir: str = DEFAULT_STORE_DIR) -> bytes:
        return fingerprint(
            self.store_path, self.nar_hash, self.nar_size, self.references, store_dir
        )

    def signed(self, key: NixSigningKey, store_dir: str = DEFAULT_STORE_DIR) -> NarInfo:
        """This narinfo with `key`'s signature added (replacing an earlier one by that key)."""
        sig = key.sign(self.fingerprint(store_dir))
        others = tuple(s for s in self.sigs if s.partition(":")[0] != key.name)
        return attrs.evolve(self, sigs=(*others, sig))


_REQUIRED = ("StorePath", "URL", "NarHash", "NarSize")


def _parse_size(key: str, value: str) -> int:
    if not value.isascii() or not value.isdigit() or (len(value) > 1 and value[0] == "0"):
        raise DecodeError(f"narinfo {key}: {value!r} is not a decimal size")
    size = int(value)
    if size >= 2**63:
        raise DecodeError(f"narinfo {key}: {value} is too large")
    return size


def parse_narinfo(text: str, store_dir: str = DEFAULT_STORE_DIR) -> NarInfo:
    """Parse a narinfo file; raise `DecodeError` naming the field that is wrong.

    Like Nix, unknown keys are ignored and `Compression` defaults to `bzip2`; a repeated key
    other than `Sig` is refused, since two values would make the file mean two things.
    """
    if len(text) > MAX_NARINFO_BYTES:
        raise DecodeError("narinfo is too large")
    fields: dict[str, str] = {}
    sigs: list[str] = []
    for number, line in enumerate(text.split("\n"), start=1):
        if not line:
            continue
        key, sep, value = line.partition(": ")
        if not sep:
            # Nix writes "References: " with a trailing space even when empty; accept the
            # same line without it too, since some caches strip trailing whitespace.
            if line.endswith(":") and " " not in line:
                key, value = line[:-1], ""
            else:
                raise DecodeError(f"narinfo line {number} is not 'Key: value'")
        if key == "Sig":
            sigs.append(value)
            continue
        if key in fields:
            raise DecodeError(f"narinfo has more than one {key} line")
        fields[key] = value
    for key in _REQUIRED:
        if key not in fields:
            raise DecodeError(f"narinfo lacks {key}")

    store_path = fields["StorePath"]
    try:
        parse_store_path(store_path, store_dir)
        references = tuple(fields.get("References", "").split())
        for ref in references:
            validate_basename(ref)
        deriver = fields.get("Deriver", "")
        if deriver == "unknown-deriver":  # what Nix writes when it does not know
            deriver = ""
        if deriver:
            validate_basename(deriver)
        nar_hash = parse_nar_hash(fields["NarHash"])
        file_hash = parse_nar_hash(fields["FileHash"]) if "FileHash" in fields else None
    except DecodeError as exc:
        raise DecodeError(f"narinfo for {store_path!r}: {exc}") from exc
    for sig in sigs:
        parse_signature(sig)
    return NarInfo(
        store_path=store_path,
        url=fields["URL"],
        compression=fields.get("Compression", "bzip2"),
        nar_hash=nar_hash,
        nar_size=_parse_size("NarSize", fields["NarSize"]),
        references=tuple(sorted(set(references))),
        deriver=deriver,
        file_hash=file_hash,
        file_size=_parse_size("FileSize", fields["FileSize"]) if "FileSize" in fields else None,
        system=fields.get("System", ""),
        sigs=tuple(sigs),
        ca=fields.get("CA", ""),
    )


def render_narinfo(info: NarInfo) -> str:
    """The narinfo text, fields in the order of Nix's `NarInfo::to_string`."""
    for value in (info.url, info.compression, info.system, info.ca, *info.sigs):
        if "\n" in value:
            raise LocalProtocolError("narinfo values cannot contain newlines")
    lines = [
        f"StorePath: {info.store_path}",
        f"URL: {info.url}",
        f"Compression: {info.compression}",
    ]
    if info.file_hash is not None:
        lines.append(f"FileHash: {format_nar_hash(info.file_hash)}")
    if info.file_size is not None:
        lines.append(f"FileSize: {info.file_size}")
    lines.append(f"NarHash: {format_nar_hash(info.nar_hash)}")
    lines.append(f"NarSize: {info.nar_size}")
    lines.append(f"References: {' '.join(sorted(info.references))}")
    if info.deriver:
        lines.append(f"Deriver: {info.deriver}")
    if info.system:
        lines.append(f"System: {info.system}")
    lines.extend(f"Sig: {sig}" for sig in info.sigs)
    if info.ca:
        lines.append(f"CA: {info.ca}")
    return "\n".join(lines) + "\n"
