"""RFC 9162 Merkle tree hashing, proof generation and proof verification.

Everything here works on plain ints and bytes (STYLE.md, after transparency-dev/merkle): no
storage, no entries, no I/O.  Hashing is RFC 9162 §2.1.1 with SHA-256:

    leaf hash  = SHA-256(0x00 || leaf bytes)
    node hash  = SHA-256(0x01 || left || right)
    MTH({})    = SHA-256("")

Trees are addressed by *perfect subtrees*: node (level, index) is the root of the complete
subtree over leaves [index * 2**level, (index + 1) * 2**level).  Once such a subtree is complete
its hash never changes, so a store keeps exactly those and proof generation reads O(log n) of
them through a `NodeGetter`; the hashes of incomplete right-edge subtrees are recomputed from at
most popcount(n) perfect ones (every range the RFC recursion needs that is not perfect ends at n,
so they are all suffixes of n's binary decomposition and share one memo per proof).

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

_sha256 = hashlib.sha256


def leaf_hash(leaf: bytes) -> bytes:
    """RFC 9162 §2.1.1: the hash of one leaf's bytes, exactly as received."""
    return _sha256(b"\x00" + leaf).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 9162 §2.1.1: the hash of an interior node."""
    return _sha256(b"\x01" + left + right).digest()


def _largest_power_of_two_below(n: int) -> int:
    """The k of RFC 9162 §2.1.1: the largest power of two strictly smaller than n (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def _is_perfect(start: int, end: int) -> bool:
    width = end - start
    return width & (width - 1) == 0 and start % width == 0


class _RangeHasher:
    """Hashes of the subtrees the RFC recursion visits, from perfect-subtree reads.

    A range is either perfect (one read) or a right-edge range ending at the tree size, which
    splits into a perfect left part and a smaller right-edge range.  The memo makes every range
    cost at most one computation per proof.
    """

    __slots__ = ("_get", "_memo")

    def __init__(self, get_node: NodeGetter) -> None:
        self._get = get_node
        self._memo: dict[tuple[int, int], bytes] = {}

    def __call__(self, start: int, end: int) -> bytes:
        if _is_perfect(start, end):
            level = (end - start).bit_length() - 1
            return self._get(level, start >> level)
        key = (start, end)
        cached = self._memo.get(key)
        if cached is not None:
            return cached
        # Walk the right edge iteratively: collect perfect left parts, then fold from the right.
        lefts: list[bytes] = []
        a = start
        while not _is_perfect(a, end):
            k = _largest_power_of_two_below(end - a)
            level = k.bit_length() - 1
            lefts.append(self._get(level, a >> level))
            a += k
        level = (end - a).bit_length() - 1
        h = self._get(level, a >> level)
        for left in reversed(lefts):
            h = node_hash(left, h)
        self._memo[key] = h
        return h


def root_hash(size: int, get_node: NodeGetter) -> bytes:
    """MTH of the first `size` leaves, from perfect-subtree hashes (popcount(size) reads)."""
    if size < 0:
        raise LocalProtocolError(f"tree size must be non-negative, got {size}")
    if size == 0:
        return EMPTY_ROOT
    return _RangeHasher(get_node)(0, size)


def inclusion_proof(index: int, size: int, get_node: NodeGetter) -> list[bytes]:
    """RFC 9162 §2.1.3.1 PATH(index, D[0:size]), from perfect-subtree hashes.

    Precondition: 0 <= index < size, and get_node can answer for every perfect subtree that
    lies entirely within the first `size` leaves.
    """
    if not 0 <= index < size:
        raise LocalProtocolError(f"leaf index {index} is not in a tree of size {size}")
    rng = _RangeHasher(get_node)
    proof: list[bytes] = []
    a, b = 0, size
    while b - a > 1:
        k = _largest_power_of_two_below(b - a)
        if index < a + k:
            proof.append(rng(a + k, b))
            b = a + k
        else:
            proof.append(rng(a, a + k))
            a = a + k
    proof.reverse()  # the RFC lists the path from the leaf upwards
    return proof


def consistency_proof(old_size: int, new_size: int, get_node: NodeGetter) -> list[bytes]:
    """RFC 9162 §2.1.4.1 PROOF(old_size, D[0:new_size]), from perfect-subtree hashes.

    Precondition: 0 < old_size <= new_size.  A proof between equal sizes is empty.
    """
    if not 0 < old_size <= new_size:
        raise LocalProtocolError(
            f"no consistency proof from size {old_size} to size {new_size} (need 0 < old <= new)"
        )
    rng = _RangeHasher(get_node)
    proof: list[bytes] = []
    m, a, b = old_size, 0, new_size
    complete = True  # the RFC's flag b: whether the subtree is known to the verifier
    while m != b - a:
        k = _largest_power_of_two_below(b - a)
        if m <= k:
            proof.append(rng(a + k, b))
            b = a + k
        else:
            proof.append(rng(a, a + k))
            m -= k
            a = a + k
            complete = False
    if not complete:
        proof.append(rng(a, b))
    proof.reverse()
    return proof


def _check_hash(h: bytes) -> None:
    if len(h) != HASH_SIZE:
        raise VerificationError("proof does not verify")


def root_from_inclusion_proof(
    index: int, size: int, leaf_hash_: bytes, proof: Sequence[bytes]
) -> bytes:
    """RFC 9162 §2.1.3.2: the root that `proof` implies for leaf `index` in a tree of `size`.

    Raises VerificationError if the proof has the wrong shape for (index, size).
    """
    if not 0 <= index < size:
        raise VerificationError("proof does not verify")
    _check_hash(leaf_hash_)
    fn, sn = index, size - 1
    r = leaf_hash_
    for p in proof:
        _check_hash(p)
        if sn == 0:
            raise VerificationError("proof does not verify")
        if fn & 1 or fn == sn:
            r = _sha256(b"\x01" + p + r).digest()
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = _sha256(b"\x01" + r + p).digest()
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise VerificationError("proof does not verify")
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
    for p in path:
        _check_hash(p)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise VerificationError("proof does not verify")
        if fn & 1 or fn == sn:
            fr = _sha256(b"\x01" + c + fr).digest()
            sr = _sha256(b"\x01" + c + sr).digest()
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = _sha256(b"\x01" + sr + c).digest()
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise VerificationError("proof does not verify")
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

    def root(self) -> bytes:
        """MTH of the leaves appended so far."""
        if not self._stack:
            return EMPTY_ROOT
        r = self._stack[-1]
        for left in reversed(self._stack[:-1]):
            r = _sha256(b"\x01" + left + r).digest()
        return r
