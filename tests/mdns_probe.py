"""A one-node mDNS probe for tests: `python -m tests.mdns_probe --key-seed N --port P ...`.

It runs `MdnsDiscovery` under trio with the key derived from `--key-seed` (see `probe_key`),
prints each `Found`'s pinned-peer address as one line on stdout as it arrives, and exits 0
once it has seen `--expect-peers` distinct other keys, or 1 when `--timeout` passes first.

With `--wait-stdin` it keeps advertising after that until its stdin is closed (still bounded
by the timeout): a test closes the probes' stdin only once every probe has seen the others,
so no probe withdraws its service before a slower one has found it.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys

import trio

from trustix_p2p.core.keys import PrivateKey, PublicKey
from trustix_p2p.discovery import Found, MdnsDiscovery


def probe_private_key(seed: int) -> PrivateKey:
    return PrivateKey(hashlib.sha256(b"trustix mdns probe %d" % seed).digest())


def probe_key(seed: int) -> PublicKey:
    """The public key a probe started with `--key-seed seed` advertises."""
    return probe_private_key(seed).public_key


async def _stdin_closed() -> None:
    stream = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
    async with stream:
        while await stream.receive_some(4096):
            pass


async def probe(args: argparse.Namespace) -> int:
    key = probe_private_key(args.key_seed).public_key
    discovery = MdnsDiscovery(key, args.port, args.interface)
    send, receive = trio.open_memory_channel[Found](16)
    seen: set[PublicKey] = set()
    with trio.move_on_after(args.timeout):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(discovery.run, send)
            async with receive:
                while len(seen) < args.expect_peers:
                    found = await receive.receive()
                    print(found.address, flush=True)
                    seen.add(found.public_key)
            if args.wait_stdin:
                await _stdin_closed()
            nursery.cancel_scope.cancel()
    return 0 if len(seen) >= args.expect_peers else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.mdns_probe")
    parser.add_argument("--key-seed", type=int, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--interface", action="append", required=True)
    parser.add_argument("--expect-peers", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=20.0)
    parser.add_argument("--wait-stdin", action="store_true")
    return trio.run(probe, parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
