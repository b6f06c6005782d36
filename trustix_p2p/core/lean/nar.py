"""NAR framing: the exact bytes Nix writes around names, contents and nodes of a file tree.

The grammar is in `trustix_p2p.core.nar` (Dolstra's thesis §5.2.1, `src/libutil/archive.cc`):
every token is a NAR string, `u64 little-endian length, bytes, zero padding to 8`.  This module
holds those building blocks as functions and precomputed constants, and the rules on names and
symlink targets; `trustix_p2p.core.nar` re-exports them next to its hasher and reference
serialiser, and `trustix_p2p.nix.nardump` builds its fast filesystem walk from them.

Lean layer (see `trustix_p2p.core.lean`): pure (no I/O, no clock), no attrs, no `typing` at
run time.
"""

from __future__ import annotations

import struct

from trustix_p2p.errors import LocalProtocolError

__all__ = [
    "DIRECTORY_PREFIX",
    "ENTRY_CLOSE",
    "ENTRY_OPEN",
    "EXECUTABLE_PREFIX",
    "NAR_MAGIC",
    "NODE_CLOSE",
    "NODE_OPEN",
    "REGULAR_PREFIX",
    "SYMLINK_PREFIX",
    "check_entry_name",
    "check_symlink_target",
    "entry_prefix",
    "frame",
    "padding",
    "regular_prefix",
    "symlink_node",
]

_U64 = struct.Struct("<Q")
_ZEROS = bytes(8)


def padding(length: int) -> bytes:
    """The zero bytes that pad a string of `length` bytes to a multiple of 8."""
    return _ZEROS[: (-length) & 7]


def frame(data: bytes) -> bytes:
    """One NAR string: u64 little-endian length, the bytes, zero padding to 8."""
    return _U64.pack(len(data)) + data + _ZEROS[: (-len(data)) & 7]


#: "nix-archive-1" then the opening of the root node up to its type.
NAR_MAGIC = frame(b"nix-archive-1") + frame(b"(") + frame(b"type")
#: A regular file's node after its "type", up to the length of its contents: without and
#: with the executable marker.
REGULAR_PREFIX = frame(b"regular") + frame(b"contents")
EXECUTABLE_PREFIX = frame(b"regular") + frame(b"executable") + frame(b"") + frame(b"contents")
#: A symlink node up to (excluding) its framed target.
SYMLINK_PREFIX = frame(b"symlink") + frame(b"target")
#: A directory node's type; entries follow, then NODE_CLOSE.
DIRECTORY_PREFIX = frame(b"directory")
#: Closes any node; closing a directory entry is NODE_CLOSE for the child then ENTRY_CLOSE.
NODE_CLOSE = frame(b")")
ENTRY_CLOSE = frame(b")")
#: A directory entry up to its framed name, and from after the name up to the child's type.
ENTRY_OPEN = frame(b"entry") + frame(b"(") + frame(b"name")
NODE_OPEN = frame(b"node") + frame(b"(") + frame(b"type")


def regular_prefix(executable: bool, size: int) -> bytes:
    """The bytes of a regular-file node (after its "type") up to its contents."""
    return (EXECUTABLE_PREFIX if executable else REGULAR_PREFIX) + _U64.pack(size)


def symlink_node(target: bytes) -> bytes:
    """A whole symlink node after its "type", including its closing parenthesis."""
    return SYMLINK_PREFIX + frame(target) + NODE_CLOSE


def entry_prefix(name: bytes) -> bytes:
    """Opens a directory entry called `name`, up to the child's type string."""
    return ENTRY_OPEN + frame(name) + NODE_OPEN


def check_entry_name(name: bytes) -> None:
    """Refuse a directory entry name that Nix itself would refuse to serialise or restore."""
    if name in (b"", b".", b"..") or b"/" in name or b"\0" in name:
        raise LocalProtocolError(f"NAR entry name {name!r} is not allowed")


def check_symlink_target(target: bytes) -> None:
    """Refuse a symlink target no file system can hold: empty, or with a NUL byte."""
    if not target or b"\0" in target:
        raise LocalProtocolError("NAR symlink target must be non-empty and contain no NUL")
