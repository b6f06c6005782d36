"""How trustix-p2p's programs end: the exit-status contract, and ending without teardown.

Every program (`trustix-p2p`, `trustix-p2p-nix-hook`, `python -m trustix_p2p.nix`, the
generated post-build-hook program) keeps one contract, `exit_status`: a `TrustixError` is
one line on stderr and exit status 2, so a user never sees a traceback for bad input, and
anything else is a bug and is allowed to surface.  The hook's programs then end through
`exit_now`.

The post-build hook loads this module on every build, so it imports nothing but `os`, `sys`
and the errors.
"""

from __future__ import annotations

import os
import sys

from trustix_p2p.errors import TrustixError

# Not `from typing import TYPE_CHECKING`: importing typing adds milliseconds to the start of
# the post-build hook, on every build.  Type checkers treat this name as true all the same.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import NoReturn

__all__ = ["exit_now", "exit_status"]


def exit_status(command: Callable[[], int]) -> int:
    """Run a command body; its status, or 2 with one line on stderr for a `TrustixError`."""
    try:
        return command()
    except TrustixError as exc:
        print(f"trustix-p2p: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def exit_now(status: int) -> NoReturn:
    """Flush stdout and stderr and end the process with `status`, skipping the teardown.

    For the hook's programs, which hold no buffered files and register no exit handlers:
    the interpreter's teardown of every module is time added to every build.
    """
    for stream in (sys.stdout, sys.stderr):
        try:  # noqa: SIM105 (contextlib is one more import on every build)
            stream.flush()
        except (OSError, ValueError):
            pass  # nobody reads the build log any more; the exit status still counts
    os._exit(status)
