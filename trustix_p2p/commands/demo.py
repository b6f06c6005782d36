"""`trustix-p2p demo`: the local loopback demo network (see trustix_p2p.demo)."""

from __future__ import annotations

import argparse
from pathlib import Path


def cmd_demo(args: argparse.Namespace) -> int:
    from trustix_p2p.demo import run_demo

    return run_demo(args.dir)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("demo", help="run the local demo network on loopback")
    p.add_argument(
        "--dir", type=Path, default=None, help="work directory (default: a new temp dir)"
    )
    p.set_defaults(func=cmd_demo)
