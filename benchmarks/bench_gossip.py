"""Gossip figures (issue 9), each beside a baseline measured in the same run.

    .venv/bin/python benchmarks/bench_gossip.py                 # all three, ~5 to 10 minutes
    .venv/bin/python benchmarks/bench_gossip.py --only sync --entries 200000
    .venv/bin/python benchmarks/bench_gossip.py --only heads
    .venv/bin/python benchmarks/bench_gossip.py --only spread

- sync: a builder's store of `--entries` entries (made here; its own append rate is the
  baseline), then a node process that knows only the builder's address mirrors the whole log
  over loopback (Noise, LevelDB, every range verified against the signed root).  Prints both
  rates, their ratio, and the receiving process's peak RSS.
- heads: one engine receives the checkpoints of 1,000 logs from each of 8 peers (the same
  notes from all 8, as gossip delivers them); prints new checkpoints handled per second
  beside the raw Ed25519 checkpoint verification rate, and the signature checks made (a
  duplicate must cost none).
- spread: 20 node processes in a random graph of degree 4; the builder signs one new
  checkpoint; prints for it the largest hop count (from the `head_from` chain each node
  reports), the mean times each node received it, and the time until every node had it.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.bench_log import make_records
from trustix_p2p.control.client import ControlClient, submit_leaves
from trustix_p2p.core.checkpoint import verify_checkpoint
from trustix_p2p.core.keys import PrivateKey, PublicKey
from trustix_p2p.errors import NodeUnavailableError
from trustix_p2p.gossip import engine as eng
from trustix_p2p.gossip import messages as m
from trustix_p2p.keyfile import write_key_file
from trustix_p2p.ownlog import MemoryCheckpointFile, OwnLog
from trustix_p2p.storage import Store

EXTRA = ""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def node_dir(
    base: Path, name: str, key: PrivateKey, port: int, seeds: list[str], extra: str = ""
) -> Path:
    d = base / name
    d.mkdir(parents=True, exist_ok=True)
    if not (d / "node.key").exists():
        write_key_file(d / "node.key", key)
    seeds_toml = ", ".join(json.dumps(s) for s in seeds)
    (d / "node.toml").write_text(
        'state_dir = "state"\nkey_file = "node.key"\ncontrol_socket = "c.sock"\n'
        f'listen = ["127.0.0.1:{port}"]\nseeds = [{seeds_toml}]\n'
        'follow_unknown = "mirror"\ncheckpoint_interval = 0.5\n' + extra
    )
    return d


def start(d: Path) -> subprocess.Popen[bytes]:
    log = open(d / "node.log", "ab")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "trustix_p2p", "node", "--config", str(d / "node.toml")],
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    log.close()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"node in {d} exited:\n{(d / 'node.log').read_text()[-3000:]}")
        try:
            with ControlClient(d / "c.sock", timeout=2) as c:
                c.status()
            return proc
        except NodeUnavailableError:
            time.sleep(0.05)
    raise SystemExit(f"node in {d} did not come up")


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()


def peak_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return math.nan


def followed(d: Path, log_id: bytes) -> dict[str, Any] | None:
    with ControlClient(d / "c.sock", timeout=10) as c:
        status = c.status()
    for f in status.follows:
        if f.log_id == log_id:
            return {"size": f.size, "head_size": f.head_size}
    return None


# -- sync ---------------------------------------------------------------------------------------


def bench_sync(entries: int) -> None:
    base = Path(tempfile.mkdtemp(prefix="bench-gossip-"))
    try:
        key = PrivateKey.from_seed(bytes(range(32)))
        records = make_records(entries)
        a_port, b_port = free_port(), free_port()
        a = node_dir(base, "a", key, a_port, [])
        store = Store(a / "state" / "db")
        own = OwnLog.open(store, key, a / "state")
        start_t = time.perf_counter()
        for i in range(0, entries, 10_000):
            own.append(records[i : i + 10_000])
        own.sign(int(time.time()))
        local = entries / (time.perf_counter() - start_t)
        store.close()
        del records
        print(f"builder's own store appends {entries:,} entries: {local:,.0f} entries/s (baseline)")
        procs = [start(a)]
        b = node_dir(
            base,
            "b",
            PrivateKey.from_seed(bytes(32)),
            b_port,
            [f"{key.public_key.to_base64()}@127.0.0.1:{a_port}"],
            EXTRA,
        )
        try:
            t0 = time.perf_counter()
            procs.append(start(b))
            log_id = key.public_key.log_id()
            while True:
                info = followed(b, log_id)
                if info is not None and info["size"] >= entries:
                    break
                if time.perf_counter() - t0 > 3600:
                    raise SystemExit("sync did not finish within an hour")
                time.sleep(0.2)
            seconds = time.perf_counter() - t0
            rss = peak_rss_mb(procs[1].pid)
        finally:
            stop(procs)
        synced = entries / seconds
        print(
            f"a node mirrors it over loopback (Noise, verified ranges, LevelDB): {seconds:.1f} s, "
            f"{synced:,.0f} entries/s = {synced / local:.2f}x the local append rate; "
            f"receiver's peak RSS {rss:.0f} MB"
        )
    finally:
        shutil.rmtree(base, ignore_errors=True)


# -- heads --------------------------------------------------------------------------------------


def bench_heads(logs: int = 1000, peers: int = 8) -> None:
    keys = [PrivateKey.from_seed(i.to_bytes(32, "big")) for i in range(1, logs + 1)]
    notes: list[tuple[bytes, bytes]] = []
    records = make_records(4)
    for key in keys:
        own = OwnLog.open(Store.in_memory(), key, MemoryCheckpointFile())
        own.append(records)
        signed = own.sign(1_700_000_000)
        assert signed is not None
        notes.append((key.public_key.raw, signed.note))
    # Baseline: verifying each checkpoint note once.
    t0 = time.perf_counter()
    for key, (_, note) in zip(keys, notes, strict=True):
        verify_checkpoint(note, key.public_key)
    verify_rate = logs / (time.perf_counter() - t0)
    print(f"Ed25519 checkpoint verification: {verify_rate:,.0f}/s (baseline)")
    messages = [
        m.Heads(tuple(m.Head(pk, note, 0, None, ()) for pk, note in notes[i : i + 256]), False)
        for i in range(0, logs, 256)
    ]
    for label in ("memory store", "LevelDB store"):
        directory = Path(tempfile.mkdtemp(prefix="bench-heads-"))
        store = Store.in_memory() if label == "memory store" else Store(directory / "db")
        engine = eng.Engine(
            store,
            eng.EngineConfig(follow_unknown="witness", cosign=False),
            key=PrivateKey.from_seed(bytes(32)),
            rng=random.Random(1),
            now=1_700_000_000.0,
        )
        for p in range(peers):
            engine.peer_connected(p, bytes([p + 1]) * 32, outbound=False, address=f"p{p}", now=1e9)
        t0 = time.perf_counter()
        for p in range(peers):
            for msg in messages:
                engine.message(p, msg, 1000, 1e9)
        elapsed = time.perf_counter() - t0
        store.close()
        shutil.rmtree(directory, ignore_errors=True)
        handled = logs / elapsed  # the new ones; the other 7/8 were duplicates, in this time
        print(
            f"  {label}: {logs} logs from {peers} peers, {logs * peers:,} heads in "
            f"{elapsed:.2f} s: {handled:,.0f} new checkpoints/s = {handled / verify_rate:.2f}x "
            f"the verification rate; {engine.verifier.checks} signature checks"
        )


# -- spread -------------------------------------------------------------------------------------


def bench_spread(count: int = 20, degree: int = 4, seed: int = 1) -> None:
    rng = random.Random(seed)
    base = Path(tempfile.mkdtemp(prefix="bench-spread-"))
    keys = [PrivateKey.from_seed(rng.randbytes(32)) for _ in range(count)]
    ports = [free_port() for _ in range(count)]
    # A random graph of degree about `degree`: a ring, then chords; each edge is a seed of
    # one end.
    edges: set[tuple[int, int]] = set()
    order = list(range(count))
    rng.shuffle(order)
    for i in range(count):
        a, b = order[i], order[(i + 1) % count]
        edges.add((min(a, b), max(a, b)))
    tries = 0
    while sum(1 for _ in edges) < count * degree // 2 and tries < 10_000:
        tries += 1
        a, b = rng.sample(range(count), 2)
        deg = lambda n: sum(1 for e in edges if n in e)  # noqa: E731
        if deg(a) < degree and deg(b) < degree:
            edges.add((min(a, b), max(a, b)))
    seeds: dict[int, list[str]] = {i: [] for i in range(count)}
    for a, b in edges:
        seeds[b].append(f"{keys[a].public_key.to_base64()}@127.0.0.1:{ports[a]}")
    # No peer exchange beyond the graph: each node keeps exactly its seeds and inbound peers.
    extra = "peers_target = 0\n"
    dirs = [
        node_dir(base, f"n{i}", keys[i], ports[i], seeds[i], extra if seeds[i] == [] else "")
        for i in range(count)
    ]
    for i, d in enumerate(dirs):
        text = (d / "node.toml").read_text()
        (d / "node.toml").write_text(
            text + f"peers_target = {len(seeds[i])}\n" if seeds[i] else text
        )
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for d in dirs:
            procs.append(start(d))
        time.sleep(3)  # connections settle
        builder = 0
        log_id = keys[builder].public_key.log_id()
        t0 = time.perf_counter()
        submit_leaves(dirs[builder] / "c.sock", [r.leaf for r in make_records(10)])
        deadline = time.perf_counter() + 120
        while time.perf_counter() < deadline:
            infos = [followed(d, log_id) for d in dirs]
            if all(i is not None and i["head_size"] == 10 for i in infos):
                break
            time.sleep(0.1)
        seconds = time.perf_counter() - t0
        report = [status_json(d) for d in dirs]
    finally:
        stop(procs)
        shutil.rmtree(base, ignore_errors=True)
    by_key = {keys[i].public_key.to_base64(): i for i in range(count)}
    hops: dict[int, int] = {builder: 0}

    def hop(i: int, depth: int = 0) -> int:
        if i in hops:
            return hops[i]
        source = report[i].get(log_id.hex(), {}).get("head_from")
        if source is None or source not in by_key or depth > count:
            return -1
        h = hop(by_key[source], depth + 1)
        hops[i] = -1 if h < 0 else h + 1
        return hops[i]

    hop_counts = [hop(i) for i in range(count)]
    receipts = [
        report[i].get(log_id.hex(), {}).get("head_receipts", 0)
        for i in range(count)
        if i != builder
    ]
    limit = math.ceil(math.log2(count)) + 3
    print(
        f"{count} node processes, random graph of degree {degree}: every node had the new "
        f"checkpoint after {seconds:.2f} s; hops max {max(hop_counts)} (target <= {limit}); "
        f"received on average {sum(receipts) / len(receipts):.2f} times (target <= 3)"
    )


def status_json(d: Path) -> dict[str, dict[str, Any]]:
    """Per log: where the head came from and how often it was received (read at once)."""
    with ControlClient(d / "c.sock", timeout=10) as c:
        status = c.status()
    return {
        f.log_id.hex(): {
            "head_from": None if f.head_from is None else PublicKey(f.head_from).to_base64(),
            "head_receipts": f.head_receipts,
        }
        for f in status.follows
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=("sync", "heads", "spread"))
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--extra", default="", help="more TOML lines for the syncing node")
    args = parser.parse_args()
    global EXTRA
    EXTRA = args.extra.replace("\\n", "\n") + ("\n" if args.extra else "")
    if args.only in (None, "heads"):
        bench_heads()
    if args.only in (None, "spread"):
        bench_spread()
    if args.only in (None, "sync"):
        bench_sync(args.entries)
    return 0


if __name__ == "__main__":
    sys.exit(main())
