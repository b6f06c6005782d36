"""`trustix-p2p nar-hash`, `nix-hook` and `submit`: the builder's commands around Nix.

`nix-hook` is what an operator puts in nix.conf as `post-build-hook` (through a small wrapper
script that sets `TRUSTIX_P2P_CONFIG`); `submit` does the same hand-over for store paths named
on the command line; `nar-hash` prints a path's NAR hash as `sha256:<nix32> <size>`, equal to
`nix-hash --type sha256 --base32` and `nix path-info`.

Only light modules are imported here: the hook runs once per build, so every import it does
not need is overhead on every build.  The work itself lives in `trustix_p2p.nix.hook`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trustix_p2p.config import NodeConfig, default_config_path, load_node_config

if TYPE_CHECKING:
    from trustix_p2p.core.entry import Entry
    from trustix_p2p.nix.hook import HandOver


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "nar-hash",
        help="print the NAR hash and size of a path",
        description="Print 'sha256:<nix32> <NAR size>' for PATH, as Nix computes it.",
    )
    p.add_argument("path", metavar="PATH", type=Path)
    p.set_defaults(func=cmd_nar_hash)

    p = subparsers.add_parser(
        "nix-hook",
        help="Nix post-build hook: log the outputs Nix just built",
        description="Run by Nix as post-build-hook: log the outputs of DRV_PATH (OUT_PATHS "
        "when Nix sets it) through the local node, or spool them if the node is down; a "
        "down node never fails the build.",
    )
    _add_node_options(p)
    p.set_defaults(func=cmd_nix_hook)

    p = subparsers.add_parser(
        "submit",
        help="log valid store paths through the local node",
        description="Hash and log valid store paths through the local node (spooled if it "
        "is down); prints '<log index> <store path>' per path.  A path whose identical "
        "entry (all but the time) is already in the node's log is not logged again.",
    )
    p.add_argument("paths", metavar="STORE_PATH", nargs="+")
    _add_node_options(p)
    p.set_defaults(func=cmd_submit)


def _add_node_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        type=Path,
        default=None,
        help="node config file (default: $TRUSTIX_P2P_CONFIG or /etc/trustix-p2p/node.toml)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="seconds to wait for the node before spooling (default 5)",
    )


def cmd_nar_hash(args: argparse.Namespace) -> int:
    from trustix_p2p.nix.nardump import hash_path

    result = hash_path(args.path)
    print(f"{result.nix32()} {result.size}")
    return 0


def _hand_over(
    args: argparse.Namespace, config: NodeConfig, entries: list[Entry], store_dir: str
) -> HandOver:
    from trustix_p2p.nix.hook import DEFAULT_TIMEOUT, encode_all, hand_over

    timeout = DEFAULT_TIMEOUT if args.timeout is None else args.timeout
    leaves = encode_all(entries, store_dir)
    return hand_over(leaves, config.socket_path, config.spool_path, timeout)


def cmd_nix_hook(args: argparse.Namespace) -> int:
    import os

    from trustix_p2p.nix.hook import build_entries, hook_outputs
    from trustix_p2p.nix.store import open_nix_store

    # Read the config before any hashing: a misconfigured hook should say so at once.
    config = load_node_config(args.config or default_config_path())
    store = open_nix_store()
    drv_path, outputs = hook_outputs(os.environ, store)
    infos = store.path_infos([path for _, path in outputs])
    entries = build_entries(outputs, infos, int(time.time()), drv_path)
    result = _hand_over(args, config, entries, store.store_dir)
    names = ", ".join(name for name, _ in outputs)
    if result.spool_file is not None:
        print(
            f"trustix-p2p: node unavailable ({result.reason}); spooled {len(entries)} "
            f"entries ({names}) to {result.spool_file}",
            file=sys.stderr,
        )
    else:
        print(
            f"trustix-p2p: logged {drv_path} ({names}) at "
            f"{', '.join(map(str, result.indices or ()))}",
            file=sys.stderr,
        )
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    from trustix_p2p.nix.hook import DEFAULT_TIMEOUT, entries_for_paths, submit_once
    from trustix_p2p.nix.store import open_nix_store

    config = load_node_config(args.config or default_config_path())
    store = open_nix_store()
    entries = entries_for_paths(args.paths, store, int(time.time()))
    timeout = DEFAULT_TIMEOUT if args.timeout is None else args.timeout
    result = submit_once(entries, store.store_dir, config.socket_path, config.spool_path, timeout)
    if result.spool_file is not None:
        print(f"node unavailable ({result.reason}); spooled to {result.spool_file}")
    else:
        for entry, index in zip(entries, result.indices or (), strict=True):
            print(f"{index} {entry.out_path}")
    return 0
