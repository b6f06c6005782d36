"""The LevelDB store: appends, proofs, indexes, checkpoints, integrity checks (real LevelDB)."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

import pytest

from tests import factories as f
from tests import merkle_reference as ref
from trustix_p2p.core import merkle
from trustix_p2p.core.checkpoint import Checkpoint, SignedCheckpoint, origin_for, sign_checkpoint
from trustix_p2p.errors import LocalProtocolError, StoreCorruptError, StoreError, VerificationError
from trustix_p2p.storage import Store

KEY = f.key("alice")
ORIGIN = origin_for(KEY.public_key.log_id())


def signer(t: int = 1_700_000_000):
    def sign(size: int, root: bytes) -> SignedCheckpoint:
        return sign_checkpoint(Checkpoint(ORIGIN, size, root, t), KEY)

    return sign


def test_append_then_proofs_verify_against_the_signed_root(tmp_path: Path) -> None:
    with Store(tmp_path / "db") as store:
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


def test_reopen_keeps_everything_and_continues_the_same_tree(tmp_path: Path) -> None:
    leaves = [f.record(i) for i in range(50)]
    with Store(tmp_path / "db") as store:
        store.open_log(KEY.public_key, own=True).append(leaves[:30], sign=signer())
    with Store(tmp_path / "db") as store:
        log = store.open_log(KEY.public_key, own=True)
        assert log.size == 30
        log.append(leaves[30:], sign=signer())
        assert log.root(50) == ref.mth([r.leaf for r in leaves])
        assert log.verify().ok


def test_identical_submissions_are_logged_once(tmp_path: Path) -> None:
    with Store(tmp_path / "db") as store:
        log = store.open_log(KEY.public_key, own=True)
        assert log.append([f.record(1), f.record(2)]) == [0, 1]
        assert log.append([f.record(2), f.record(3), f.record(3)]) == [1, 2, 2]
        assert log.size == 3
        assert log.verify().ok


def test_lookup_finds_every_leaf_for_an_out_path(tmp_path: Path) -> None:
    with Store(tmp_path / "db") as store:
        log = store.open_log(KEY.public_key, own=True)
        log.append([f.record(1), f.record(2), f.record(1, nar_seed="rebuild")])
        assert log.lookup(f.entry(1).out_path) == [0, 2]
        assert log.lookup(f.entry(2).out_path) == [1]
        assert log.lookup(f.store_path("absent")) == []


def test_a_checkpoint_with_the_wrong_root_writes_nothing(tmp_path: Path) -> None:
    with Store(tmp_path / "db") as store:
        log = store.open_log(KEY.public_key, own=True)
        log.append([f.record(0)], sign=signer())
        bad = sign_checkpoint(Checkpoint(ORIGIN, 2, bytes(32), 1), KEY)
        with pytest.raises(VerificationError):
            log.append([f.record(1)], checkpoint=bad)
        assert log.size == 1
        log.append([f.record(1)], sign=signer())
        assert log.root(2) == ref.mth([f.leaf(0), f.leaf(1)])


def test_a_smaller_checkpoint_after_a_larger_one_is_refused(tmp_path: Path) -> None:
    with Store(tmp_path / "db") as store:
        log = store.open_log(KEY.public_key, own=True)
        log.append([f.record(i) for i in range(4)], sign=signer())
        small = sign_checkpoint(Checkpoint(ORIGIN, 2, log.root(2), 1), KEY)
        with pytest.raises(LocalProtocolError):
            log.set_checkpoint(small)


def test_many_logs_live_side_by_side(tmp_path: Path) -> None:
    keys = [f.key(n) for n in ("a", "b", "c")]
    with Store(tmp_path / "db") as store:
        for n, k in enumerate(keys):
            store.open_log(k.public_key, own=(n == 0)).append([f.record(i) for i in range(n + 2)])
        assert {store.log(k.public_key.log_id()).size for k in keys} == {2, 3, 4}
        assert store.own_log_id() == keys[0].public_key.log_id()
        with pytest.raises(StoreError):
            store.open_log(keys[1].public_key, own=True)


def _flip_value(db_path: Path, where: tuple[bytes, int]) -> None:
    import plyvel

    key, offset = where
    db = plyvel.DB(str(db_path))
    value = bytearray(db.get(key))
    value[offset] ^= 0x01
    db.put(key, bytes(value))
    db.close()


def _node_key(store: Store, log_id: bytes, level: int, index: int) -> tuple[bytes, int]:
    """Where node (level, index) is stored: in the record of the leaf that completed it."""
    num = store.db.get(b"I" + log_id)
    leaf = ((index + 1) << level) - 1
    return b"E" + num + leaf.to_bytes(8, "big"), level * 32


def test_a_flipped_byte_in_a_stored_subtree_hash_is_detected(tmp_path: Path) -> None:
    db = tmp_path / "db"
    with Store(db) as store:
        log = store.open_log(KEY.public_key, own=True)
        log.append([f.record(i) for i in range(16)], sign=signer())
        inner = _node_key(store, log.log_id, 1, 2)  # not on the right edge
        edge = _node_key(store, log.log_id, 4, 0)  # the root of the 16-leaf tree
    _flip_value(db, inner)
    with Store(db) as store:
        report = store.log(KEY.public_key.log_id()).verify()
        assert not report.ok
        assert any("node (1, 2)" in p for p in report.problems)
    _flip_value(db, inner)
    _flip_value(db, edge)
    with Store(db) as store, pytest.raises(StoreCorruptError):
        store.open_log(KEY.public_key, own=True)


def test_a_damaged_leaf_is_detected(tmp_path: Path) -> None:
    db = tmp_path / "db"
    with Store(db) as store:
        log = store.open_log(KEY.public_key, own=True)
        log.append([f.record(i) for i in range(5)], sign=signer())
        num = store.db.get(b"I" + log.log_id)
    _flip_value(db, (b"E" + num + (2).to_bytes(8, "big"), 40))  # leaf 2's bytes
    with Store(db) as store:
        report = store.log(KEY.public_key.log_id()).verify()
        assert not report.ok


def test_a_checkpoint_covering_missing_entries_stops_the_node_from_opening(tmp_path: Path) -> None:
    db = tmp_path / "db"
    with Store(db) as store:
        log = store.open_log(KEY.public_key, own=True)
        log.append([f.record(i) for i in range(5)], sign=signer())
        num = store.db.get(b"I" + log.log_id)
        store.db.put(b"N" + num, (3).to_bytes(8, "big"))
    with Store(db) as store, pytest.raises(StoreCorruptError):
        store.open_log(KEY.public_key, own=True)


def test_a_mirrored_log_keeps_identical_leaves_as_its_builder_wrote_them(tmp_path: Path) -> None:
    other = f.key("mirrored")
    with Store(tmp_path / "db") as store:
        log = store.open_log(other.public_key, own=False)
        assert log.append([f.record(1), f.record(1), f.record(2)]) == [0, 1, 2]
        assert log.lookup(f.entry(1).out_path) == [0, 1]
        assert log.root(3) == ref.mth([f.leaf(1), f.leaf(1), f.leaf(2)])
        assert log.verify().ok


def test_proofs_at_sizes_between_checkpoints_match_the_reference(tmp_path: Path) -> None:
    leaves = [f.record(i) for i in range(70)]
    with Store(tmp_path / "db") as store:
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


def test_proofs_across_hash_tiles_match_the_reference_at_many_sizes(tmp_path: Path) -> None:
    # Batches of odd sizes, and a reopen in the middle of a block, so that tiles are completed
    # from parts written by earlier batches and by an earlier process.
    leaves = [f.record(i) for i in range(1100)]
    raw = [r.leaf for r in leaves]
    cuts = [0, 1, 8, 255, 256, 300, 511, 700, 1025, 1100]
    for lo, hi in pairwise(cuts):
        with Store(tmp_path / "db") as store:
            store.open_log(KEY.public_key, own=True).append(leaves[lo:hi], sign=signer())
    with Store(tmp_path / "db") as store:
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


def test_a_flipped_byte_in_a_hash_tile_is_reported_and_served(tmp_path: Path) -> None:
    db = tmp_path / "db"
    with Store(db) as store:
        log = store.open_log(KEY.public_key, own=True)
        log.append([f.record(i) for i in range(600)], sign=signer())
        tile = _tile_key(store, log.log_id, 1)
        raw = [f.leaf(i) for i in range(600)]
    # Hash 1 of block 1's tile is leaf 257's hash, the first sibling in leaf 256's proof.
    _flip_value(db, (tile, 1 * 32 + 5))
    with Store(db) as store:
        log = store.log(KEY.public_key.log_id())
        report = log.verify()
        assert not report.ok
        assert report.problems == ("hash tile 1 is missing or wrong",)
        # Proofs inside complete blocks come from the tiles, so the damage reaches them: this
        # is why `log verify` must check tiles as closely as records.
        assert log.inclusion_proof(256, 600) != ref.path(256, raw)
        assert log.inclusion_proof(0, 600) == ref.path(0, raw)


def test_a_missing_or_truncated_hash_tile_is_reported(tmp_path: Path) -> None:
    db = tmp_path / "db"
    with Store(db) as store:
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
    with Store(db) as store:
        log = store.log(KEY.public_key.log_id())
        assert "hash tile 1 is missing or wrong" in log.verify().problems
        with pytest.raises(StoreCorruptError, match="tile 1"):
            log.inclusion_proof(300, 600)


def test_a_hash_tile_beyond_the_stored_entries_is_reported(tmp_path: Path) -> None:
    with Store(tmp_path / "db") as store:
        log = store.open_log(KEY.public_key, own=True)
        log.append([f.record(i) for i in range(300)], sign=signer())
        store.db.put(_tile_key(store, log.log_id, 1), bytes(511 * 32))
        assert log.verify().problems == ("hash tile 1 covers entries not stored",)


def test_a_store_of_another_schema_is_refused(tmp_path: Path) -> None:
    # Schema 1 had no hash tiles: serving from it would pass proofs but fail `verify`.
    with Store(tmp_path / "db") as store:
        store.db.put(b"!schema", b"1")
    with pytest.raises(StoreError, match="schema b'1'"):
        Store(tmp_path / "db")
