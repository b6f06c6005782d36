"""`trustix-p2p config check FILE`: say whether a node could start with a configuration file.

On success it prints `ok: FILE` and exits 0.  Otherwise it prints one line per problem on
stdout, `FILE: option 'NAME': reason`, every problem it can find (unknown and missing options,
wrong types, values out of bounds, addresses that do not parse, a key file that is missing or
that others may read), and exits 2.  A file that cannot be read or is not TOML at all is the
usual one-line error on stderr, also exit 2.  It only reads; it never starts or changes
anything.
"""

from __future__ import annotations

import argparse

from trustix_p2p.config import config_file_problems

__all__ = ["register"]


def _check(args: argparse.Namespace) -> int:
    name: str = args.file
    problems = config_file_problems(name)
    for option, reason in problems:
        print(f"{name}: option {option!r}: {reason}")
    if problems:
        return 2
    print(f"ok: {name}")
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    config = subparsers.add_parser(
        "config",
        help="check a node configuration file",
        description="Work with node configuration files (docs/configuration.md lists the options).",
    )
    sub = config.add_subparsers(dest="config_command", required=True, metavar="COMMAND")
    check = sub.add_parser(
        "check",
        help="report every problem of a configuration file",
        description="Check FILE as a node would load it, and that its key file loads.  Prints "
        "'ok: FILE' and exits 0, or prints one line \"FILE: option 'NAME': reason\" per "
        "problem and exits 2.",
    )
    check.add_argument("file", metavar="FILE", help="the TOML configuration file to check")
    check.set_defaults(func=_check)
