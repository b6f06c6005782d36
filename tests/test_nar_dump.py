"""The filesystem NAR walker: byte-identical to the reference serialiser and to Nix itself."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.nix import require_nix
from tests.test_nar import VECTORS, nar_of, tree_from_vector
from trustix_p2p.core import nix32
from trustix_p2p.core.nar import NarDirectory, NarNode, NarRegular, NarSymlink, serialise_tree
from trustix_p2p.errors import LocalProtocolError, NixStoreError
from trustix_p2p.nix import nardump
from trustix_p2p.nix.nardump import dump_path, hash_path, nar_bytes


def materialise(node: NarNode, path: bytes) -> None:
    """Create `node` on disk at `path` (bytes, so names need not be UTF-8)."""
    if isinstance(node, NarRegular):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.write(fd, node.contents)
        finally:
            os.close(fd)
        os.chmod(path, 0o755 if node.executable else 0o644)
    elif isinstance(node, NarSymlink):
        os.symlink(node.target, path)
    else:
        os.mkdir(path)
        for name, child in node.entries.items():
            materialise(child, path + b"/" + name)


def fresh(tmp_path: Path, label: str) -> bytes:
    base = tmp_path / label
    base.mkdir()
    return os.fsencode(base) + b"/root"


@pytest.mark.parametrize("case", VECTORS["cases"], ids=lambda c: c["name"])
def test_walker_matches_nix_vectors(tmp_path: Path, case: dict[str, Any]) -> None:
    tree = tree_from_vector(case["tree"])
    root = fresh(tmp_path, "t")
    materialise(tree, root)
    assert nar_bytes(root) == nar_of(tree)
    result = hash_path(root)
    assert result.size == case["nar_size"]
    assert result.nix32() == "sha256:" + case["nar_sha256_nix32"]


# Names: arbitrary UTF-8 text and arbitrary bytes, as long as a Linux filesystem accepts them.
def _legal(name: bytes) -> bool:
    return name not in (b".", b"..") and b"/" not in name and b"\0" not in name


names = st.one_of(
    st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=12).map(str.encode),
    st.binary(min_size=1, max_size=12),
).filter(lambda n: _legal(n) and len(n) <= 255)
# Symlink targets may point anywhere, including nowhere, absolute or relative.
targets = st.binary(min_size=1, max_size=60).filter(lambda t: b"\0" not in t)
leaves = st.one_of(
    st.builds(NarRegular, st.binary(max_size=200), st.booleans()),
    st.builds(NarSymlink, targets),
)
trees: st.SearchStrategy[NarNode] = st.recursive(
    leaves,
    lambda children: st.dictionaries(names, children, max_size=4).map(NarDirectory),
    max_leaves=20,
)

_HYPOTHESIS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@_HYPOTHESIS
@given(tree=trees)
def test_walker_equals_reference_on_generated_trees(tmp_path_factory: Any, tree: NarNode) -> None:
    root = os.fsencode(tmp_path_factory.mktemp("gen")) + b"/root"
    materialise(tree, root)
    expected = nar_of(tree)
    assert nar_bytes(root) == expected
    assert hash_path(root).sha256 == hashlib.sha256(expected).digest()


@pytest.mark.parametrize(
    "size",
    [
        0,
        1,
        nardump._SMALL_FILE,
        nardump._SMALL_FILE + 1,
        nardump._READ_CHUNK,
        nardump._READ_CHUNK * 2 + 3,
    ],
)
def test_sizes_around_buffer_boundaries(tmp_path: Path, size: int) -> None:
    contents = bytes(range(256)) * (size // 256) + bytes(size % 256)
    tree = NarDirectory(
        {
            b"a": NarRegular(contents, executable=True),
            b"b": NarDirectory({b"c": NarRegular(contents)}),
            b"d": NarRegular(b"tail"),
        }
    )
    root = fresh(tmp_path, "t")
    materialise(tree, root)
    assert nar_bytes(root) == nar_of(tree)
    single = fresh(tmp_path, "single")
    materialise(NarRegular(contents), single)
    assert nar_bytes(single) == nar_of(NarRegular(contents))


def test_only_the_owner_execute_bit_counts(tmp_path: Path) -> None:
    # Nix's archive.cc tests S_IXUSR alone: group/other execute bits do not make a file
    # "executable" in the NAR.
    path = tmp_path / "f"
    path.write_bytes(b"x")
    os.chmod(path, 0o655)
    assert nar_bytes(path) == nar_of(NarRegular(b"x", executable=False))
    os.chmod(path, 0o700)
    assert nar_bytes(path) == nar_of(NarRegular(b"x", executable=True))


def test_nesting_deeper_than_the_recursion_limit(tmp_path: Path) -> None:
    depth = sys.getrecursionlimit() + 50
    tree: NarNode = NarRegular(b"bottom")
    for _ in range(depth):
        tree = NarDirectory({b"d": tree})
    root = os.fsencode(tmp_path / "deep")
    path = root
    os.mkdir(path)
    try:
        for _ in range(depth - 1):  # iteratively: os.makedirs and pathlib recurse per level
            path += b"/d"
            os.mkdir(path)
        with open(path + b"/d", "wb") as f:
            f.write(b"bottom")
        hasher = hashlib.sha256()
        for chunk in _chunks(tree):
            hasher.update(chunk)
        assert hash_path(root).sha256 == hasher.digest()
    finally:
        # pytest's tmp_path cleanup (shutil.rmtree) recurses per level and would overflow.
        subprocess.run(["rm", "-rf", root], check=True)


def _chunks(tree: NarNode) -> Any:
    # serialise_tree is recursive; run it with room for this one deep tree.
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(limit * 4)
    try:
        return list(serialise_tree(tree))
    finally:
        sys.setrecursionlimit(limit)


def test_a_fifo_is_refused_at_the_root_and_inside(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(LocalProtocolError, match="FIFO"):
        hash_path(tmp_path / "fifo")
    with pytest.raises(LocalProtocolError, match="FIFO"):
        hash_path(tmp_path)


def test_a_socket_is_refused(tmp_path: Path) -> None:
    sub = tmp_path / "d"
    sub.mkdir()
    (sub / "a").write_bytes(b"ok")
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(os.fspath(sub / "sock"))
        with pytest.raises(LocalProtocolError, match="socket"):
            hash_path(tmp_path)


def test_a_device_is_refused() -> None:
    with pytest.raises(LocalProtocolError, match="device"):
        hash_path("/dev/null")


def test_a_missing_path_is_a_store_error(tmp_path: Path) -> None:
    with pytest.raises(NixStoreError, match="missing"):
        hash_path(tmp_path / "missing")


def test_a_file_that_shrinks_while_read_is_a_store_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "f").write_bytes(b"0123456789")
    real_read = os.read

    def truncated_read(fd: int, n: int) -> bytes:
        # A concurrent truncation after lstat: the file now ends after 4 bytes.
        data = real_read(fd, n)
        return data[:4] if len(data) > 4 else b""

    monkeypatch.setattr(nardump.os, "read", truncated_read)
    with pytest.raises(NixStoreError, match="changed size"):
        hash_path(tmp_path)


def test_memory_stays_flat_on_a_large_file(tmp_path: Path) -> None:
    big = tmp_path / "big"
    with big.open("wb") as f:
        f.truncate(64 * 1024 * 1024)  # sparse: cheap to create, still 64 MiB to read
    tracemalloc.start()
    try:
        result = hash_path(big)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.size == 64 * 1024 * 1024 + 112  # 112 bytes of framing, no padding
    assert peak < 4 * 1024 * 1024


def test_dump_path_reports_the_bytes_it_wrote(tmp_path: Path) -> None:
    (tmp_path / "x").write_bytes(b"abc" * 100_000)
    (tmp_path / "y").symlink_to("x")
    seen = bytearray()
    assert dump_path(tmp_path, seen.extend) == len(seen)


# --- Against the real Nix -------------------------------------------------------------------


def _nix_dump(path: bytes) -> bytes:
    return subprocess.run(["nix-store", "--dump", path], capture_output=True, check=True).stdout


def _nix_hash(path: bytes) -> str:
    out = subprocess.run(
        ["nix-hash", "--type", "sha256", "--base32", path],
        capture_output=True,
        check=True,
        text=True,
    ).stdout
    return "sha256:" + out.strip()


@pytest.mark.nix
@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(tree=trees)
def test_walker_is_byte_identical_to_nix_store_dump(tmp_path_factory: Any, tree: NarNode) -> None:
    require_nix()
    root = os.fsencode(tmp_path_factory.mktemp("nix")) + b"/root"
    materialise(tree, root)
    assert nar_bytes(root) == _nix_dump(root)
    assert hash_path(root).nix32() == _nix_hash(root)


@pytest.mark.nix
def test_walker_matches_nix_on_a_mixed_tree(tmp_path: Path) -> None:
    require_nix()
    root = tmp_path / "mixed"
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "tool").write_bytes(b"#!/bin/sh\necho hi\n")
    os.chmod(root / "bin" / "tool", 0o755)
    (root / "share" / "empty-dir").mkdir(parents=True)
    (root / "share" / "empty-file").write_bytes(b"")
    (root / "share" / "big").write_bytes(os.urandom(3 * nardump._READ_CHUNK + 5))
    (root / "lib").symlink_to("/nix/store/does-not-exist")
    (root / "caf\u00e9 \u2603").write_bytes(b"unicode name")
    raw = os.fsencode(root)
    assert nar_bytes(raw) == _nix_dump(raw)
    assert hash_path(raw).nix32() == _nix_hash(raw)
    assert nix32.decode(_nix_hash(raw)[len("sha256:") :]) == hash_path(raw).sha256
