"""An honest builder never signs a history that does not extend its last one, whatever
happened to its store: a lost write-ahead-log tail, a missing CURRENT, flipped bits, truncated
tables, failed writes.

The rules of the own log (tests in process, through `OwnLog`) run on both backends: real LevelDB
files with the checkpoint file in the state directory, and a store and checkpoint file in memory
(tests/backends.py), since simulated nodes must refuse exactly what real ones refuse.  The rest
is about LevelDB's files and real node processes, and runs on LevelDB only."""

from __future__ import annotations

import base64
import json
import os
import resource
import shutil
import time
from pathlib import Path

import pytest

from tests import factories as f
from tests.backends import BACKENDS, Backend
from tests.nodeproc import (
    assert_one_line_error,
    cli,
    node_config,
    running,
    start_node,
    stop,
    wait_ready,
)
from trustix_p2p.control.client import ControlClient, submit_leaves
from trustix_p2p.core.checkpoint import Checkpoint, origin_for, sign_checkpoint
from trustix_p2p.errors import (
    NodeUnavailableError,
    RemoteProtocolError,
    StoreCorruptError,
    StoreError,
    StoreWriteError,
)
from trustix_p2p.keyfile import load_key_file
from trustix_p2p.ownlog import CHECKPOINT_FILE, OwnLog, StaleStoreError, read_checkpoint_file
from trustix_p2p.storage import Database, LogStore, Store


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    return Backend(request.param, tmp_path)


def _append(state: Path, key_file: Path, entries: range, now: int = 1_700_000_000) -> None:
    key = load_key_file(key_file)
    with Store(state / "db") as store:
        own = OwnLog.open(store, key, state)
        own.append([f.record(i) for i in entries])
        own.sign(now)


def _db_files(db: Path) -> dict[str, int]:
    """The files that hold data (not LevelDB's info LOG, which every open rotates)."""
    return {
        p.name: p.stat().st_size
        for p in db.iterdir()
        if p.name.endswith((".ldb", ".log")) or p.name.startswith(("MANIFEST", "CURRENT"))
    }


def _wal(db: Path) -> Path:
    (wal,) = sorted(db.glob("*.log"))
    return wal


# -- a store behind the last signed checkpoint -----------------------------------------------


def test_a_lost_wal_tail_is_refused_by_the_node_and_by_log_append(tmp_path: Path) -> None:
    config, _sock = node_config(tmp_path)
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    _append(state, tmp_path / "node.key", range(10))
    # Everything of the first session went into a table when the store was opened again; what
    # the second session appends and signs lives only in the new write-ahead log.
    _append(state, tmp_path / "node.key", range(10, 25), now=1_700_000_100)
    note = read_checkpoint_file(state / CHECKPOINT_FILE)
    assert note is not None and b"\n25\n" in note
    wal = _wal(state / "db")
    assert wal.stat().st_size > 0
    wal.write_bytes(b"")  # the disk lied about fsync: the tail is gone

    proc = cli("node", "--config", str(config))
    assert_one_line_error(proc, "signed a checkpoint of size 25", "holds only 10", "backup")
    jsonl = tmp_path / "more.jsonl"
    jsonl.write_text(
        json.dumps(
            {
                "out_path": f.store_path("other"),
                "nar_hash": "sha256-" + base64.b64encode(bytes(32)).decode(),
                "nar_size": 1,
            }
        )
        + "\n"
    )
    proc = cli(
        "log", "append", "--state", str(state), "--key", str(tmp_path / "node.key"),
        "--jsonl", str(jsonl),
    )  # fmt: skip
    assert_one_line_error(proc, "signed a checkpoint of size 25", "holds only 10")
    # Nothing was signed over the shorter store.
    assert read_checkpoint_file(state / CHECKPOINT_FILE) == note


def test_a_restored_snapshot_with_another_history_is_refused(tmp_path: Path) -> None:
    config, _ = node_config(tmp_path)
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    _append(state, tmp_path / "node.key", range(5))
    shutil.copytree(state / "db", tmp_path / "snapshot")
    _append(state, tmp_path / "node.key", range(5, 9), now=1_700_000_100)
    shutil.rmtree(state / "db")
    shutil.copytree(tmp_path / "snapshot", state / "db")
    # The snapshot then took other entries, so it is as long but not the same tree.
    with Store(state / "db") as store:
        store.open_log(load_key_file(tmp_path / "node.key").public_key, own=True).append(
            [f.record(i, nar_seed="other") for i in range(5, 9)]
        )
    proc = cli("node", "--config", str(config))
    assert_one_line_error(proc, "does not match the checkpoint this node signed")


def test_a_checkpoint_in_the_file_but_not_in_the_store_is_stored_again(backend: Backend) -> None:
    # A crash after the file was written and before the store's batch: the entries were
    # durable before signing, so the checkpoint is good and is taken over.
    key = f.key("file-first")
    with backend.store() as store:
        own = backend.own_log(store, key)
        own.append([f.record(i) for i in range(7)])
        signed = sign_checkpoint(
            Checkpoint(origin_for(own.log_id), 7, own.log.frontier().root(), 1_700_000_000), key
        )
        backend.write_checkpoint(signed.note)
    with backend.store() as store:
        own = backend.own_log(store, key)
        stored = own.log.checkpoint()
        assert stored is not None and stored.note == signed.note


def test_a_failed_store_write_after_the_checkpoint_file_is_repaired_on_open(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The same crash window, reached by a write that fails: the file holds the new checkpoint,
    # the store does not; nothing was published, and the next open stores it.
    key = f.key("file-first")
    with backend.store() as store:
        own = backend.own_log(store, key)
        own.append([f.record(i) for i in range(7)])
        _fail_next_write(backend, monkeypatch)
        with pytest.raises(StoreWriteError):
            own.sign(1_700_000_000)
        assert own.log.checkpoint() is None
        with pytest.raises(StoreWriteError, match="until it is reopened"):
            own.sign(1_700_000_001)
        note = backend.read_checkpoint()
        assert note is not None and b"\n7\n" in note
    with backend.store() as store:
        own = backend.own_log(store, key)
        stored = own.log.checkpoint()
        assert stored is not None and stored.note == note
        assert own.sign(1_700_000_002) == stored  # nothing new to sign


def _fail_next_write(backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    """The store's next batch fails with nothing of it written (see tests/test_storage.py)."""
    if backend.memory is not None:
        backend.memory.fail_next_write(reason="No space left on device")
        return
    original = Database.write

    def fail_once(self: Database, batch: object) -> None:
        monkeypatch.setattr(Database, "write", original)
        raise StoreWriteError("writing to the store failed: No space left on device")

    monkeypatch.setattr(Database, "write", fail_once)


def test_a_store_behind_the_last_signed_checkpoint_is_refused(backend: Backend) -> None:
    # In process, on both backends: the store was restored from a backup older than the
    # checkpoint file (the node-process tests above do it to LevelDB's write-ahead log).
    key = f.key("behind")
    with backend.store() as store:
        own = backend.own_log(store, key)
        own.append([f.record(i) for i in range(10)])
        own.sign(1)
    backup = backend.snapshot()
    with backend.store() as store:
        own = backend.own_log(store, key)
        own.append([f.record(i) for i in range(10, 25)])
        own.sign(2)
    note = backend.read_checkpoint()
    backend.restore(backup)
    with backend.store() as store, pytest.raises(StaleStoreError) as info:
        backend.own_log(store, key)
    assert "signed a checkpoint of size 25" in str(info.value)
    assert "holds only 10" in str(info.value)
    assert backend.read_checkpoint() == note  # nothing was signed over the shorter store


def test_a_store_with_another_history_is_refused(backend: Backend) -> None:
    key = f.key("forked")
    with backend.store() as store:
        own = backend.own_log(store, key)
        own.append([f.record(i) for i in range(5)])
        own.sign(1)
    backup = backend.snapshot()
    with backend.store() as store:
        own = backend.own_log(store, key)
        own.append([f.record(i) for i in range(5, 9)])
        own.sign(2)
    backend.restore(backup)
    with backend.store() as store:
        store.open_log(key.public_key, own=True).append(
            [f.record(i, nar_seed="other") for i in range(5, 9)]
        )
    with (
        backend.store() as store,
        pytest.raises(StaleStoreError, match="does not match the checkpoint this node signed"),
    ):
        backend.own_log(store, key)


def test_a_checkpoint_file_older_than_the_store_is_refused(backend: Backend) -> None:
    key = f.key("old-file")
    with backend.store() as store:
        own = backend.own_log(store, key)
        own.append([f.record(i) for i in range(3)])
        own.sign(1)
        old = backend.read_checkpoint()
        assert old is not None
        own.append([f.record(i) for i in range(3, 6)])
        own.sign(2)
    backend.write_checkpoint(old)
    with backend.store() as store, pytest.raises(StaleStoreError, match="older than"):
        backend.own_log(store, key)


def test_a_checkpoint_file_of_another_key_is_refused(backend: Backend) -> None:
    with backend.store() as store:
        own = backend.own_log(store, f.key("a"))
        own.append([f.record(i) for i in range(2)])
        own.sign(1_700_000_000)
    with backend.store() as store, pytest.raises(StaleStoreError, match="another key"):
        backend.own_log(store, f.key("someone else"))


def test_a_store_written_before_the_checkpoint_file_existed_gets_one(backend: Backend) -> None:
    key = f.key("upgrade")
    with backend.store() as store:
        own = backend.own_log(store, key)
        own.append([f.record(i) for i in range(4)])
        own.sign(1_700_000_000)
    backend.remove_checkpoint()
    with backend.store() as store:
        own = backend.own_log(store, key)
        cp = own.log.checkpoint()
        assert cp is not None
    assert backend.read_checkpoint() == cp.note


def test_the_checkpoint_file_is_written_before_the_store_holds_the_checkpoint(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = f.key("order")
    seen: list[bytes | None] = []
    with backend.store() as store:
        own = backend.own_log(store, key)
        own.append([f.record(0)])
        original = LogStore.set_checkpoint

        def spy(self, checkpoint):  # type: ignore[no-untyped-def]
            seen.append(backend.read_checkpoint())
            original(self, checkpoint)

        monkeypatch.setattr(LogStore, "set_checkpoint", spy)
        signed = own.sign(5)
    assert signed is not None and seen == [signed.note]
    if backend.leveldb:  # a file's mode; the memory file has none
        assert oct(os.stat(backend.state / CHECKPOINT_FILE).st_mode & 0o777) == "0o600"


def test_a_root_that_disagrees_with_the_stored_leaves_is_never_signed(backend: Backend) -> None:
    key = f.key("tampered")
    with backend.store() as store:
        own = backend.own_log(store, key)
        own.append([f.record(i) for i in range(3)])
        first = own.sign(1)
        own.append([f.record(i) for i in range(3, 8)])
        # A stored record changes under the running node (bit rot, a bad disk, a bug).
        num = store.db.get(b"I" + own.log_id)
        assert num is not None
        record_key = b"E" + num + (5).to_bytes(8, "big")
        record = bytearray(store.db.get(record_key) or b"")
        record[-3] ^= 0x40
        store.db.put(record_key, bytes(record))
        with pytest.raises(StoreCorruptError, match="entry 5"):
            own.sign(2)
        assert own.log.checkpoint() == first
    assert backend.read_checkpoint() == (first.note if first else None)


# -- a database is created only where there is none ----------------------------------------


@pytest.mark.parametrize("compacted", [False, True])
def test_a_missing_current_file_is_refused_and_restoring_it_brings_the_log_back(
    tmp_path: Path, compacted: bool
) -> None:
    config, sock = node_config(tmp_path)
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    _append(state, tmp_path / "node.key", range(300))
    db = state / "db"
    if compacted:
        with Store(db) as store:
            store.db.compact()
    before = _db_files(db)
    (db / "CURRENT").rename(tmp_path / "CURRENT.saved")
    for _ in range(2):  # more than one attempt changes nothing either
        proc = cli("node", "--config", str(config))
        assert_one_line_error(proc, "CURRENT file is missing", "nothing was changed")
    after = _db_files(db)
    assert after == {k: v for k, v in before.items() if k != "CURRENT"}
    (tmp_path / "CURRENT.saved").rename(db / "CURRENT")
    with running(config, sock):
        with ControlClient(sock) as client:
            status = client.status()
        assert status.size == 300 and status.checkpoint_size == 300
    proc = cli("log", "verify", "--state", str(state))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_a_deleted_store_with_its_marker_left_is_refused(tmp_path: Path) -> None:
    config, _ = node_config(tmp_path)
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    _append(state, tmp_path / "node.key", range(3))
    shutil.rmtree(state / "db")
    proc = cli("node", "--config", str(config))
    assert_one_line_error(proc, "is gone", "db.created")
    assert not (state / "db").exists()


def test_files_in_a_new_directory_are_never_overwritten_by_a_new_store(tmp_path: Path) -> None:
    db = tmp_path / "db"
    db.mkdir()
    (db / "000005.ldb").write_bytes(b"someone's table")
    with pytest.raises(StoreError, match="CURRENT file is missing"):
        Store(db)
    assert (db / "000005.ldb").read_bytes() == b"someone's table"


# -- damage in table files -----------------------------------------------------------------


def _compacted_store(tmp_path: Path, n: int) -> tuple[Path, Path, Path]:
    config, sock = node_config(tmp_path)
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    _append(state, tmp_path / "node.key", range(n))
    with Store(state / "db") as store:
        store.db.compact()
    return config, sock, state


def _flip_bit_in_tables(db: Path, needle: bytes) -> None:
    """Flip one bit inside the stored copy of `needle` (tables are not compressed)."""
    for table in db.glob("*.ldb"):
        data = bytearray(table.read_bytes())
        at = data.find(needle)
        if at >= 0:
            data[at + len(needle) // 2] ^= 0x08
            table.write_bytes(bytes(data))
            return
    raise AssertionError("leaf bytes not found in any table")


def test_a_flipped_bit_in_an_old_leaf_is_never_served(tmp_path: Path) -> None:
    config, sock, state = _compacted_store(tmp_path, 1000)
    _flip_bit_in_tables(state / "db", f.leaf(300))  # far from the right edge
    with running(config, sock), ControlClient(sock) as client:
        with pytest.raises(RemoteProtocolError, match="damaged: Corruption"):
            client.lookup(f.entry(300).out_path)
        assert client.status().size == 1000  # and the node keeps serving
        (hit,) = client.lookup(f.entry(10).out_path)
        assert hit.leaf == f.leaf(10)
    proc = cli("log", "verify", "--state", str(state))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    (report,) = [json.loads(line) for line in proc.stdout.splitlines()]
    assert not report["ok"] and report["problems"]


def test_a_flipped_bit_in_the_newest_leaves_stops_the_node_at_start(tmp_path: Path) -> None:
    config, _, state = _compacted_store(tmp_path, 1000)
    _flip_bit_in_tables(state / "db", f.leaf(999))
    proc = cli("node", "--config", str(config))
    assert_one_line_error(proc, "damaged")


def test_a_truncated_table_is_a_one_line_error_for_node_and_verify(tmp_path: Path) -> None:
    config, _, state = _compacted_store(tmp_path, 2000)
    (table,) = sorted((state / "db").glob("*.ldb"))
    with table.open("r+b") as fh:
        fh.truncate(table.stat().st_size // 2)
    assert_one_line_error(cli("node", "--config", str(config)), "store")
    proc = cli("log", "verify", "--state", str(state))
    assert proc.returncode in (1, 2), proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    if proc.returncode == 2:
        assert_one_line_error(proc, "store")
    else:
        assert not json.loads(proc.stdout.splitlines()[0])["ok"]


# -- failed writes: an error reply, the node stays up and recovers -------------------------


def _submit_until_refused(sock: Path, start: int) -> tuple[dict[bytes, int], int]:
    acked: dict[bytes, int] = {}
    i = start
    for _ in range(2000):
        batch = [f.leaf(j) for j in range(i, i + 50)]
        try:
            indices = submit_leaves(sock, batch, timeout=10)
        except NodeUnavailableError as exc:
            assert "cannot store" in str(exc) or "cannot take" in str(exc)
            return acked, i
        acked.update(zip(batch, indices, strict=True))
        i += 50
    raise AssertionError("the file size limit never stopped a write")


def _submit_until_accepted(sock: Path, leaves: list[bytes]) -> list[int]:
    deadline = time.monotonic() + 30
    while True:
        try:
            return submit_leaves(sock, leaves, timeout=10)
        except NodeUnavailableError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_a_write_past_the_file_size_limit_is_refused_and_retried_later(tmp_path: Path) -> None:
    config, sock = node_config(tmp_path, checkpoint_interval=3600)
    limit = 256 * 1024

    def small_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))

    proc = start_node(config, preexec_fn=small_files)
    try:
        wait_ready(sock, proc)
        acked, next_leaf = _submit_until_refused(sock, 0)
        assert acked, "nothing was stored before the limit"
        with ControlClient(sock) as client:
            assert client.status().size == len(acked)  # up, and nothing unacknowledged counts
        resource.prlimit(
            proc.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY)
        )
        late = [f.leaf(j) for j in range(next_leaf, next_leaf + 10)]
        try:
            indices = _submit_until_accepted(sock, late)
        except NodeUnavailableError as exc:
            err = stop(proc)
            raise AssertionError(f"the node did not recover: {exc}\n{err}") from exc
        acked.update(zip(late, indices, strict=True))
        assert proc.poll() is None
    finally:
        if proc.stderr is not None and not proc.stderr.closed:
            err = stop(proc)
    assert "Traceback" not in err, err
    assert "cannot write" in err and err.count("to the store (retrying") == 1
    with Store(tmp_path / "state" / "db") as store:
        log = store.open_log(load_key_file(tmp_path / "node.key").public_key, own=True)
        for leaf, index in acked.items():
            assert log.leaf(index) == leaf
        assert log.size == len(acked)
        assert log.verify().ok
        cp = log.checkpoint()
        assert cp is not None and cp.checkpoint.size == len(acked)


def test_a_full_disk_is_refused_and_the_node_recovers_when_space_returns(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (CI runs as root)")
    from tests.nodeproc import mount_tmpfs, umount

    disk = tmp_path / "disk"
    mount_tmpfs(disk, "size=8m,mode=0700")
    try:
        # Another program has nearly filled the disk.
        ballast = disk / "ballast"
        ballast.write_bytes(bytes(7 << 20))
        config, sock = node_config(tmp_path, state=str(disk / "state"))
        with running(config, sock) as proc:
            acked, next_leaf = _submit_until_refused(sock, 0)
            with ControlClient(sock) as client:
                assert client.status().size == len(acked)
            ballast.unlink()  # the operator makes room
            late = [f.leaf(j) for j in range(next_leaf, next_leaf + 5)]
            indices = _submit_until_accepted(sock, late)
            acked.update(zip(late, indices, strict=True))
            assert proc.poll() is None
        with Store(disk / "state" / "db") as store:
            log = store.open_log(load_key_file(tmp_path / "node.key").public_key, own=True)
            assert all(log.leaf(i) == leaf for leaf, i in acked.items())
            assert log.size == len(acked) and log.verify().ok
    finally:
        umount(disk)


def test_a_checkpoint_file_that_cannot_be_written_means_no_checkpoint_yet(
    backend: Backend,
) -> None:
    key = f.key("unwritable-file")
    with backend.store() as store:
        own = backend.own_log(store, key)
        own.append([f.record(i) for i in range(3)])
        backend.break_checkpoint_file()
        with pytest.raises(StoreWriteError, match="cannot write the checkpoint file"):
            own.sign(1)
        assert own.log.checkpoint() is None  # nothing published that the file does not hold
        backend.mend_checkpoint_file()
        assert backend.read_checkpoint() is None
        signed = own.sign(2)
        assert signed is not None and own.log.checkpoint() == signed
