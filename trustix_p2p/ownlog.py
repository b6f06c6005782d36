"""The rules of a builder's own log: an honest builder never signs a history it did not extend.

Once nodes cross-check each other's logs, a builder that signs a checkpoint which does not extend
the one it signed before is publicly indistinguishable from a liar (DESIGN §4).  The store alone
cannot prevent that: a lost tail of LevelDB's write-ahead log (a disk that lied about fsync), a
restored snapshot or an operator's cleanup all leave a store that silently starts at an older
size.  So the last signed checkpoint is also kept outside LevelDB, in the file
`<state_dir>/signed-checkpoint` (the note exactly as signed), and these rules hold:

- publishing: a new checkpoint is signed only over entries already durable in the store and only
  after those entries were read back and re-hashed (`LogStore.check_range`); it is then written
  to the checkpoint file (temporary file, fsync, rename, fsync of the directory) *before* it goes
  into the store and out to anyone, so no checkpoint can be seen that the file does not know;
- opening: the file's checkpoint must verify under the node's key, the store must hold at least
  its size and reproduce its root; otherwise the log refuses to open (`StaleStoreError`), with a
  message that says what was found and how to recover.  A checkpoint the file has but the store
  lacks (a crash between the two writes) is stored again; a missing file is recreated from the
  store's own checkpoint (a store written before this file existed).

Retirement (`trustix-p2p log retire`, `OwnLog.retire`): the builder signs a *final* checkpoint
over every stored entry that names the key succeeding it; after that the log takes no entries
and signs nothing more.  When the node next starts with the successor's key on the same state
directory, the checkpoint file still holds the old log's final checkpoint: that is a handover
(the file names this key as successor and the old log is in the store), the old log stays in
the store as a closed log of this node, and the successor's log starts empty.

The same rules run for the node and for `trustix-p2p log append` on a stopped node.  A simulated
node, whose store is in memory (`Store.in_memory()`), keeps its "checkpoint file" in memory too
(`MemoryCheckpointFile`), under the same rules.  This module reads and writes only the checkpoint
file; time comes in as an argument.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import attrs

from trustix_p2p.core.checkpoint import (
    Checkpoint,
    SignedCheckpoint,
    origin_for,
    read_checkpoint_unverified,
    sign_checkpoint,
)
from trustix_p2p.core.checkpoint import verify_checkpoint as verify_note
from trustix_p2p.core.keys import PrivateKey, PublicKey
from trustix_p2p.errors import (
    ConfigError,
    DecodeError,
    LogRetiredError,
    StoreCorruptError,
    StoreError,
    StoreWriteError,
    VerificationError,
)
from trustix_p2p.storage import LeafRecord, LogStore, Store

__all__ = [
    "CHECKPOINT_FILE",
    "CheckpointFile",
    "DiskCheckpointFile",
    "MemoryCheckpointFile",
    "OwnLog",
    "StaleStoreError",
    "read_checkpoint_file",
]

CHECKPOINT_FILE = "signed-checkpoint"
_MAX_NOTE = 64 * 1024


class StaleStoreError(StoreCorruptError):
    """The store is behind, or disagrees with, the last checkpoint this builder signed."""


def read_checkpoint_file(path: Path) -> bytes | None:
    """The note in the checkpoint file, or None if there is none."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StoreError(f"cannot read the checkpoint file {path}: {exc.strerror}") from exc
    try:
        data = os.read(fd, _MAX_NOTE + 1)
    except OSError as exc:  # a directory in its place, an I/O error
        raise StoreError(f"cannot read the checkpoint file {path}: {exc.strerror}") from exc
    finally:
        os.close(fd)
    if len(data) > _MAX_NOTE:
        raise StaleStoreError(f"the checkpoint file {path} is larger than any checkpoint")
    return data


def _write_checkpoint_file(path: Path, note: bytes) -> None:
    """Write the file atomically and durably; StoreWriteError (retry later) if it fails."""
    try:
        _write_atomically(path, note)
    except OSError as exc:
        raise StoreWriteError(
            f"cannot write the checkpoint file {path}: {exc.strerror or exc}"
        ) from exc


def _write_atomically(path: Path, note: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        view = memoryview(note)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


class CheckpointFile(Protocol):
    """Where the last signed checkpoint is kept outside the store.  `str()` names it in errors."""

    def read(self) -> bytes | None:
        """The note, or None if there is none; StoreError if it cannot be read."""
        ...

    def write(self, note: bytes) -> None:
        """Replace the note atomically and durably; StoreWriteError (retry later) on failure."""


@attrs.frozen
class DiskCheckpointFile:
    """The checkpoint file `<state_dir>/signed-checkpoint` (a node and `log append`)."""

    path: Path

    def __str__(self) -> str:
        return str(self.path)

    def read(self) -> bytes | None:
        return read_checkpoint_file(self.path)

    def write(self, note: bytes) -> None:
        _write_checkpoint_file(self.path, note)


@attrs.define(eq=False)
class MemoryCheckpointFile:
    """A checkpoint "file" in memory, for a store in memory; it outlives the OwnLog using it.

    `note` is what the file holds (tests may set it, as they would write the file);
    `fail_next_write` makes the next writes fail as a full disk would.
    """

    note: bytes | None = None
    _failures: int = attrs.field(default=0, init=False)

    def __str__(self) -> str:
        return "<memory>"

    def read(self) -> bytes | None:
        if self.note is not None and len(self.note) > _MAX_NOTE:
            raise StaleStoreError(f"{self} is larger than any checkpoint")
        return self.note

    def write(self, note: bytes) -> None:
        if self._failures:
            self._failures -= 1
            raise StoreWriteError(f"cannot write the checkpoint file {self}: injected failure")
        self.note = bytes(note)

    def fail_next_write(self, count: int = 1) -> None:
        self._failures += count


def _refuse_another_keys_store(store: Store, key: PrivateKey, file: CheckpointFile) -> None:
    """Before a new own log is made: a store that holds another key's own log is taken over
    only by the key its final checkpoint (in the checkpoint file) names as successor."""
    others = [log_id for log_id in store.log_ids() if store.log(log_id).own]
    if not others:
        return
    note = file.read()
    if note is not None:
        with contextlib.suppress(DecodeError):
            cp = read_checkpoint_unverified(note)
            if cp.successor == key.public_key.raw and cp.log_id in others:
                return  # a handover, checked in full by `OwnLog.check`
    raise StaleStoreError(
        f"this state directory holds the log of another key ({others[-1].hex()}); a node "
        "changes its key only by retiring the old log for the new key first (`trustix-p2p "
        "log retire --successor NEWKEY`), or use another state directory"
    )


@attrs.define(eq=False)
class OwnLog:
    """A builder's own log: its store, its key and its checkpoint file."""

    log: LogStore
    key: PrivateKey
    checkpoint_file: CheckpointFile
    # The final checkpoint, once the log is retired: kept in memory (set by `check` and
    # `retire`), so asking costs no store read and is safe while the store is reopened.
    _final: SignedCheckpoint | None = attrs.field(default=None, init=False)

    @classmethod
    def open(cls, store: Store, key: PrivateKey, state_dir: Path | CheckpointFile) -> OwnLog:
        """Open (or create) the own log and check it against the last signed checkpoint.

        `state_dir`: the state directory (the checkpoint file is `signed-checkpoint` in it), or
        the CheckpointFile itself (a `MemoryCheckpointFile` for a store in memory).
        """
        if isinstance(state_dir, str | os.PathLike):
            state_dir = DiskCheckpointFile(Path(state_dir) / CHECKPOINT_FILE)
        if not store.has_log(key.public_key.log_id()):
            _refuse_another_keys_store(store, key, state_dir)
        log = store.open_log(key.public_key, own=True)
        own = cls(log, key, state_dir)
        own.check()
        return own

    @property
    def log_id(self) -> bytes:
        return self.log.log_id

    @property
    def final(self) -> SignedCheckpoint | None:
        """The log's final checkpoint (it names the successor), if the log is retired."""
        return self._final

    def retired_error(self, final: SignedCheckpoint) -> LogRetiredError:
        successor = final.checkpoint.successor
        assert successor is not None
        return LogRetiredError(
            f"log {self.log_id.hex()} is retired: its final checkpoint (size "
            f"{final.checkpoint.size}) names the successor key {PublicKey(successor).to_base64()}"
            "; continue with the successor's key_file"
        )

    def _handover(self, note: bytes) -> bool:
        """Whether `note` is the final checkpoint of another own log of this store that names
        this key as its successor (checked against that log's stored tree)."""
        try:
            cp = read_checkpoint_unverified(note)
        except DecodeError:
            return False
        if cp.successor != self.key.public_key.raw:
            return False
        store = self.log.store
        old_id = cp.log_id
        if not store.has_log(old_id) or not store.log(old_id).own:
            return False
        old = store.log(old_id)
        try:
            signed = verify_note(note, old.public_key)
        except (DecodeError, VerificationError):
            return False
        if old.size < cp.size or old.root(cp.size) != cp.root:
            raise StaleStoreError(
                f"the checkpoint file {self.checkpoint_file} holds the final checkpoint of log "
                f"{old_id.hex()} (size {cp.size}), but the store's copy of that log does not "
                "reproduce it: restore the state directory from a backup"
            )
        stored = old.checkpoint()
        if stored is None or stored.checkpoint.size < cp.size or not stored.checkpoint.final:
            old.set_checkpoint(signed)
        return True

    def check(self) -> None:
        """Refuse a store that does not hold what this builder last signed (see the module)."""
        self._check()
        cp = self.log.checkpoint()
        self._final = cp if cp is not None and cp.checkpoint.successor is not None else None

    def _check(self) -> None:
        path = self.checkpoint_file
        note = path.read()
        stored = self.log.checkpoint()
        if note is not None and self._handover(note):
            note = None  # the predecessor's final checkpoint: this log starts afresh
        if note is None:
            if stored is not None:
                path.write(stored.note)
            return
        try:
            signed = verify_note(note, self.key.public_key)
        except (DecodeError, VerificationError) as exc:
            raise StaleStoreError(
                f"the checkpoint file {path} is not a checkpoint of this node's log (damaged, "
                "or from another key): compare it with what peers hold for this log before "
                "removing it"
            ) from exc
        cp = signed.checkpoint
        size = self.log.size
        recover = (
            "Restore the state directory from a backup taken after that checkpoint (or copy "
            "the log back from a node that mirrors it); starting from this store would sign a "
            "second history for the same key."
        )
        if size < cp.size:
            raise StaleStoreError(
                f"this node last signed a checkpoint of size {cp.size} (in {path}), but its "
                f"store holds only {size} entries: the store lost data (a lost write-ahead log "
                f"tail, a restored snapshot, a cleanup). {recover}"
            )
        if self.log.root(cp.size) != cp.root:
            raise StaleStoreError(
                f"the store's tree of size {cp.size} does not match the checkpoint this node "
                f"signed (in {path}): the store holds another history. {recover}"
            )
        if stored is None or stored.checkpoint.size < cp.size:
            # Signed and written to the file, but the store's copy was lost: store it again.
            self.log.set_checkpoint(signed)
        elif stored.checkpoint.size > cp.size or stored.note != note:
            if stored.checkpoint.size == cp.size:
                raise StaleStoreError(
                    f"the store's latest checkpoint differs from the one in {path} at the same "
                    "size; one of them was not written by this node"
                )
            # Newer in the store than in the file: only an old copy of the file does that.
            raise StaleStoreError(
                f"the store holds a checkpoint of size {stored.checkpoint.size} but {path} "
                f"names size {cp.size}: the checkpoint file is older than the store (restored "
                "from an old backup?). Put back the newest checkpoint file, or remove it to "
                "trust the store."
            )

    def append(self, records: Sequence[LeafRecord]) -> list[int]:
        """Append durably (deduplicated by leaf bytes); the indices of the leaves.

        LogRetiredError once the log's final checkpoint is signed."""
        final = self.final
        if final is not None:
            raise self.retired_error(final)
        return self.log.append(records)

    def _checked_root(self, previous: SignedCheckpoint | None, size: int) -> bytes:
        """The root over every stored entry, after re-reading and re-hashing the new ones."""
        log = self.log
        if log.store.broken is not None:
            raise StoreWriteError(
                f"the store is not writable until it is reopened: {log.store.broken}"
            )
        start = previous.checkpoint.size if previous is not None else 0
        checked = log.check_range(start, size)
        root = log.frontier().root()
        if checked.root() != root:
            raise StoreCorruptError(
                f"log {log.log_id.hex()}: the stored entries do not give the root in memory; "
                "refusing to sign"
            )
        return root

    def _publish(self, cp: Checkpoint) -> SignedCheckpoint:
        signed = sign_checkpoint(cp, self.key)
        self.checkpoint_file.write(signed.note)
        self.log.set_checkpoint(signed)
        if cp.successor is not None:
            self._final = signed
        return signed

    def retire(self, successor: PublicKey, now: int) -> SignedCheckpoint:
        """Sign the log's final checkpoint: every stored entry, and `successor` named as the
        key that continues this builder's log.  Afterwards the log takes no entries and signs
        nothing more.  Retiring again with the same successor returns the same checkpoint;
        with another successor it is refused (LogRetiredError)."""
        log = self.log
        if successor.log_id() == log.log_id:
            raise ConfigError("--successor: a log cannot name its own key as its successor")
        previous = log.checkpoint()
        final = self.final
        if final is not None:
            if final.checkpoint.successor == successor.raw:
                return final
            raise self.retired_error(final)
        size = log.size
        root = self._checked_root(previous, size)
        if previous is not None:
            now = max(now, previous.checkpoint.time)
        return self._publish(Checkpoint(origin_for(log.log_id), size, root, now, successor.raw))

    def sign(self, now: int) -> SignedCheckpoint | None:
        """Sign a checkpoint over every stored entry if the log grew since the last one.

        Returns the latest checkpoint (the new one, or the previous one if nothing was added;
        None for an empty log).  The new entries are re-read and re-hashed first: a root that
        disagrees with the stored leaves raises StoreCorruptError and is never signed.
        """
        log = self.log
        if log.store.broken is not None:
            raise StoreWriteError(
                f"the store is not writable until it is reopened: {log.store.broken}"
            )
        previous = log.checkpoint()
        size = log.size
        if previous is not None and (
            previous.checkpoint.size == size or previous.checkpoint.successor is not None
        ):
            return previous  # nothing new, or retired: a final checkpoint is the last
        if previous is None and size == 0:
            return None
        root = self._checked_root(previous, size)
        if previous is not None:
            now = max(now, previous.checkpoint.time)
        return self._publish(Checkpoint(origin_for(log.log_id), size, root, now))
