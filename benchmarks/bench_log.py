"""Benchmark the verifiable log: appends, proofs and verification, with baselines in the same run.

    .venv/bin/python benchmarks/bench_log.py [--entries 1000000] [--proofs 20000] [--no-pymerkle]

Figures printed (issue 2):
- append throughput of LogStore.append with a durable write batch and a signed checkpoint every
  10,000 entries, next to a *floor*: the same leaf and node hashing with hashlib and plyvel
  write batches of the same bytes (leaf, leaf hash, completed nodes), with no other logic;
- inclusion and consistency proofs served from the store at the full size, and verification;
- the same leaves in pymerkle's persistent SqliteTree: its batched append, and its inclusion
  proofs at the full size.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import shutil
import struct
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import msgpack
import plyvel

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from trustix_p2p.core import merkle, nix32
from trustix_p2p.core.checkpoint import (
    Checkpoint,
    SignedCheckpoint,
    origin_for,
    sign_checkpoint,
)
from trustix_p2p.core.keys import PrivateKey
from trustix_p2p.ownlog import OwnLog
from trustix_p2p.storage import DB_OPTIONS, LeafRecord, Store

BATCH = 10_000
_U64 = struct.Struct(">Q")


def make_records(n: int) -> list[LeafRecord]:
    """n distinct, valid v1 entries (canonical msgpack, as encode_entry writes them)."""
    records = []
    for i in range(n):
        digest = hashlib.sha256(i.to_bytes(8, "big")).digest()
        out = f"/nix/store/{nix32.encode(digest[:20])}-package-{i}"
        leaf = msgpack.packb(
            [1, out, digest, 1000 + i, [], "", "out", 1_700_000_000], use_bin_type=True
        )
        records.append(LeafRecord(leaf, out))
    return records


def rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("inf")


def bench_floor(records: list[LeafRecord], path: Path) -> float:
    """Hashing plus plyvel batches of the same bytes, no other logic.

    Writes what LogStore.append writes for each leaf (the record: leaf hash, hashes of the
    subtrees it completes, leaf bytes; and the out-path index key) and for each block of 256
    leaves (its hash tile: the block's records' hashes up to level 8), with the same database
    options and one sync=True batch per 10,000 entries; no deduplication lookups, no
    signing, no checks, no rollback.
    """
    db = plyvel.DB(str(path), create_if_missing=True, **DB_OPTIONS)
    sha = hashlib.sha256
    stack: list[bytes] = []
    tile: list[bytes] = []
    start = time.perf_counter()
    for b in range(0, len(records), BATCH):
        with db.write_batch(sync=True) as wb:
            for i in range(b, min(b + BATCH, len(records))):
                leaf = records[i].leaf
                lh = h = sha(b"\x00" + leaf).digest()
                parts = [lh]
                idx = i
                while idx & 1:
                    h = sha(b"\x01" + stack.pop() + h).digest()
                    parts.append(h)
                    idx >>= 1
                stack.append(h)
                key = _U64.pack(i)
                tile += parts
                parts.append(leaf)
                wb.put(b"E\x00\x00\x00\x01" + key, b"".join(parts))
                wb.put(b"P\x00\x00\x00\x01" + records[i].out_path.encode() + b"\x00" + lh, key)
                if i & 255 == 255:
                    wb.put(b"T\x00\x00\x00\x01" + _U64.pack(i >> 8), b"".join(tile[:511]))
                    tile = []
    elapsed = time.perf_counter() - start
    db.close()
    return rate(len(records), elapsed)


def bench_append(records: list[LeafRecord], path: Path, key: PrivateKey) -> tuple[float, Store]:
    store = Store(path)
    log = store.open_log(key.public_key, own=True)
    origin = origin_for(log.log_id)

    def sign(size: int, root: bytes) -> SignedCheckpoint:
        return sign_checkpoint(Checkpoint(origin, size, root, 1_700_000_000), key)

    start = time.perf_counter()
    for b in range(0, len(records), BATCH):
        log.append(records[b : b + BATCH], sign=sign)
    elapsed = time.perf_counter() - start
    assert log.size == len(records)
    return rate(len(records), elapsed), store


def bench_own_append(records: list[LeafRecord], state: Path, key: PrivateKey) -> float:
    """The builder's own path (node and `log append`): append, then OwnLog.sign, which re-reads
    and re-hashes the new entries and writes the checkpoint file before storing the checkpoint."""
    state.mkdir(mode=0o700)
    with Store(state / "db") as store:
        own = OwnLog.open(store, key, state)
        start = time.perf_counter()
        for b in range(0, len(records), BATCH):
            own.append(records[b : b + BATCH])
            own.sign(1_700_000_000)
        elapsed = time.perf_counter() - start
        assert own.log.size == len(records)
    return rate(len(records), elapsed)


def timed(count: int, fn: Callable[[int], object]) -> float:
    start = time.perf_counter()
    for i in range(count):
        fn(i)
    return rate(count, time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--proofs", type=int, default=20_000)
    parser.add_argument("--pymerkle-proofs", type=int, default=200)
    parser.add_argument("--no-pymerkle", action="store_true")
    args = parser.parse_args()
    n = args.entries
    rng = random.Random(1)
    tmp = Path(tempfile.mkdtemp(prefix="bench-log-"))
    key = PrivateKey.from_seed(bytes(32))
    results: list[tuple[str, str, str]] = []
    try:
        print(f"preparing {n:,} entries ...", flush=True)
        records = make_records(n)

        floor = bench_floor(records, tmp / "floor")
        ours, store = bench_append(records, tmp / "ours", key)
        results.append(
            (
                "append, checkpoint every 10,000 (entries/s)",
                f"{ours:,.0f}",
                f"floor {floor:,.0f} -> {ours / floor:.2f}x of floor",
            )
        )
        checked = bench_own_append(records, tmp / "own", key)
        results.append(
            (
                "  the same through OwnLog (re-read checks, checkpoint file)",
                f"{checked:,.0f}",
                f"{checked / floor:.2f}x of floor, {checked / ours:.2f}x of the plain append",
            )
        )

        log = store.log(key.public_key.log_id())
        root = log.frontier().root()
        idx = [rng.randrange(n) for _ in range(args.proofs)]
        olds = [rng.randrange(1, n) for _ in range(args.proofs)]
        incl = [log.inclusion_proof(i, n) for i in idx[:1000]]
        # First pass from a freshly opened store (cold caches), then the same proofs again.
        store.close()
        store = Store(tmp / "ours")
        log = store.log(key.public_key.log_id())
        for name, fn, args_ in (
            ("inclusion", log.inclusion_proof, idx),
            ("consistency", log.consistency_proof, olds),
        ):
            cold = timed(args.proofs, lambda k, fn=fn, a=args_: fn(a[k], n))
            warm = timed(args.proofs, lambda k, fn=fn, a=args_: fn(a[k], n))
            if name == "inclusion":
                r_incl = cold
            results.append(
                (
                    f"{name} proofs from the store at {n:,} (/s)",
                    f"{cold:,.0f}",
                    f"first pass after opening; second pass {warm:,.0f}",
                )
            )

        leaf_hashes = [log.node(0, i) for i in idx[:1000]]
        cons = [
            (olds[k], log.consistency_proof(olds[k], n), log.root(olds[k])) for k in range(1000)
        ]
        r_vi = timed(
            args.proofs,
            lambda k: merkle.verify_inclusion(
                idx[k % 1000], n, leaf_hashes[k % 1000], incl[k % 1000], root
            ),
        )
        r_vc = timed(
            args.proofs,
            lambda k: merkle.verify_consistency(
                cons[k % 1000][0], n, cons[k % 1000][1], cons[k % 1000][2], root
            ),
        )
        # The floor of verification: the same number of SHA-256 calls on 65-byte inputs.
        hashes_vi = sum(len(p) for p in incl) / len(incl)
        hashes_vc = sum(len(c[1]) * 2 for c in cons) / len(cons)
        block = bytes(65)
        sha = hashlib.sha256
        start = time.perf_counter()
        for _ in range(200_000):
            sha(block).digest()
        per_hash = (time.perf_counter() - start) / 200_000
        results.append(
            (
                "inclusion verification (/s)",
                f"{r_vi:,.0f}",
                f"hash floor {1 / (per_hash * hashes_vi):,.0f} "
                f"({hashes_vi:.1f} SHA-256 calls of {per_hash * 1e6:.2f} us)",
            )
        )
        results.append(
            (
                "consistency verification (/s)",
                f"{r_vc:,.0f}",
                f"hash floor {1 / (per_hash * hashes_vc):,.0f} (<= {hashes_vc:.1f} SHA-256 calls)",
            )
        )
        store.close()

        if not args.no_pymerkle:
            from pymerkle import SqliteTree

            tree = SqliteTree(str(tmp / "pymerkle.db"))
            leaves = [r.leaf for r in records]
            start = time.perf_counter()
            tree.append_entries(leaves, chunksize=BATCH)
            pm_append = rate(n, time.perf_counter() - start)
            assert tree.get_root() == root, "pymerkle disagrees on the root"
            count = args.pymerkle_proofs
            start = time.perf_counter()
            for k in range(count):
                tree.prove_inclusion(idx[k] + 1, n)  # pymerkle counts leaves from 1
            pm_incl = rate(count, time.perf_counter() - start)
            tree.close()
            results.append(
                (
                    "pymerkle SqliteTree batched append (entries/s)",
                    f"{pm_append:,.0f}",
                    f"ours {ours / pm_append:.2f}x",
                )
            )
            results.append(
                (
                    f"pymerkle inclusion proofs at {n:,} (/s)",
                    f"{pm_incl:,.0f}",
                    f"ours {r_incl / pm_incl:.1f}x",
                )
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    width = max(len(r[0]) for r in results)
    print()
    for name, value, note in results:
        print(f"{name:<{width}}  {value:>12}  {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
