"""The Nix post-build hook and `submit`: turn built store paths into log entries for the node.

Nix runs `post-build-hook` after every successful build, with `DRV_PATH` set to the derivation
and `OUT_PATHS` to its outputs; Nix 2.8 (Debian's `nix-bin`) leaves `OUT_PATHS` empty, so the
outputs then come from the `.drv` file (`trustix_p2p.nix.drv`), and floating content-addressed
outputs from the Nix store's database.  For each output the hook builds an entry v1
(DESIGN §3): the NAR hash and size computed here (`trustix_p2p.nix.nardump`, never taken from
Nix), references and deriver from the Nix store, the output name and the build time.

Hand-over rules, in this order, because a build must never fail or be lost on our account:

1. Submit the encoded entries over the node's control socket, with a timeout.
2. If the node is absent, refuses, or is too slow (`NodeUnavailableError`), write the same
   leaf bytes durably to the node's spool directory and succeed at once.  The node ingests
   spool files when it starts and while it runs.  Submission is idempotent per leaf bytes, so
   a submission that timed out *after* the node logged it, then also spooled, is still logged
   once.
3. Fail (non-zero exit via `TrustixError`) only for a problem a person must fix and that one
   line explains: no `DRV_PATH`, an unreadable config, an unwritable spool directory, a node
   that rejects our entries.

Time is a parameter (`built_at`), so tests replay exactly.  This module starts no event loop
and imports nothing heavy: the hook runs once per build and its start-up time is overhead.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import attrs

from trustix_p2p.control.client import ControlClient, submit_leaves
from trustix_p2p.core.entry import Entry, decode_entry, encode_entry
from trustix_p2p.core.storepath import parse_store_path
from trustix_p2p.errors import ConfigError, DecodeError, NixStoreError, NodeUnavailableError
from trustix_p2p.nix.drv import read_derivation
from trustix_p2p.nix.nardump import hash_path
from trustix_p2p.nix.store import NixStore, PathInfo

__all__ = [
    "DEFAULT_TIMEOUT",
    "HandOver",
    "build_entries",
    "encode_all",
    "entries_for_paths",
    "hand_over",
    "hook_outputs",
    "submit_once",
]

#: How long the hook waits for the node before spooling.  A healthy node acknowledges a
#: submission within one group commit (milliseconds); waiting longer only delays the build.
DEFAULT_TIMEOUT = 5.0


@attrs.frozen
class HandOver:
    """What happened to a batch of leaves: logged at `indices`, or spooled to `spool_file`."""

    indices: tuple[int, ...] | None
    spool_file: Path | None
    reason: str = ""  # why the node was not used, when spooled


def hook_outputs(env: Mapping[str, str], store: NixStore) -> tuple[str, list[tuple[str, str]]]:
    """The derivation and its (output name, store path) pairs, from Nix's hook environment.

    Raises `ConfigError` when `DRV_PATH` is missing (the command was not run by Nix as a
    post-build hook) and `NixStoreError` when an output cannot be named.
    """
    drv_path = env.get("DRV_PATH", "")
    if not drv_path:
        raise ConfigError(
            "DRV_PATH is not set: nix-hook must be run by Nix as its post-build-hook "
            "(use 'trustix-p2p submit' from scripts)"
        )
    try:
        parse_store_path(drv_path, store.store_dir)
    except DecodeError as exc:
        raise ConfigError(f"DRV_PATH is not a derivation in {store.store_dir}: {exc}") from exc
    fixed = read_derivation(drv_path).output_paths()
    out_paths = env.get("OUT_PATHS", "").split()

    known = {path: name for name, path in fixed.items()}
    if not out_paths or any(p not in known for p in out_paths):
        # Floating content-addressed outputs have no path in the .drv; the store knows them.
        for name, path in store.derivation_outputs(drv_path).items():
            known.setdefault(path, name)
    if not out_paths:
        # Nix 2.8: OUT_PATHS is empty, and every output of the derivation was just built.
        out_paths = sorted(known)
    outputs = []
    for path in out_paths:
        output = known.get(path)
        if output is None:
            raise NixStoreError(f"{path} is not an output of {drv_path}")
        outputs.append((output, path))
    outputs.sort(key=lambda pair: pair[0])
    return drv_path, outputs


def build_entries(
    outputs: Sequence[tuple[str, str]],
    infos: Sequence[PathInfo],
    built_at: int,
    drv_path: str = "",
) -> list[Entry]:
    """One entry per output, hashing each output's NAR here.

    `infos[i]` is the Nix store's registration of `outputs[i]`; its deriver wins over
    `drv_path` (they only differ when Nix had registered the path before this build).
    """
    entries = []
    for (name, path), info in zip(outputs, infos, strict=True):
        nar = hash_path(path)
        entries.append(
            Entry(
                out_path=path,
                nar_hash=nar.sha256,
                nar_size=nar.size,
                references=info.references,
                deriver=info.deriver or drv_path,
                output_name=name,
                built_at=built_at,
            )
        )
    return entries


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
        try:
            parse_store_path(path, store.store_dir)
        except DecodeError as exc:
            raise ConfigError(f"{path!r} is not a store path: {exc}") from exc
    infos = store.path_infos(paths)
    outputs = [(_output_name(p, i.deriver, store), p) for p, i in zip(paths, infos, strict=True)]
    return build_entries(outputs, infos, built_at)


def hand_over(
    leaves: Sequence[bytes], socket_path: Path, spool_dir: Path, timeout: float
) -> HandOver:
    """Submit `leaves` to the node, or spool them durably if it is unavailable."""
    try:
        indices = submit_leaves(socket_path, leaves, timeout)
    except NodeUnavailableError as exc:
        # Imported only when needed: every import is start-up time on every build.
        from trustix_p2p.spool import write_spool

        try:
            spooled = write_spool(spool_dir, leaves)
        except OSError as spool_exc:
            raise ConfigError(
                f"node unavailable ({exc}) and cannot write the spool directory {spool_dir}: "
                f"{spool_exc.strerror or spool_exc}"
            ) from spool_exc
        return HandOver(None, spooled, str(exc))
    return HandOver(tuple(indices), None)


def _same_build(logged: Entry, new: Entry) -> bool:
    """Whether `logged` already records what `new` would (everything but the time)."""
    return attrs.evolve(logged, built_at=new.built_at) == new


def submit_once(
    entries: Sequence[Entry],
    store_dir: str,
    socket_path: Path,
    spool_dir: Path,
    timeout: float,
) -> HandOver:
    """Hand over entries, skipping those the node's own log already holds (but for the time).

    For `submit`, which scripts may re-run: submitting the same store path twice must not
    grow the log.  (The hook does not ask: a rebuild is a real event worth a new entry.)
    Returns the log index of every entry, old or new; spools like `hand_over` when the node
    is unavailable.
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


def encode_all(entries: Sequence[Entry], store_dir: str) -> list[bytes]:
    """The leaf bytes of each entry, validated against `store_dir`."""
    return [encode_entry(e, store_dir) for e in entries]
