"""The LevelDB backend (plyvel): checksummed reads, durable batches, plyvel's errors as ours.

Opening a database here only opens it; the rules about where a store may be created (the marker
next to the directory, a missing CURRENT) are `trustix_p2p.storage.Store`'s.  This module never
looks inside the values it stores.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol, cast

import plyvel

from trustix_p2p.errors import StoreCorruptError, StoreError, StoreWriteError
from trustix_p2p.kv import WriteBatch

__all__ = ["DB_OPTIONS", "Database", "open_leveldb"]

# Hashes and leaves do not compress, and the out-path index is written in random key order:
# bigger memtables and files mean fewer, larger compactions.
DB_OPTIONS: dict[str, Any] = {
    "bloom_filter_bits": 10,  # cheap misses for the deduplication index
    "write_buffer_size": 64 << 20,
    "max_file_size": 32 << 20,
    "lru_cache_size": 64 << 20,
    "compression": None,
    # Detect damage instead of serving it: a corrupt block fails the read that meets it.
    "paranoid_checks": True,
}


class _PlyvelBatch(WriteBatch, Protocol):
    def write(self) -> None: ...


class Database:
    """The plyvel database, with checksummed reads and plyvel's errors turned into ours.

    Every read verifies LevelDB's block checksums.  Reads raise `StoreCorruptError` on damage
    and `StoreError` otherwise; `write` raises `StoreWriteError`.  A `trustix_p2p.kv.KeyValueDB`.
    """

    __slots__ = ("_db", "path")

    def __init__(self, db: Any, path: Path) -> None:
        self._db = db
        self.path = path

    @property
    def closed(self) -> bool:
        return bool(self._db.closed)

    def close(self) -> None:
        if not self._db.closed:
            self._db.close()

    def _read_error(self, exc: Exception) -> StoreError:
        if isinstance(exc, plyvel.CorruptionError):
            return StoreCorruptError(f"the store at {self.path} is damaged: {plyvel_message(exc)}")
        return StoreError(f"cannot read the store at {self.path}: {plyvel_message(exc)}")

    def get(self, key: bytes) -> bytes | None:
        try:
            value: bytes | None = self._db.get(key, verify_checksums=True)
        except (plyvel.Error, RuntimeError) as exc:
            raise self._read_error(exc) from exc
        return value

    def items(self, start: bytes, stop: bytes | None) -> Iterator[tuple[bytes, bytes]]:
        try:
            it = self._db.iterator(start=start, stop=stop, verify_checksums=True)
            yield from it
        except (plyvel.Error, RuntimeError) as exc:
            raise self._read_error(exc) from exc

    def write_batch(self, durable: bool = True) -> WriteBatch:
        """A new write batch; hand it to `write` (durable: sync=True)."""
        batch: WriteBatch = self._db.write_batch(sync=durable)
        return batch

    def write(self, batch: WriteBatch) -> None:
        try:
            cast(_PlyvelBatch, batch).write()
        except (plyvel.Error, RuntimeError) as exc:
            raise StoreWriteError(
                f"writing to the store at {self.path} failed: {plyvel_message(exc)}"
            ) from exc

    def put(self, key: bytes, value: bytes) -> None:
        batch = self.write_batch()
        batch.put(key, value)
        self.write(batch)

    def delete(self, key: bytes) -> None:
        batch = self.write_batch()
        batch.delete(key)
        self.write(batch)

    def compact(self) -> None:
        """Compact everything into table files (tests and maintenance)."""
        self._db.compact_range()


def plyvel_message(exc: Exception) -> str:
    text = exc.args[0] if exc.args else str(exc)
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return str(text)


def open_leveldb(path: Path, create: bool) -> Database:
    """Open (`create`: or create) the database in `path`; one-line StoreError on failure."""
    try:
        db = plyvel.DB(str(path), create_if_missing=create, **DB_OPTIONS)
    except plyvel.CorruptionError as exc:
        raise StoreCorruptError(
            f"the store at {path} is damaged: {plyvel_message(exc)}; move it aside and restore "
            "the state directory from a backup (or re-sync mirrored logs from peers)"
        ) from exc
    except plyvel.Error as exc:
        message = plyvel_message(exc)
        lowered = message.lower()
        if "lock" in lowered and ("unavailable" in lowered or "already held" in lowered):
            hint = " (is a node still running on it?)"
        elif "permission denied" in lowered:
            hint = f" (permission denied: can this user, uid {os.geteuid()}, write it?)"
        elif "does not exist" in lowered:
            hint = (
                ": its LevelDB CURRENT file is missing, so the database cannot be found; nothing "
                "was changed. Restore CURRENT (it names the MANIFEST-* file in that directory) "
                "or the whole directory from a backup"
            )
        else:
            hint = ""
        raise StoreError(f"cannot open the store at {path}: {message}{hint}") from exc
    return Database(db, path)
