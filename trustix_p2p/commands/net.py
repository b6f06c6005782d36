"""`trustix-p2p ping ADDRESS`: dial a node over Noise and measure round trips.

Prints one JSON object: the address, the peer's proven public key (base64) and log id, the
handshake time and each Ping/Pong round-trip time in milliseconds.  Without `--key` an
ephemeral key is used, so pinging needs no key file.  This module only parses arguments and
prints; the protocol lives in `trustix_p2p.transport`.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

import trio

from trustix_p2p.core.keys import SEED_SIZE, PrivateKey
from trustix_p2p.errors import ConfigError
from trustix_p2p.keyfile import load_key_file
from trustix_p2p.transport import TransportLimits, connect, parse_peer_address, ping

__all__ = ["ping_address", "register"]


async def ping_address(
    address: str, key: PrivateKey, count: int, limits: TransportLimits
) -> dict[str, Any]:
    """Connect, handshake, ping `count` times; the JSON-ready report."""
    peer_address = parse_peer_address(address)
    started = trio.current_time()
    connection = await connect(peer_address, key, limits=limits)
    handshake = trio.current_time() - started
    async with connection:
        rtts = []
        for nonce in range(count):
            with trio.fail_after(limits.idle_timeout):
                rtts.append(await ping(connection, nonce))
    rtt_ms = [round(rtt * 1000, 3) for rtt in rtts]
    return {
        "address": str(peer_address),
        "peer_key": connection.peer_key.to_base64(),
        "log_id": connection.peer_key.log_id_hex(),
        "handshake_ms": round(handshake * 1000, 3),
        "rtt_ms": rtt_ms,
        "rtt_ms_min": min(rtt_ms) if rtt_ms else None,
        "rtt_ms_avg": round(sum(rtt_ms) / len(rtt_ms), 3) if rtt_ms else None,
    }


def _ping(args: argparse.Namespace) -> int:
    if args.count < 0:
        raise ConfigError("--count must be 0 or more")
    if not args.timeout > 0:
        raise ConfigError("--timeout must be positive")
    # An ephemeral identity is fine for pinging: the peer learns nothing it could reuse.
    key = load_key_file(args.key) if args.key else PrivateKey.from_seed(os.urandom(SEED_SIZE))
    limits = TransportLimits(handshake_timeout=args.timeout, idle_timeout=args.timeout)
    report = trio.run(ping_address, args.address, key, args.count, limits)
    print(json.dumps(report))
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "ping",
        help="connect to a node over Noise and measure round-trip time",
        description="Connect to ADDRESS ([<base64 pubkey>@]host:port), complete the Noise "
        "handshake (refusing any key other than a pinned one), send Ping messages and print "
        "the peer's public key and round-trip times as JSON.",
    )
    parser.add_argument("address", metavar="ADDRESS", help="[<base64 pubkey>@]host:port")
    parser.add_argument("--key", metavar="KEYFILE", help="node key file (default: ephemeral)")
    parser.add_argument("--count", type=int, default=1, help="number of pings (default 1)")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per step (default 10)")
    parser.set_defaults(func=_ping)
