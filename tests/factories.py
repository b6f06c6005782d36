"""Deterministic test data: keys, entries and leaves."""

from __future__ import annotations

import hashlib

from trustix_p2p.core import nix32
from trustix_p2p.core.entry import Entry, encode_entry
from trustix_p2p.core.keys import PrivateKey
from trustix_p2p.storage import LeafRecord


def key(name: str) -> PrivateKey:
    return PrivateKey.from_seed(hashlib.sha256(b"test key " + name.encode()).digest())


def store_path(name: str, salt: str = "") -> str:
    part = nix32.encode(hashlib.sha256(f"{salt}{name}".encode()).digest()[:20])
    return f"/nix/store/{part}-{name}"


def entry(i: int, *, nar_seed: str = "", built_at: int = 1_700_000_000) -> Entry:
    return Entry(
        out_path=store_path(f"pkg-{i}"),
        nar_hash=hashlib.sha256(f"nar {nar_seed}{i}".encode()).digest(),
        nar_size=1000 + i,
        references=(),
        deriver=store_path(f"pkg-{i}.drv"),
        output_name="out",
        built_at=built_at,
    )


def leaf(i: int, **kw: object) -> bytes:
    return encode_entry(entry(i, **kw))  # type: ignore[arg-type]


def record(i: int, **kw: object) -> LeafRecord:
    e = entry(i, **kw)  # type: ignore[arg-type]
    return LeafRecord(encode_entry(e), e.out_path)
