"""The key-value interface the store is written against, and what both backends promise.

`trustix_p2p.storage` keeps every log rule (deduplication in the own log, checkpoint acceptance,
the tree-against-checkpoint check, `check_range`, `verify`) in one place, above this interface;
the backends only keep bytes.  Two implement it:

- `trustix_p2p.kv.leveldb.Database`: plyvel, durable, checksummed reads (a node's store);
- `trustix_p2p.kv.memory.MemoryDatabase`: a dict and a sorted key list, no files and no file
  descriptors (simulations of thousands of nodes in one process, and tests).

What a backend must do, exactly as LevelDB does it:

- keys and values are bytes; iteration is in bytewise key order (Python's `bytes` order), over
  `[start, stop)`, and sees no write made after it began;
- a write batch is applied all or nothing, in the order of its operations (a later operation on
  the same key wins), and durably before `write` returns (unless made with
  `durable=False`); a failed write raises `StoreWriteError` and leaves nothing of the batch
  behind;
- reads raise `StoreCorruptError` for damage and `StoreError` otherwise (also once closed).

A backend must never interpret what it stores: no log logic here.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

__all__ = ["KeyValueDB", "WriteBatch", "prefix_stop"]


class WriteBatch(Protocol):
    """Operations collected for one atomic `KeyValueDB.write`."""

    def put(self, key: bytes, value: bytes) -> None: ...

    def delete(self, key: bytes) -> None: ...

    def clear(self) -> None:
        """Forget every operation collected so far."""


class KeyValueDB(Protocol):
    """An ordered byte-string map with atomic, durable batches (see the module docstring)."""

    @property
    def closed(self) -> bool: ...

    def close(self) -> None:
        """Close it; idempotent.  Every later read or write fails with StoreError."""

    def get(self, key: bytes) -> bytes | None: ...

    def items(self, start: bytes, stop: bytes | None) -> Iterator[tuple[bytes, bytes]]:
        """(key, value) for every key in [start, stop) in bytewise order (stop None: to the end)."""
        ...

    def write_batch(self, durable: bool = True) -> WriteBatch:
        """A new, empty batch of this database; hand it to `write`.

        `durable=False` skips the fsync: such a batch is applied all or nothing and in order
        with every other write, but a crash (of the machine, not only of the process) may
        lose it, together with the non-durable writes just before it.  For what can be
        learned again (gossip heads, remembered peers), never for acknowledged data.
        """
        ...

    def write(self, batch: WriteBatch) -> None:
        """Apply `batch` atomically and durably; StoreWriteError if nothing of it was written."""

    def put(self, key: bytes, value: bytes) -> None:
        """One key in a batch of its own (tests and maintenance)."""

    def delete(self, key: bytes) -> None:
        """One deletion in a batch of its own (tests and maintenance)."""


def prefix_stop(prefix: bytes) -> bytes | None:
    """The first key after every key that starts with `prefix` (None: there is none).

    `items(prefix, prefix_stop(prefix))` is every key with that prefix, as plyvel's `prefix=`.
    """
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return None
    return stripped[:-1] + bytes((stripped[-1] + 1,))
