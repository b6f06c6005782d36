"""`python -m trustix_p2p.nix COMMAND`: the builder's commands without the rest of the CLI.

The same `nar-hash`, `nix-hook` and `submit` as `trustix-p2p`, with the same error handling
(one line on stderr and exit status 2 for a `TrustixError`), but only their own module is
imported.  The full `trustix-p2p` entry point imports every command group (the node, the
transport, trio, ...) before it parses its arguments, which Nix would pay on every build when
the post-build hook starts; this entry point is the hook's fast path until the main CLI
imports command groups lazily.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from trustix_p2p.commands import nix as nix_commands
from trustix_p2p.errors import TrustixError


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m trustix_p2p.nix",
        description="trustix-p2p's Nix builder commands (nar-hash, nix-hook, submit).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    nix_commands.register(sub)
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
