"""Light-client decisions (issue 10): one path, and batches, against 10 builder logs via a
local node, every proof verified; beside baselines measured in the same run.

    .venv/bin/python benchmarks/bench_client.py                    # 10 logs x 100,000 entries
    .venv/bin/python benchmarks/bench_client.py --entries 1000000  # the target's size (~5 min)

Every path is logged by all 10 builders (the same entry), so a decision verifies 10 inclusion
proofs against 10 checkpoints (each checkpoint's signature once per run, its consistency with
the client's cache once).  Printed: the median and p99 time of one `decide` (after the first,
which verifies the checkpoints), paths per second deciding one path after another, and as
baselines the control-socket lookup alone and the proof verification alone.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import msgpack
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from trustix_p2p.client.light import ControlSource, LightClient
from trustix_p2p.client.policy import load_policy
from trustix_p2p.client.state import ClientState
from trustix_p2p.control.client import ControlClient
from trustix_p2p.core import merkle, nix32
from trustix_p2p.core.checkpoint import Checkpoint, origin_for, sign_checkpoint, verify_checkpoint
from trustix_p2p.core.keys import PrivateKey
from trustix_p2p.errors import NodeUnavailableError
from trustix_p2p.keyfile import write_key_file
from trustix_p2p.storage import LeafRecord, Store

BATCH = 10_000


def leaf(i: int) -> tuple[bytes, str]:
    digest = hashlib.sha256(i.to_bytes(8, "big")).digest()
    out = f"/nix/store/{nix32.encode(digest[:20])}-package-{i}"
    packed = msgpack.packb(
        [1, out, digest, 1000 + i, [], "", "out", 1_700_000_000], use_bin_type=True
    )
    return packed, out


def build(directory: Path, keys: list[PrivateKey], entries: int) -> None:
    """One node's store holding every builder's log (the first is the node's own)."""
    store = Store(directory / "state" / "db")
    try:
        for n, key in enumerate(keys):
            log = store.open_log(key.public_key, own=(n == 0))
            for start in range(0, entries, BATCH):
                records = [LeafRecord(*leaf(i)) for i in range(start, min(entries, start + BATCH))]

                def sign(size: int, root: bytes, key: PrivateKey = key) -> object:
                    cp = Checkpoint(origin_for(key.public_key.log_id()), size, root, 1_700_000_000)
                    return sign_checkpoint(cp, key)

                log.append(records, sign=sign)  # type: ignore[arg-type]
            print(f"  log {n + 1}/{len(keys)}: {entries:,} entries", flush=True)
    finally:
        store.close()
    # The node checks its own log against the checkpoint file: write it.
    own = store.path
    assert own is not None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--logs", type=int, default=10)
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--paths", type=int, default=2000)
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="bench-client-"))
    keys = [
        PrivateKey.from_seed(hashlib.sha256(b"builder %d" % i).digest()) for i in range(args.logs)
    ]
    try:
        print(f"building {args.logs} logs of {args.entries:,} entries in one node's store ...")
        t0 = time.perf_counter()
        build(base / "node", keys, args.entries)
        print(f"  built in {time.perf_counter() - t0:.0f} s")
        write_key_file(base / "node" / "node.key", keys[0])
        # The own log's signed checkpoint file, as the node keeps it.
        store = Store(base / "node" / "state" / "db")
        note = store.log(keys[0].public_key.log_id()).checkpoint()
        store.close()
        assert note is not None
        (base / "node" / "state" / "signed-checkpoint").write_bytes(note.note)
        (base / "node" / "state" / "signed-checkpoint").chmod(0o600)
        (base / "node" / "node.toml").write_text(
            'state_dir = "state"\nkey_file = "node.key"\ncontrol_socket = "c.sock"\nlisten = []\n'
        )
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "trustix_p2p",
                "node",
                "--config",
                str(base / "node" / "node.toml"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=open(base / "node.log", "wb"),  # noqa: SIM115
        )
        sock = base / "node" / "c.sock"
        try:
            deadline = time.monotonic() + 120
            while True:
                try:
                    with ControlClient(sock, timeout=5) as c:
                        c.status()
                    break
                except NodeUnavailableError:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise SystemExit((base / "node.log").read_text()[-2000:]) from None
                    time.sleep(0.1)
            policy_path = base / "policy.toml"
            lines = [f"threshold = {args.logs // 2 + 1}", f'node_socket = "{sock}"']
            for n, key in enumerate(keys):
                lines += [
                    "[[builders]]",
                    f'name = "b{n}"',
                    f'public_key = "{key.public_key.to_base64()}"',
                ]
            policy_path.write_text("\n".join(lines) + "\n")
            paths = [
                leaf(i)[1] for i in range(0, args.entries, max(1, args.entries // args.paths))
            ][: args.paths]
            trio.run(measure, policy_path, sock, paths, keys)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return 0


async def measure(policy_path: Path, sock: Path, paths: list[str], keys: list[PrivateKey]) -> None:
    policy = load_policy(policy_path)
    client = LightClient(policy, [ControlSource(str(sock))], ClientState.load(policy))
    first = time.perf_counter()
    d = await client.decide(paths[0])
    first = time.perf_counter() - first
    assert d.trusted, (d, client.problems)
    one = []
    for p in paths[1:51]:
        t0 = time.perf_counter()
        d = await client.decide(p)
        one.append(time.perf_counter() - t0)
        assert d.trusted
    t0 = time.perf_counter()
    decided = await client.decide_many(paths)
    batch = len(paths) / (time.perf_counter() - t0)
    assert all(d.trusted for d in decided), client.problems[:3]
    # Baselines: the lookup round trip alone, and verifying one path's 10 proofs alone.
    with ControlClient(sock) as c:
        t0 = time.perf_counter()
        for p in paths[:200]:
            hits = c.lookup(p)
        lookup = (time.perf_counter() - t0) / 200
    by_log = {k.public_key.log_id(): k.public_key for k in keys}
    signed = {
        h.log_id: verify_checkpoint(h.checkpoint, by_log[h.log_id])
        for h in hits
        if h.checkpoint is not None
    }
    t0 = time.perf_counter()
    for _ in range(200):
        for h in hits:
            cp = signed[h.log_id].checkpoint if h.log_id in signed else None
            if cp is not None and h.proof is not None:
                merkle.verify_inclusion(
                    h.index, cp.size, merkle.leaf_hash(h.leaf), h.proof, cp.root
                )
    proofs = (time.perf_counter() - t0) / 200
    print(
        f"decide one path against {len(keys)} logs: first {first * 1e3:.1f} ms (verifies the "
        f"checkpoints), then median {statistics.median(one) * 1e3:.2f} ms, "
        f"p99 {sorted(one)[int(len(one) * 0.99) - 1] * 1e3:.2f} ms (target < 20 ms)"
    )
    print(
        f"batch: {batch:,.0f} paths/s deciding {len(paths):,} paths, 16 at a time (target >= 500)"
    )
    print(
        f"baselines: control-socket lookup alone {lookup * 1e3:.2f} ms; the {len(hits)} "
        f"inclusion proofs alone {proofs * 1e3:.2f} ms"
    )


if __name__ == "__main__":
    sys.exit(main())
