"""The store: appends, proofs, indexes, checkpoints, integrity checks.

Every test runs twice, on real LevelDB files and on a store in memory (`Store.in_memory()`):
the log rules are one piece of code above both backends, and must hold for each.  Damage is
done from outside with the store closed: through plyvel on LevelDB, on the `MemoryDatabase`
in memory (tests/backends.py).  Tests about LevelDB's own files (CURRENT, the marker, table
files) are in tests/test_store_faults.py.
"""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

import pytest

from tests import factories as f
from tests import merkle_reference as ref
from tests.backends import BACKENDS, Backend
from trustix_p2p.core import merkle
from trustix_p2p.core.checkpoint import Checkpoint, SignedCheckpoint, origin_for, sign_checkpoint
from trustix_p2p.errors import (
    LocalProtocolError,
    StoreCorruptError,
    StoreError,
    StoreWriteError,
    VerificationError,
)
from trustix_p2p.storage import Database, Store

KEY = f.key("alice")
ORIGIN = origin_for(KEY.public_key.log_id())


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    return Backend(request.param, tmp_path)


def signer(t: int = 1_700_000_000):
    def sign(size: int, root: bytes) -> SignedCheckpoint:
        return sign_checkpoint(Checkpoint(ORIGIN, size, root, t), KEY)

    return sign


def test_append_then_proofs_verify_against_the_signed_root(backend: Backend) -> None:
    with backend.store() as store:
        log = store.open_log(KEY.public_key, own=True)
        records = [f.record(i) for i in range(37)]
        assert log.append(records, sign=signer()) == list(range(37))
        cp = log.checkpoint()
        assert cp is not None and cp.checkpoint.size == 37
        assert cp.checkpoint.root == ref.mth([r.leaf for r in records])
        for i in (0, 17, 36):
            proof = log.inclusion_proof(i, 37)
            merkle.verify_inclusion(
                i, 37, merkle.leaf_hash(records[i].leaf), proof, cp.checkpoint.root
            )
        for old in (1, 8, 20, 37):
            merkle.verify_consistency(
                old, 37, log.consistency_proof(old, 37), log.root(old), cp.checkpoint.root
            )


def test_reopen_keeps_everything_and_continues_the_same_tree(backend: Backend) -> None:
    leaves = [f.record(i) for i in range(50)]
    with backend.store() as store:
        store.open_log(KEY.public_key, own=True).append(leaves[:30], sign=signer())
    with backend.store() as store:
        log = store.open_log(KEY.public_key, own=True)
        assert log.size == 30
        log.append(leaves[30:], sign=signer())
        assert log.root(50) == ref.mth([r.leaf for r in leaves])
        assert log.verify().ok


def test_identical_submissions_are_logged_once(backend: Backend) -> None:
    with backend.store() as store:
        log = store.open_log(KEY.public_key, own=True)
        assert log.append([f.record(1), f.record(2)]) == [0, 1]
        assert log.append([f.record(2), f.record(3), f.record(3)]) == [1, 2, 2]
        assert log.size == 3
        assert log.verify().ok


def test_lookup_finds_every_leaf_for_an_out_path(backend: Backend) -> None:
    with backend.store() as store:
        log = store.open_log(KEY.public_key, own=True)
        log.append([f.record(1), f.record(2), f.record(1, nar_seed="rebuild")])
        assert log.lookup(f.entry(1).out_path) == [0, 2]
        assert log.lookup(f.entry(2).out_path) == [1]
        assert log.lookup(f.store_path("absent")) == []


def test_a_checkpoint_with_the_wrong_root_writes_nothing(backend: Backend) -> None:
    with backend.store() as store:
        log = store.open_log(KEY.public_key, own=True)
        log.append([f.record(0)], sign=signer())
        bad = sign_checkpoint(Checkpoint(ORIGIN, 2, bytes(32), 1), KEY)
        with pytest.raises(VerificationError):
            log.append([f.record(1)], checkpoint=bad)
        assert log.size == 1
        log.append([f.record(1)], sign=signer())
        assert log.root(2) == ref.mth([f.leaf(0), f.leaf(1)])


def test_a_smaller_checkpoint_after_a_larger_one_is_refused(backend: Backend) -> None:
    with backend.store() as store:
        log = store.open_log(KEY.public_key, own=True)
        log.append([f.record(i) for i in range(4)], sign=signer())
        small = sign_checkpoint(Checkpoint(ORIGIN, 2, log.root(2), 1), KEY)
        with pytest.raises(LocalProtocolError):
            log.set_checkpoint(small)


def test_many_logs_live_side_by_side(backend: Backend) -> None:
    keys = [f.key(n) for n in ("a", "b", "c")]
    with backend.store() as store:
        for n, k in enumerate(keys):
            store.open_log(k.public_key, own=(n == 0)).append([f.record(i) for i in range(n + 2)])
        assert {store.log(k.public_key.log_id()).size for k in keys} == {2, 3, 4}
        assert store.own_log_id() == keys[0].public_key.log_id()
        with pytest.raises(StoreError):
            store.open_log(keys[1].public_key, own=True)


def _node_key(store: Store, log_id: bytes, level: int, index: int) -> tuple[bytes, int]:
    """Where node (level, index) is stored: in the record of the leaf that completed it."""
    num = store.db.get(b"I" + log_id)
    leaf = ((index + 1) << level) - 1
    return b"E" + num + leaf.to_bytes(8, "big"), level * 32


def test_a_flipped_byte_in_a_stored_subtree_hash_is_detected(backend: Backend) -> None:
    with backend.store() as store:
        log = store.open_log(KEY.public_key, own=True)
        log.append([f.record(i) for i in range(16)], sign=signer())
        inner = _node_key(store, log.log_id, 1, 2)  # not on the right edge
        edge = _node_key(store, log.log_id, 4, 0)  # the root of the 16-leaf tree
    backend.flip(*inner)
    with backend.store() as store:
        report = store.log(KEY.public_key.log_id()).verify()
        assert not report.ok
        assert any("node (1, 2)" in p for p in report.problems)
    backend.flip(*inner)
    backend.flip(*edge)
    with backend.store() as store, pytest.raises(StoreCorruptError):
        store.open_log(KEY.public_key, own=True)


def test_a_damaged_leaf_is_detected(backend: Backend) -> None:
    with backend.store() as store:
        log = store.open_log(KEY.public_key, own=True)
        log.append([f.record(i) for i in range(5)], sign=signer())
        num = store.db.get(b"I" + log.log_id)
    backend.flip(b"E" + num + (2).to_bytes(8, "big"), 40)  # leaf 2's bytes
    with backend.store() as store:
        report = store.log(KEY.public_key.log_id()).verify()
        assert not report.ok


def test_a_checkpoint_covering_missing_entries_stops_the_node_from_opening(
    backend: Backend,
) -> None:
    with backend.store() as store:
        log = store.open_log(KEY.public_key, own=True)
        log.append([f.record(i) for i in range(5)], sign=signer())
        num = store.db.get(b"I" + log.log_id)
        store.db.put(b"N" + num, (3).to_bytes(8, "big"))
    with backend.store() as store, pytest.raises(StoreCorruptError):
        store.open_log(KEY.public_key, own=True)


def test_a_mirrored_log_keeps_identical_leaves_as_its_builder_wrote_them(backend: Backend) -> None:
    other = f.key("mirrored")
    with backend.store() as store:
        log = store.open_log(other.public_key, own=False)
        assert log.append([f.record(1), f.record(1), f.record(2)]) == [0, 1, 2]
        assert log.lookup(f.entry(1).out_path) == [0, 1]
        assert log.root(3) == ref.mth([f.leaf(1), f.leaf(1), f.leaf(2)])
        assert log.verify().ok


def test_proofs_at_sizes_between_checkpoints_match_the_reference(backend: Backend) -> None:
    leaves = [f.record(i) for i in range(70)]
    with backend.store() as store:
        log = store.open_log(KEY.public_key, own=True)
        for start in range(0, 70, 9):
            log.append(leaves[start : start + 9])
        raw = [r.leaf for r in leaves]
        for size in (1, 2, 3, 31, 32, 33, 64, 70):
            assert log.root(size) == ref.mth(raw[:size])
            for index in {0, size // 2, size - 1}:
                assert log.inclusion_proof(index, size) == ref.path(index, raw[:size])
            for old in {1, size // 3 or 1, size}:
                assert log.consistency_proof(old, size) == ref.proof(old, raw[:size])


def _tile_key(store: Store, log_id: bytes, block: int) -> bytes:
    num: bytes = store.db.get(b"I" + log_id)
    return b"T" + num + block.to_bytes(8, "big")


def test_proofs_across_hash_tiles_match_the_reference_at_many_sizes(backend: Backend) -> None:
    # Batches of odd sizes, and a reopen in the middle of a block, so that tiles are completed
    # from parts written by earlier batches and by an earlier process.
    leaves = [f.record(i) for i in range(1100)]
    raw = [r.leaf for r in leaves]
    cuts = [0, 1, 8, 255, 256, 300, 511, 700, 1025, 1100]
    for lo, hi in pairwise(cuts):
        with backend.store() as store:
            store.open_log(KEY.public_key, own=True).append(leaves[lo:hi], sign=signer())
    with backend.store() as store:
        log = store.open_log(KEY.public_key, own=True)
        assert log.verify().ok
        for size in (1, 255, 256, 257, 511, 512, 513, 767, 768, 1024, 1025, 1100):
            assert log.root(size) == ref.mth(raw[:size])
            for index in {0, 1, 127, 254, 255, 256, size // 3, size - 2, size - 1}:
                if 0 <= index < size:
                    assert log.inclusion_proof(index, size) == ref.path(index, raw[:size])
            for old in {1, 2, 255, 256, 257, 511, 512, 700, size // 2 or 1, size - 1 or 1, size}:
                if old <= size:
                    assert log.consistency_proof(old, size) == ref.proof(old, raw[:size])


def test_a_flipped_byte_in_a_hash_tile_is_reported_and_served(backend: Backend) -> None:
    with backend.store() as store:
        log = store.open_log(KEY.public_key, own=True)
        log.append([f.record(i) for i in range(600)], sign=signer())
        tile = _tile_key(store, log.log_id, 1)
        raw = [f.leaf(i) for i in range(600)]
    # Hash 1 of block 1's tile is leaf 257's hash, the first sibling in leaf 256's proof.
    backend.flip(tile, 1 * 32 + 5)
    with backend.store() as store:
        log = store.log(KEY.public_key.log_id())
        report = log.verify()
        assert not report.ok
        assert report.problems == ("hash tile 1 is missing or wrong",)
        # Proofs inside complete blocks come from the tiles, so the damage reaches them: this
        # is why `log verify` must check tiles as closely as records.
        assert log.inclusion_proof(256, 600) != ref.path(256, raw)
        assert log.inclusion_proof(0, 600) == ref.path(0, raw)


def test_a_missing_or_truncated_hash_tile_is_reported(backend: Backend) -> None:
    with backend.store() as store:
        log = store.open_log(KEY.public_key, own=True)
        log.append([f.record(i) for i in range(600)], sign=signer())
        store.db.delete(_tile_key(store, log.log_id, 0))
        assert log.verify().problems == ("hash tile 0 is missing or wrong",)
        # The records still hold every node, so proofs stay right without the tile.
        raw = [f.leaf(i) for i in range(600)]
        assert log.inclusion_proof(5, 600) == ref.path(5, raw)
        assert log.consistency_proof(100, 600) == ref.proof(100, raw)
        key = _tile_key(store, log.log_id, 1)
        store.db.put(key, store.db.get(key)[:-1])
    with backend.store() as store:
        log = store.log(KEY.public_key.log_id())
        assert "hash tile 1 is missing or wrong" in log.verify().problems
        with pytest.raises(StoreCorruptError, match="tile 1"):
            log.inclusion_proof(300, 600)


def test_a_hash_tile_beyond_the_stored_entries_is_reported(backend: Backend) -> None:
    with backend.store() as store:
        log = store.open_log(KEY.public_key, own=True)
        log.append([f.record(i) for i in range(300)], sign=signer())
        store.db.put(_tile_key(store, log.log_id, 1), bytes(511 * 32))
        assert log.verify().problems == ("hash tile 1 covers entries not stored",)


def test_a_store_of_another_schema_is_refused(backend: Backend) -> None:
    # Schema 1 had no hash tiles: serving from it would pass proofs but fail `verify`.
    with backend.store() as store:
        store.db.put(b"!schema", b"1")
    with pytest.raises(StoreError, match="schema b'1'"):
        backend.store()


def _fail_next_write(backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    """The next batch fails as a full disk would fail it: with nothing of it written."""
    if backend.memory is not None:
        backend.memory.fail_next_write(reason="No space left on device")
        return
    # In process, LevelDB cannot be made to fail a write without failing pytest's own files
    # too (tests/test_store_faults.py does it with real node processes); the rules above the
    # backend are the same whichever backend's write fails.
    original = Database.write

    def fail_once(self: Database, batch: object) -> None:
        monkeypatch.setattr(Database, "write", original)
        raise StoreWriteError("writing to the store failed: No space left on device")

    monkeypatch.setattr(Database, "write", fail_once)


def test_a_failed_write_keeps_nothing_and_writes_wait_for_reopen(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    leaves = [f.record(i) for i in range(20)]
    raw = [r.leaf for r in leaves]
    with backend.store() as store:
        log = store.open_log(KEY.public_key, own=True)
        log.append(leaves[:10], sign=signer())
        _fail_next_write(backend, monkeypatch)
        with pytest.raises(StoreWriteError, match="No space left"):
            log.append(leaves[10:], sign=signer())
        assert store.broken is not None
        assert log.size == 10 and log.root(10) == ref.mth(raw[:10])
        cp = log.checkpoint()
        assert cp is not None and cp.checkpoint.size == 10
        with pytest.raises(StoreWriteError, match="until it is reopened"):
            log.append(leaves[10:])
        assert log.size == 10
        store.reopen()
        assert store.broken is None
        assert log.append(leaves[10:], sign=signer()) == list(range(10, 20))
        assert log.root(20) == ref.mth(raw)
    with backend.store() as store:
        log = store.open_log(KEY.public_key, own=True)
        assert log.size == 20 and log.verify().ok
        assert [leaf for _, leaf in log.leaves(0, 20)] == raw


def test_a_store_cannot_be_open_twice_at_once(backend: Backend) -> None:
    with backend.store() as store:
        store.open_log(KEY.public_key, own=True).append([f.record(0)])
        with pytest.raises(StoreError, match="is a node still running on it"):
            backend.store()
    with backend.store() as store:
        assert store.log(KEY.public_key.log_id()).size == 1


def test_an_empty_place_is_not_a_store_unless_creating_one(backend: Backend) -> None:
    with pytest.raises(StoreError):
        backend.store(create=False)
    backend.store().close()
    with backend.store(create=False) as store:
        assert store.log_ids() == []
