"""`trustix-p2p log ...`: admin commands on a stopped node's state directory (and `log retire`,
which a running node also does, over its control socket).

Output is JSON on stdout (one object, or one object a line for listings); hashes and leaves are
base64 as in the Merkle test vectors.  These commands open the store directly, so they refuse
to run while a node holds it (LevelDB's lock says so).
"""

from __future__ import annotations

import argparse
import base64
import collections
import contextlib
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from trustix_p2p.commands.common import add_socket_args, socket_path
from trustix_p2p.core import merkle
from trustix_p2p.core.checkpoint import read_checkpoint_unverified
from trustix_p2p.core.entry import encode_entry, entry_from_json
from trustix_p2p.core.keys import PublicKey
from trustix_p2p.errors import (
    ConfigError,
    DecodeError,
    LocalProtocolError,
    StoreError,
    TrustixError,
)
from trustix_p2p.keyfile import load_key_file
from trustix_p2p.ownlog import OwnLog
from trustix_p2p.statedir import make_private_dir
from trustix_p2p.storage import LeafRecord, LogStore, Store

MAX_JSONL_LINE = 1 << 20


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _emit(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")


def _open_store(state: Path) -> Store:
    if not (state / "db").is_dir():
        raise StoreError(f"{state} is not a node state directory (no db/ inside)")
    return Store(state / "db", create=False)


def _select_log(store: Store, log_hex: str | None) -> LogStore:
    if log_hex is not None:
        try:
            return store.log(bytes.fromhex(log_hex))
        except ValueError as exc:
            raise StoreError(f"--log must be a hex log id: {exc}") from exc
    own = store.own_log_id()
    if own is None:
        raise StoreError("this state directory has no own log; pass --log LOG_ID")
    return store.log(own)


def _read_jsonl(path: Path, built_at: int) -> Iterator[tuple[int, bytes, str]]:
    """(line number, leaf bytes, out path) for every non-blank line; DecodeError names the line."""
    try:
        fh = sys.stdin.buffer if str(path) == "-" else path.open("rb")
    except OSError as exc:
        raise DecodeError(f"cannot read {path}: {exc.strerror}") from exc
    with fh:
        for lineno, raw in enumerate(fh, 1):
            if len(raw) > MAX_JSONL_LINE:
                raise DecodeError(f"{path}:{lineno}: line longer than {MAX_JSONL_LINE} bytes")
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw)
                entry = entry_from_json(obj, built_at)
                leaf = encode_entry(entry)
            except (ValueError, DecodeError, LocalProtocolError) as exc:
                raise DecodeError(f"{path}:{lineno}: {exc}") from exc
            yield lineno, leaf, entry.out_path


def cmd_append(args: argparse.Namespace) -> int:
    key = load_key_file(args.key)
    built_at = int(time.time())
    if str(args.jsonl) != "-":
        # Validate the whole file first, so a bad line never leaves half an import behind.
        collections.deque(_read_jsonl(args.jsonl, built_at), maxlen=0)
    make_private_dir("--state", args.state)
    with Store(args.state / "db") as store:
        # The same guard as the node's: refuses a store behind the last signed checkpoint.
        own = OwnLog.open(store, key, args.state)
        log = own.log
        before = log.size
        batch: list[LeafRecord] = []
        for _, leaf, out_path in _read_jsonl(args.jsonl, built_at):
            batch.append(LeafRecord(leaf, out_path))
            if len(batch) >= args.batch:
                own.append(batch)
                own.sign(int(time.time()))
                batch = []
        if batch:
            own.append(batch)
        cp = own.sign(int(time.time()))
        _emit(
            {
                "log_id": log.log_id.hex(),
                "appended": log.size - before,
                "size": log.size,
                "root": _b64(cp.checkpoint.root) if cp else _b64(merkle.EMPTY_ROOT),
            }
        )
    return 0


def successor_key(text: str) -> PublicKey:
    """`--successor`: a base64 Ed25519 public key, or the path of the successor's key file."""
    with contextlib.suppress(TrustixError, ValueError):
        return PublicKey.from_base64(text)
    path = Path(text)
    if not path.exists():
        raise ConfigError(
            f"--successor: {text[:80]!r} is neither a base64 public key nor a key file"
        )
    return load_key_file(path).public_key


def cmd_retire(args: argparse.Namespace) -> int:
    successor = successor_key(args.successor)
    if (args.state is None) != (args.key is None):
        raise ConfigError(
            "log retire: give --state and --key (a stopped node), or neither (a running node)"
        )
    if args.state is not None:
        key = load_key_file(args.key)
        with _open_store(args.state) as store:
            note = OwnLog.open(store, key, args.state).retire(successor, int(time.time())).note
    else:
        from trustix_p2p.control.client import ControlClient

        with ControlClient(socket_path(args), args.timeout) as client:
            note = client.retire(successor.raw)
    cp = read_checkpoint_unverified(note)
    _emit(
        {
            "log_id": cp.log_id.hex(),
            "size": cp.size,
            "root": _b64(cp.root),
            "successor": successor.to_base64(),
            "successor_log_id": successor.log_id_hex(),
            "checkpoint": note.decode(),
        }
    )
    return 0


def cmd_checkpoint(args: argparse.Namespace) -> int:
    with _open_store(args.state) as store:
        cp = _select_log(store, args.log).checkpoint()
        if cp is None:
            raise StoreError("this log has no checkpoint yet")
        sys.stdout.write(cp.note.decode())
    return 0


def cmd_entries(args: argparse.Namespace) -> int:
    with _open_store(args.state) as store:
        log = _select_log(store, args.log)
        end = log.size if args.end is None else min(args.end, log.size)
        for index, leaf in log.leaves(args.start, end):
            _emit({"index": index, "leaf": _b64(leaf)})
    return 0


def _default_size(log: LogStore, size: int | None) -> int:
    if size is not None:
        return size
    cp = log.checkpoint()
    return cp.checkpoint.size if cp is not None else log.size


def cmd_prove_inclusion(args: argparse.Namespace) -> int:
    with _open_store(args.state) as store:
        log = _select_log(store, args.log)
        size = _default_size(log, args.size)
        if not 0 <= args.index < size <= log.size:
            raise StoreError(f"no leaf {args.index} in a tree of size {size} (log has {log.size})")
        proof = log.inclusion_proof(args.index, size)
        leaf_hash = log.node(0, args.index)
        root = log.root(size)
        _emit(
            {
                "index": args.index,
                "size": size,
                "leaf_hash": _b64(leaf_hash),
                "root": _b64(root),
                "proof": [_b64(p) for p in proof],
            }
        )
    return 0


def cmd_prove_consistency(args: argparse.Namespace) -> int:
    with _open_store(args.state) as store:
        log = _select_log(store, args.log)
        new = _default_size(log, args.new)
        if not 0 < args.old <= new <= log.size:
            raise StoreError(f"no consistency proof from {args.old} to {new} (log has {log.size})")
        proof = log.consistency_proof(args.old, new)
        _emit(
            {
                "old": args.old,
                "new": new,
                "old_root": _b64(log.root(args.old)),
                "new_root": _b64(log.root(new)),
                "proof": [_b64(p) for p in proof],
            }
        )
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    with _open_store(args.state) as store:
        logs = (
            [_select_log(store, args.log)] if args.log else [store.log(i) for i in store.log_ids()]
        )
        ok = True
        for log in logs:
            report = log.verify()
            ok = ok and report.ok
            _emit(
                {
                    "log_id": report.log_id.hex(),
                    "size": report.size,
                    "checkpoint_size": report.checkpoint_size,
                    "ok": report.ok,
                    "problems": list(report.problems),
                }
            )
    return 0 if ok else 1


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    log = sub.add_parser("log", help="inspect or edit a stopped node's log")
    lsub = log.add_subparsers(dest="log_command", required=True, metavar="SUBCOMMAND")

    def common(name: str, help_: str) -> argparse.ArgumentParser:
        p = lsub.add_parser(name, help=help_)
        p.add_argument("--state", type=Path, required=True, help="the node's state directory")
        p.add_argument("--log", help="hex log id of a mirrored log (default: the node's own)")
        return p

    p = lsub.add_parser("append", help="append entries from a JSON-lines file and sign")
    p.add_argument("--state", type=Path, required=True, help="the node's state directory")
    p.add_argument("--key", type=Path, required=True, help="the builder's key file")
    p.add_argument(
        "--jsonl", type=Path, required=True, help="entries, one JSON object a line (- for stdin)"
    )
    p.add_argument(
        "--batch",
        type=int,
        default=10_000,
        help="entries per durable write and checkpoint (default 10000)",
    )
    p.set_defaults(func=cmd_append)

    p = lsub.add_parser(
        "retire",
        help="close the log with a final checkpoint naming its successor key",
        description="Sign the log's final checkpoint over every stored entry, naming "
        "NEWKEY as the key that continues this builder's log; afterwards the log takes no "
        "entries and signs no checkpoints. With --state and --key, on a stopped node's state "
        "directory; without them, by the running node (its control socket), which gossips "
        "the final checkpoint at once. Start the node with the successor's key_file on the "
        "same state directory to continue. Prints the final checkpoint as JSON.",
    )
    p.add_argument("--state", type=Path, help="a stopped node's state directory")
    p.add_argument("--key", type=Path, help="the retiring log's key file (with --state)")
    p.add_argument(
        "--successor",
        required=True,
        metavar="NEWKEY",
        help="the successor's base64 public key (`trustix-p2p pubkey`), or its key file",
    )
    add_socket_args(p)
    p.set_defaults(func=cmd_retire)

    p = common("checkpoint", "print the latest checkpoint note, exactly as signed")
    p.set_defaults(func=cmd_checkpoint)

    p = common("entries", "print leaves as JSON lines")
    p.add_argument("--start", type=int, default=0)
    p.add_argument("--end", type=int, default=None)
    p.set_defaults(func=cmd_entries)

    p = common("prove-inclusion", "print an inclusion proof")
    p.add_argument("--index", type=int, required=True)
    p.add_argument("--size", type=int, default=None, help="tree size (default: checkpoint's)")
    p.set_defaults(func=cmd_prove_inclusion)

    p = common("prove-consistency", "print a consistency proof")
    p.add_argument("--old", type=int, required=True)
    p.add_argument("--new", type=int, default=None, help="new size (default: checkpoint's)")
    p.set_defaults(func=cmd_prove_consistency)

    p = common("verify", "recompute everything; exit 0 only if the store is intact")
    p.set_defaults(func=cmd_verify)
