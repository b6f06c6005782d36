"""What the commands that talk to a running node share: finding its control socket."""

from __future__ import annotations

import argparse
from pathlib import Path

from trustix_p2p.config import default_config_path, load_node_config

__all__ = ["add_socket_args", "socket_path"]


def socket_path(args: argparse.Namespace) -> Path:
    """`--socket`, else the control socket of the node `--config` (or the default) names."""
    if args.socket is not None:
        return Path(args.socket)
    return load_node_config(args.config or default_config_path()).socket_path


def add_socket_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        type=Path,
        help="node config (default $TRUSTIX_P2P_CONFIG or /etc/trustix-p2p/node.toml)",
    )
    p.add_argument("--socket", type=Path, help="control socket path (overrides --config)")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait (default 10)")
