"""The builder node in-process: control socket, group commit, checkpoints, spool (real LevelDB)."""

from __future__ import annotations

import os
import socket
import stat
import struct
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from tests import factories as f
from trustix_p2p.config import NodeConfig
from trustix_p2p.control.client import ControlClient, submit_leaves
from trustix_p2p.core import merkle
from trustix_p2p.core.checkpoint import verify_checkpoint
from trustix_p2p.errors import NodeUnavailableError, RemoteProtocolError, StoreError
from trustix_p2p.keyfile import write_key_file
from trustix_p2p.node import Node
from trustix_p2p.spool import pending_spool_files, write_spool
from trustix_p2p.storage import Store

KEY = f.key("builder")


def make_config(tmp_path: Path, **kw: object) -> NodeConfig:
    key_file = tmp_path / "node.key"
    if not key_file.exists():
        write_key_file(key_file, KEY)
    return NodeConfig(
        state_dir=tmp_path / "state", key_file=key_file, control_socket=tmp_path / "c.sock", **kw
    )  # type: ignore[arg-type]


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    n = Node.open(make_config(tmp_path, checkpoint_interval=3600.0))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: n.run(install_signal_handlers=False))
        await n.ready.wait()
        yield n
        nursery.cancel_scope.cancel()
    n.close()


def call(fn, *args):  # type: ignore[no-untyped-def]
    return trio.to_thread.run_sync(fn, *args)


async def test_submissions_are_acknowledged_with_their_indices(node: Node) -> None:
    sock = node.config.socket_path
    assert await call(submit_leaves, sock, [f.leaf(0), f.leaf(1)]) == [0, 1]
    assert await call(submit_leaves, sock, [f.leaf(1), f.leaf(2)]) == [1, 2]
    assert node.own_log is not None and node.own_log.size == 3


async def test_the_control_socket_is_owner_only(node: Node) -> None:
    mode = os.stat(node.config.socket_path).st_mode
    assert stat.S_ISSOCK(mode)
    assert stat.S_IMODE(mode) == 0o600


async def test_concurrent_submitters_share_durable_batches(node: Node) -> None:
    results: dict[int, list[int]] = {}

    async def one(i: int) -> None:
        results[i] = await call(submit_leaves, node.config.socket_path, [f.leaf(100 + i)])

    async with trio.open_nursery() as nursery:
        for i in range(20):
            nursery.start_soon(one, i)
    assert sorted(idx for r in results.values() for idx in r) == list(range(20))


async def test_lookup_returns_proofs_against_the_signed_checkpoint(node: Node) -> None:
    sock = node.config.socket_path
    await call(submit_leaves, sock, [f.leaf(i) for i in range(10)])
    with ControlClient(sock) as c:
        unsigned = await call(c.lookup, f.entry(3).out_path)
    assert unsigned[0].proof is None and unsigned[0].checkpoint is None
    await node.sign_checkpoint_now()
    with ControlClient(sock) as c:
        (hit,) = await call(c.lookup, f.entry(3).out_path)
        status = await call(c.status)
    assert hit.index == 3 and hit.leaf == f.leaf(3)
    assert hit.checkpoint is not None and hit.proof is not None
    cp = verify_checkpoint(hit.checkpoint, KEY.public_key).checkpoint
    merkle.verify_inclusion(3, cp.size, merkle.leaf_hash(hit.leaf), list(hit.proof), cp.root)
    assert status.size == 10 and status.checkpoint_size == 10
    assert status.log_id == KEY.public_key.log_id()


async def test_an_invalid_entry_is_refused_and_the_node_keeps_serving(node: Node) -> None:
    sock = node.config.socket_path
    with pytest.raises(RemoteProtocolError, match="invalid entry"):
        await call(submit_leaves, sock, [b"\x93\x01\x02\x03"])
    assert await call(submit_leaves, sock, [f.leaf(5)]) == [0]


@pytest.mark.parametrize(
    "garbage",
    [
        b"\xff\xff\xff\xff",
        struct.pack(">I", 3) + b"\xc1\xc1\xc1",
        struct.pack(">I", 100) + b"ab",
        struct.pack(">I", 2) + b"\x91\x01",
        b"\x00",
    ],
)
async def test_garbage_on_the_control_socket_closes_only_that_connection(
    node: Node, garbage: bytes
) -> None:
    def send_garbage() -> None:
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(5)
        s.connect(str(node.config.socket_path))
        s.sendall(garbage)
        s.shutdown(socket.SHUT_WR)
        while s.recv(4096):
            pass
        s.close()

    await call(send_garbage)
    assert await call(submit_leaves, node.config.socket_path, [f.leaf(9)]) == [0]


async def test_spooled_entries_are_ingested_exactly_once(tmp_path: Path) -> None:
    config = make_config(tmp_path, spool_poll_interval=0.05)
    write_spool(config.spool_path, [f.leaf(1), f.leaf(2)])
    write_spool(config.spool_path, [f.leaf(2), f.leaf(3)])  # a retried hand-over
    (config.spool_path / "broken.spool").write_bytes(b"\xc1 not msgpack")
    n = Node.open(config)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: n.run(install_signal_handlers=False))
        await n.ready.wait()
        assert n.own_log is not None and n.own_log.size == 3
        write_spool(config.spool_path, [f.leaf(4), f.leaf(1)])  # arrives while running
        # Wait for exactly what is asserted below: the spool emptied (not merely the log grown).
        with trio.fail_after(30):
            await n.wait_until(lambda: pending_spool_files(config.spool_path) == [])
        nursery.cancel_scope.cancel()
    n.close()
    assert pending_spool_files(config.spool_path) == []
    assert (config.spool_path / "rejected" / "broken.spool").exists()
    with Store(config.db_path) as store:
        log = store.log(KEY.public_key.log_id())
        assert [leaf for _, leaf in log.leaves(0, 10)] == [f.leaf(i) for i in (1, 2, 3, 4)]


async def test_shutdown_signs_a_final_checkpoint(tmp_path: Path) -> None:
    config = make_config(tmp_path, checkpoint_interval=3600.0)
    n = Node.open(config)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: n.run(install_signal_handlers=False))
        await n.ready.wait()
        await call(submit_leaves, config.socket_path, [f.leaf(i) for i in range(7)])
        nursery.cancel_scope.cancel()
    n.close()
    with Store(config.db_path) as store:
        cp = store.log(KEY.public_key.log_id()).checkpoint()
        assert cp is not None and cp.checkpoint.size == 7
    assert not config.socket_path.exists()


async def test_a_second_node_on_the_same_state_is_refused(node: Node) -> None:
    with pytest.raises(StoreError, match="still running"):
        Node.open(node.config)


def test_no_node_means_node_unavailable(tmp_path: Path) -> None:
    with pytest.raises(NodeUnavailableError):
        submit_leaves(tmp_path / "absent.sock", [f.leaf(0)], timeout=1)


async def test_status_and_lookup_commands_print_json(
    node: Node, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from trustix_p2p.cli import main

    sock = str(node.config.socket_path)
    await call(submit_leaves, node.config.socket_path, [f.leaf(1), f.leaf(2)])
    await node.sign_checkpoint_now()
    assert await call(main, ["status", "--socket", sock]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["size"] == 2 and status["checkpoint_size"] == 2
    assert status["log_id"] == KEY.public_key.log_id_hex()
    assert await call(main, ["lookup", f.entry(2).out_path, "--socket", sock]) == 0
    (hit,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert hit["index"] == 1 and hit["checkpoint"].startswith("trustix-p2p/")
    assert len(hit["proof"]) == 1
    assert await call(main, ["checkpoint", "--socket", sock]) == 0
    note = capsys.readouterr().out.encode()
    assert verify_checkpoint(note, KEY.public_key).checkpoint.size == 2
    assert await call(main, ["checkpoint", "--socket", sock, "--log", "00" * 32]) == 2
