"""RFC 9162 Merkle hashing, proofs and verification: vectors, reference cross-checks, mutations."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests import merkle_reference as ref
from trustix_p2p.core import merkle
from trustix_p2p.errors import LocalProtocolError, VerificationError

VECTORS = Path(__file__).parent / "vectors" / "merkle"
LEAVES_HEX = [
    "",
    "00",
    "10",
    "2021",
    "3031",
    "40414243",
    "5051525354555657",
    "606162636465666768696a6b6c6d6e6f",
]
VECTOR_LEAVES = [bytes.fromhex(h) for h in LEAVES_HEX]


def b64(s: str) -> bytes:
    return base64.b64decode(s)


def _cases(kind: str) -> list[Path]:
    return sorted((VECTORS / kind).rglob("*.json"))


class Tree:
    """Perfect-subtree hashes of a list of leaves, as a store would keep them."""

    def __init__(self, leaves: list[bytes]) -> None:
        self.frontier = merkle.MerkleFrontier()
        self.nodes: dict[tuple[int, int], bytes] = {}
        self.reads = 0
        for leaf in leaves:
            for level, index, h in self.frontier.append(merkle.leaf_hash(leaf)):
                self.nodes[(level, index)] = h

    def get(self, level: int, index: int) -> bytes:
        self.reads += 1
        return self.nodes[(level, index)]


@pytest.mark.parametrize("path", _cases("inclusion"), ids=lambda p: str(p.relative_to(VECTORS)))
def test_inclusion_vectors(path: Path) -> None:
    case = json.loads(path.read_text())
    args = (
        case["leafIdx"],
        case["treeSize"],
        b64(case["leafHash"]),
        [b64(p) for p in case.get("proof") or []],
        b64(case["root"]),
    )
    if case["wantErr"]:
        with pytest.raises(VerificationError):
            merkle.verify_inclusion(*args)
    else:
        merkle.verify_inclusion(*args)


@pytest.mark.parametrize("path", _cases("consistency"), ids=lambda p: str(p.relative_to(VECTORS)))
def test_consistency_vectors(path: Path) -> None:
    case = json.loads(path.read_text())
    args = (
        case["size1"],
        case["size2"],
        [b64(p) for p in case.get("proof") or []],
        b64(case["root1"]),
        b64(case["root2"]),
    )
    if case["wantErr"]:
        with pytest.raises(VerificationError):
            merkle.verify_consistency(*args)
    else:
        merkle.verify_consistency(*args)


def test_vector_happy_paths_are_what_we_generate() -> None:
    tree = Tree(VECTOR_LEAVES)
    for path in _cases("inclusion"):
        case = json.loads(path.read_text())
        if not case["wantErr"] and case["treeSize"] == 8:
            got = merkle.inclusion_proof(case["leafIdx"], 8, tree.get)
            assert got == [b64(p) for p in case["proof"]]
    for path in _cases("consistency"):
        case = json.loads(path.read_text())
        if not case["wantErr"] and case["size2"] == 8 and case["size1"] > 0:
            got = merkle.consistency_proof(case["size1"], 8, tree.get)
            assert got == [b64(p) for p in case["proof"]]


def test_empty_tree_root_is_sha256_of_nothing() -> None:
    assert merkle.root_hash(0, Tree([]).get) == merkle.EMPTY_ROOT
    assert merkle.MerkleFrontier().root() == merkle.EMPTY_ROOT


def test_proof_generation_rejects_impossible_requests() -> None:
    tree = Tree(VECTOR_LEAVES)
    with pytest.raises(LocalProtocolError):
        merkle.inclusion_proof(8, 8, tree.get)
    with pytest.raises(LocalProtocolError):
        merkle.consistency_proof(0, 8, tree.get)
    with pytest.raises(LocalProtocolError):
        merkle.consistency_proof(5, 4, tree.get)


SIZES = st.integers(min_value=1, max_value=300)


@settings(max_examples=150, deadline=None)
@given(data=st.data(), n=SIZES)
def test_roots_and_proofs_match_the_naive_reference(data: st.DataObject, n: int) -> None:
    leaves = [i.to_bytes(4, "big") for i in range(n)]
    tree = Tree(leaves)
    root = ref.mth(leaves)
    assert tree.frontier.root() == root
    assert merkle.root_hash(n, tree.get) == root
    m = data.draw(st.integers(0, n - 1))
    proof = merkle.inclusion_proof(m, n, tree.get)
    assert proof == ref.path(m, leaves)
    merkle.verify_inclusion(m, n, merkle.leaf_hash(leaves[m]), proof, root)
    old = data.draw(st.integers(1, n))
    cproof = merkle.consistency_proof(old, n, tree.get)
    assert cproof == ref.proof(old, leaves)
    merkle.verify_consistency(old, n, cproof, ref.mth(leaves[:old]), root)


def test_every_size_and_index_up_to_64_roundtrips() -> None:
    leaves = [bytes([i]) for i in range(64)]
    tree = Tree(leaves)
    roots = [ref.mth(leaves[:n]) for n in range(65)]
    for n in range(1, 65):
        for m in range(n):
            merkle.verify_inclusion(
                m, n, merkle.leaf_hash(leaves[m]), merkle.inclusion_proof(m, n, tree.get), roots[n]
            )
        for old in range(1, n + 1):
            merkle.verify_consistency(
                old, n, merkle.consistency_proof(old, n, tree.get), roots[old], roots[n]
            )


def test_proof_reads_are_logarithmic() -> None:
    n = 1000
    tree = Tree([i.to_bytes(4, "big") for i in range(n)])
    for m in (0, 1, 500, 998, 999):
        tree.reads = 0
        merkle.inclusion_proof(m, n, tree.get)
        assert tree.reads <= 2 * n.bit_length()
        tree.reads = 0
        merkle.consistency_proof(m + 1, n, tree.get)
        assert tree.reads <= 2 * n.bit_length()


@settings(max_examples=150, deadline=None)
@given(data=st.data(), n=st.integers(2, 120))
def test_any_single_mutation_of_a_proof_is_rejected(data: st.DataObject, n: int) -> None:
    leaves = [i.to_bytes(2, "big") for i in range(n)]
    tree = Tree(leaves)
    root = tree.frontier.root()
    m = data.draw(st.integers(0, n - 1))
    proof = merkle.inclusion_proof(m, n, tree.get)
    lh = merkle.leaf_hash(leaves[m])
    mutation = data.draw(st.sampled_from(["flip", "drop", "extra", "index", "leaf"]))
    index, size = m, n  # a size change alone can be legitimate: a root binds its size
    if mutation == "flip" and proof:
        i = data.draw(st.integers(0, len(proof) - 1))
        bit = data.draw(st.integers(0, 255))
        p = bytearray(proof[i])
        p[bit // 8] ^= 1 << (bit % 8)
        proof[i] = bytes(p)
    elif mutation == "drop" and proof:
        del proof[data.draw(st.integers(0, len(proof) - 1))]
    elif mutation == "extra":
        proof.insert(data.draw(st.integers(0, len(proof))), bytes(32))
    elif mutation == "index":
        index = data.draw(st.integers(0, n - 1).filter(lambda x: x != m))
    else:
        lh = merkle.leaf_hash(b"not a leaf")
    if (index, size, lh, proof) == (
        m,
        n,
        merkle.leaf_hash(leaves[m]),
        merkle.inclusion_proof(m, n, tree.get),
    ):
        return  # the mutation was a no-op (e.g. dropping from an empty proof)
    with pytest.raises(VerificationError):
        merkle.verify_inclusion(index, size, lh, proof, root)


@settings(max_examples=300, deadline=None)
@given(
    index=st.integers(0, 2**40),
    size=st.integers(1, 2**40),
    proof_len=st.integers(0, 45),
)
def test_verification_arithmetic_at_large_sizes_never_crashes(
    index: int, size: int, proof_len: int
) -> None:
    proof = [bytes([i]) * 32 for i in range(proof_len)]
    try:
        r = merkle.root_from_inclusion_proof(index, size, bytes(32), proof)
    except VerificationError:
        return
    # A well-shaped proof has exactly the RFC path length for (index, size).
    assert index < size
    assert proof_len == _path_length(index, size)
    assert len(r) == 32


def _path_length(index: int, size: int) -> int:
    length = 0
    a, b = 0, size
    while b - a > 1:
        k = 1 << ((b - a - 1).bit_length() - 1)
        if index < a + k:
            b = a + k
        else:
            a += k
        length += 1
    return length


@settings(max_examples=200, deadline=None)
@given(old=st.integers(1, 2**40), extra=st.integers(1, 2**40), plen=st.integers(0, 90))
def test_bogus_consistency_proofs_at_large_sizes_fail_only_with_verification_error(
    old: int, extra: int, plen: int
) -> None:
    with pytest.raises(VerificationError):
        merkle.verify_consistency(old, old + extra, [bytes(32)] * plen, bytes(32), bytes(32))


def test_consistency_roots_expose_an_inconsistent_history() -> None:
    honest = [bytes([i]) for i in range(10)]
    forked = [*honest[:3], b"evil", *honest[4:6]]  # a size-6 tree that rewrote leaf 3
    big = Tree(honest)
    old_root = ref.mth(forked)
    proof = merkle.consistency_proof(6, 10, big.get)
    old, new = merkle.consistency_roots(6, 10, merkle.consistency_path(6, old_root, proof))
    assert new == big.frontier.root()
    assert old != old_root
    with pytest.raises(VerificationError):
        merkle.verify_consistency(6, 10, proof, old_root, new)


def test_frontier_restores_from_stored_nodes() -> None:
    leaves = [i.to_bytes(4, "big") for i in range(77)]
    tree = Tree(leaves)
    restored = merkle.MerkleFrontier.restore(77, tree.get)
    assert restored.root() == tree.frontier.root()
    extra = merkle.leaf_hash(b"next")
    restored.append(extra)
    tree.frontier.append(extra)
    assert restored.root() == tree.frontier.root() == ref.mth([*leaves, b"next"])


@settings(max_examples=50, deadline=None)
@given(sizes=st.lists(st.integers(0, 40), max_size=6))
def test_frontier_extend_grouped_equals_repeated_append(sizes: list[int]) -> None:
    one, many = merkle.MerkleFrontier(), merkle.MerkleFrontier()
    counter = 0
    for n in sizes:
        hashes = [merkle.leaf_hash(str(counter + i).encode()) for i in range(n)]
        grouped = many.extend_grouped(hashes)
        for i, h in enumerate(hashes):
            interior = [x for x in one.append(h) if x[0] > 0]
            assert grouped[i] == b"".join(x[2] for x in interior)
            # Leaf i completes node (level, idx) exactly when i == (idx + 1) * 2**level - 1.
            assert all((idx + 1) << level == counter + i + 1 for level, idx, _ in interior)
        counter += n
        assert one.root() == many.root() and one.size == many.size


def test_an_edge_cache_gives_the_same_proofs() -> None:
    leaves = [i.to_bytes(2, "big") for i in range(77)]
    tree = Tree(leaves)
    cache: merkle.EdgeCache = {}
    for size in (5, 77, 77, 50):
        for m in range(0, size, 3):
            assert merkle.inclusion_proof(m, size, tree.get, cache) == ref.path(m, leaves[:size])
        for old in range(1, size + 1, 4):
            got = merkle.consistency_proof(old, size, tree.get, cache)
            assert got == ref.proof(old, leaves[:size])
    assert cache


def test_a_sibling_getter_serves_the_lower_path_and_gives_the_same_proofs() -> None:
    leaves = [i.to_bytes(2, "big") for i in range(80)]
    tree = Tree(leaves)
    asked: list[tuple[int, int, int]] = []

    def siblings(level: int, index: int, count: int) -> list[bytes]:
        asked.append((level, index, count))
        # Every sibling asked for must be a perfect subtree the store holds (inside the tree).
        return [tree.nodes[(level + k, (index >> k) ^ 1)] for k in range(count)]

    for size in range(1, 81):
        for m in range(size):
            assert merkle.inclusion_proof(m, size, tree.get, None, siblings) == ref.path(
                m, leaves[:size]
            )
        for old in range(1, size + 1):
            got = merkle.consistency_proof(old, size, tree.get, {}, siblings)
            assert got == ref.proof(old, leaves[:size])
    assert asked
    # Leaf 0 of a tree of 64: the five lowest siblings in one call; the sixth, the subtree
    # holding the last leaf (which might have been incomplete), from get_node.
    asked.clear()
    tree.reads = 0
    merkle.inclusion_proof(0, 64, tree.get, None, siblings)
    assert asked == [(0, 0, 5)] and tree.reads == 1


def test_siblings_of_asks_the_node_getter_for_each_sibling() -> None:
    tree = Tree([i.to_bytes(2, "big") for i in range(16)])
    got = merkle.siblings_of(tree.get)(0, 5, 3)
    assert got == [tree.nodes[(0, 4)], tree.nodes[(1, 3)], tree.nodes[(2, 0)]]
    assert tree.reads == 3
