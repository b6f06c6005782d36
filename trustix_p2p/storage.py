"""The node's store: logs (own and mirrored), their Merkle nodes, checkpoints, indexes.

One key-value database per node holds many logs side by side: a LevelDB (plyvel) database for a
node, or a `MemoryDatabase` for simulations and tests (`Store.in_memory()`).  Every rule below is
written once, here, over the small `trustix_p2p.kv.KeyValueDB` interface (get, ordered range
reads, atomic durable batches); the backends only keep bytes, the same bytes in both.  Each log
gets a 4-byte local number (so keys stay short) and its data lives under these key prefixes:

    b"I" + log_id                         -> local number (4 bytes)
    b"A" + num                            -> log metadata: msgpack [log_id, public key, own]
    b"N" + num                            -> number of stored entries (8 bytes, big-endian)
    b"E" + num + index(8)                 -> the leaf record (below)
    b"P" + num + out_path + 0x00 + lh     -> index(8): out path -> leaf positions; in the own
                                             log also leaf -> index (idempotent submission)
    b"P" + num + out_path + 0x00 + lh + index(8) -> index(8): the same for mirrored logs,
                                             whose builder may log identical leaves twice
    b"C" + num                            -> latest checkpoint note bytes, exactly as signed
    b"K" + num + size(8) + sha256(note)   -> every checkpoint note kept for this log
    b"T" + num + block(8)                 -> hash tile of leaves [256 * block, 256 * block + 256)
    b"H" + num                            -> gossip head: the latest checkpoint note the node
                                             accepted for this log (may be ahead of the stored
                                             entries while a mirror syncs; a witness keeps
                                             only this), with the cosignatures it gathered
    b"F" + num                            -> how the node follows the log: b"mirror" or
                                             b"witness" (absent: mirror, as before gossip)

Node-wide records, outside any log:

    b"V" + evidence id (32 bytes)         -> a verified evidence document (gossip.records)
    b"R" + peer address                   -> what the node remembers of a peer (gossip.records)

A leaf record holds everything the Merkle tree needs at that position, so an append writes two
keys per entry: the leaf hash, then the hashes of the perfect subtrees this leaf completes
(levels 1..k, where k is the number of trailing one bits of its index: leaf i completes node
(level, idx) exactly when i = (idx + 1) * 2**level - 1), then the leaf bytes exactly as the
builder wrote them.  Node (level, idx) is therefore one read of leaf ((idx + 1) << level) - 1.

Hash tiles (after C2SP tlog-tiles, which groups the tree into tiles of height 8): the leaf that
completes a block of 256 leaves also writes, in the same batch, a tile holding every hash of
that block's perfect subtree, levels 0..8, 511 hashes.  The tile is exactly the hash parts of
the block's 256 records (leaf hash, then completed nodes) concatenated in leaf order and cut
after the block's own root (its last leaf also completes higher levels).  So leaf j of the
block starts at hash number 2j - popcount(j) (the nodes at levels >= 1 completed before it
number sum(j >> l) = j - popcount(j)), and node (level, idx) inside the block is hash number
2j - popcount(j) + level with j = ((idx + 1) << level) - 1 mod 256.  A proof then takes its
eight lowest siblings from one tile (`LogStore.siblings`) instead of eight records; nodes of
the incomplete last block come from the records, and nodes at level >= 8 (about n / 128 of
them) are kept in memory once read.  The tiles repeat hashes the records already hold, 64
bytes per leaf, to turn ~8 random reads per proof into one; `verify` recomputes both.  The
hash parts of the incomplete last block are kept in memory for the append that completes it
(read back from its records at the first append after opening).

Proofs read only perfect-subtree hashes, O(log n) of them (core.merkle); nothing here rebuilds a
tree from its leaves except `verify`, which exists to do exactly that.  Writes that belong together
(entries, the nodes they complete, their index keys, the size counter and a checkpoint covering
them) go in one write batch written with sync=True, so an acknowledged append survives a crash
and a stored checkpoint never refers to data that is not on disk.

Integrity: the database is opened with LevelDB's paranoid checks and every read verifies the
block checksums, so a flipped bit in a table file is a `StoreCorruptError`, never a wrong leaf
or hash; a served leaf is also checked against its stored leaf hash.  `check_range` re-reads
stored records and recomputes their hashes (start-up and every new own checkpoint use it for the
entries that checkpoint adds).  A database is created only where none exists: next to the
database directory a marker (`<db>.created`) is written when it is made, and a store whose
marker exists, or whose directory holds any file, is never created anew (a missing LevelDB
`CURRENT` would otherwise make LevelDB start an empty database over the old tables).  A failed
write (disk full, file size limit, I/O error) raises `StoreWriteError` with nothing of the batch
acknowledged; the store then refuses writes until `reopen()` has recovered it from its log.
The marker, CURRENT and checksums are LevelDB's matter; a memory store touches no file, and its
failed writes are injected (`MemoryDatabase.fail_next_write`) to test the same rules.

This module must never sign anything, read a clock, or accept a checkpoint whose root it has not
recomputed from its own stored nodes.
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Callable, Iterator, Sequence
from itertools import chain
from pathlib import Path

import attrs
import msgpack

from trustix_p2p.core import merkle
from trustix_p2p.core.checkpoint import SignedCheckpoint, verify_checkpoint
from trustix_p2p.core.entry import decode_entry
from trustix_p2p.core.keys import PublicKey
from trustix_p2p.errors import (
    DecodeError,
    LocalProtocolError,
    StoreCorruptError,
    StoreError,
    StoreWriteError,
    TrustixError,
    VerificationError,
)
from trustix_p2p.kv import KeyValueDB, WriteBatch, prefix_stop
from trustix_p2p.kv.leveldb import DB_OPTIONS, Database, open_leveldb
from trustix_p2p.kv.memory import MemoryDatabase

__all__ = [
    "DB_OPTIONS",
    "MARKER_SUFFIX",
    "Database",
    "KeyValueDB",
    "LeafRecord",
    "LogStore",
    "MemoryDatabase",
    "Store",
    "VerifyReport",
]

_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_HS = merkle.HASH_SIZE
_SCHEMA_KEY = b"!schema"
# Version 2 added the hash tiles; a version 1 store has none and would fail `verify`.
_SCHEMA_VERSION = b"2"
_TILE_HEIGHT = 8
_TILE_WIDTH = 1 << _TILE_HEIGHT
_TILE_BYTES = (2 * _TILE_WIDTH - 1) * _HS
_NODE_CACHE_MAX = 1 << 18
_EDGE_CACHE_MAX = 1 << 12
#: Written next to the database directory when the database is created (see the docstring).
MARKER_SUFFIX = ".created"


def _completed_levels(index: int) -> int:
    """How many interior subtrees leaf `index` completes: its trailing one bits."""
    return (index ^ (index + 1)).bit_length() - 1


def _tile_slots() -> tuple[tuple[int, ...], ...]:
    """Byte offset in a tile of node (level, idx), as _TILE_SLOTS[level][idx mod 256 >> level]."""
    slots = []
    for level in range(_TILE_HEIGHT + 1):
        row = []
        for local in range(_TILE_WIDTH >> level):
            j = ((local + 1) << level) - 1
            row.append((2 * j - j.bit_count() + level) * _HS)
        slots.append(tuple(row))
    return tuple(slots)


_TILE_SLOTS = _tile_slots()
# Offsets of the siblings of node (level, idx) at levels level .. 7, all inside its own tile,
# as _TILE_PATHS[level][idx mod 256 >> level]: a proof's lower siblings are then one slice each.
_TILE_PATHS = tuple(
    tuple(
        tuple(_TILE_SLOTS[level + k][(local >> k) ^ 1] for k in range(_TILE_HEIGHT - level))
        for local in range(_TILE_WIDTH >> level)
    )
    for level in range(_TILE_HEIGHT + 1)
)


@attrs.frozen
class LeafRecord:
    """A leaf to append: its bytes exactly as received, and the out path it is about."""

    leaf: bytes
    out_path: str


@attrs.frozen
class VerifyReport:
    """What `LogStore.verify` recomputed."""

    log_id: bytes
    size: int
    checkpoint_size: int | None
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Store:
    """Every log a node keeps, in one LevelDB database or in one `MemoryDatabase`.

    `Store(path)` opens the LevelDB database in the directory `path`.  `create=True` creates
    it only if there is none yet: no marker and no files in its directory.  An existing store
    is always opened as it is, never recreated.

    `Store.in_memory()` makes a store that touches no file and holds no file descriptor (for
    simulations and tests); `Store(database)` opens a closed `MemoryDatabase` again, so a
    simulated node can restart on the store it had.  The log rules are the same code for both.
    """

    path: Path | None
    marker: Path | None
    memory: MemoryDatabase | None
    db: KeyValueDB

    def __init__(
        self, path: str | os.PathLike[str] | MemoryDatabase, *, create: bool = True
    ) -> None:
        if isinstance(path, MemoryDatabase):
            self.path = self.marker = None
            self.memory = path
        else:
            self.path = Path(path)
            self.marker = self.path.with_name(self.path.name + MARKER_SUFFIX)
            self.memory = None
        self._create_allowed = create
        self.broken: StoreWriteError | None = None
        self.db = self._open()
        self._logs: dict[bytes, LogStore] = {}
        # The largest local log number in use, once read (new logs count up from it).
        self._max_num: int | None = None

    @classmethod
    def in_memory(cls, database: MemoryDatabase | None = None, *, create: bool = True) -> Store:
        """A store in `database` (default: a new, empty one); no file is touched."""
        return cls(MemoryDatabase() if database is None else database, create=create)

    def __repr__(self) -> str:
        where = self.path if self.memory is None else self.memory
        return f"<Store {where}>"

    def _open(self) -> KeyValueDB:
        db: KeyValueDB
        if self.memory is not None:
            where = f"the memory store {self.memory.name!r}"
            new = not len(self.memory)
            if new and not self._create_allowed:
                raise StoreError(f"no store in {where}: it is empty")
            self.memory.open()
            db = self.memory
            needs_marker = False
        else:
            db, new, has_marker = self._open_leveldb()
            where = f"the store at {self.path}"
            needs_marker = not has_marker
        try:
            schema = db.get(_SCHEMA_KEY)
            if schema is None:
                if not new:
                    raise StoreCorruptError(
                        f"{where} has no schema record: it is not a trustix-p2p "
                        "store, or it lost its data"
                    )
                db.put(_SCHEMA_KEY, _SCHEMA_VERSION)
            elif schema != _SCHEMA_VERSION:
                raise StoreError(
                    f"{where} has schema {schema!r}; this version of trustix-p2p "
                    f"reads schema {_SCHEMA_VERSION!r} only"
                )
            if needs_marker:
                self._write_marker()
        except BaseException:
            db.close()
            raise
        return db

    def _open_leveldb(self) -> tuple[Database, bool, bool]:
        """The LevelDB database, whether it is new, and whether its marker exists."""
        path, marker = self.path, self.marker
        assert path is not None and marker is not None
        try:
            existing = os.listdir(path)
        except FileNotFoundError:
            existing = None
        except NotADirectoryError as exc:
            raise StoreError(f"the store path {path} is not a directory") from exc
        except OSError as exc:
            raise StoreError(f"cannot read the store directory {path}: {exc.strerror}") from exc
        has_marker = marker.exists()
        new = not existing and not has_marker
        if new and not self._create_allowed:
            raise StoreError(f"no store at {path} (is this a node's state directory?)")
        if not new and existing is None:
            raise StoreError(
                f"the store at {path} is gone, but {marker} says one was created there: "
                "restore the directory from a backup; a new, empty log would not extend the "
                "checkpoints this node already signed"
            )
        if new:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        return open_leveldb(path, create=new), new, has_marker

    def _write_marker(self) -> None:
        assert self.marker is not None
        fd = os.open(self.marker, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, b"trustix-p2p store " + _SCHEMA_VERSION + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        _fsync_dir(self.marker.parent)

    def reopen(self) -> None:
        """Close and reopen the database after a failed write (LevelDB recovers from its log;
        a memory store has nothing to recover and touches nothing).

        Every log object stays valid; their in-memory state is rebuilt from the store.
        """
        self.db.close()
        self.db = self._open()  # on failure: closed, still broken; try again later
        self._max_num = None
        for log in self._logs.values():
            log.reset()
        self.broken = None

    def close(self) -> None:
        if not self.db.closed:
            self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def write(self, batch: WriteBatch) -> None:
        """Write a batch durably; after a failure every write fails until `reopen()`."""
        if self.broken is not None:
            raise StoreWriteError(f"the store is not writable until it is reopened: {self.broken}")
        try:
            self.db.write(batch)
        except StoreWriteError as exc:
            self.broken = exc
            raise

    def open_log_count(self) -> int:
        """How many logs this store object has opened (answers without reading the store)."""
        return len(self._logs)

    def log_ids(self) -> list[bytes]:
        return [key[1:] for key, _ in self.db.items(b"I", b"J")]

    def has_log(self, log_id: bytes) -> bool:
        return self.db.get(b"I" + log_id) is not None

    # -- node-wide records (the gossip engine's evidence and peers) ------------------------

    def records(self, kind: bytes) -> Iterator[tuple[bytes, bytes]]:
        """(name, value) of every node-wide record of `kind` (b"V" evidence, b"R" peers)."""
        self._check_kind(kind)
        for key, value in self.db.items(kind, prefix_stop(kind)):
            yield key[1:], value

    def record(self, kind: bytes, name: bytes) -> bytes | None:
        self._check_kind(kind)
        value: bytes | None = self.db.get(kind + name)
        return value

    def put_record(self, kind: bytes, name: bytes, value: bytes, *, durable: bool = True) -> None:
        self._check_kind(kind)
        wb = self.db.write_batch(durable=durable)
        wb.put(kind + name, value)
        self.write(wb)

    def delete_record(self, kind: bytes, name: bytes) -> None:
        self._check_kind(kind)
        wb = self.db.write_batch()
        wb.delete(kind + name)
        self.write(wb)

    @staticmethod
    def _check_kind(kind: bytes) -> None:
        if kind not in (b"V", b"R"):
            raise LocalProtocolError(f"no node-wide records of kind {kind!r}")

    def own_log_id(self) -> bytes | None:
        """The log id of this node's own log, if it has one.

        A node whose key was rotated (`trustix-p2p log retire`) holds its retired logs too,
        still marked own: the log that is not closed by a final checkpoint is the current one.
        """
        own = [log_id for log_id in self.log_ids() if self.log(log_id).own]
        for log_id in own:
            cp = self.log(log_id).checkpoint()
            if cp is None or cp.checkpoint.successor is None:
                return log_id
        return own[0] if own else None

    def log(self, log_id: bytes) -> LogStore:
        """An existing log; StoreError if this store does not hold it."""
        cached = self._logs.get(log_id)
        if cached is not None:
            return cached
        num = self.db.get(b"I" + log_id)
        if num is None:
            raise StoreError(f"this store holds no log {log_id.hex()}")
        log = LogStore(self, log_id, num)
        self._logs[log_id] = log
        return log

    def open_log(self, public_key: PublicKey, *, own: bool, mode: str | None = None) -> LogStore:
        """The log of `public_key`, created empty if new (following it in `mode`, see
        `LogStore.mode`).  Checks it against its checkpoint."""
        log_id = public_key.log_id()
        created = not self.has_log(log_id)
        if created:
            if self._max_num is None:
                nums = [_U32.unpack(v)[0] for _, v in self.db.items(b"I", b"J")]
                self._max_num = max(nums, default=0)
            num = _U32.pack(self._max_num + 1)
            meta = msgpack.packb([log_id, public_key.raw, own], use_bin_type=True)
            # A followed log can be learned again; only the own log must be durable at once.
            wb = self.db.write_batch(durable=own)
            wb.put(b"I" + log_id, num)
            wb.put(b"A" + num, meta)
            wb.put(b"N" + num, _U64.pack(0))
            if mode is not None:
                wb.put(b"F" + num, mode.encode())
            self.write(wb)
            self._max_num += 1
        log = self.log(log_id)
        if own and not log.own:
            raise StoreError(f"log {log_id.hex()} is stored as a mirrored log, not this node's own")
        if not created:  # a log made just now holds nothing to check
            log.check_against_checkpoint()
        return log


@attrs.define(eq=False)
class LogStore:
    """One log inside a Store.  Not thread-safe: one writer at a time (the node's writer task)."""

    store: Store
    log_id: bytes
    num: bytes
    public_key: PublicKey = attrs.field(init=False)
    own: bool = attrs.field(init=False)
    _frontier: merkle.MerkleFrontier | None = attrs.field(init=False, default=None)
    _checkpoint: SignedCheckpoint | None = attrs.field(init=False, default=None)
    _prefix_e: bytes = attrs.field(init=False)
    _prefix_p: bytes = attrs.field(init=False)
    _prefix_t: bytes = attrs.field(init=False)
    # Complete subtrees never change, so the levels above the tiles (few: n / 2**level of
    # them) are kept in memory; proofs then read only one tile from LevelDB.
    _node_cache: dict[int, bytes] = attrs.field(init=False, factory=dict)
    _edge_cache: merkle.EdgeCache = attrs.field(init=False, factory=dict)
    # A proof asks for its eight lowest levels one after another from the same tile, so the
    # last tile read is kept (None: that block has no tile yet, read its records instead).
    _tile_block: int = attrs.field(init=False, default=-1)
    _tile: bytes | None = attrs.field(init=False, default=None)
    # Hash parts of the records of the incomplete last block, for the tile that completes it.
    _tile_tail: bytes | None = attrs.field(init=False, default=None)

    def __attrs_post_init__(self) -> None:
        self._prefix_e = b"E" + self.num
        self._prefix_p = b"P" + self.num
        self._prefix_t = b"T" + self.num
        raw = self.store.db.get(b"A" + self.num)
        if raw is None:
            raise StoreCorruptError(f"log {self.log_id.hex()} has no metadata")
        try:
            log_id, pub, own = msgpack.unpackb(raw)
            self.public_key = PublicKey(pub)
        except (ValueError, TypeError, TrustixError) as exc:
            raise StoreCorruptError(f"log {self.log_id.hex()}: bad metadata") from exc
        if log_id != self.log_id or self.public_key.log_id() != self.log_id:
            raise StoreCorruptError(f"log {self.log_id.hex()}: metadata names another log")
        self.own = bool(own)

    # -- reading -------------------------------------------------------------------------

    @property
    def db(self) -> KeyValueDB:
        return self.store.db

    @property
    def size(self) -> int:
        """Number of entries stored (may exceed the latest checkpoint's size).

        Once the frontier is loaded it is kept equal to the stored counter by every write (a
        failed write restores it), so it answers without a read, even while the database is
        closed between a failed write and a successful reopen.
        """
        if self._frontier is not None:
            return self._frontier.size
        raw = self.db.get(b"N" + self.num)
        if raw is None or len(raw) != 8:
            raise StoreCorruptError(f"log {self.log_id.hex()}: entry counter is damaged")
        size: int = _U64.unpack(raw)[0]
        return size

    def _record(self, index: int) -> bytes | None:
        raw: bytes | None = self.db.get(self._prefix_e + _U64.pack(index))
        return raw

    def node(self, level: int, index: int) -> bytes:
        """Hash of the perfect subtree (level, index); StoreCorruptError if missing or malformed."""
        if level < _TILE_HEIGHT:
            block = index >> (_TILE_HEIGHT - level)
            tile = self._tile if block == self._tile_block else self._read_tile(block)
            if tile is not None:
                offset = _TILE_SLOTS[level][index & ((_TILE_WIDTH - 1) >> level)]
                return tile[offset : offset + _HS]
            return self._record_node(level, index)
        cached = self._node_cache.get((level << 58) | index)
        if cached is not None:
            return cached
        h = self._record_node(level, index)
        if len(self._node_cache) >= _NODE_CACHE_MAX:
            self._node_cache.clear()
        self._node_cache[(level << 58) | index] = h
        return h

    def siblings(self, level: int, index: int, count: int) -> list[bytes]:
        """merkle.SiblingGetter: the siblings below level 8 from one tile (in the incomplete
        last block, from its records), the ones above from the node cache."""
        in_tile = min(count, _TILE_HEIGHT - level) if level < _TILE_HEIGHT else 0
        hashes: list[bytes] = []
        if in_tile:
            block = index >> (_TILE_HEIGHT - level)
            tile = self._tile if block == self._tile_block else self._read_tile(block)
            if tile is not None:
                offsets = _TILE_PATHS[level][index & ((_TILE_WIDTH - 1) >> level)]
                hashes = [tile[o : o + _HS] for o in offsets[:in_tile]]
            else:
                hashes = [self._record_node(level + k, (index >> k) ^ 1) for k in range(in_tile)]
        node = self.node
        hashes += [node(level + k, (index >> k) ^ 1) for k in range(in_tile, count)]
        return hashes

    def _read_tile(self, block: int) -> bytes | None:
        tile: bytes | None = self.db.get(self._prefix_t + _U64.pack(block))
        if tile is not None and len(tile) != _TILE_BYTES:
            raise StoreCorruptError(f"log {self.log_id.hex()}: hash tile {block} is damaged")
        self._tile_block = block
        self._tile = tile
        return tile

    def _record_node(self, level: int, index: int) -> bytes:
        raw = self._record(((index + 1) << level) - 1)
        if raw is None or len(raw) < (level + 1) * _HS:
            raise StoreCorruptError(
                f"log {self.log_id.hex()}: node ({level}, {index}) is missing or damaged"
            )
        return raw[level * _HS : (level + 1) * _HS]

    def leaf(self, index: int) -> bytes:
        """The leaf bytes at `index`, checked against the leaf hash stored with them."""
        raw = self._record(index)
        if raw is None:
            raise StoreError(f"log {self.log_id.hex()} has no entry {index}")
        leaf = raw[(_completed_levels(index) + 1) * _HS :]
        if hashlib.sha256(b"\x00" + leaf).digest() != raw[:_HS]:
            raise StoreCorruptError(
                f"log {self.log_id.hex()}: entry {index} does not match its stored leaf hash"
            )
        return leaf

    def leaves(self, start: int, end: int) -> Iterator[tuple[int, bytes]]:
        """Leaves [start, end) in order, as (index, leaf bytes)."""
        for index, record in self._records(start, end):
            yield index, record[(_completed_levels(index) + 1) * _HS :]

    def _records(self, start: int, end: int) -> Iterator[tuple[int, bytes]]:
        prefix = self._prefix_e
        for key, value in self.db.items(prefix + _U64.pack(start), prefix + _U64.pack(end)):
            yield _U64.unpack(key[-8:])[0], value

    def root(self, size: int) -> bytes:
        self._check_size(size)
        return merkle.root_hash(size, self.node)

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        self._check_size(size)
        return merkle.inclusion_proof(index, size, self.node, self._edges(), self.siblings)

    def consistency_proof(self, old: int, new: int) -> list[bytes]:
        self._check_size(new)
        return merkle.consistency_proof(old, new, self.node, self._edges(), self.siblings)

    def _edges(self) -> merkle.EdgeCache:
        if len(self._edge_cache) >= _EDGE_CACHE_MAX:
            self._edge_cache.clear()
        return self._edge_cache

    def lookup(self, out_path: str) -> list[int]:
        """Positions of every leaf about `out_path`, in log order."""
        prefix = self._prefix_p + out_path.encode() + b"\x00"
        return sorted(_U64.unpack(v)[0] for _, v in self.db.items(prefix, prefix_stop(prefix)))

    def lookup_prefix(self, prefix: str, limit: int = 256) -> list[int]:
        """Positions of the leaves about every out path that starts with `prefix` (a store
        path's `/nix/store/<hash part>-`), in log order; at most `limit`."""
        start = self._prefix_p + prefix.encode()
        found: list[int] = []
        for _, v in self.db.items(start, prefix_stop(start)):
            found.append(_U64.unpack(v)[0])
            if len(found) >= limit:
                break
        return sorted(found)

    def index_of(self, leaf: bytes, out_path: str) -> int | None:
        """Position of this exact leaf in the own log, or None."""
        raw = self.db.get(self._prefix_p + out_path.encode() + b"\x00" + merkle.leaf_hash(leaf))
        return None if raw is None else int(_U64.unpack(raw)[0])

    def checkpoint(self) -> SignedCheckpoint | None:
        """The latest stored checkpoint (own: last signed; mirrored: last verified)."""
        if self._checkpoint is None:
            note = self.db.get(b"C" + self.num)
            if note is None:
                return None
            try:
                self._checkpoint = verify_checkpoint(note, self.public_key)
            except (DecodeError, VerificationError) as exc:
                raise StoreCorruptError(
                    f"log {self.log_id.hex()}: stored checkpoint does not verify"
                ) from exc
        return self._checkpoint

    def checkpoints(self) -> Iterator[bytes]:
        """Every checkpoint note kept for this log, smallest size first."""
        prefix = b"K" + self.num
        for _, note in self.db.items(prefix, prefix_stop(prefix)):
            yield note

    def checkpoint_of_size(self, size: int) -> bytes | None:
        """A kept checkpoint note of exactly `size` (the first by note hash), or None."""
        prefix = b"K" + self.num + _U64.pack(size)
        for _, note in self.db.items(prefix, prefix_stop(prefix)):
            return note
        return None

    def head(self) -> bytes | None:
        """The gossip head note (see the module docstring), or None."""
        note: bytes | None = self.db.get(b"H" + self.num)
        return note

    def set_head(self, note: bytes) -> None:
        """Remember the gossip head (the caller verified it; it is one key, O(1) per log).

        Not fsynced: a head lost in a crash is learned again from peers."""
        wb = self.db.write_batch(durable=False)
        wb.put(b"H" + self.num, note)
        self.store.write(wb)

    @property
    def mode(self) -> str:
        """How this node follows the log: "mirror" or "witness"."""
        raw = self.db.get(b"F" + self.num)
        return "mirror" if raw is None else raw.decode("ascii", "replace")

    def set_mode(self, mode: str) -> None:
        if mode not in ("mirror", "witness"):
            raise LocalProtocolError(f"unknown follow mode {mode!r}")
        wb = self.db.write_batch(durable=False)
        wb.put(b"F" + self.num, mode.encode())
        self.store.write(wb)

    def _check_size(self, size: int) -> None:
        # The frontier's size is the stored size without a read per proof.
        if not 0 <= size <= self.frontier().size:
            raise LocalProtocolError(f"log {self.log_id.hex()} has no tree of size {size}")

    def frontier(self) -> merkle.MerkleFrontier:
        if self._frontier is None:
            self._frontier = merkle.MerkleFrontier.restore(self.size, self.node)
        return self._frontier

    # -- writing -------------------------------------------------------------------------

    def append(
        self,
        records: Sequence[LeafRecord],
        *,
        checkpoint: SignedCheckpoint | None = None,
        sign: Callable[[int, bytes], SignedCheckpoint] | None = None,
        check: Callable[[int, bytes], None] | None = None,
    ) -> list[int]:
        """Append leaves (and optionally a checkpoint over the result) in one durable batch.

        In a builder's own log a leaf whose exact bytes are already in the log is not appended
        again; its existing index is returned, so a retried submission or a re-ingested spool
        file is logged once.  Mirrored logs are stored exactly as their builder wrote them.
        A `checkpoint` must cover exactly the new size
        and its root must equal the root recomputed here, or nothing is written.  Instead of a
        checkpoint, a builder may pass `sign(size, root)`, called once the new root is known, so
        that its checkpoint goes in the same batch as the entries it covers.  `check(size,
        root)`, called once the new root is known and before anything is written, may raise to
        refuse the batch: a mirror proves that the new tree is a prefix of a signed one there,
        without hashing the entries twice.
        """
        frontier = self.frontier()
        start_size = frontier.size
        edge_backup = frontier.edge()
        tile_tail = self._tile_tail
        if tile_tail is None:
            tile_tail = self._read_tile_tail(start_size)
        sha = hashlib.sha256
        own = self.own
        # Batch-shaped on purpose: list comprehensions over the whole batch are markedly faster
        # here than one Python-level pass per leaf doing everything.
        hashes = [sha(b"\x00" + r.leaf).digest() for r in records]
        prefix_p = self._prefix_p
        index_keys = [
            prefix_p + r.out_path.encode() + b"\x00" + lh
            for r, lh in zip(records, hashes, strict=True)
        ]
        if own:
            indices, keep = self._deduplicate(index_keys, start_size)
            if len(keep) != len(records):
                records = [records[i] for i in keep]
                hashes = [hashes[i] for i in keep]
                index_keys = [index_keys[i] for i in keep]
        else:
            indices = list(range(start_size, start_size + len(records)))
        if self.store.broken is not None:
            raise StoreWriteError(
                f"the store is not writable until it is reopened: {self.store.broken}"
            )
        wb = self.db.write_batch()
        try:
            completed = frontier.extend_grouped(hashes)
            put = wb.put
            pack = _U64.pack
            prefix_e = self._prefix_e
            for offset, record in enumerate(records):
                key = pack(start_size + offset)
                put(prefix_e + key, hashes[offset] + completed[offset] + record.leaf)
                put(index_keys[offset] if own else index_keys[offset] + key, key)
            # Each block of 256 leaves this batch completes gets its tile: the hash parts of
            # its records in order, the first taking the parts left over from earlier batches,
            # cut after level 8 (only the block's last leaf completes more).
            lo = 0
            hi = _TILE_WIDTH - (start_size & (_TILE_WIDTH - 1))
            while hi <= len(records):
                parts = chain.from_iterable(zip(hashes[lo:hi], completed[lo:hi], strict=True))
                block = (start_size + hi - 1) >> _TILE_HEIGHT
                put(self._prefix_t + pack(block), (tile_tail + b"".join(parts))[:_TILE_BYTES])
                tile_tail = b""
                lo, hi = hi, hi + _TILE_WIDTH
            parts = chain.from_iterable(zip(hashes[lo:], completed[lo:], strict=True))
            tile_tail += b"".join(parts)
            if check is not None:
                check(frontier.size, frontier.root())
            if sign is not None:
                checkpoint = sign(frontier.size, frontier.root())
            if checkpoint is not None:
                self._check_checkpoint(checkpoint, frontier.size, frontier.root())
                self._put_checkpoint(wb, checkpoint)
            put(b"N" + self.num, pack(frontier.size))
            self.store.write(wb)
        except BaseException:
            wb.clear()
            self._frontier = merkle.MerkleFrontier(start_size, edge_backup)
            raise
        self._tile_tail = tile_tail
        # The remembered tile may be the "no tile yet" of a block this batch completed.
        self._tile_block = -1
        if checkpoint is not None:
            self._checkpoint = checkpoint
        return indices

    def _read_tile_tail(self, size: int) -> bytes:
        """Hash parts of the records of the incomplete last block of a tree of `size`."""
        start = size & ~(_TILE_WIDTH - 1)
        parts = [
            record[: (_completed_levels(index) + 1) * _HS]
            for index, record in self._records(start, size)
        ]
        if len(parts) != size - start:
            raise StoreCorruptError(f"log {self.log_id.hex()}: entries of the last block missing")
        return b"".join(parts)

    def _deduplicate(self, index_keys: list[bytes], start: int) -> tuple[list[int], list[int]]:
        """Own log: the index every leaf gets, and the positions of the leaves to write.

        A leaf already in the log (or repeated within the batch) keeps its existing index.
        """
        get = self.db.get
        stored = [get(key) for key in index_keys]
        if stored.count(None) == len(stored) and len(set(index_keys)) == len(index_keys):
            return list(range(start, start + len(index_keys))), list(range(len(index_keys)))
        indices: list[int] = []
        keep: list[int] = []
        seen: dict[bytes, int] = {}
        next_index = start
        for pos, key in enumerate(index_keys):
            existing = seen.get(key)
            raw = stored[pos]
            if existing is None and raw is not None:
                existing = _U64.unpack(raw)[0]
            if existing is None:
                seen[key] = next_index
                indices.append(next_index)
                keep.append(pos)
                next_index += 1
            else:
                indices.append(existing)
        return indices, keep

    def set_checkpoint(self, checkpoint: SignedCheckpoint) -> None:
        """Store a checkpoint over entries already stored, after recomputing its root."""
        size = checkpoint.checkpoint.size
        self._check_size(size)
        root = self.frontier().root() if size == self.size else self.root(size)
        self._check_checkpoint(checkpoint, size, root)
        wb = self.db.write_batch()
        self._put_checkpoint(wb, checkpoint)
        self.store.write(wb)
        self._checkpoint = checkpoint

    def _check_checkpoint(self, signed: SignedCheckpoint, size: int, root: bytes) -> None:
        cp = signed.checkpoint
        if signed.log_id != self.log_id:
            raise LocalProtocolError("checkpoint is for another log")
        if cp.size != size or cp.root != root:
            raise VerificationError("checkpoint does not match the stored tree")
        previous = self.checkpoint()
        if previous is not None and cp.size < previous.checkpoint.size:
            raise LocalProtocolError(
                f"refusing to store a checkpoint of size {cp.size} after one of size "
                f"{previous.checkpoint.size}"
            )

    def _put_checkpoint(self, wb: WriteBatch, signed: SignedCheckpoint) -> None:
        size = signed.checkpoint.size
        wb.put(b"C" + self.num, signed.note)
        wb.put(
            b"K" + self.num + _U64.pack(size) + hashlib.sha256(signed.note).digest(), signed.note
        )

    # -- integrity -------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget everything cached in memory (after the store was reopened)."""
        self._frontier = None
        self._checkpoint = None
        self._node_cache.clear()
        self._edge_cache.clear()
        self._tile_block = -1
        self._tile = None
        self._tile_tail = None

    def check_against_checkpoint(self) -> None:
        """Start-up check: the stored nodes reproduce the latest checkpoint's root, and every
        entry stored after it re-hashes to the hashes stored with it (`check_range`).

        Raises StoreCorruptError so that a node refuses to serve (or sign) from a store that
        disagrees with what it already signed.  `verify` is the full, O(n) check.
        """
        size = self.size
        cp = self.checkpoint()
        start = 0
        if cp is not None:
            start = cp.checkpoint.size
            if start > size:
                raise StoreCorruptError(
                    f"log {self.log_id.hex()}: checkpoint covers {start} "
                    f"entries but only {size} are stored"
                )
            if self.root(start) != cp.checkpoint.root:
                raise StoreCorruptError(
                    f"log {self.log_id.hex()}: stored tree does not match its checkpoint "
                    f"of size {start}"
                )
        self._frontier = self.check_range(start, size)

    def check_range(self, start: int, end: int) -> merkle.MerkleFrontier:
        """Re-read entries [start, end) and recompute what is stored with them.

        From the frontier of the first `start` leaves (read from the store), every leaf's
        hash, every interior hash its record holds and every tile the range completes must
        equal what is recomputed from the leaf bytes; StoreCorruptError otherwise.  Returns the
        frontier at `end`.  A new checkpoint is signed only after its new entries pass this,
        so a root that disagrees with the stored leaves is never signed.
        """
        self._node_cache.clear()
        self._tile_block = -1
        frontier = merkle.MerkleFrontier.restore(start, self.node)
        block_start = start & ~(_TILE_WIDTH - 1)
        tail = b"".join(
            record[: (_completed_levels(index) + 1) * _HS]
            for index, record in self._records(block_start, start)
        )
        sha = hashlib.sha256
        step = 4096
        log_hex = self.log_id.hex()
        for lo in range(start, end, step):
            hi = min(end, lo + step)
            records = [record for _, record in self._records(lo, hi)]
            if len(records) != hi - lo:
                raise StoreCorruptError(f"log {log_hex}: entries of [{lo}, {hi}) are missing")
            offsets = [(_completed_levels(i) + 1) * _HS for i in range(lo, hi)]
            stored = [r[:o] for r, o in zip(records, offsets, strict=True)]
            hashes = [sha(b"\x00" + r[o:]).digest() for r, o in zip(records, offsets, strict=True)]
            completed = frontier.extend_grouped(hashes)
            expected = [h + c for h, c in zip(hashes, completed, strict=True)]
            if stored != expected:  # one comparison in C; find the culprit only on failure
                bad = next(
                    i for i, (a, b) in enumerate(zip(stored, expected, strict=True)) if a != b
                )
                raise StoreCorruptError(
                    f"log {log_hex}: entry {lo + bad} does not match the hashes stored with it"
                )
            # Tiles of the blocks this chunk completes: the hash parts of their records.
            pos = 0
            first_end = ((lo >> _TILE_HEIGHT) + 1) << _TILE_HEIGHT
            for block_end in range(first_end, hi + 1, _TILE_WIDTH):
                upto = block_end - lo
                tail += b"".join(expected[pos:upto])
                pos = upto
                block = (block_end - 1) >> _TILE_HEIGHT
                if self.db.get(self._prefix_t + _U64.pack(block)) != tail[:_TILE_BYTES]:
                    raise StoreCorruptError(f"log {log_hex}: hash tile {block} is missing or wrong")
                tail = b""
            tail += b"".join(expected[pos:])
        return frontier

    def verify(self) -> VerifyReport:
        """Recompute everything from the leaves: hashes, nodes, indexes, every checkpoint.

        Damage that stops the reading (a checksum that fails, a truncated table) is reported
        as a problem like any other, never raised.
        """
        try:
            return self._verify()
        except StoreError as exc:
            size: int | None
            try:
                size = self.size
            except StoreError:
                size = None
            return VerifyReport(self.log_id, size or 0, None, (str(exc),))

    def _verify(self) -> VerifyReport:
        problems: list[str] = []
        size = self.size
        frontier = merkle.MerkleFrontier()
        count = 0
        block_parts: list[bytes] = []
        for index, record in self._records(0, size):
            if index != count:
                problems.append(f"entry {count} is missing")
                break
            k = _completed_levels(index)
            leaf = record[(k + 1) * _HS :]
            lh = merkle.leaf_hash(leaf)
            for level, idx, h in frontier.append(lh):
                block_parts.append(h)
                if record[level * _HS : (level + 1) * _HS] != h:
                    problems.append(f"stored hash of node ({level}, {idx}) is wrong")
            if len(block_parts) >= _TILE_BYTES // _HS:
                # The tile must hold the recomputed hashes, not merely copy the records.
                block = index >> _TILE_HEIGHT
                tile = self.db.get(self._prefix_t + _U64.pack(block))
                if tile != b"".join(block_parts)[:_TILE_BYTES]:
                    problems.append(f"hash tile {block} is missing or wrong")
                block_parts.clear()
            try:
                out_path = decode_entry(leaf).out_path
            except DecodeError as exc:
                problems.append(f"entry {index} is not a valid entry: {exc}")
            else:
                key = self._prefix_p + out_path.encode() + b"\x00" + lh
                if not self.own:
                    key += _U64.pack(index)
                stored = self.db.get(key)
                if stored is None or (self.own and _U64.unpack(stored)[0] > index):
                    problems.append(f"out-path index of entry {index} is missing or wrong")
            count += 1
            if len(problems) > 100:
                break
        if count != size and len(problems) <= 100:
            problems.append(f"{size} entries recorded but {count} stored")
        extra = self.db.items(
            self._prefix_t + _U64.pack(count >> _TILE_HEIGHT), prefix_stop(self._prefix_t)
        )
        for key, _ in extra:
            problems.append(f"hash tile {_U64.unpack(key[-8:])[0]} covers entries not stored")
            break
        if len(problems) > 100:
            problems = [*problems[:100], "... and possibly more"]
        cp_size: int | None = None
        try:
            cp = self.checkpoint()
        except StoreCorruptError as exc:
            problems.append(str(exc))
            cp = None
        if cp is not None:
            cp_size = cp.checkpoint.size
            if cp_size > count:
                problems.append(f"checkpoint covers {cp_size} entries but {count} are stored")
        if not problems:
            # Every kept checkpoint must be a tree this log really had.
            self._node_cache.clear()
            self._tile_block = -1
            roots: dict[int, bytes] = {}
            for note in self.checkpoints():
                try:
                    signed = verify_checkpoint(note, self.public_key)
                except (DecodeError, VerificationError):
                    problems.append("a kept checkpoint does not verify")
                    continue
                s = signed.checkpoint.size
                if s > count:
                    problems.append(f"a kept checkpoint covers {s} > {count} entries")
                    continue
                if s not in roots:
                    roots[s] = self.root(s)
                if roots[s] != signed.checkpoint.root:
                    problems.append(f"kept checkpoint of size {s} does not match the stored tree")
        return VerifyReport(self.log_id, size, cp_size, tuple(problems))
