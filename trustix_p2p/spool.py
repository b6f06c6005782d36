"""The durable hand-over folder between the Nix post-build hook and the node.

When the node is down or slow, the hook writes the leaves it could not hand over into one spool
file and exits; the node ingests spool files when it starts and while it runs.  A spool file is
a msgpack array of leaf bytes.  It is written under a dot-name, fsynced, renamed into place and
the folder fsynced, so a reader never sees a half-written file and a written one survives a
crash.  The node deletes a file only after the leaves in it are durably in the log; submission is
idempotent, so a file ingested twice (crash between the two steps) is still logged once.

Whatever else lands in the folder, by a local user's doing or by mistake, must not crash,
freeze or exhaust the node, nor block its start-up.  So the reader is strict:

* `pending_spool_files` only lists names (complete `*.spool` names not starting with '.'); it
  never stats or opens an entry.  A missing folder is an empty spool; a folder that is not a
  directory or cannot be listed raises `SpoolFileUnusable` naming it.
* `read_spool` accepts only a regular file owned by our effective uid (or by root, as whose
  post-build hook writes them). It never follows a symbolic link (`O_NOFOLLOW`), never blocks on a
  FIFO (`O_NONBLOCK`, and a FIFO is refused before anything is read), never opens a device,
  refuses directories and sockets, and checks the very descriptor it reads (`fstat`). Anything
  else raises `SpoolFileUnusable` with a one-line reason; a file that vanished raises
  `SpoolFileVanished`, which a caller may ignore quietly (another ingester, or the operator, took
  it). A file over `MAX_SPOOL_FILE` bytes is refused before it is read, and at most
  `MAX_SPOOL_FILE + 1` bytes are ever read, so a file that grows while read cannot exhaust memory
  (`DecodeError`).
* The content must be exactly one msgpack array of at most `MAX_SPOOL_LEAVES` byte strings,
  each at most `MAX_ENTRY_BYTES` long, and nothing after it.  The type of each element is
  checked before it is decoded, so no string, map, extension or nested container is ever
  built (a file of millions of nested empty arrays costs nothing), and msgpack's `max_*_len`
  limits refuse any oversized length before it is allocated.  Malformed content raises
  `DecodeError`.
* `reject_spool` moves a refused entry, whatever its kind, into `rejected/` with `rename`
  (which never follows a symbolic link and works for FIFOs and directories alike), without
  overwriting an earlier rejected file of the same name.  When that is impossible (`rejected`
  is not a directory we own, or the rename fails) it changes nothing and returns None, so the
  caller skips the entry.

This module never interprets the leaves; the node validates them like any other submission.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
import time
from collections.abc import Sequence
from pathlib import Path

import msgpack

from trustix_p2p.core.lean.entry import MAX_ENTRY_BYTES
from trustix_p2p.errors import DecodeError

SPOOL_SUFFIX = ".spool"
MAX_SPOOL_FILE = 64 << 20
MAX_SPOOL_LEAVES = 100_000
REJECTED_DIR = "rejected"

# msgpack type bytes of a byte string (bin 8/16/32): the only thing a leaf may be.
_BIN_TYPES = frozenset({0xC4, 0xC5, 0xC6})
_READ_SIZE = 64 << 10
# Enough for the largest leaf plus a read chunk: the decoder never buffers more than this.
_MAX_DECODE_BUFFER = MAX_ENTRY_BYTES + 16 + 2 * _READ_SIZE
_MAX_REJECT_SUFFIX = 1000


class SpoolFileUnusable(DecodeError):
    """A spool entry (or the spool folder) is not a readable regular file (folder) we own.

    `reason` says why in one line; `path` is the entry (or folder) concerned.
    """

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{_show(path)}: {reason}")
        self.path = path
        self.reason = reason


class SpoolFileVanished(SpoolFileUnusable):
    """The spool entry disappeared before it could be read (nothing to reject)."""


def _show(path: Path) -> str:
    """`path` for a one-line message: a crafted name cannot break a log line."""
    return repr(str(path))


def write_spool(spool_dir: Path, leaves: Sequence[bytes]) -> Path:
    """Durably write `leaves` as one new spool file; returns its path."""
    spool_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    name = f"{time.time_ns():020d}-{os.getpid()}-{secrets.token_hex(4)}{SPOOL_SUFFIX}"
    tmp = spool_dir / f".{name}.tmp"
    final = spool_dir / name
    data = msgpack.packb(list(leaves), use_bin_type=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, final)
    dfd = os.open(spool_dir, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
    return final


def pending_spool_files(spool_dir: Path) -> list[Path]:
    """Complete spool files, oldest first (names start with a nanosecond timestamp).

    Only names are looked at, never the entries.  A missing folder means no files;
    SpoolFileUnusable if `spool_dir` is not a directory or cannot be listed.
    """
    try:
        names = os.listdir(spool_dir)
    except FileNotFoundError:
        return []
    except NotADirectoryError as exc:
        raise SpoolFileUnusable(spool_dir, "spool directory is not a directory") from exc
    except OSError as exc:
        raise SpoolFileUnusable(
            spool_dir, f"cannot list spool directory: {_strerror(exc)}"
        ) from exc
    return sorted(
        spool_dir / n for n in names if n.endswith(SPOOL_SUFFIX) and not n.startswith(".")
    )


def read_spool(path: Path) -> list[bytes]:
    """The leaves in one spool file.

    SpoolFileVanished if it no longer exists; SpoolFileUnusable if it is not a readable
    regular file owned by us (symbolic link, FIFO, directory, device, socket, another owner,
    permission or I/O error); DecodeError if it is larger than MAX_SPOOL_FILE bytes or its
    content is not one msgpack array of at most MAX_SPOOL_LEAVES byte strings of at most
    MAX_ENTRY_BYTES each.
    Never blocks and never reads more than MAX_SPOOL_FILE + 1 bytes.
    """
    data = _read_bounded(path)
    return _decode(path, data)


def _strerror(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def _kind(mode: int) -> str | None:
    """Why an entry of this mode is refused, or None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISLNK(mode):
        return "is a symbolic link (never followed)"
    if stat.S_ISDIR(mode):
        return "is a directory, not a regular file"
    if stat.S_ISFIFO(mode):
        return "is a FIFO, not a regular file"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "is a device, not a regular file"
    if stat.S_ISSOCK(mode):
        return "is a socket, not a regular file"
    return "is not a regular file"


def _check(path: Path, st: os.stat_result) -> None:
    kind = _kind(st.st_mode)
    if kind is not None:
        raise SpoolFileUnusable(path, kind)
    # Root's files are accepted too: the post-build hook runs as the Nix daemon's user, normally
    # root, and root could write to the node's log anyway.
    if st.st_uid not in (os.geteuid(), 0):
        raise SpoolFileUnusable(
            path, f"is owned by uid {st.st_uid}, not by us (uid {os.geteuid()}) or root"
        )
    if st.st_size > MAX_SPOOL_FILE:
        raise DecodeError(f"spool file {_show(path)} is larger than {MAX_SPOOL_FILE} bytes")


def _unusable(path: Path, exc: OSError) -> SpoolFileUnusable:
    if isinstance(exc, FileNotFoundError):
        return SpoolFileVanished(path, "vanished before it could be read")
    if exc.errno == errno.ELOOP:
        return SpoolFileUnusable(path, "is a symbolic link (never followed)")
    return SpoolFileUnusable(path, f"cannot be read: {_strerror(exc)}")


def _read_bounded(path: Path) -> memoryview:
    """The bytes of `path` if it is a regular file we own, read through one checked fd."""
    # A cheap look first, so a device node is never even opened (opening one can act on it);
    # the fstat below is what counts, on the very file that is read.
    try:
        _check(path, os.lstat(path))
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise _unusable(path, exc) from exc
    try:
        st = os.fstat(fd)
        _check(path, st)
        # One spare byte tells a file that grew past its size; grow up to MAX_SPOOL_FILE + 1.
        buf = bytearray(st.st_size + 1)
        got = 0
        while True:
            if got == len(buf):
                if got > MAX_SPOOL_FILE:
                    raise DecodeError(
                        f"spool file {_show(path)} grew larger than {MAX_SPOOL_FILE} bytes"
                    )
                buf.extend(bytes(min(len(buf), MAX_SPOOL_FILE + 1 - len(buf))))
            with memoryview(buf) as view:
                n = os.readv(fd, [view[got:]])
            if n == 0:
                break
            got += n
    except OSError as exc:
        raise _unusable(path, exc) from exc
    finally:
        os.close(fd)
    return memoryview(buf)[:got]


class _ViewReader:
    """A read-only file over a memoryview, so the decoder buffers chunks, not a whole copy."""

    def __init__(self, data: memoryview) -> None:
        self._data = data
        self._pos = 0

    def read(self, n: int = -1) -> bytes:
        end = len(self._data) if n < 0 else min(len(self._data), self._pos + n)
        chunk = bytes(self._data[self._pos : end])
        self._pos = end
        return chunk


def _decode(path: Path, data: memoryview) -> list[bytes]:
    where = _show(path)
    unpacker = msgpack.Unpacker(
        _ViewReader(data),
        raw=False,
        use_list=True,
        strict_map_key=True,
        read_size=_READ_SIZE,
        max_buffer_size=_MAX_DECODE_BUFFER,
        max_array_len=MAX_SPOOL_LEAVES,
        max_bin_len=MAX_ENTRY_BYTES,
        max_str_len=0,
        max_map_len=0,
        max_ext_len=0,
    )
    try:
        count = unpacker.read_array_header()
        if count > MAX_SPOOL_LEAVES:
            raise DecodeError(f"spool file {where} has {count} leaves, over {MAX_SPOOL_LEAVES}")
        leaves: list[bytes] = []
        for i in range(count):
            offset = unpacker.tell()
            if offset >= len(data):
                raise DecodeError(f"spool file {where} is truncated at leaf {i}")
            # Look at the type before decoding, so no container or string is ever built.
            if data[offset] not in _BIN_TYPES:
                raise DecodeError(f"spool file {where}: leaf {i} is not a byte string")
            leaf = unpacker.unpack()
            if not isinstance(leaf, bytes):  # pragma: no cover - the type byte says bin
                raise DecodeError(f"spool file {where}: leaf {i} is not a byte string")
            leaves.append(leaf)
    except (ValueError, msgpack.UnpackException) as exc:
        raise DecodeError(f"spool file {where} is not a msgpack array of leaves: {exc}") from exc
    if unpacker.tell() != len(data):
        raise DecodeError(f"spool file {where} has extra data after its leaves")
    return leaves


def remove_spool(path: Path) -> None:
    """Delete an ingested spool file (the caller has made its leaves durable)."""
    path.unlink(missing_ok=True)


def reject_spool(path: Path) -> Path | None:
    """Move a refused spool entry aside into `rejected/`, for the operator to inspect.

    Works for any kind of entry (regular file, symbolic link, FIFO, directory, ...): it is
    renamed, never opened or followed.  An earlier rejected entry of the same name is kept
    (the new one gets a numeric suffix).  Returns the new path, or None, having changed
    nothing, if `rejected` is not a directory we own, cannot be created, or the rename fails.
    """
    target_dir = path.parent / REJECTED_DIR
    created = False
    try:
        try:
            st = os.lstat(target_dir)
        except FileNotFoundError:
            with contextlib.suppress(FileExistsError):
                os.mkdir(target_dir, 0o700)
                created = True
            st = os.lstat(target_dir)
    except OSError:
        return None
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
        return None
    target = _free_name(target_dir, path.name)
    if target is not None:
        try:
            os.rename(path, target)
        except OSError:
            target = None
    if target is None and created:
        with contextlib.suppress(OSError):
            os.rmdir(target_dir)
    return target


def _free_name(target_dir: Path, name: str) -> Path | None:
    """A name in `target_dir` that nothing has yet: `name`, else `name.1`, `name.2`, ..."""
    for n in range(_MAX_REJECT_SUFFIX):
        target = target_dir / (name if n == 0 else f"{name}.{n}")
        try:
            os.lstat(target)
        except FileNotFoundError:
            return target
        except OSError:
            return None
    return None
