"""`trustix-p2p node`, and the commands that talk to a running node over its control socket."""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import logging
import resource
import signal
import sys
import time
from pathlib import Path

import trio

from trustix_p2p.commands.common import add_socket_args, socket_path
from trustix_p2p.config import load_node_config
from trustix_p2p.control import protocol
from trustix_p2p.control.client import ControlClient
from trustix_p2p.errors import ConfigError, StoreError
from trustix_p2p.logfmt import configure_logging
from trustix_p2p.node import run_node


def _process_setup() -> None:
    """Process-wide settings a node needs before it opens anything."""
    # A write past RLIMIT_FSIZE must fail with EFBIG (answered "unavailable" and retried),
    # not kill the node with SIGXFSZ.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    # Every peer and control client holds a descriptor; the default soft limit (often 1024)
    # is far below what the connection limits allow.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def cmd_node(args: argparse.Namespace) -> int:
    config = load_node_config(args.config)
    _process_setup()
    configure_logging(logging.DEBUG if args.verbose else config.log_level)
    trio.run(run_node, config)
    return 0


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _followed(f: protocol.FollowedLog, now: float) -> dict[str, object]:
    return {
        "log_id": f.log_id.hex(),
        "public_key": _b64(f.public_key),
        "name": f.name,
        "mode": f.mode,
        "size": f.size,
        "checkpoint_size": f.head_size,
        "checkpoint_age": None if f.head_time is None else max(0, int(now) - f.head_time),
        "cosignatures": f.cosignatures,
        "evidence": f.evidence,
        "head_from": None if f.head_from is None else _b64(f.head_from),
        "head_receipts": f.head_receipts,
        "successor": None if f.successor is None else _b64(f.successor),
        "sync": None
        if f.sync_rate is None
        else {"entries_per_second": f.sync_rate, "seconds_left": f.sync_eta},
    }


def cmd_status(args: argparse.Namespace) -> int:
    with ControlClient(socket_path(args), args.timeout) as client:
        s = client.status()
        peers = [p for p in client.peers() if p.state == "connected"]
    now = time.time()
    out = {
        "public_key": base64.b64encode(s.public_key).decode() if s.public_key else None,
        "log_id": s.log_id.hex() if s.log_id else None,
        "size": s.size,
        "checkpoint_size": s.checkpoint_size,
        "checkpoint_time": s.checkpoint_time,
        "spool_pending": s.spool_pending,
        "logs": s.logs,
        "listen": list(s.listen),
        "peers": [{"key": p.key, "address": p.address, "direction": p.direction} for p in peers],
        "evidence": s.evidence,
        "successor": None if s.successor is None else _b64(s.successor),
        "follows": [_followed(f, now) for f in s.follows],
    }
    print(json.dumps(out))
    return 0


def cmd_peers(args: argparse.Namespace) -> int:
    with ControlClient(socket_path(args), args.timeout) as client:
        rows = client.peers()
    records = [
        {
            "address": r.address,
            "key": r.key,
            "direction": r.direction,
            "state": r.state,
            "score": r.score,
            "last_reason": r.last_reason,
        }
        for r in rows
    ]
    if args.json:
        print(json.dumps(records))
        return 0
    print(f"{'state':<12} {'dir':<4} {'score':>5}  {'key':<12} address / last reason")
    for r in records:
        key = str(r["key"])[:12] or "?"
        print(f"{r['state']:<12} {r['direction']:<4} {r['score']:>5}  {key:<12} {r['address']}")
        if r["last_reason"]:
            print(f"{'':<37}{r['last_reason']}")
    return 0


def cmd_checkpoint(args: argparse.Namespace) -> int:
    log_id = None
    if args.log is not None:
        try:
            log_id = bytes.fromhex(args.log)
        except ValueError as exc:
            raise ConfigError(f"--log must be a hex log id: {exc}") from exc
    with ControlClient(socket_path(args), args.timeout) as client:
        note = client.checkpoint(log_id)
    if note is None:
        raise StoreError("the node has no checkpoint for that log yet")
    sys.stdout.write(note.decode())
    return 0


def cmd_lookup(args: argparse.Namespace) -> int:
    with ControlClient(socket_path(args), args.timeout) as client:
        hits = client.lookup(args.out_path)
    for h in hits:
        print(
            json.dumps(
                {
                    "log_id": h.log_id.hex(),
                    "index": h.index,
                    "leaf": base64.b64encode(h.leaf).decode(),
                    "checkpoint": h.checkpoint.decode() if h.checkpoint is not None else None,
                    "proof": None
                    if h.proof is None
                    else [base64.b64encode(p).decode() for p in h.proof],
                }
            )
        )
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("node", help="run a node")
    p.add_argument("--config", type=Path, required=True, help="node configuration (TOML)")
    p.add_argument(
        "--verbose",
        action="store_true",
        help="log at debug level whatever log_level says (never any key material)",
    )
    p.set_defaults(func=cmd_node)

    p = sub.add_parser("status", help="show a running node's status (JSON)")
    add_socket_args(p)
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("checkpoint", help="print a running node's latest checkpoint note")
    p.add_argument("--log", help="hex log id of a mirrored log (default: the node's own)")
    add_socket_args(p)
    p.set_defaults(func=cmd_checkpoint)

    p = sub.add_parser("peers", help="a running node's peers: connected, known, dropped and why")
    p.add_argument("--json", action="store_true", help="one JSON array")
    add_socket_args(p)
    p.set_defaults(func=cmd_peers)

    p = sub.add_parser("lookup", help="entries a running node holds for a store path (JSON lines)")
    p.add_argument("out_path")
    add_socket_args(p)
    p.set_defaults(func=cmd_lookup)
