"""The Nix ARchive (NAR) format: framing, a reference serialiser and a streaming hasher.

A NAR is Nix's canonical serialisation of a file tree, and its SHA-256 is the "NAR hash" that
builders log and that narinfo files and `nix path-info` report.  The grammar (Dolstra's thesis
§5.2.1, and `src/libutil/archive.cc` in Nix) is:

    nar       = str("nix-archive-1") node
    node      = str("(") str("type") body str(")")
    body      = str("regular") [str("executable") str("")] str("contents") str(<file bytes>)
              | str("symlink") str("target") str(<target bytes>)
              | str("directory") { str("entry") str("(") str("name") str(<name>)
                                    str("node") node str(")") }
    str(s)    = <len(s) as u64 little-endian> s <zero bytes up to a multiple of 8>

Directory entries appear sorted by the raw bytes of their names; a name is never empty, ".",
"..", and never contains "/" or NUL.  Nothing else of a file survives: no times, owners or
permission bits other than "some execute bit is set".

This module is pure: it never touches the filesystem, the clock or randomness.  It gives the
byte-level building blocks and the rules on names and symlink targets (`frame`,
`regular_prefix`, `check_entry_name`, ..., written once in `trustix_p2p.core.lean.nar`, which
the post-build hook loads, and re-exported here), a small reference serialiser of
in-memory trees (`NarRegular`, `NarSymlink`, `NarDirectory`) that tests use to cross-check the
fast filesystem walker in `trustix_p2p.nix.nardump`, and `NarHasher`, which hashes and counts a
NAR in one pass, so a proxy can check NAR bytes streamed from elsewhere.  It must never hold a
whole NAR in memory on behalf of a caller.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from typing import TypeAlias

import attrs

from trustix_p2p.core import nix32
from trustix_p2p.core.lean.nar import (
    DIRECTORY_PREFIX,
    ENTRY_CLOSE,
    NAR_MAGIC,
    NODE_CLOSE,
    SYMLINK_PREFIX,
    check_entry_name,
    check_symlink_target,
    entry_prefix,
    frame,
    padding,
    regular_prefix,
    symlink_node,
)

__all__ = [
    "DIRECTORY_PREFIX",
    "ENTRY_CLOSE",
    "NAR_MAGIC",
    "NODE_CLOSE",
    "SYMLINK_PREFIX",
    "NarDirectory",
    "NarHash",
    "NarHasher",
    "NarNode",
    "NarRegular",
    "NarSymlink",
    "check_entry_name",
    "check_symlink_target",
    "entry_prefix",
    "frame",
    "padding",
    "regular_prefix",
    "serialise_tree",
    "symlink_node",
]


@attrs.frozen
class NarHash:
    """A NAR's SHA-256 digest (32 raw bytes) and its length in bytes."""

    sha256: bytes
    size: int

    def nix32(self) -> str:
        """`sha256:<nix32>` as `nix-hash --type sha256 --base32` and narinfo files write it."""
        return "sha256:" + nix32.encode(self.sha256)


class NarHasher:
    """Hashes and counts NAR bytes in one pass; feed it chunks in order.

    Not an attrs class: it carries mutable hash state with identity, not a value.
    """

    __slots__ = ("_hash", "_size")

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self._size = 0

    def update(self, chunk: bytes | bytearray | memoryview) -> None:
        self._hash.update(chunk)
        self._size += len(chunk)

    def result(self) -> NarHash:
        return NarHash(self._hash.digest(), self._size)


# --- A reference serialiser of in-memory trees -------------------------------------------
# Deliberately naive: one node at a time, no buffering.  Tests use it to build expected NARs
# for the vectors and to cross-check the fast walker on generated trees.


@attrs.frozen
class NarRegular:
    contents: bytes
    executable: bool = False


@attrs.frozen
class NarSymlink:
    target: bytes


@attrs.frozen
class NarDirectory:
    entries: Mapping[bytes, NarNode] = attrs.field(factory=dict)


NarNode: TypeAlias = NarRegular | NarSymlink | NarDirectory


def serialise_tree(root: NarNode) -> Iterator[bytes]:
    """Yield the NAR of an in-memory tree, chunk by chunk."""
    yield NAR_MAGIC
    yield from _serialise_node(root)


def _serialise_node(node: NarNode) -> Iterator[bytes]:
    if isinstance(node, NarRegular):
        yield regular_prefix(node.executable, len(node.contents))
        yield node.contents
        yield padding(len(node.contents))
        yield NODE_CLOSE
    elif isinstance(node, NarSymlink):
        check_symlink_target(node.target)
        yield symlink_node(node.target)
    else:
        yield DIRECTORY_PREFIX
        for name in sorted(node.entries):
            check_entry_name(name)
            yield entry_prefix(name)
            yield from _serialise_node(node.entries[name])
            yield ENTRY_CLOSE
        yield NODE_CLOSE
