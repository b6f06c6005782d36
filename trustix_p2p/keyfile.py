"""Reading and writing node key files: the file-system shell around `trustix_p2p.core.keys`.

A key file is one line of text, `trustix-p2p-ed25519:<base64 of the 32-byte seed>\\n`, and is
always created with mode 0600 and never overwritten (DESIGN §2).  Loading refuses, with one
line that names the file and the fix, a key file that is missing, not a regular file,
readable or writable by group or others, or malformed.  This module must never print or log
key material, and never weaken a file's permissions.
"""

from __future__ import annotations

import contextlib
import os
import stat

from trustix_p2p.core.b64 import b64decode_strict, b64encode
from trustix_p2p.core.keys import SEED_SIZE, PrivateKey, PublicKey
from trustix_p2p.errors import DecodeError, KeyFileError

__all__ = [
    "KEY_FILE_PREFIX",
    "format_key_file",
    "generate_key_file",
    "load_key_file",
    "load_public_key",
    "parse_key_file",
    "write_key_file",
]

KEY_FILE_PREFIX = "trustix-p2p-ed25519:"
# Longest valid content is prefix + 44 base64 chars + newline; read a little more so that an
# over-long file is reported as such rather than silently truncated.
_MAX_READ = 4096


def format_key_file(key: PrivateKey) -> bytes:
    """The exact bytes of a key file holding `key`."""
    return f"{KEY_FILE_PREFIX}{b64encode(key.seed)}\n".encode("ascii")


def parse_key_file(data: bytes, path: str = "key file") -> PrivateKey:
    """Parse key file contents, raising `KeyFileError` (naming `path`) unless well formed."""
    expected = f"expected one line '{KEY_FILE_PREFIX}<base64 of a {SEED_SIZE}-byte seed>'"
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError as exc:
        raise KeyFileError(f"key file {path} is malformed (not ASCII); {expected}") from exc
    if not text.startswith(KEY_FILE_PREFIX) or not text.endswith("\n"):
        raise KeyFileError(f"key file {path} is malformed; {expected}")
    body = text[len(KEY_FILE_PREFIX) : -1]
    try:
        seed = b64decode_strict(body, "key seed")
    except DecodeError as exc:
        raise KeyFileError(f"key file {path} is malformed ({exc}); {expected}") from exc
    if len(seed) != SEED_SIZE:
        raise KeyFileError(
            f"key file {path} holds a {len(seed)}-byte key, not {SEED_SIZE} bytes; {expected}"
        )
    return PrivateKey(seed)


def _fsync_parent(path: str) -> None:
    # The new directory entry is durable only once the directory itself is synced.
    parent = os.path.dirname(os.path.abspath(path))
    fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_key_file(path: str | os.PathLike[str], key: PrivateKey) -> None:
    """Create `path` (mode 0600, must not exist yet) holding `key`, durably."""
    name = os.fspath(path)
    try:
        fd = os.open(name, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, 0o600)
    except FileExistsError as exc:
        raise KeyFileError(
            f"key file {name} already exists; refusing to overwrite it (remove it first "
            "if you really mean to replace this node's identity)"
        ) from exc
    except OSError as exc:
        raise KeyFileError(f"cannot create key file {name}: {exc.strerror}") from exc
    try:
        # The umask may have removed bits from 0600 but never adds any; make it exactly 0600
        # so the owner can always read the key back.
        os.fchmod(fd, 0o600)
        data = format_key_file(key)
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    except OSError as exc:
        os.close(fd)
        # A partial key file would only be refused later; better not to leave one behind.
        with contextlib.suppress(OSError):
            os.unlink(name)
        raise KeyFileError(f"cannot write key file {name}: {exc.strerror}") from exc
    os.close(fd)
    try:
        _fsync_parent(name)
    except OSError as exc:
        raise KeyFileError(f"cannot sync the directory of key file {name}: {exc}") from exc


def generate_key_file(path: str | os.PathLike[str]) -> PrivateKey:
    """Generate a fresh Ed25519 key from the OS CSPRNG and write it to a new 0600 file."""
    key = PrivateKey(os.urandom(SEED_SIZE))
    write_key_file(path, key)
    return key


def load_key_file(path: str | os.PathLike[str]) -> PrivateKey:
    """Load a key file, refusing one that others may read or that is not a regular file."""
    name = os.fspath(path)
    try:
        # O_NONBLOCK so that a FIFO given by mistake is refused below instead of hanging.
        fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError as exc:
        raise KeyFileError(
            f"key file {name} does not exist; create one with: trustix-p2p keygen {name}"
        ) from exc
    except OSError as exc:
        raise KeyFileError(f"cannot open key file {name}: {exc.strerror}") from exc
    try:
        # fstat the open descriptor, not the path, so the checks apply to what we read.
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise KeyFileError(f"key file {name} is not a regular file")
        mode = stat.S_IMODE(st.st_mode)
        if mode & 0o077:
            raise KeyFileError(
                f"key file {name} has mode {mode:04o} and is accessible by group or others; "
                f"refusing to use it. Fix with: chmod 600 {name}"
            )
        chunks = []
        remaining = _MAX_READ
        while remaining > 0:
            chunk = os.read(fd, remaining)
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
    except OSError as exc:
        raise KeyFileError(f"cannot read key file {name}: {exc.strerror}") from exc
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) >= _MAX_READ:
        raise KeyFileError(f"key file {name} is malformed (too long)")
    return parse_key_file(data, name)


def load_public_key(path: str | os.PathLike[str]) -> PublicKey:
    """The public key of the private key stored in `path` (same checks as `load_key_file`)."""
    return load_key_file(path).public_key
