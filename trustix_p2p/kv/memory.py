"""The in-memory backend: a store that lives in a dict, for simulations and tests.

A simulation runs thousands of nodes in one process, each with its own store, and a LevelDB
database holds about four file descriptors; this backend holds none and touches no file.  It
keeps the very bytes LevelDB would (the log rules above it are the same code), so a simulated
node's store behaves as the real one, down to failed writes (`fail_next_write`).

A `MemoryDatabase` stands for the database itself, not for one opening of it: it starts closed,
`trustix_p2p.storage.Store` opens it (and refuses to open it twice, as LevelDB's lock does), and
its contents outlive `close()`, so a node can be stopped and started again on the same store.
`copy()` is a backup of it.

Layout: `_data` maps keys to values (lookups); `_keys` is every key in bytewise order, for range
reads.  Appends write keys in any order (the out-path index is random), so new keys wait in
`_pending` and are sorted in at the next range read: one C-level sort of the two runs instead
of a list insertion per key.  `_keys` is replaced, never changed in place, and a range read
copies its slice of keys and values at once, so a read sees no later write (as a LevelDB
iterator does not).  This module never looks inside the values it stores.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Iterator
from typing import cast

from trustix_p2p.errors import StoreError, StoreWriteError
from trustix_p2p.kv import WriteBatch

__all__ = ["MemoryDatabase", "MemoryWriteBatch"]


class MemoryWriteBatch:
    """A batch for `MemoryDatabase.write`: the last operation on each key (None: delete)."""

    __slots__ = ("ops",)

    def __init__(self) -> None:
        self.ops: dict[bytes, bytes | None] = {}

    def put(self, key: bytes, value: bytes) -> None:
        self.ops[key] = value

    def delete(self, key: bytes) -> None:
        self.ops[key] = None

    def clear(self) -> None:
        self.ops.clear()


class MemoryDatabase:
    """An ordered byte-string map with atomic batches; a `trustix_p2p.kv.KeyValueDB`.

    Use it through `Store.in_memory()` (or `Store(database)` to open an existing one again).
    """

    __slots__ = ("_closed", "_data", "_failures", "_keys", "_pending", "name")

    def __init__(self, name: str = "memory") -> None:
        self.name = name
        self._data: dict[bytes, bytes] = {}
        self._keys: list[bytes] = []
        self._pending: list[bytes] = []
        self._closed = True
        self._failures: list[str] = []

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<MemoryDatabase {self.name!r}, {len(self._data)} keys, {state}>"

    def __len__(self) -> int:
        return len(self._data)

    # -- opening ---------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    def open(self) -> None:
        """Open it for reading and writing; StoreError if it is open already."""
        if not self._closed:
            raise StoreError(
                f"cannot open the memory store {self.name!r}: it is open already "
                "(is a node still running on it?)"
            )
        self._closed = False

    def close(self) -> None:
        self._closed = True

    def copy(self, name: str | None = None) -> MemoryDatabase:
        """A closed copy of the contents as they are now: a backup, to restore or to damage."""
        other = MemoryDatabase(self.name if name is None else name)
        other._data = dict(self._data)
        other._keys = sorted(self._data)
        return other

    def _closed_error(self) -> StoreError:
        return StoreError(f"cannot read the memory store {self.name!r}: it is closed")

    # -- reading ---------------------------------------------------------------------------

    def get(self, key: bytes) -> bytes | None:
        if self._closed:
            raise self._closed_error()
        return self._data.get(key)

    def items(self, start: bytes, stop: bytes | None) -> Iterator[tuple[bytes, bytes]]:
        if self._closed:
            raise self._closed_error()
        if self._pending:
            pending = self._pending
            self._pending = []
            if len(pending) * 64 < len(self._keys):
                # A few new keys into many: insert each (a memmove), not a sort of all.
                for key in sorted(pending):
                    insort(self._keys, key)
            else:
                keys = self._keys + pending
                keys.sort()  # two sorted runs once the pending keys are sorted: a merge
                self._keys = keys
        keys = self._keys
        lo = bisect_left(keys, start)
        hi = len(keys) if stop is None else bisect_left(keys, stop, lo)
        chunk = keys[lo:hi]
        return iter(list(zip(chunk, map(self._data.__getitem__, chunk), strict=True)))

    # -- writing ---------------------------------------------------------------------------

    def fail_next_write(self, count: int = 1, reason: str = "injected write failure") -> None:
        """Make the next `count` writes fail with StoreWriteError, writing nothing (tests)."""
        self._failures.extend([reason] * count)

    def write_batch(self, durable: bool = True) -> MemoryWriteBatch:
        return MemoryWriteBatch()

    def write(self, batch: WriteBatch) -> None:
        if not isinstance(batch, MemoryWriteBatch):
            raise TypeError(f"not a batch of a memory store: {batch!r}")
        if self._closed:
            raise StoreWriteError(f"writing to the memory store {self.name!r} failed: it is closed")
        if self._failures:
            reason = self._failures.pop(0)
            raise StoreWriteError(f"writing to the memory store {self.name!r} failed: {reason}")
        ops = batch.ops
        data = self._data
        puts: dict[bytes, bytes]
        if None in ops.values():
            puts = {k: v for k, v in ops.items() if v is not None}
            dead = {k for k, v in ops.items() if v is None and k in data}
            if dead:
                for key in dead:
                    del data[key]
                self._keys = [k for k in self._keys if k not in dead]
                self._pending = [k for k in self._pending if k not in dead]
        else:
            puts = cast("dict[bytes, bytes]", ops)  # no None among the values
        # Not `puts.keys() - data.keys()`: that walks every key of the store.
        new = [key for key in puts if key not in data]
        data.update(puts)
        self._pending.extend(new)

    def put(self, key: bytes, value: bytes) -> None:
        batch = MemoryWriteBatch()
        batch.put(key, value)
        self.write(batch)

    def delete(self, key: bytes) -> None:
        batch = MemoryWriteBatch()
        batch.delete(key)
        self.write(batch)
