"""The builder's commands as programs of their own, without the rest of the CLI.

* `trustix-p2p-nix-hook [--config FILE] [--timeout S]` (`hook_program`, `hook_main`): the
  post-build hook as a program, for nix.conf's `post-build-hook`.  It is
  `trustix-p2p nix-hook` without the subcommand word.
* `python -m trustix_p2p.nix COMMAND` (`main`): `nar-hash`, `nix-hook` and `submit`.

Both behave exactly like `trustix-p2p` (`trustix_p2p.program.exit_status`: one line on stderr
and exit status 2 for a `TrustixError`) but load only what their command needs: Nix starts the
hook on every build, and every module it imports is start-up time added to every build.  That
is also why argparse is imported only when there are arguments to parse: Nix runs the hook
without any.
"""

from __future__ import annotations

import sys

from trustix_p2p.program import exit_now, exit_status

# Not `from typing import TYPE_CHECKING`: importing typing adds milliseconds to the start of
# the post-build hook, on every build.  Type checkers treat this name as true all the same.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import NoReturn

__all__ = ["hook_main", "hook_program", "main"]


def hook_main(argv: Sequence[str] | None = None) -> int:
    """`trustix-p2p-nix-hook`: the post-build hook."""
    args = sys.argv[1:] if argv is None else list(argv)
    if not args:
        from trustix_p2p.nix.hook import run_configured_hook

        def hook() -> int:
            run_configured_hook(None)
            return 0

        return exit_status(hook)

    import argparse

    from trustix_p2p.commands import nix as nix_commands

    parser = argparse.ArgumentParser(
        prog="trustix-p2p-nix-hook", description=nix_commands.NIX_HOOK_DESCRIPTION
    )
    nix_commands.add_node_options(parser)
    nix_commands.add_wrapper_option(parser)
    parsed = parser.parse_args(args)
    return exit_status(lambda: nix_commands.cmd_nix_hook(parsed))


def hook_program() -> NoReturn:
    """The `trustix-p2p-nix-hook` program: `hook_main`, started and ended as the wrapper does.

    No cyclic garbage collection while the hook's modules load, and no interpreter teardown
    after it (`trustix_p2p.program.exit_now`): this never returns.
    """
    import gc

    gc.disable()
    from trustix_p2p import configfile  # noqa: F401  (loaded now, with no collector running)
    from trustix_p2p.nix import hook  # noqa: F401

    gc.enable()
    exit_now(hook_main())


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m trustix_p2p.nix`: the Nix commands of `trustix-p2p`."""
    import argparse

    from trustix_p2p.commands import nix as nix_commands

    parser = argparse.ArgumentParser(
        prog="python -m trustix_p2p.nix",
        description="trustix-p2p's Nix builder commands (nar-hash, nix-hook, submit).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    nix_commands.register(sub)
    parsed = parser.parse_args(argv)
    return exit_status(lambda: int(parsed.func(parsed)))
