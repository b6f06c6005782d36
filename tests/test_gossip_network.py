"""Real node processes over TCP, Noise and LevelDB: mirroring along a line, restarts and
SIGKILL, relaying to a node the builder never meets, and equivocation exposed with evidence
that `evidence verify` accepts."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import attrs
import pytest

from tests import factories as f
from tests.nodeproc import cli, free_port
from trustix_p2p.control.client import ControlClient, submit_leaves
from trustix_p2p.core import merkle
from trustix_p2p.core.checkpoint import verify_checkpoint
from trustix_p2p.core.entry import entry_to_json
from trustix_p2p.core.keys import PrivateKey
from trustix_p2p.errors import NodeUnavailableError
from trustix_p2p.keyfile import write_key_file

pytestmark = pytest.mark.slow


@attrs.define
class Proc:
    name: str
    directory: Path
    key: PrivateKey
    port: int
    seeds: list[str]
    extra: str = ""
    popen: subprocess.Popen[bytes] | None = None

    @property
    def sock(self) -> Path:
        return self.directory / "c.sock"

    @property
    def address(self) -> str:
        return f"{self.key.public_key.to_base64()}@127.0.0.1:{self.port}"

    @property
    def log_id(self) -> bytes:
        return self.key.public_key.log_id()

    def write_config(self) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        key_file = self.directory / "node.key"
        if not key_file.exists():
            write_key_file(key_file, self.key)
        config = self.directory / "node.toml"
        seeds = ", ".join(json.dumps(s) for s in self.seeds)
        config.write_text(
            'state_dir = "state"\nkey_file = "node.key"\ncontrol_socket = "c.sock"\n'
            f'listen = ["127.0.0.1:{self.port}"]\nseeds = [{seeds}]\n'
            "checkpoint_interval = 0.2\nanti_entropy_interval = 0.5\nredial_interval = 0.2\n"
            'follow_unknown = "mirror"\n' + self.extra
        )
        return config

    def start(self) -> None:
        config = self.write_config()
        log = open(self.directory / "node.log", "ab")  # noqa: SIM115 (closed by the process)
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "trustix_p2p", "node", "--config", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        log.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.popen.poll() is None, self.log_text()
            try:
                with ControlClient(self.sock, timeout=2) as c:
                    c.status()
                return
            except NodeUnavailableError:
                time.sleep(0.05)
        raise AssertionError(f"{self.name} did not come up:\n{self.log_text()}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self.popen = None

    def log_text(self) -> str:
        path = self.directory / "node.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def status(self) -> dict[str, Any]:
        result = cli("status", "--socket", str(self.sock))
        assert result.returncode == 0, result.stderr
        status: dict[str, Any] = json.loads(result.stdout)
        return status

    def followed(self, log_id: bytes) -> dict[str, Any] | None:
        for item in self.status()["follows"]:
            if item["log_id"] == log_id.hex():
                found: dict[str, Any] = item
                return found
        return None

    def evidence(self) -> list[dict[str, Any]]:
        result = cli("evidence", "list", "--json", "--socket", str(self.sock))
        assert result.returncode == 0, result.stderr
        items: list[dict[str, Any]] = json.loads(result.stdout)
        return items


@contextmanager
def processes(*procs: Proc) -> Iterator[None]:
    try:
        yield
    finally:
        for p in procs:
            p.stop()


def wait_for(
    what: str, predicate: Callable[[], bool], procs: list[Proc], timeout: float = 60
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    logs = "\n".join(f"--- {p.name}\n{p.log_text()}" for p in procs)
    raise AssertionError(f"timed out waiting for {what}\n{logs}")


def size_at(proc: Proc, log_id: bytes) -> int:
    item = proc.followed(log_id)
    return -1 if item is None else int(item["size"])


def test_a_line_of_four_nodes_mirrors_the_builders_log_through_restarts(tmp_path: Path) -> None:
    names = ["a", "b", "c", "d", "e"]
    ports = [free_port() for _ in names]
    keys = [f.key(f"line {n}") for n in names]
    procs: list[Proc] = []
    for i, name in enumerate(names):
        seeds = [] if i == 0 else [f"{keys[i - 1].public_key.to_base64()}@127.0.0.1:{ports[i - 1]}"]
        procs.append(Proc(name, tmp_path / name, keys[i], ports[i], seeds))
    a, b, c, d, e = procs
    # E knows only D.
    e.seeds = [d.address]
    with processes(*procs):
        for p in (a, b, c, d):
            p.start()
        submit_leaves(a.sock, [f.leaf(i) for i in range(200)])
        wait_for("A's 200 entries at D", lambda: size_at(d, a.log_id) == 200, procs)
        # Provable at D: an inclusion proof against a checkpoint signed by A's key.
        with ControlClient(d.sock) as client:
            hits = [h for h in client.lookup(f.entry(123).out_path) if h.log_id == a.log_id]
        assert len(hits) == 1 and hits[0].checkpoint is not None and hits[0].proof is not None
        signed = verify_checkpoint(hits[0].checkpoint, a.key.public_key)
        merkle.verify_inclusion(
            123,
            signed.checkpoint.size,
            merkle.leaf_hash(f.leaf(123)),
            hits[0].proof,
            signed.checkpoint.root,
        )
        # A stops; B is killed with SIGKILL and restarted; A comes back with more entries.
        a.stop()
        b.stop(signal.SIGKILL)
        b.start()
        a.start()
        submit_leaves(a.sock, [f.leaf(i) for i in range(200, 260)])
        wait_for("A's 260 entries at D", lambda: size_at(d, a.log_id) == 260, procs)
        # A fifth node that knows only D gets A's log from D.
        e.start()
        wait_for("A's log at E", lambda: size_at(e, a.log_id) == 260, procs)
        for p in procs:
            assert p.evidence() == [], p.name
        status = d.status()
        assert status["peers"], status
        item = d.followed(a.log_id)
        assert item is not None
        assert item["mode"] == "mirror" and item["checkpoint_size"] == 260
        assert item["cosignatures"] >= 0 and item["checkpoint_age"] >= 0
        peers = cli("peers", "--json", "--socket", str(d.sock))
        assert peers.returncode == 0, peers.stderr
        rows = json.loads(peers.stdout)
        assert {r["state"] for r in rows} >= {"connected"}


def append_history(directory: Path, key: PrivateKey, entries: list[dict[str, object]]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    key_file = directory / "node.key"
    if not key_file.exists():
        write_key_file(key_file, key)
    jsonl = directory / "entries.jsonl"
    jsonl.write_text("".join(json.dumps(e) + "\n" for e in entries))
    result = cli(
        "log", "append", "--state", str(directory / "state"), "--key", str(key_file),
        "--jsonl", str(jsonl),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


def entries(count: int, seed: str) -> list[dict[str, object]]:
    return [entry_to_json(f.entry(i, nar_seed=seed)) for i in range(count)]


@pytest.mark.parametrize(("kind", "sizes"), [("split-view", (6, 6)), ("rewrite", (5, 9))])
def test_equivocation_is_exposed_at_every_honest_node(
    tmp_path: Path, kind: str, sizes: tuple[int, int]
) -> None:
    builder = f.key("equivocator")
    ports = [free_port() for _ in range(4)]
    left = Proc("left", tmp_path / "left", builder, ports[0], [])
    right = Proc("right", tmp_path / "right", builder, ports[1], [])
    h1 = Proc("h1", tmp_path / "h1", f.key("honest 1"), ports[2], [left.address])
    h2 = Proc("h2", tmp_path / "h2", f.key("honest 2"), ports[3], [right.address, h1.address])
    append_history(left.directory, builder, entries(sizes[0], "left"))
    append_history(right.directory, builder, entries(sizes[1], "right"))
    procs = [left, right, h1, h2]
    with processes(*procs):
        for p in procs:
            p.start()
        wait_for(
            "evidence at both honest nodes",
            lambda: all(
                any(i["log_id"] == builder.public_key.log_id().hex() for i in p.evidence())
                for p in (h1, h2)
            ),
            procs,
        )
        for p in (h1, h2):
            items = p.evidence()
            assert {i["public_key"] for i in items} == {builder.public_key.to_base64()}
            expected = "split-view" if kind == "split-view" else "inconsistent-history"
            assert {i["kind"] for i in items} == {expected}, items
            shown = cli("evidence", "show", items[0]["id"][:12], "--socket", str(p.sock))
            assert shown.returncode == 0, shown.stderr
            document = p.directory / "evidence.json"
            document.write_text(shown.stdout)
            assert json.loads(shown.stdout)["kind"] == expected
            verdict = cli("evidence", "verify", str(document))
            assert verdict.returncode == 0, verdict.stdout + verdict.stderr
            assert verdict.stdout.startswith("valid: ")
            assert (
                base64.b64decode(json.loads(shown.stdout)["public_key"]) == builder.public_key.raw
            )
    assert os.path.exists(h1.directory / "node.log")


def answers(p: Proc) -> bool:
    """Whether `p`'s node answers status on its control socket yet."""
    return p.sock.exists() and cli("status", "--socket", str(p.sock)).returncode == 0


def test_nodes_in_separate_network_namespaces_find_each_other_by_mdns(tmp_path: Path) -> None:
    from tests.netns import bridge_namespaces, netns_available

    if not netns_available():
        pytest.skip("needs root, `ip` and permission to create network namespaces")
    builder = f.key("mdns builder")
    other = f.key("mdns mirror")
    with bridge_namespaces(2) as (ns_a, ns_b):
        procs = []
        for ns, key, name in ((ns_a, builder, "a"), (ns_b, other, "b")):
            proc = Proc(name, tmp_path / name, key, 7946, [])
            proc.extra = f'[mdns]\nenabled = true\ninterfaces = ["{ns.address}"]\n'
            procs.append(proc)
        a, b = procs
        with processes(a, b):
            for ns, p in ((ns_a, a), (ns_b, b)):
                config = p.write_config()
                text = config.read_text().replace("127.0.0.1:7946", f"{ns.address}:7946")
                config.write_text(text)
                log = open(p.directory / "node.log", "ab")  # noqa: SIM115
                p.popen = subprocess.Popen(
                    ns.command(
                        [sys.executable, "-m", "trustix_p2p", "node", "--config", str(config)]
                    ),
                    stdout=subprocess.DEVNULL,
                    stderr=log,
                    cwd=Path(__file__).resolve().parents[1],
                )
                log.close()
            # The socket file appears at bind, a moment before the node listens on it.
            wait_for("both control sockets", lambda: answers(a) and answers(b), procs)
            submit_leaves(a.sock, [f.leaf(i) for i in range(20)])
            wait_for("A's log at B, found by mDNS", lambda: size_at(b, a.log_id) == 20, procs)
            peers = {p["key"] for p in b.status()["peers"]}
            assert builder.public_key.to_base64() in peers
