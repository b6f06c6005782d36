"""The `trustix-p2p` command line: argument parsing and dispatch only.

Each group of subcommands lives in its own module under `trustix_p2p.commands` and exposes
`register(subparsers)`; every subcommand sets `func(args) -> int` as its handler.  This module
runs it under the contract of every trustix-p2p program (`trustix_p2p.program.exit_status`):
a `TrustixError` becomes a one-line message on stderr and exit status 2, so a user never sees
a traceback for bad input; anything else is a bug and is allowed to surface.

Running a command imports only the module that owns it (`_COMMAND_MODULES` says which), not
every command group: the node's modules load trio and nacl, and `trustix-p2p nix-hook` runs
on every Nix build.  `--help` and unknown commands still load them all, to list them all.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Iterable, Sequence

from trustix_p2p.program import exit_status

# One module per group of subcommands, each owning its own parsers, with the command names it
# registers (tests/test_cli_dispatch.py checks that these match what `register` adds).
_COMMAND_MODULES: dict[str, tuple[str, ...]] = {
    "trustix_p2p.commands.keys": ("keygen", "pubkey"),
    "trustix_p2p.commands.log": ("log",),
    "trustix_p2p.commands.node": ("node", "status", "checkpoint", "lookup", "peers"),
    "trustix_p2p.commands.demo": ("demo",),
    "trustix_p2p.commands.net": ("ping",),
    "trustix_p2p.commands.nix": ("nar-hash", "nix-hook", "submit"),
    "trustix_p2p.commands.config": ("config",),
    "trustix_p2p.commands.client": ("decide", "cache-proxy"),
    "trustix_p2p.commands.evidence": ("evidence",),
    "trustix_p2p.commands.reports": ("builders", "r13y"),
    "trustix_p2p.commands.proxy": ("nix-keygen",),
}


def command_module(argv: Sequence[str]) -> str | None:
    """The module that owns the command `argv` names; None for help or an unknown command."""
    # The top-level parser has no options but -h/--help, so the command is the first word.
    if not argv:
        return None
    for module, commands in _COMMAND_MODULES.items():
        if argv[0] in commands:
            return module
    return None


def build_parser(modules: Iterable[str] | None = None) -> argparse.ArgumentParser:
    """The parser with the commands of `modules` (default: every command group)."""
    parser = argparse.ArgumentParser(
        prog="trustix-p2p",
        description="Peer-to-peer transparency logs for Nix build results.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in _COMMAND_MODULES if modules is None else modules:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else list(argv)
    module = command_module(words)
    parser = build_parser(None if module is None else [module])
    args = parser.parse_args(words)
    return exit_status(lambda: args.func(args))


if __name__ == "__main__":
    sys.exit(main())
