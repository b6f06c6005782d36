"""Serialise a file tree on disk as a NAR, and hash it, fast and in flat memory.

This is the filesystem shell around the pure framing in `trustix_p2p.core.lean.nar`: it produces
exactly the bytes of `nix-store --dump PATH`, and `hash_path` gives the SHA-256 and size that
`nix-hash --type sha256 --base32` and `nix path-info` report, in one pass.

Speed matters because the post-build hook hashes every output of every build.  Two workloads
decide the design:

* Large files: the cost is SHA-256 itself.  Contents are read with `readinto` into one reused
  1 MiB buffer and handed to the sink as memoryview slices, so no byte is copied in Python and
  hashlib (which releases the GIL) sees large updates.
* Many small files: the cost is the interpreter per entry.  The walk uses `os.scandir` on bytes
  paths (the d_type from `readdir` answers "directory? symlink?" without a syscall), sorts entries
  by raw name bytes (Nix's order), reads a small file with one `os.read`, and appends all framing
  into one bytearray that reaches the sink only every 256 KiB, so the per-entry work is a handful
  of bytes concatenations and the syscalls Nix makes too (lstat, open, read, close).

The walk is iterative, so a tree nested deeper than Python's recursion limit still works, and
memory stays bounded by the depth of the tree plus the largest directory listing.

Never follows a symlink, never writes to the tree, and refuses anything that is not a regular
file, directory or symlink (sockets, devices, FIFOs) with `LocalProtocolError`, as Nix does.
A tree that changes while it is read raises `NixStoreError` rather than producing a hash of
something that never existed.
"""

from __future__ import annotations

import hashlib
import os
import stat
import struct
from collections.abc import Callable, Iterator
from operator import attrgetter

from trustix_p2p.core.lean.nar import (
    DIRECTORY_PREFIX,
    ENTRY_CLOSE,
    ENTRY_OPEN,
    EXECUTABLE_PREFIX,
    NAR_MAGIC,
    NODE_CLOSE,
    NODE_OPEN,
    REGULAR_PREFIX,
    padding,
    regular_prefix,
    symlink_node,
)
from trustix_p2p.errors import LocalProtocolError, NixStoreError

# Not `from typing import TYPE_CHECKING`: importing typing adds milliseconds to the start of
# the post-build hook, on every build.  Type checkers treat this name as true all the same.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from trustix_p2p.core.nar import NarHash

__all__ = ["Sink", "dump_path", "hash_path", "nar_bytes", "nar_digest"]

#: Receives NAR bytes in order.  A chunk is only valid during the call: the walker reuses its
#: buffers, so a sink that keeps data must copy it (as `bytearray.extend` does).
Sink = Callable[[memoryview], object]

_FLUSH_AT = 256 * 1024  # coalesce framing and small files into chunks of about this size
_SMALL_FILE = 256 * 1024  # files up to this size are read in one os.read
_READ_CHUNK = 1024 * 1024  # large files are streamed through a buffer of this size

_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | getattr(os, "O_NOCTTY", 0)
_by_name = attrgetter("name")
_pack_u64 = struct.Struct("<Q").pack
_ZEROS = bytes(8)
_CLOSE_NODE_AND_ENTRY = NODE_CLOSE + ENTRY_CLOSE
_EXEC_BITS = stat.S_IXUSR  # Nix's archive.cc marks a file executable iff S_IXUSR is set


def hash_path(path: str | bytes | os.PathLike[str]) -> NarHash:
    """SHA-256 and size of the NAR of `path`, in one pass and flat memory."""
    # Imported here: `nar` loads attrs, which the post-build hook (it calls `nar_digest`)
    # must not pay for on every build.
    from trustix_p2p.core.nar import NarHash

    return NarHash(*nar_digest(path))


def nar_digest(path: str | bytes | os.PathLike[str]) -> tuple[bytes, int]:
    """The raw SHA-256 digest and the size of the NAR of `path` (`hash_path` without a value)."""
    sha256 = hashlib.sha256()
    size = dump_path(path, sha256.update)
    return sha256.digest(), size


def nar_bytes(path: str | bytes | os.PathLike[str]) -> bytes:
    """The whole NAR of `path` in memory; for tests and small trees only."""
    out = bytearray()
    dump_path(path, out.extend)
    return bytes(out)


def dump_path(path: str | bytes | os.PathLike[str], sink: Sink) -> int:
    """Write the NAR of `path` to `sink` in order; return the number of bytes written.

    Raises `LocalProtocolError` for a special file anywhere in the tree and `NixStoreError`
    when the tree cannot be read or changes while it is read.
    """
    root = os.fsencode(path)
    try:
        return _dump(root, sink)
    except OSError as exc:
        where = os.fsdecode(exc.filename) if exc.filename is not None else os.fsdecode(root)
        raise NixStoreError(f"cannot read {where}: {exc.strerror or exc}") from exc


def _special(path: bytes, mode: int) -> LocalProtocolError:
    kind = (
        "socket"
        if stat.S_ISSOCK(mode)
        else "FIFO"
        if stat.S_ISFIFO(mode)
        else "device"
        if stat.S_ISBLK(mode) or stat.S_ISCHR(mode)
        else "special file"
    )
    return LocalProtocolError(
        f"{os.fsdecode(path)} is a {kind}; a NAR holds only regular files, directories and symlinks"
    )


def _dump(root: bytes, sink: Sink) -> int:
    total = 0
    buf = bytearray(NAR_MAGIC)
    st = os.lstat(root)
    mode = st.st_mode
    if stat.S_ISLNK(mode):
        buf += symlink_node(os.readlink(root))
    elif stat.S_ISREG(mode):
        total += _flush(buf, sink)
        buf = bytearray()
        total += _regular(root, st.st_size, bool(mode & _EXEC_BITS), buf, sink)
        buf += NODE_CLOSE
    elif stat.S_ISDIR(mode):
        buf += DIRECTORY_PREFIX
        total += _walk(root, buf, sink)  # closes the root node and flushes
    else:
        raise _special(root, mode)
    return total + _flush(buf, sink)


def _flush(buf: bytearray, sink: Sink) -> int:
    if buf:
        with memoryview(buf) as view:
            sink(view)
    return len(buf)


def _regular(path: bytes, size: int, executable: bool, buf: bytearray, sink: Sink) -> int:
    """Append a regular file's node (without its closing parenthesis) to `buf` or the sink.

    Returns the bytes passed to the sink; whatever is left in `buf` is the caller's to flush.
    """
    buf += regular_prefix(executable, size)
    fd = os.open(path, _OPEN_FLAGS)
    try:
        if size <= _SMALL_FILE:
            buf += _read_fd(fd, path, size)
            buf += padding(size)
            return 0
        # Large file: hand over the framing so far, then stream the contents.
        sent = _flush(buf, sink)
        del buf[:]
        chunk = bytearray(_READ_CHUNK)
        view = memoryview(chunk)
        with open(fd, "rb", buffering=0, closefd=False) as stream:
            remaining = size
            while remaining:
                n = stream.readinto(view[: min(remaining, _READ_CHUNK)])
                if not n:
                    raise _changed(path)
                sink(view[:n])
                remaining -= n
        view.release()
        buf += padding(size)
        return sent + size
    finally:
        os.close(fd)


def _read_small(path: bytes, size: int) -> bytes:
    fd = os.open(path, _OPEN_FLAGS)
    try:
        return _read_fd(fd, path, size)
    finally:
        os.close(fd)


def _read_fd(fd: int, path: bytes, size: int) -> bytes:
    """Exactly `size` bytes from `fd`; a file that ends early changed under us."""
    data = os.read(fd, size)
    while len(data) < size:  # a short read is legal; only EOF means the file shrank
        more = os.read(fd, size - len(data))
        if not more:
            raise _changed(path)
        data += more
    return data


def _changed(path: bytes) -> NixStoreError:
    return NixStoreError(f"{os.fsdecode(path)} changed size while it was being hashed")


def _sorted_entries(path: bytes) -> Iterator[os.DirEntry[bytes]]:
    with os.scandir(path) as it:
        entries = sorted(it, key=_by_name)
    return iter(entries)


def _walk(top: bytes, buf: bytearray, sink: Sink) -> int:
    """Append the entries of directory `top` (already opened in `buf`) and flush as needed.

    Ends by closing `top`'s node and flushing `buf` completely: the caller must start a fresh
    buffer afterwards.  The loop body is the hot path for trees of many small files, so the
    framing of `trustix_p2p.core.lean.nar` is inlined here from its precomputed constants (and
    its padding rule written out), which the tests check byte for byte against `core.nar`.
    """
    total = 0
    pack = _pack_u64
    zeros = _ZEROS
    # Each stack frame is an iterator over one directory's sorted entries; when it runs out,
    # that directory node and the entry holding it are closed.
    stack = [_sorted_entries(top)]
    while stack:
        for entry in stack[-1]:
            name = entry.name
            buf += ENTRY_OPEN
            buf += pack(len(name))
            buf += name
            buf += zeros[: (-len(name)) & 7]
            buf += NODE_OPEN
            if entry.is_dir(follow_symlinks=False):
                buf += DIRECTORY_PREFIX
                stack.append(_sorted_entries(entry.path))
                break
            if entry.is_symlink():
                buf += symlink_node(os.readlink(entry.path))
                buf += ENTRY_CLOSE
                continue
            st = entry.stat(follow_symlinks=False)
            mode = st.st_mode
            if not stat.S_ISREG(mode):
                raise _special(entry.path, mode)
            size = st.st_size
            if size > _SMALL_FILE:
                total += _regular(entry.path, size, bool(mode & _EXEC_BITS), buf, sink)
            else:
                buf += EXECUTABLE_PREFIX if mode & _EXEC_BITS else REGULAR_PREFIX
                buf += pack(size)
                if size:
                    buf += _read_small(entry.path, size)
                    buf += zeros[: (-size) & 7]
            buf += _CLOSE_NODE_AND_ENTRY
            if len(buf) >= _FLUSH_AT:
                total += _flush(buf, sink)
                del buf[:]
        else:
            stack.pop()
            buf += NODE_CLOSE
            if stack:
                buf += ENTRY_CLOSE
            # When the stack is empty this closed `top` itself.
    total += _flush(buf, sink)
    del buf[:]
    return total
