"""The cache proxy's commands: `trustix-p2p nix-keygen NAME FILE` (and later `cache-proxy`).

The proxy signs every narinfo it serves with a Nix signing key of its own; Nix accepts the
narinfo only if the key's public half is in `trusted-public-keys`.  `nix-keygen` writes that
key in Nix's own format, `NAME:base64(64-byte secret key)` with no newline, exactly what
`nix-store --generate-binary-cache-key` writes, so the file also works with `nix store sign
--key-file`; it is created 0600 and never overwrites a file.  It prints the public half,
`NAME:base64(32 bytes)`, for nix.conf.  Nix matches signatures by key name, so keep the name
stable (notes §5.8).

The file helpers (`write_nix_key_file`, `load_nix_key_file`) are here for the `cache-proxy`
command too; like node key files (DESIGN §2), a key file others may read is refused.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import stat

from trustix_p2p.core.keys import SEED_SIZE
from trustix_p2p.core.narinfo import NixSigningKey
from trustix_p2p.errors import DecodeError, KeyFileError, LocalProtocolError

__all__ = ["load_nix_key_file", "register", "write_nix_key_file"]

# Nix's longest key file is a name plus 88 base64 characters; anything far larger is not one.
_MAX_KEY_FILE = 4096


def write_nix_key_file(path: str | os.PathLike[str], key: NixSigningKey) -> None:
    """Create `path` (mode 0600, must not exist) holding `key` in Nix's format, durably."""
    name = os.fspath(path)
    try:
        fd = os.open(name, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, 0o600)
    except FileExistsError as exc:
        raise KeyFileError(f"key file {name} already exists; refusing to overwrite it") from exc
    except OSError as exc:
        raise KeyFileError(f"cannot create key file {name}: {exc.strerror}") from exc
    try:
        os.fchmod(fd, 0o600)  # the umask may only have removed bits; make it exactly 0600
        view = memoryview(key.render().encode("ascii"))
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except OSError as exc:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(name)  # a half-written key would only be refused later
        raise KeyFileError(f"cannot write key file {name}: {exc.strerror}") from exc
    os.close(fd)


def load_nix_key_file(path: str | os.PathLike[str]) -> NixSigningKey:
    """Read a Nix signing key file, refusing one that group or others may read or write."""
    name = os.fspath(path)
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise KeyFileError(f"cannot open Nix key file {name}: {exc.strerror}") from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise KeyFileError(f"Nix key file {name} is not a regular file")
        if info.st_mode & 0o077:
            raise KeyFileError(
                f"Nix key file {name} is accessible by group or others "
                f"(mode {stat.S_IMODE(info.st_mode):04o}); run: chmod 600 {name}"
            )
        data = os.read(fd, _MAX_KEY_FILE + 1)
    finally:
        os.close(fd)
    if len(data) > _MAX_KEY_FILE:
        raise KeyFileError(f"Nix key file {name} is too large to be a key")
    try:
        return NixSigningKey.parse(data.decode("ascii"))
    except (UnicodeDecodeError, DecodeError) as exc:
        raise KeyFileError(f"Nix key file {name} is malformed: {exc}") from exc


def _nix_keygen(args: argparse.Namespace) -> int:
    try:
        key = NixSigningKey.from_seed(args.name, os.urandom(SEED_SIZE))
    except LocalProtocolError as exc:
        raise KeyFileError(f"key name {args.name!r}: {exc}") from exc
    write_nix_key_file(args.file, key)
    print(key.public)
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add this module's commands (tests/test_cli_dispatch.py holds them to `_COMMAND_MODULES`)."""
    _register_nix_keygen(subparsers)


def _register_nix_keygen(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "nix-keygen",
        help="create the cache proxy's Nix signing key (mode 0600) and print its public key",
        description="Write a new Nix binary-cache signing key NAME:base64(secret) to FILE "
        "(mode 0600; never overwrites) and print the public key NAME:base64 to add to "
        "nix.conf trusted-public-keys.",
    )
    p.add_argument("name", metavar="NAME", help="key name, e.g. trustix-proxy-1 (keep it stable)")
    p.add_argument("file", metavar="FILE", help="path of the secret key file to create")
    p.set_defaults(func=_nix_keygen)
