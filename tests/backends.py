"""The two store backends side by side, for tests that must hold for both.

A `Backend` is one node's store and checkpoint file, on LevelDB files in a state directory or in
memory (`Store.in_memory()`, `MemoryCheckpointFile`), with the few things a test does to them
from outside: damage a stored value, take and restore a backup, change the checkpoint file.
Outside changes are made the way they would happen to a real node: on LevelDB through plyvel
or on the files themselves, with the store closed; in memory on the closed `MemoryDatabase`.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from trustix_p2p.core.keys import PrivateKey
from trustix_p2p.kv.memory import MemoryDatabase
from trustix_p2p.ownlog import CHECKPOINT_FILE, MemoryCheckpointFile, OwnLog, read_checkpoint_file
from trustix_p2p.storage import Store

BACKENDS = ("leveldb", "memory")


class Backend:
    def __init__(self, kind: str, tmp_path: Path) -> None:
        assert kind in BACKENDS
        self.kind = kind
        self.tmp_path = tmp_path
        self.state = tmp_path / "state"
        self.state.mkdir(mode=0o700)
        self.db_path = self.state / "db"
        self.memory = MemoryDatabase("test") if kind == "memory" else None
        self.memory_checkpoint = MemoryCheckpointFile()
        self._snapshots = 0

    def __repr__(self) -> str:
        return f"<Backend {self.kind}>"

    @property
    def leveldb(self) -> bool:
        return self.memory is None

    def store(self, *, create: bool = True) -> Store:
        """Open this node's store (again: the same data every time)."""
        if self.memory is not None:
            return Store(self.memory, create=create)
        return Store(self.db_path, create=create)

    def own_log(self, store: Store, key: PrivateKey) -> OwnLog:
        """OwnLog.open as the node calls it: with the state directory, or the memory file."""
        if self.memory is None:
            return OwnLog.open(store, key, self.state)
        return OwnLog.open(store, key, self.memory_checkpoint)

    # -- the checkpoint file, as an operator or a restore would change it --------------------

    def read_checkpoint(self) -> bytes | None:
        if self.memory is None:
            return read_checkpoint_file(self.state / CHECKPOINT_FILE)
        return self.memory_checkpoint.note

    def write_checkpoint(self, note: bytes) -> None:
        if self.memory is None:
            (self.state / CHECKPOINT_FILE).write_bytes(note)
        else:
            self.memory_checkpoint.note = note

    def remove_checkpoint(self) -> None:
        if self.memory is None:
            (self.state / CHECKPOINT_FILE).unlink()
        else:
            self.memory_checkpoint.note = None

    def break_checkpoint_file(self) -> None:
        """Make the next write of the checkpoint file fail (as a full disk would)."""
        if self.memory is None:
            (self.state / CHECKPOINT_FILE).mkdir()  # as good as a full disk for os.replace
        else:
            self.memory_checkpoint.fail_next_write()

    def mend_checkpoint_file(self) -> None:
        if self.memory is None:
            (self.state / CHECKPOINT_FILE).rmdir()

    # -- the store from outside (it must be closed) ------------------------------------------

    def flip(self, key: bytes, offset: int) -> None:
        """Flip the low bit of byte `offset` of the value stored at `key`."""
        if self.memory is None:
            import plyvel

            db = plyvel.DB(str(self.db_path))
            try:
                value = bytearray(db.get(key))
                value[offset] ^= 0x01
                db.put(key, bytes(value))
            finally:
                db.close()
            return
        self.memory.open()
        try:
            raw = self.memory.get(key)
            assert raw is not None
            value = bytearray(raw)
            value[offset] ^= 0x01
            self.memory.put(key, bytes(value))
        finally:
            self.memory.close()

    def snapshot(self) -> object:
        """A backup of the (closed) store."""
        if self.memory is None:
            self._snapshots += 1
            copy = self.tmp_path / f"snapshot-{self._snapshots}"
            shutil.copytree(self.db_path, copy)
            return copy
        return self.memory.copy()

    def restore(self, snapshot: object) -> None:
        """Put a backup back in place of the (closed) store."""
        if self.memory is None:
            assert isinstance(snapshot, Path)
            shutil.rmtree(self.db_path)
            shutil.copytree(snapshot, self.db_path)
        else:
            assert isinstance(snapshot, MemoryDatabase)
            self.memory = snapshot.copy()
