"""The durable hand-over folder between the Nix post-build hook and the node.

When the node is down or slow, the hook writes the leaves it could not hand over into one spool
file and exits; the node ingests spool files when it starts and while it runs.  A spool file is
a msgpack array of leaf bytes.  It is written under a dot-name, fsynced, renamed into place and
the folder fsynced, so a reader never sees a half-written file and a written one survives a
crash.  The node deletes a file only after the leaves in it are durably in the log; submission is
idempotent, so a file ingested twice (crash between the two steps) is still logged once.

This module never interprets the leaves; the node validates them like any other submission.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Sequence
from pathlib import Path

import msgpack

from trustix_p2p.errors import DecodeError

SPOOL_SUFFIX = ".spool"
MAX_SPOOL_FILE = 64 << 20
MAX_SPOOL_LEAVES = 100_000
REJECTED_DIR = "rejected"


def write_spool(spool_dir: Path, leaves: Sequence[bytes]) -> Path:
    """Durably write `leaves` as one new spool file; returns its path."""
    spool_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    name = f"{time.time_ns():020d}-{os.getpid()}-{secrets.token_hex(4)}{SPOOL_SUFFIX}"
    tmp = spool_dir / f".{name}.tmp"
    final = spool_dir / name
    data = msgpack.packb(list(leaves), use_bin_type=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, final)
    dfd = os.open(spool_dir, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
    return final


def pending_spool_files(spool_dir: Path) -> list[Path]:
    """Complete spool files, oldest first (names start with a nanosecond timestamp)."""
    try:
        names = os.listdir(spool_dir)
    except FileNotFoundError:
        return []
    return sorted(
        spool_dir / n for n in names if n.endswith(SPOOL_SUFFIX) and not n.startswith(".")
    )


def read_spool(path: Path) -> list[bytes]:
    """The leaves in one spool file; DecodeError if it is malformed or over the limits."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise DecodeError(f"cannot read spool file {path}: {exc.strerror}") from exc
    if size > MAX_SPOOL_FILE:
        raise DecodeError(f"spool file {path} is larger than {MAX_SPOOL_FILE} bytes")
    data = path.read_bytes()
    try:
        leaves = msgpack.unpackb(
            data, use_list=True, raw=False, max_array_len=MAX_SPOOL_LEAVES, strict_map_key=True
        )
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise DecodeError(f"spool file {path} is not valid msgpack: {exc}") from exc
    if not isinstance(leaves, list) or not all(isinstance(x, bytes) for x in leaves):
        raise DecodeError(f"spool file {path} is not a list of leaves")
    return leaves


def remove_spool(path: Path) -> None:
    """Delete an ingested spool file (the caller has made its leaves durable)."""
    path.unlink(missing_ok=True)


def reject_spool(path: Path) -> Path:
    """Move an unusable spool file aside, keeping it for the operator to inspect."""
    target_dir = path.parent / REJECTED_DIR
    target_dir.mkdir(mode=0o700, exist_ok=True)
    target = target_dir / path.name
    os.replace(path, target)
    return target
