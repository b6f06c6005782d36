"""The two backends of the store: the same answers, and a memory store that costs no file.

The log rules are written once above `trustix_p2p.kv.KeyValueDB`; these tests pin down what that
needs from a backend (bytewise order, atomic batches, snapshot reads) and check, on random
histories, that a LevelDB store and a memory store give identical roots, proofs, lookups and
verify reports.  The memory store is what simulations of thousands of nodes run on, so it must
touch no file and hold no file descriptor.
"""

from __future__ import annotations

import builtins
import functools
import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests import factories as f
from tests import merkle_reference as ref
from trustix_p2p.core.checkpoint import Checkpoint, SignedCheckpoint, origin_for, sign_checkpoint
from trustix_p2p.core.keys import PrivateKey
from trustix_p2p.errors import StoreError, StoreWriteError
from trustix_p2p.kv import KeyValueDB, prefix_stop
from trustix_p2p.kv.leveldb import open_leveldb
from trustix_p2p.kv.memory import MemoryDatabase
from trustix_p2p.ownlog import MemoryCheckpointFile, OwnLog
from trustix_p2p.storage import LeafRecord, LogStore, Store

KEY = f.key("backends")


def _open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


# -- a memory store costs no file --------------------------------------------------------


def test_a_thousand_memory_stores_hold_no_file_descriptor() -> None:
    before = _open_fds()
    nodes = []
    for n in range(1000):
        store = Store.in_memory()
        own = OwnLog.open(store, f.key(f"node {n}"), MemoryCheckpointFile())
        own.append([f.record(n), f.record(n + 1)])
        own.sign(1_700_000_000)
        mirrored = store.open_log(KEY.public_key, own=False)
        mirrored.append([f.record(0)])
        nodes.append((store, own))
    assert _open_fds() == before
    assert all(own.log.size == 2 and own.log.verify().ok for _, own in nodes[:10])
    for store, _ in nodes:
        store.close()
    assert _open_fds() == before


def test_ten_thousand_memory_stores_can_be_open_at_once() -> None:
    # More than the file descriptors a LevelDB store each would need (about four).
    stores = [Store.in_memory() for _ in range(10_000)]
    logs = [store.open_log(KEY.public_key, own=False) for store in stores]
    for n, log in enumerate(logs):
        log.append([f.record(n)])
    assert all(not store.db.closed for store in stores)
    assert [log.size for log in logs] == [1] * 10_000
    assert logs[9_999].leaf(0) == f.leaf(9_999)
    for store in stores:
        store.close()


def test_a_memory_store_touches_no_file(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_files(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"a memory store touched the file system: {args!r}")

    records = [f.record(i) for i in range(301)]
    database = MemoryDatabase()
    checkpoint_file = MemoryCheckpointFile()
    # Only around the store's own work: pytest reads files to report a failure.
    with monkeypatch.context() as patch:
        for name in ("open", "listdir", "mkdir", "stat", "replace", "fsync", "scandir"):
            patch.setattr(os, name, no_files)
        patch.setattr(builtins, "open", no_files)
        store = Store.in_memory(database)
        own = OwnLog.open(store, KEY, checkpoint_file)
        own.append(records[:300])
        signed = own.sign(1_700_000_000)
        database.fail_next_write()
        with pytest.raises(StoreWriteError):
            own.append(records[300:])
        store.reopen()
        own.append(records[300:])
        report = own.log.verify()
        store.close()
        # Started again on the same memory: everything is there, checked as at any start.
        store = Store(database)
        own = OwnLog.open(store, KEY, checkpoint_file)
        size, checkpoint = own.log.size, own.log.checkpoint()
        store.close()
    assert report.ok
    assert size == 301 and checkpoint == signed


# -- what the store needs from a backend ---------------------------------------------------


def _backends(tmp: Path) -> tuple[KeyValueDB, MemoryDatabase]:
    memory = MemoryDatabase()
    memory.open()
    return open_leveldb(tmp / "kv", create=True), memory


_keys = st.binary(min_size=0, max_size=4).map(lambda b: b"k" + b) | st.sampled_from(
    [b"", b"\x00", b"\xff", b"\xff\xff", b"k", b"k\x00", b"k\xff", b"l"]
)
_ops = st.lists(
    st.tuples(_keys, st.none() | st.binary(max_size=8)),  # None: delete
    max_size=12,
)


@settings(max_examples=60, deadline=None)
@given(
    batches=st.lists(_ops, max_size=6),
    ranges=st.lists(st.tuples(_keys, st.none() | _keys), max_size=6),
    prefixes=st.lists(_keys, max_size=4),
)
def test_both_backends_read_back_the_same_keys_in_the_same_order(
    batches: list[list[tuple[bytes, bytes | None]]],
    ranges: list[tuple[bytes, bytes | None]],
    prefixes: list[bytes],
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        leveldb, memory = _backends(Path(tmp))
        try:
            model: dict[bytes, bytes] = {}
            for ops in batches:
                for db in (leveldb, memory):
                    wb = db.write_batch()
                    for key, value in ops:
                        if value is None:
                            wb.delete(key)
                        else:
                            wb.put(key, value)
                    db.write(wb)
                for key, value in ops:
                    if value is None:
                        model.pop(key, None)
                    else:
                        model[key] = value
                # Reads between writes, so that pending keys are sorted in more than once.
                assert list(memory.items(b"", None)) == sorted(model.items())
            for start, stop in [(b"", None), *ranges]:
                expected = [(k, v) for k, v in sorted(model.items()) if k >= start]
                expected = [(k, v) for k, v in expected if stop is None or k < stop]
                assert list(leveldb.items(start, stop)) == expected
                assert list(memory.items(start, stop)) == expected
            for prefix in prefixes:
                expected = [(k, v) for k, v in sorted(model.items()) if k.startswith(prefix)]
                for db in (leveldb, memory):
                    assert list(db.items(prefix, prefix_stop(prefix))) == expected
            for key in {k for ops in batches for k, _ in ops}:
                assert leveldb.get(key) == memory.get(key) == model.get(key)
        finally:
            leveldb.close()


def test_a_failed_memory_write_applies_nothing_of_its_batch() -> None:
    db = MemoryDatabase()
    db.open()
    db.put(b"a", b"1")
    wb = db.write_batch()
    wb.put(b"a", b"2")
    wb.put(b"b", b"2")
    wb.delete(b"a")
    db.fail_next_write()
    with pytest.raises(StoreWriteError, match="injected"):
        db.write(wb)
    assert list(db.items(b"", None)) == [(b"a", b"1")]
    db.write(wb)  # the same batch, now written: its last operation on a key wins
    assert list(db.items(b"", None)) == [(b"b", b"2")]


def test_a_memory_range_read_sees_no_later_write() -> None:
    db = MemoryDatabase()
    db.open()
    for key in (b"a", b"c", b"e"):
        db.put(key, key)
    it = db.items(b"", None)
    assert next(it) == (b"a", b"a")
    db.put(b"b", b"b")
    db.delete(b"c")
    db.put(b"e", b"changed")
    assert list(it) == [(b"c", b"c"), (b"e", b"e")]


def test_a_closed_memory_database_refuses_reads_and_writes_but_keeps_its_data() -> None:
    db = MemoryDatabase("node 7")
    db.open()
    db.put(b"k", b"v")
    backup = db.copy()
    db.close()
    with pytest.raises(StoreError, match=r"node 7.*closed"):
        db.get(b"k")
    with pytest.raises(StoreError, match="closed"):
        db.items(b"", None)
    with pytest.raises(StoreWriteError, match="closed"):
        db.put(b"k", b"w")
    db.open()
    assert db.get(b"k") == b"v"
    db.put(b"k", b"w")
    backup.open()
    assert backup.get(b"k") == b"v"  # a copy is a backup, not a view


def test_prefix_stop_is_the_first_key_after_the_prefix() -> None:
    assert prefix_stop(b"P\x00\x00\x00\x01") == b"P\x00\x00\x00\x02"
    assert prefix_stop(b"a\xff\xff") == b"b"
    assert prefix_stop(b"\xff") is None
    assert prefix_stop(b"") is None


# -- the same log on both backends ---------------------------------------------------------


def _signer(key: PrivateKey, t: int) -> object:
    origin = origin_for(key.public_key.log_id())

    def sign(size: int, root: bytes) -> SignedCheckpoint:
        return sign_checkpoint(Checkpoint(origin, size, root, t), key)

    return sign


def _observe(log: LogStore, seed: int, probes: list[int]) -> dict[str, object]:
    """Everything a caller can read from a log, at a sample of sizes and positions."""
    size = log.size
    sizes = sorted(s for s in {1, 2, size // 3, size // 2, size - 1, size} if 0 < s <= size)
    cp = log.checkpoint()
    out: dict[str, object] = {
        "size": size,
        "roots": [log.root(s) for s in [0, *sizes]],
        "inclusion": [log.inclusion_proof(i, s) for s in sizes for i in {0, (seed * 7) % s, s - 1}],
        "consistency": [
            log.consistency_proof(o, s) for s in sizes for o in {1, (seed * 5) % s or 1, s}
        ],
        "leaves": list(log.leaves(0, size)),
        "lookups": {n: log.lookup(_record(n).out_path) for n in probes},
        "verify": log.verify(),
        "checkpoint": None if cp is None else cp.note,
        "checkpoints": list(log.checkpoints()),
    }
    if log.own:
        out["index_of"] = {n: log.index_of(_record(n).leaf, _record(n).out_path) for n in probes}
    return out


@functools.cache
def _record(n: int) -> LeafRecord:
    return f.record(n)


# A history: batches of leaf numbers, each perhaps with a checkpoint.  Runs of consecutive
# numbers make logs that cross hash tiles (256 leaves); numbers repeat within a batch and
# across batches, so the own log has duplicates to drop and a mirrored log keeps them.
_run = st.integers(0, 11).map(lambda n: [n]) | st.tuples(
    st.integers(0, 1200), st.integers(1, 300)
).map(lambda t: list(range(t[0], t[0] + t[1])))
_batch = st.lists(_run, max_size=4).map(lambda runs: [n for run in runs for n in run])
_history = st.lists(st.tuples(_batch, st.booleans()), min_size=1, max_size=6)


@pytest.mark.parametrize("own", [True, False], ids=["own", "mirrored"])
@settings(max_examples=30, deadline=None)
@given(history=_history, reopen_after=st.integers(0, 6), seed=st.integers(0, 99))
def test_both_backends_give_the_same_roots_proofs_lookups_and_reports(
    own: bool, history: list[tuple[list[int], bool]], reopen_after: int, seed: int
) -> None:
    key = f.key("history")
    numbers = sorted({n for batch, _ in history for n in batch})
    probes = [*numbers[:: max(1, len(numbers) // 20)], 1000]  # 1000: never appended
    with tempfile.TemporaryDirectory() as tmp:
        memory = MemoryDatabase()
        places: list[Path | MemoryDatabase] = [Path(tmp) / "db", memory]
        seen = []
        for place in places:
            store = Store(place)
            try:
                log = store.open_log(key.public_key, own=own)
                indices = []
                for step, (batch, checkpoint) in enumerate(history):
                    if step == reopen_after:  # a restart in the middle of the history
                        store.close()
                        store = Store(place)
                        log = store.open_log(key.public_key, own=own)
                    sign = _signer(key, 1_700_000_000 + step) if checkpoint else None
                    indices.append(log.append([_record(n) for n in batch], sign=sign))  # type: ignore[arg-type]
                seen.append((indices, _observe(log, seed, probes)))
            finally:
                store.close()
        (indices, observed), (m_indices, m_observed) = seen
        assert m_indices == indices
        assert m_observed == observed
        assert observed["verify"].ok  # type: ignore[attr-defined]
        # And both are right, not merely equal: the tree of the leaves kept.
        all_leaves = [_record(n).leaf for batch, _ in history for n in batch]
        kept = list(dict.fromkeys(all_leaves)) if own else all_leaves
        assert [leaf for _, leaf in observed["leaves"]] == kept  # type: ignore[attr-defined]
        assert observed["roots"][-1] == ref.mth(kept)  # type: ignore[index]
