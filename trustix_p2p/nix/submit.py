"""`submit`: log valid store paths named by a script, as `Entry` values, at most once each.

The same entries and the same hand-over as the post-build hook (`trustix_p2p.nix.hook`), for
paths given on the command line rather than by Nix.  A script may re-run `submit`, so before
submitting it asks the node whether its own log already holds the identical build (everything
but the time) and logs only what is new; the hook does not ask, because a rebuild is a real
event worth a new entry.

Unlike the hook this module asks the node questions beyond "submit" (and so loads the attrs
messages of `trustix_p2p.control.protocol`); `submit` is run by people and scripts, not once
per build.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

from trustix_p2p.control.client import ControlClient
from trustix_p2p.core.entry import Entry, decode_entry, encode_entry
from trustix_p2p.core.storepath import is_valid_store_path, why_invalid
from trustix_p2p.errors import ConfigError, DecodeError, NixStoreError, NodeUnavailableError
from trustix_p2p.nix.drv import read_derivation
from trustix_p2p.nix.hook import HandOver, hand_over, output_entries

if TYPE_CHECKING:
    from trustix_p2p.nix.store import NixStore

__all__ = ["encode_all", "entries_for_paths", "submit_once"]


def encode_all(entries: Sequence[Entry], store_dir: str) -> list[bytes]:
    """The leaf bytes of each entry, validated against `store_dir`."""
    return [encode_entry(e, store_dir) for e in entries]


def _output_name(path: str, deriver: str, store: NixStore) -> str:
    """Which output of its deriver `path` is; "out" when the deriver is gone or unknown."""
    if deriver:
        try:
            for name, out in read_derivation(deriver).output_paths().items():
                if out == path:
                    return name
        except (NixStoreError, DecodeError):
            pass  # the .drv may have been garbage-collected; the database may still know
        for name, out in store.derivation_outputs(deriver).items():
            if out == path:
                return name
    return "out"


def entries_for_paths(paths: Sequence[str], store: NixStore, built_at: int) -> list[Entry]:
    """Entries for arbitrary valid store paths (the `submit` command)."""
    for path in paths:
        if not is_valid_store_path(path, store.store_dir):
            raise ConfigError(f"{path!r} is not a store path: {why_invalid(path, store.store_dir)}")
    infos = store.path_infos(paths)
    outputs = [(_output_name(p, i.deriver, store), p) for p, i in zip(paths, infos, strict=True)]
    return output_entries(outputs, infos, built_at)


def _same_build(logged: Entry, new: Entry) -> bool:
    """Whether `logged` already records what `new` would (everything but the time)."""
    return logged._replace(built_at=new.built_at) == new


def submit_once(
    entries: Sequence[Entry],
    store_dir: str,
    socket_path: str | os.PathLike[str],
    spool_dir: str | os.PathLike[str],
    timeout: float,
) -> HandOver:
    """Hand over entries, skipping those the node's own log already holds (but for the time).

    Submitting the same store path twice must not grow the log.  Returns the log index of
    every entry, old or new; spools like `hook.hand_over` when the node is unavailable.
    """
    leaves = encode_all(entries, store_dir)
    try:
        with ControlClient(socket_path, timeout) as client:
            own_log = client.status().log_id
            indices: list[int | None] = [None] * len(entries)
            for i, entry in enumerate(entries):
                for hit in client.lookup(entry.out_path):
                    if hit.log_id != own_log:
                        continue
                    try:
                        logged = decode_entry(hit.leaf, store_dir)
                    except DecodeError:
                        continue  # another store directory's entry; not ours to match
                    if _same_build(logged, entry):
                        indices[i] = hit.index
                        break
            todo = [i for i, index in enumerate(indices) if index is None]
            if todo:
                for i, index in zip(todo, client.submit([leaves[i] for i in todo]), strict=True):
                    indices[i] = index
    except NodeUnavailableError:
        return hand_over(leaves, socket_path, spool_dir, timeout)
    return HandOver(tuple(i for i in indices if i is not None), None)
