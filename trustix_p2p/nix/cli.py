"""The builder's commands as programs of their own, without the rest of the CLI.

* `trustix-p2p-nix-hook [--config FILE] [--timeout S]` (`hook_main`): the post-build hook as
  a program, for nix.conf's `post-build-hook`.  It is `trustix-p2p nix-hook` without the
  subcommand word.
* `python -m trustix_p2p.nix COMMAND` (`main`): `nar-hash`, `nix-hook` and `submit`.

Both behave exactly like `trustix-p2p` (one line on stderr and exit status 2 for a
`TrustixError`) but load only `trustix_p2p.commands.nix`: Nix starts the hook on every build,
and every module it imports is start-up time added to every build.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from trustix_p2p.commands import nix as nix_commands
from trustix_p2p.errors import TrustixError

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["hook_main", "main"]


def _run(args: argparse.Namespace) -> int:
    try:
        result: int = args.func(args)
    except TrustixError as exc:
        print(f"trustix-p2p: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return result


def hook_main(argv: Sequence[str] | None = None) -> int:
    """`trustix-p2p-nix-hook`: the post-build hook."""
    parser = argparse.ArgumentParser(
        prog="trustix-p2p-nix-hook", description=nix_commands.NIX_HOOK_DESCRIPTION
    )
    nix_commands.add_node_options(parser)
    parser.set_defaults(func=nix_commands.cmd_nix_hook)
    return _run(parser.parse_args(argv))


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m trustix_p2p.nix`: the Nix commands of `trustix-p2p`."""
    parser = argparse.ArgumentParser(
        prog="python -m trustix_p2p.nix",
        description="trustix-p2p's Nix builder commands (nar-hash, nix-hook, submit).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    nix_commands.register(sub)
    return _run(parser.parse_args(argv))
