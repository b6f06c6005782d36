"""NAR framing: the exact bytes Nix writes around names, contents and nodes of a file tree.

The grammar is in `trustix_p2p.core.nar` (Dolstra's thesis §5.2.1, `src/libutil/archive.cc`):
every token is a NAR string, `u64 little-endian length, bytes, zero padding to 8`.  This module
holds those building blocks as functions and precomputed constants; `nar` re-exports them next
to its hasher and reference serialiser, and `trustix_p2p.nix.nardump` uses them to walk a tree.

It exists apart from `nar` so the Nix post-build hook, which runs once per build and pays for
every import, can hash outputs without loading attrs.  It is pure (no I/O, no clock) and must
never import attrs or anything that does.
"""

from __future__ import annotations

import struct

from trustix_p2p.errors import LocalProtocolError

__all__ = [
    "DIRECTORY_PREFIX",
    "ENTRY_CLOSE",
    "NAR_MAGIC",
    "NODE_CLOSE",
    "SYMLINK_PREFIX",
    "check_entry_name",
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
#: Everything of a regular-file node before the content length, per executable bit.
_REGULAR = frame(b"regular")
_EXECUTABLE = frame(b"executable") + frame(b"")
_CONTENTS = frame(b"contents")
#: A symlink node up to (excluding) its framed target.
SYMLINK_PREFIX = frame(b"symlink") + frame(b"target")
#: A directory node's type; entries follow, then NODE_CLOSE.
DIRECTORY_PREFIX = frame(b"directory")
#: Closes any node; closing a directory entry is NODE_CLOSE for the child then ENTRY_CLOSE.
NODE_CLOSE = frame(b")")
ENTRY_CLOSE = frame(b")")
_ENTRY_OPEN = frame(b"entry") + frame(b"(") + frame(b"name")
_NODE_OPEN = frame(b"node") + frame(b"(") + frame(b"type")


def regular_prefix(executable: bool, size: int) -> bytes:
    """The bytes of a regular-file node (after its "type") up to its contents."""
    head = _REGULAR + _EXECUTABLE if executable else _REGULAR
    return head + _CONTENTS + _U64.pack(size)


def symlink_node(target: bytes) -> bytes:
    """A whole symlink node after its "type", including its closing parenthesis."""
    return SYMLINK_PREFIX + frame(target) + NODE_CLOSE


def entry_prefix(name: bytes) -> bytes:
    """Opens a directory entry called `name`, up to the child's type string."""
    return _ENTRY_OPEN + frame(name) + _NODE_OPEN


def check_entry_name(name: bytes) -> None:
    """Refuse a directory entry name that Nix itself would refuse to serialise or restore."""
    if name in (b"", b".", b"..") or b"/" in name or b"\0" in name:
        raise LocalProtocolError(f"NAR entry name {name!r} is not allowed")
