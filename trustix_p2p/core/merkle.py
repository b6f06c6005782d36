"""RFC 9162 Merkle tree hashing, proof generation and proof verification.

Everything here works on plain ints and bytes (STYLE.md, after transparency-dev/merkle): no
storage, no entries, no I/O.  Hashing is RFC 9162 §2.1.1 with SHA-256:

    leaf hash  = SHA-256(0x00 || leaf bytes)
    node hash  = SHA-256(0x01 || left || right)
    MTH({})    = SHA-256("")

Trees are addressed by *perfect subtrees*: node (level, index) is the root of the complete
subtree over leaves [index * 2**level, (index + 1) * 2**level).  Once such a subtree is complete
its hash never changes, so a store keeps exactly those and proof generation reads O(log n) of
them through a `NodeGetter` (the lower part of a path, a run of siblings, through a
`SiblingGetter` that may answer it in one read); the one incomplete right-edge subtree a proof
may need is recomputed from at most popcount(n) perfect ones.

Verification follows RFC 9162 §2.1.3.2 (inclusion) and §2.1.4.2 (consistency) literally, and
additionally the conventions of transparency-dev/merkle's test data: every hash must be exactly
32 bytes and a consistency proof from the empty tree is refused (it proves nothing).  All
verification failures raise the one opaque `VerificationError`.

This module must never read a clock, touch a file or rebuild a tree from leaves to serve a proof.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

from trustix_p2p.errors import LocalProtocolError, VerificationError

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()

# (level, index) -> hash of the perfect subtree over leaves [index << level, (index + 1) << level)
NodeGetter = Callable[[int, int], bytes]
# (level, index, count) -> the hashes of the siblings of node (level, index) at `count` heights
# upwards: node (level + k, (index >> k) ^ 1) for k = 0 .. count - 1, each a perfect subtree.
# A proof's lower siblings all have this shape, so a store that keeps neighbouring nodes
# together (storage's hash tiles) can answer them in one read; `siblings_of` is the plain form.
SiblingGetter = Callable[[int, int, int], list[bytes]]

_sha256 = hashlib.sha256


def leaf_hash(leaf: bytes) -> bytes:
    """RFC 9162 §2.1.1: the hash of one leaf's bytes, exactly as received."""
    return _sha256(b"\x00" + leaf).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 9162 §2.1.1: the hash of an interior node."""
    return _sha256(b"\x01" + left + right).digest()


def _range_hash(start: int, end: int, get_node: NodeGetter) -> bytes:
    """MTH of leaves [start, end) where `start` is a multiple of a power of two >= end - start.

    Every subtree the RFC recursion visits has that shape: it is perfect (one read), or it is a
    right-edge subtree that splits into perfect subtrees along the set bits of its width
    (popcount reads), hashed together from the right.
    """
    width = end - start
    if width & (width - 1) == 0:
        level = width.bit_length() - 1
        return get_node(level, start >> level)
    lefts: list[bytes] = []
    a = start
    for level in range(width.bit_length() - 1, -1, -1):
        if width >> level & 1:
            lefts.append(get_node(level, a >> level))
            a += 1 << level
    h = lefts.pop()
    while lefts:
        h = _sha256(b"\x01" + lefts.pop() + h).digest()
    return h


def root_hash(size: int, get_node: NodeGetter) -> bytes:
    """MTH of the first `size` leaves, from perfect-subtree hashes (popcount(size) reads)."""
    if size < 0:
        raise LocalProtocolError(f"tree size must be non-negative, got {size}")
    if size == 0:
        return EMPTY_ROOT
    return _range_hash(0, size, get_node)


EdgeCache = dict[tuple[int, int], bytes]


def siblings_of(get_node: NodeGetter) -> SiblingGetter:
    """The SiblingGetter that asks `get_node` for each sibling in turn."""

    def siblings(level: int, index: int, count: int) -> list[bytes]:
        return [get_node(level + k, (index >> k) ^ 1) for k in range(count)]

    return siblings


def _path(
    index: int,
    level: int,
    size: int,
    get_node: NodeGetter,
    siblings: SiblingGetter,
    proof: list[bytes],
    edge_cache: EdgeCache | None,
) -> None:
    """Append the siblings on the way from node (level, index) to the root of a tree of `size`.

    Split at the height `inner` where the path meets the path of the tree's last node (as in
    verification, RFC 9162 §2.1.3.2): below inner - 1 every sibling lies inside the subtree
    that holds the node and ends before the last node's, so it is a perfect subtree; at
    inner - 1 the sibling is the subtree holding the last node, possibly the tree's incomplete
    right edge (hashed from its perfect parts); above, the paths coincide and only left-hand
    siblings exist (a right-hand one would start past the end, and the RFC adds nothing).
    The incomplete right-edge subtree [start, size) never changes once the tree has `size`
    leaves, so a caller serving many proofs may keep those hashes in `edge_cache`.
    """
    last = (size - 1) >> level
    inner = (index ^ last).bit_length()
    if inner > 1:
        proof += siblings(level, index, inner - 1)
    if inner:
        lvl = level + inner - 1
        start = (last >> (inner - 1)) << lvl
        if start + (1 << lvl) <= size:
            proof.append(get_node(lvl, last >> (inner - 1)))
        elif edge_cache is None:
            proof.append(_range_hash(start, size, get_node))
        else:
            h = edge_cache.get((start, size))
            if h is None:
                h = edge_cache[(start, size)] = _range_hash(start, size, get_node)
            proof.append(h)
    proof += [
        get_node(level + k, (index >> k) ^ 1)
        for k in range(inner, last.bit_length())
        if index >> k & 1
    ]


def inclusion_proof(
    index: int,
    size: int,
    get_node: NodeGetter,
    edge_cache: EdgeCache | None = None,
    siblings: SiblingGetter | None = None,
) -> list[bytes]:
    """RFC 9162 §2.1.3.1 PATH(index, D[0:size]), from perfect-subtree hashes.

    Precondition: 0 <= index < size, and get_node (and `siblings`, if given, which must agree
    with it) can answer for every perfect subtree that lies entirely within the first `size`
    leaves.
    """
    if not 0 <= index < size:
        raise LocalProtocolError(f"leaf index {index} is not in a tree of size {size}")
    proof: list[bytes] = []
    _path(index, 0, size, get_node, siblings or siblings_of(get_node), proof, edge_cache)
    return proof


def consistency_proof(
    old_size: int,
    new_size: int,
    get_node: NodeGetter,
    edge_cache: EdgeCache | None = None,
    siblings: SiblingGetter | None = None,
) -> list[bytes]:
    """RFC 9162 §2.1.4.1 PROOF(old_size, D[0:new_size]), from perfect-subtree hashes.

    Preconditions as for `inclusion_proof`, and 0 < old_size <= new_size.  A proof between
    equal sizes is empty.  The RFC's
    SUBPROOF recursion equals: the largest perfect subtree ending at old_size (omitted when
    old_size is a power of two, as the verifier knows it: it is the old root), then that
    subtree's inclusion path in the new tree.
    """
    if not 0 < old_size <= new_size:
        raise LocalProtocolError(
            f"no consistency proof from size {old_size} to size {new_size} (need 0 < old <= new)"
        )
    if old_size == new_size:
        return []
    level = (old_size & -old_size).bit_length() - 1
    index = (old_size - 1) >> level
    proof: list[bytes] = [] if index == 0 else [get_node(level, index)]
    _path(index, level, new_size, get_node, siblings or siblings_of(get_node), proof, edge_cache)
    return proof


def _check_hash(h: bytes) -> None:
    if len(h) != HASH_SIZE:
        raise VerificationError("proof does not verify")


def root_from_inclusion_proof(
    index: int, size: int, leaf_hash_: bytes, proof: Sequence[bytes]
) -> bytes:
    """RFC 9162 §2.1.3.2: the root that `proof` implies for leaf `index` in a tree of `size`.

    Raises VerificationError if the proof has the wrong shape for (index, size).  The RFC's
    loop is split in two equivalent phases: below the level where the paths to `index` and to
    the last leaf diverge ("inner"), the side of each sibling is the bit of `index`; above it,
    every remaining sibling is a left-hand "border" node.  The proof length must be exactly
    inner + popcount(index >> inner).
    """
    if not 0 <= index < size or len(leaf_hash_) != HASH_SIZE:
        raise VerificationError("proof does not verify")
    inner = (index ^ (size - 1)).bit_length()
    if len(proof) != inner + (index >> inner).bit_count():
        raise VerificationError("proof does not verify")
    if proof and set(map(len, proof)) != {HASH_SIZE}:
        raise VerificationError("proof does not verify")
    sha = _sha256
    r = leaf_hash_
    for i in range(inner):
        p = proof[i]
        # The bit of `index` at this height says whether the sibling is on the left.
        r = sha(b"\x01" + p + r).digest() if (index >> i) & 1 else sha(b"\x01" + r + p).digest()
    for p in proof[inner:]:
        r = sha(b"\x01" + p + r).digest()
    return r


def verify_inclusion(
    index: int, size: int, leaf_hash_: bytes, proof: Sequence[bytes], root: bytes
) -> None:
    """Check that the leaf with hash `leaf_hash_` sits at `index` of the tree (`size`, `root`).

    Raises VerificationError, and says nothing about which check failed.
    """
    _check_hash(root)
    if root_from_inclusion_proof(index, size, leaf_hash_, proof) != root:
        raise VerificationError("proof does not verify")


def consistency_roots(old_size: int, new_size: int, path: Sequence[bytes]) -> tuple[bytes, bytes]:
    """RFC 9162 §2.1.4.2 steps 3-7: the (old root, new root) a consistency path implies.

    `path` is the RFC's consistency_path, i.e. the proof with the old root prepended when
    old_size is an exact power of two.  Evidence of an inconsistent history is a path whose
    new root matches a signed checkpoint while its old root differs from another signed one.
    Precondition: 0 < old_size < new_size.  Raises VerificationError for a malformed path.
    """
    if not 0 < old_size < new_size or not path:
        raise VerificationError("proof does not verify")
    if set(map(len, path)) != {HASH_SIZE}:
        raise VerificationError("proof does not verify")
    # Equivalent to the RFC's loop, in transparency-dev/merkle's form: drop the levels below
    # the old tree's largest right-hand perfect subtree (path[0] is its hash), then below
    # `inner` the two trees' paths differ and the bit of `mask` gives each sibling's side;
    # above it every sibling is a left-hand border node.
    shift = (old_size & -old_size).bit_length() - 1
    mask = (old_size - 1) >> shift
    inner = (mask ^ ((new_size - 1) >> shift)).bit_length()
    proof = path[1:]
    if len(proof) != inner + (mask >> inner).bit_count():
        raise VerificationError("proof does not verify")
    sha = _sha256
    fr = sr = path[0]
    for i in range(inner):
        p = proof[i]
        if (mask >> i) & 1:
            fr = sha(b"\x01" + p + fr).digest()
            sr = sha(b"\x01" + p + sr).digest()
        else:
            sr = sha(b"\x01" + sr + p).digest()
    for p in proof[inner:]:
        fr = sha(b"\x01" + p + fr).digest()
        sr = sha(b"\x01" + p + sr).digest()
    return fr, sr


def consistency_path(old_size: int, old_root: bytes, proof: Sequence[bytes]) -> list[bytes]:
    """RFC 9162 §2.1.4.2 step 2: prepend the old root when old_size is a power of two."""
    if old_size > 0 and old_size & (old_size - 1) == 0:
        return [old_root, *proof]
    return list(proof)


def verify_consistency(
    old_size: int, new_size: int, proof: Sequence[bytes], old_root: bytes, new_root: bytes
) -> None:
    """Check that the tree (new_size, new_root) extends the tree (old_size, old_root).

    Raises VerificationError.  Follows transparency-dev/merkle's conventions: equal sizes need
    an empty proof and equal roots; a proof from the empty tree is refused.
    """
    if old_size < 0 or new_size < old_size:
        raise VerificationError("proof does not verify")
    if old_size == new_size:
        if proof or old_size == 0 or old_root != new_root:
            raise VerificationError("proof does not verify")
        return
    if old_size == 0:
        raise VerificationError("proof does not verify")
    _check_hash(old_root)
    _check_hash(new_root)
    fr, sr = consistency_roots(old_size, new_size, consistency_path(old_size, old_root, proof))
    if fr != old_root or sr != new_root:
        raise VerificationError("proof does not verify")


class MerkleFrontier:
    """The right edge of a growing tree: one perfect-subtree hash per set bit of its size.

    Appending a leaf returns the perfect subtrees it completes, (level, index, hash), which is
    exactly what a store must persist so that later proofs are O(log n) reads.  Pure and
    cheap: O(1) amortised hashing per append.
    """

    __slots__ = ("_size", "_stack")

    def __init__(self, size: int = 0, edge: Sequence[bytes] = ()) -> None:
        if size < 0 or len(edge) != size.bit_count():
            raise LocalProtocolError("a frontier needs one hash per set bit of its size")
        self._size = size
        self._stack = list(edge)

    @classmethod
    def restore(cls, size: int, get_node: NodeGetter) -> MerkleFrontier:
        """Rebuild the frontier of a stored tree of `size` leaves from its perfect subtrees."""
        edge: list[bytes] = []
        start = 0
        for level in range(size.bit_length() - 1, -1, -1):
            if size >> level & 1:
                edge.append(get_node(level, start >> level))
                start += 1 << level
        return cls(size, edge)

    @property
    def size(self) -> int:
        return self._size

    def edge(self) -> list[bytes]:
        """The perfect-subtree hashes along the right edge, largest first."""
        return list(self._stack)

    def append(self, leaf_hash_: bytes) -> list[tuple[int, int, bytes]]:
        """Add one leaf hash; return every perfect subtree this completes, leaf included."""
        index = self._size
        h = leaf_hash_
        completed = [(0, index, h)]
        level = 0
        stack = self._stack
        while index & 1:
            h = _sha256(b"\x01" + stack.pop() + h).digest()
            level += 1
            index >>= 1
            completed.append((level, index, h))
        stack.append(h)
        self._size += 1
        return completed

    def extend_grouped(self, leaf_hashes: Sequence[bytes]) -> list[bytes]:
        """Add many leaf hashes; for each, the hashes of the interior subtrees it completes.

        The batch form of `append` for a store's hot path: element i is the concatenation of
        the hashes at levels 1, 2, ..., k completed by leaf size+i (k = its trailing one bits;
        empty for an even index).  Node (level, idx) is completed by leaf (idx+1)*2**level - 1.
        """
        completed: list[bytes] = []
        add = completed.append
        stack = self._stack
        pop, push = stack.pop, stack.append
        sha = _sha256
        index = self._size
        for h in leaf_hashes:
            if index & 1:
                packed = b""
                i = index
                while i & 1:
                    h = sha(b"\x01" + pop() + h).digest()
                    packed += h
                    i >>= 1
                add(packed)
            else:
                add(b"")
            push(h)
            index += 1
        self._size = index
        return completed

    def root(self) -> bytes:
        """MTH of the leaves appended so far."""
        if not self._stack:
            return EMPTY_ROOT
        r = self._stack[-1]
        for left in reversed(self._stack[:-1]):
            r = _sha256(b"\x01" + left + r).digest()
        return r
