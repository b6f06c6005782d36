"""The `trustix-p2p` command line: argument parsing and dispatch only.

Each group of subcommands lives in its own module under `trustix_p2p.commands` and exposes
`register(subparsers)`; every subcommand sets `func(args) -> int` as its handler.  This module
turns every `TrustixError` into a one-line message on stderr and exit status 2, so a user never
sees a traceback for bad input; anything else is a bug and is allowed to surface.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from trustix_p2p.errors import TrustixError

# One module per group of subcommands; each owns its own parsers.
_COMMAND_MODULES = [
    "trustix_p2p.commands.keys",
    "trustix_p2p.commands.log",
    "trustix_p2p.commands.node",
    "trustix_p2p.commands.demo",
    "trustix_p2p.commands.net",
    "trustix_p2p.commands.nix",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trustix-p2p",
        description="Peer-to-peer transparency logs for Nix build results.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in _COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result: int = args.func(args)
    except TrustixError as exc:
        print(f"trustix-p2p: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return result


if __name__ == "__main__":
    sys.exit(main())
