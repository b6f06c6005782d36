"""The pure NAR framing and reference serialiser against vectors produced by Nix 2.8."""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import struct
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trustix_p2p.core import nix32
from trustix_p2p.core.nar import (
    NarDirectory,
    NarHasher,
    NarNode,
    NarRegular,
    NarSymlink,
    check_entry_name,
    frame,
    padding,
    serialise_tree,
)
from trustix_p2p.errors import LocalProtocolError

VECTORS = json.loads((Path(__file__).parent / "vectors" / "nar.json").read_text())


def tree_from_vector(node: dict[str, Any]) -> NarNode:
    kind = node["type"]
    if kind == "regular":
        return NarRegular(base64.b64decode(node["contents_b64"]), node["executable"])
    if kind == "symlink":
        return NarSymlink(node["target"].encode())
    assert kind == "directory"
    return NarDirectory(
        {name.encode(): tree_from_vector(child) for name, child in node["entries"].items()}
    )


def nar_of(tree: NarNode) -> bytes:
    return b"".join(serialise_tree(tree))


@pytest.mark.parametrize("case", VECTORS["cases"], ids=lambda c: c["name"])
def test_reference_serialiser_matches_nix_vectors(case: dict[str, Any]) -> None:
    nar = nar_of(tree_from_vector(case["tree"]))
    assert len(nar) == case["nar_size"]
    assert nix32.encode(hashlib.sha256(nar).digest()) == case["nar_sha256_nix32"]


def test_nix32_of_vector_abc() -> None:
    assert nix32.encode(hashlib.sha256(b"abc").digest()) == VECTORS["nix32_of_sha256_abc"]


def test_regular_file_nar_is_exactly_nix_layout() -> None:
    # Written out token by token from Nix's archive.cc, independent of the module's constants.
    def s(b: bytes) -> bytes:
        return struct.pack("<Q", len(b)) + b + b"\0" * ((8 - len(b) % 8) % 8)

    expected = b"".join(
        s(t) for t in (b"nix-archive-1", b"(", b"type", b"regular", b"executable", b"")
    ) + b"".join(s(t) for t in (b"contents", b"hello\n", b")"))
    assert nar_of(NarRegular(b"hello\n", executable=True)) == expected


def test_frame_pads_to_eight_bytes() -> None:
    for n in range(0, 20):
        framed = frame(b"x" * n)
        assert len(framed) % 8 == 0
        assert framed[:8] == struct.pack("<Q", n)
        assert framed[8 + n :] == b"\0" * len(padding(n))


def test_directory_entries_are_sorted_by_raw_bytes() -> None:
    names = [b"b", b"B", b"a", "\u00e9".encode(), b"a0", b"_"]
    nar = nar_of(NarDirectory({n: NarRegular(b"") for n in names}))
    positions = [nar.index(frame(n)) for n in sorted(names)]
    assert positions == sorted(positions)


@pytest.mark.parametrize("name", [b"", b".", b"..", b"a/b", b"a\0b"])
def test_illegal_entry_names_are_refused(name: bytes) -> None:
    with pytest.raises(LocalProtocolError):
        check_entry_name(name)
    with pytest.raises(LocalProtocolError):
        nar_of(NarDirectory({name: NarRegular(b"")}))


@pytest.mark.parametrize("target", [b"", b"a\0b"])
def test_illegal_symlink_targets_are_refused(target: bytes) -> None:
    with pytest.raises(LocalProtocolError):
        nar_of(NarSymlink(target))


@settings(max_examples=50, deadline=None)
@given(st.binary(max_size=2000), st.lists(st.integers(0, 2000), max_size=6))
def test_hasher_result_does_not_depend_on_chunking(data: bytes, cuts: list[int]) -> None:
    hasher = NarHasher()
    bounds = [0, *sorted(c for c in cuts if c <= len(data)), len(data)]
    for lo, hi in itertools.pairwise(bounds):
        hasher.update(memoryview(data)[lo:hi])
    result = hasher.result()
    assert result.size == len(data)
    assert result.sha256 == hashlib.sha256(data).digest()
    assert result.nix32() == "sha256:" + nix32.encode(hashlib.sha256(data).digest())
