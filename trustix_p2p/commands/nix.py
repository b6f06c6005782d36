"""`trustix-p2p nar-hash`, `nix-hook` and `submit`: the builder's commands around Nix.

`nix-hook` is what an operator puts in nix.conf as `post-build-hook` (through a small wrapper
script that sets `TRUSTIX_P2P_CONFIG`; `trustix-p2p-nix-hook` is the same command as its own
program); `submit` does the same hand-over for store paths named on the command line;
`nar-hash` prints a path's NAR hash as `sha256:<nix32> <size>`, equal to
`nix-hash --type sha256 --base32` and `nix path-info`.

Nothing but argparse is imported at the top (not even pathlib): the hook runs once per build,
so every import it does not need is overhead on every build.  The work itself lives in
`trustix_p2p.nix.hook` (and `trustix_p2p.nix.submit`).
"""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "nar-hash",
        help="print the NAR hash and size of a path",
        description="Print 'sha256:<nix32> <NAR size>' for PATH, as Nix computes it.",
    )
    p.add_argument("path", metavar="PATH")
    p.set_defaults(func=cmd_nar_hash)

    p = subparsers.add_parser(
        "nix-hook",
        help="Nix post-build hook: log the outputs Nix just built",
        description=NIX_HOOK_DESCRIPTION,
    )
    add_node_options(p)
    add_wrapper_option(p)
    p.set_defaults(func=cmd_nix_hook)

    p = subparsers.add_parser(
        "submit",
        help="log valid store paths through the local node",
        description="Hash and log valid store paths through the local node (spooled if it "
        "is down); prints '<log index> <store path>' per path.  A path whose identical "
        "entry (all but the time) is already in the node's log is not logged again.",
    )
    p.add_argument("paths", metavar="STORE_PATH", nargs="+")
    add_node_options(p)
    p.set_defaults(func=cmd_submit)


NIX_HOOK_DESCRIPTION = (
    "Run by Nix as post-build-hook: log the outputs of DRV_PATH (OUT_PATHS when Nix sets it) "
    "through the local node, or spool them if the node is down; a down node never fails the "
    "build."
)


def add_node_options(p: argparse.ArgumentParser) -> None:
    """`--config` and `--timeout`, shared by `nix-hook`, `submit` and `trustix-p2p-nix-hook`."""
    p.add_argument(
        "--config",
        default=None,
        help="node config file (default: $TRUSTIX_P2P_CONFIG or /etc/trustix-p2p/node.toml)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="seconds to wait for the node before spooling (default 5)",
    )


def add_wrapper_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--write-wrapper",
        metavar="FILE",
        default=None,
        help="instead of running, write FILE: a post-build-hook program with this Python, "
        "--config and --timeout built in, that starts faster (see docs/nix-builder.md)",
    )


def cmd_nar_hash(args: argparse.Namespace) -> int:
    from trustix_p2p.nix.nardump import hash_path

    result = hash_path(args.path)
    print(f"{result.nix32()} {result.size}")
    return 0


def cmd_nix_hook(args: argparse.Namespace) -> int:
    from trustix_p2p import configfile
    from trustix_p2p.nix.hook import DEFAULT_TIMEOUT, run_configured_hook

    config_file = args.config or configfile.default_config_file()
    timeout = DEFAULT_TIMEOUT if args.timeout is None else args.timeout
    if args.write_wrapper is not None:
        from trustix_p2p.nix.wrapper import write_wrapper

        write_wrapper(args.write_wrapper, config_file, timeout)
        print(f"wrote {args.write_wrapper}; in nix.conf: post-build-hook = {args.write_wrapper}")
        return 0
    run_configured_hook(config_file, timeout)
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    import time

    from trustix_p2p.config import default_config_path, load_node_config
    from trustix_p2p.nix.hook import DEFAULT_TIMEOUT
    from trustix_p2p.nix.store import open_nix_store
    from trustix_p2p.nix.submit import entries_for_paths, submit_once

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
