"""The Nix post-build hook: turn the outputs Nix just built into leaves for the node.

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

Time is a parameter (`built_at`), so tests replay exactly.  The hook runs once per build and
its start-up time is overhead on every build, so this module and everything it imports on the
way to a logged build stay free of attrs, typing, pathlib, trio and nacl: it builds on the
lean layer (`trustix_p2p.core.lean`: the same `Entry`, rules and encoding as everywhere else)
and its own values are that layer's NamedTuples.  The hand-over for `submit`, which first asks
the node what it already holds, is `trustix_p2p.nix.submit`.
"""

from __future__ import annotations

import os
import sys
import time

from trustix_p2p.control.client import submit_leaves
from trustix_p2p.core.lean.entry import Entry, encode_entry
from trustix_p2p.core.lean.storepath import is_valid_store_path, why_invalid
from trustix_p2p.errors import ConfigError, NixStoreError, NodeUnavailableError
from trustix_p2p.nix.drv import read_derivation
from trustix_p2p.nix.nardump import nar_digest
from trustix_p2p.nix.store import open_nix_store

# Not `from typing import ...` at run time: importing typing (like attrs) would add
# milliseconds to every build's start.  Type checkers treat `TYPE_CHECKING` as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from pathlib import Path
    from typing import NamedTuple, TextIO

    from trustix_p2p.nix.store import NixStore, PathInfo
else:
    from trustix_p2p.core.lean import NamedTuple

__all__ = [
    "DEFAULT_TIMEOUT",
    "HandOver",
    "hand_over",
    "hook_leaves",
    "hook_outputs",
    "output_entries",
    "run_configured_hook",
    "run_hook",
]

#: How long the hook waits for the node before spooling.  A healthy node acknowledges a
#: submission within one group commit (milliseconds); waiting longer only delays the build.
DEFAULT_TIMEOUT = 5.0


class HandOver(NamedTuple):
    """What happened to a batch of leaves: logged at `indices`, or spooled to `spool_file`.

    `reason` says why the node was not used, when spooled.
    """

    indices: tuple[int, ...] | None
    spool_file: Path | None
    reason: str = ""


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
    if not is_valid_store_path(drv_path, store.store_dir):
        why = why_invalid(drv_path, store.store_dir)
        raise ConfigError(f"DRV_PATH is not a derivation in {store.store_dir}: {why}")
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


def output_entries(
    outputs: Sequence[tuple[str, str]],
    infos: Sequence[PathInfo],
    built_at: int,
    drv_path: str = "",
) -> list[Entry]:
    """The entry of each output, hashing each output's NAR here (unvalidated: see `encode_entry`).

    `infos[i]` is the Nix store's registration of `outputs[i]`; its deriver wins over
    `drv_path` (they only differ when Nix had registered the path before this build).
    """
    entries = []
    for (name, path), info in zip(outputs, infos, strict=True):
        nar_hash, nar_size = nar_digest(path)
        entries.append(
            Entry(
                path, nar_hash, nar_size, info.references, info.deriver or drv_path, name, built_at
            )
        )
    return entries


def hook_leaves(
    outputs: Sequence[tuple[str, str]],
    infos: Sequence[PathInfo],
    built_at: int,
    drv_path: str,
    store_dir: str,
) -> list[bytes]:
    """The leaf bytes for `outputs`, validated by `encode_entry` (`LocalProtocolError`)."""
    return [
        encode_entry(entry, store_dir)
        for entry in output_entries(outputs, infos, built_at, drv_path)
    ]


def hand_over(
    leaves: Sequence[bytes],
    socket_path: str | os.PathLike[str],
    spool_dir: str | os.PathLike[str],
    timeout: float,
) -> HandOver:
    """Submit `leaves` to the node, or spool them durably if it is unavailable."""
    try:
        indices = submit_leaves(socket_path, leaves, timeout)
    except NodeUnavailableError as exc:
        # Imported only when needed: every import is start-up time on every build.
        from pathlib import Path

        from trustix_p2p.spool import write_spool

        try:
            spooled = write_spool(Path(spool_dir), leaves)
        except OSError as spool_exc:
            raise ConfigError(
                f"node unavailable ({exc}) and cannot write the spool directory {spool_dir}: "
                f"{spool_exc.strerror or spool_exc}"
            ) from spool_exc
        return HandOver(None, spooled, str(exc))
    return HandOver(tuple(indices), None)


def run_hook(
    socket_path: str | os.PathLike[str],
    spool_dir: str | os.PathLike[str],
    timeout: float = DEFAULT_TIMEOUT,
    env: Mapping[str, str] = os.environ,
    log: TextIO = sys.stderr,
) -> HandOver:
    """Everything `nix-hook` does once the node's config is known.

    Logs (or spools) the outputs of `env["DRV_PATH"]` and writes one line about what happened
    to `log` (Nix shows it in the build log).  Raises a `TrustixError` only for a
    misconfiguration (see the module docstring).
    """
    store = open_nix_store()
    drv_path, outputs = hook_outputs(env, store)
    infos = store.path_infos([path for _, path in outputs])
    leaves = hook_leaves(outputs, infos, int(time.time()), drv_path, store.store_dir)
    result = hand_over(leaves, socket_path, spool_dir, timeout)
    names = ", ".join(name for name, _ in outputs)
    if result.spool_file is not None:
        print(
            f"trustix-p2p: node unavailable ({result.reason}); spooled {len(leaves)} "
            f"entries ({names}) to {result.spool_file}",
            file=log,
        )
    else:
        print(
            f"trustix-p2p: logged {drv_path} ({names}) at "
            f"{', '.join(map(str, result.indices or ()))}",
            file=log,
        )
    return result


def run_configured_hook(
    config_file: str | os.PathLike[str] | None, timeout: float = DEFAULT_TIMEOUT
) -> HandOver:
    """`run_hook` for the node configured in `config_file` (None: the default config file).

    The config is read first, before any hashing: a misconfigured hook says so at once.
    """
    from trustix_p2p import configfile  # not needed by a wrapper with the settings built in

    options = configfile.read_config(config_file or configfile.default_config_file())
    return run_hook(configfile.socket_path(options), configfile.spool_path(options), timeout)
