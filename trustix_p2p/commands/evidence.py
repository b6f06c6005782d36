"""`trustix-p2p evidence ...`: work with evidence of a log's misbehaviour (DESIGN §4).

`evidence verify FILE` checks an evidence document with nothing but the file: no node, no
network, no state directory, because evidence must convince anyone who holds only the
builder's public key, which the document itself names.  Its exit status is the verdict:

- 0 and `valid: <what it shows>` on stdout: the signatures and the proof hold;
- 1 and `invalid: <what fails>` on stdout: the document is malformed or does not verify.
  A verdict, not an error: a script that checks a pile of documents reads it from the status
  and the line, as it would from `cmp` or `grep`;
- 2 and one line on stderr (the CLI's usual `TrustixError` path): the file cannot be read.

`evidence list [--json]` and `evidence show ID` ask a running node (over its control socket,
like `status`) for the evidence it holds: the list as a table or a JSON array of
`{"id", "kind", "log_id", "public_key", "found_at"}`, one document as DESIGN §4 fixes it.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
import time

from trustix_p2p.commands.common import add_socket_args, socket_path
from trustix_p2p.core.evidence import (
    MAX_DOCUMENT_SIZE,
    describe_evidence,
    from_json,
    verify_evidence,
)
from trustix_p2p.errors import ConfigError, DecodeError, VerificationError

__all__ = ["read_document", "register"]


def read_document(path: str) -> bytes:
    """The bytes of `path` (`-` for stdin), at most one byte over the document size limit.

    Reading stops there so an enormous file costs nothing; `from_json` then refuses it with a
    message naming the limit.  An unreadable file is a usage error (`ConfigError`).
    """
    limit = MAX_DOCUMENT_SIZE + 1
    if path == "-":
        try:
            return sys.stdin.buffer.read(limit)
        except OSError as exc:
            raise ConfigError(f"cannot read evidence from stdin: {exc.strerror}") from exc
    try:
        with open(path, "rb") as fh:
            return fh.read(limit)
    except OSError as exc:
        raise ConfigError(f"cannot read evidence file {path}: {exc.strerror}") from exc


def _one_line(text: str) -> str:
    # Messages may quote input (an origin, a key); the verdict must stay one line.
    return " ".join(text.split())


def _verify(args: argparse.Namespace) -> int:
    data = read_document(args.file)
    try:
        ev = from_json(data)
        verify_evidence(ev)
    except (DecodeError, VerificationError) as exc:
        print(f"invalid: {_one_line(str(exc))}")
        return 1
    print(f"valid: {describe_evidence(ev)}")
    return 0


def _list(args: argparse.Namespace) -> int:
    from trustix_p2p.control.client import ControlClient

    with ControlClient(socket_path(args), args.timeout) as client:
        rows = client.evidence_list()
    items = [
        {
            "id": r.id,
            "kind": r.kind,
            "log_id": r.log_id.hex(),
            "public_key": base64.b64encode(r.public_key).decode(),
            "found_at": r.found_at,
        }
        for r in rows
    ]
    if args.json:
        print(json.dumps(items))
        return 0
    if not items:
        print("no evidence")
        return 0
    print(f"{'id':<16}  {'kind':<20}  {'found':<20}  log")
    for item in items:
        found = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(int(str(item["found_at"]))))
        print(f"{str(item['id'])[:16]:<16}  {item['kind']:<20}  {found:<20}  {item['log_id']}")
    return 0


def _show(args: argparse.Namespace) -> int:
    from trustix_p2p.control.client import ControlClient

    with ControlClient(socket_path(args), args.timeout) as client:
        document = client.evidence(args.id)
    sys.stdout.write(document)
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    group = subparsers.add_parser(
        "evidence",
        help="verify evidence that a log misbehaved",
        description="Work with evidence of a log's misbehaviour (split views, inconsistent "
        "histories): portable JSON documents anyone can check with the builder's public key.",
    )
    commands = group.add_subparsers(dest="evidence_command", required=True, metavar="SUBCOMMAND")

    verify = commands.add_parser(
        "verify",
        help="check an evidence document offline",
        description="Check the signatures and proof of an evidence document using only the "
        "file. Prints 'valid: ...' and exits 0, or prints 'invalid: <what fails>' and exits 1; "
        "exits 2 if FILE cannot be read.",
    )
    verify.add_argument("file", metavar="FILE", help="evidence JSON document, or - for stdin")
    verify.set_defaults(func=_verify)

    listing = commands.add_parser("list", help="the evidence a running node holds")
    listing.add_argument("--json", action="store_true", help="one JSON array")
    add_socket_args(listing)
    listing.set_defaults(func=_list)

    show = commands.add_parser("show", help="one evidence document a running node holds")
    show.add_argument("id", metavar="ID", help="the evidence id (or a unique prefix of it)")
    add_socket_args(show)
    show.set_defaults(func=_show)
