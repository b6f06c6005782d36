"""`trustix-p2p keygen` and `trustix-p2p pubkey`: create a node key file or show its identity.

Both print one JSON object on stdout, `{"public_key": <base64>, "log_id": <hex>}`, so scripts
can read a node's identity.  They never print the private key.
"""

from __future__ import annotations

import argparse
import json

from trustix_p2p.core.keys import PublicKey
from trustix_p2p.keyfile import generate_key_file, load_key_file

__all__ = ["identity_json", "register"]


def identity_json(public_key: PublicKey) -> str:
    """The JSON line both commands print for a node's public identity."""
    return json.dumps({"public_key": public_key.to_base64(), "log_id": public_key.log_id_hex()})


def _keygen(args: argparse.Namespace) -> int:
    key = generate_key_file(args.keyfile)
    print(identity_json(key.public_key))
    return 0


def _pubkey(args: argparse.Namespace) -> int:
    key = load_key_file(args.keyfile)
    print(identity_json(key.public_key))
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    keygen = subparsers.add_parser(
        "keygen",
        help="create a new Ed25519 node key file (mode 0600)",
        description="Create a new Ed25519 node key in KEYFILE (mode 0600; never overwrites) "
        'and print {"public_key": <base64>, "log_id": <hex>} as JSON.',
    )
    keygen.add_argument("keyfile", metavar="KEYFILE", help="path of the key file to create")
    keygen.set_defaults(func=_keygen)

    pubkey = subparsers.add_parser(
        "pubkey",
        help="print the public key and log id of a key file",
        description='Print {"public_key": <base64>, "log_id": <hex>} for an existing key file.',
    )
    pubkey.add_argument("keyfile", metavar="KEYFILE", help="path of an existing key file")
    pubkey.set_defaults(func=_pubkey)
