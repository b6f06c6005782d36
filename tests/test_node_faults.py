"""Nothing a local mistake or a hostile local client does can crash, freeze or lock out the
node: spool debris, a control_socket path that is not a socket, directories others may write,
floods on the control socket, bad options.  Real files, sockets and processes."""

from __future__ import annotations

import contextlib
import logging
import os
import resource
import socket
import stat
import struct
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from tests import factories as f
from tests.logs import fields_of, render
from tests.nodeproc import assert_one_line_error, cli, mount_tmpfs, node_config, running, umount
from trustix_p2p.config import NodeConfig
from trustix_p2p.control import protocol
from trustix_p2p.control.client import ControlClient, submit_leaves
from trustix_p2p.control.server import ControlLimits
from trustix_p2p.core.entry import MAX_ENTRY_BYTES, MAX_REFERENCES, Entry, encode_entry, pack_entry
from trustix_p2p.errors import ConfigError, NodeUnavailableError, RemoteProtocolError, StoreError
from trustix_p2p.keyfile import write_key_file
from trustix_p2p.node import Node
from trustix_p2p.options import MetricsSettings
from trustix_p2p.spool import pending_spool_files, write_spool
from trustix_p2p.storage import Store

KEY = f.key("faults")


def make_config(tmp_path: Path, **kw: object) -> NodeConfig:
    key_file = tmp_path / "node.key"
    if not key_file.exists():
        write_key_file(key_file, KEY)
    kw.setdefault("state_dir", tmp_path / "state")
    kw.setdefault("control_socket", tmp_path / "c.sock")
    kw.setdefault("checkpoint_interval", 3600.0)
    return NodeConfig(key_file=key_file, **kw)  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def _run(n: Node) -> AsyncIterator[Node]:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: n.run(install_signal_handlers=False))
        with trio.fail_after(30):
            await n.ready.wait()
        yield n
        nursery.cancel_scope.cancel()
    n.close()


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    n = Node.open(make_config(tmp_path))
    n.control_limits = ControlLimits(max_connections=64, send_timeout=1.0, frame_timeout=2.0)
    async with _run(n) as running_node:
        yield running_node


def call(fn, *args):  # type: ignore[no-untyped-def]
    return trio.to_thread.run_sync(fn, *args)


# -- spool debris ----------------------------------------------------------------------------


def _debris(spool: Path) -> None:
    spool.mkdir(mode=0o700, parents=True, exist_ok=True)
    (spool / "a-dir.spool").mkdir()
    os.mkfifo(spool / "b-fifo.spool")
    (spool / "c-zero.spool").symlink_to("/dev/zero")
    foreign = spool / "d-foreign.spool"
    foreign.write_bytes(b"\x91\xc4\x01x")
    os.chown(foreign, 65534, 65534)
    (spool / "e-garbage.spool").write_bytes(b"\xc1 not msgpack")


async def test_spool_debris_never_blocks_start_up_and_valid_files_still_count(
    tmp_path: Path,
) -> None:
    if os.geteuid() != 0:
        pytest.skip("giving a file to another user needs root (CI runs as root)")
    config = make_config(tmp_path, spool_poll_interval=0.05)
    _debris(config.spool_path)
    write_spool(config.spool_path, [f.leaf(1), f.leaf(2)])
    n = Node.open(config)
    async with _run(n) as running_node:
        assert running_node.own_log is not None and running_node.own_log.size == 2
        write_spool(config.spool_path, [f.leaf(3)])
        with trio.fail_after(30):
            await running_node.wait_until(lambda: pending_spool_files(config.spool_path) == [])
        status = await call(ControlClient(config.socket_path).status)
        assert status.size == 3
    rejected = sorted(p.name for p in (config.spool_path / "rejected").iterdir())
    assert rejected == [
        "a-dir.spool",
        "b-fifo.spool",
        "c-zero.spool",
        "d-foreign.spool",
        "e-garbage.spool",
    ]
    assert stat.S_ISFIFO(os.lstat(config.spool_path / "rejected" / "b-fifo.spool").st_mode)


async def test_debris_that_cannot_be_moved_aside_is_skipped_with_one_log_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = make_config(tmp_path, spool_poll_interval=0.01)
    config.spool_path.mkdir(mode=0o700, parents=True)
    (config.spool_path / "rejected").write_text("not a directory")
    os.mkfifo(config.spool_path / "b-fifo.spool")
    (config.spool_path / "c-zero.spool").symlink_to("/dev/zero")
    write_spool(config.spool_path, [f.leaf(7)])
    n = Node.open(config)
    with caplog.at_level(logging.ERROR, logger="trustix_p2p.node"):
        async with _run(n) as running_node:
            with trio.fail_after(30):
                await running_node.wait_until(lambda: n.spool_scans >= 5)
            assert running_node.own_log is not None and running_node.own_log.size == 1
    skipped = [r for r in caplog.records if "skipping spool entry" in r.getMessage()]
    assert len(skipped) == 2, render(skipped)
    assert {fields_of(r)["file"] for r in skipped} == {"b-fifo.spool", "c-zero.spool"}
    assert (config.spool_path / "rejected").read_text() == "not a directory"


async def test_a_spool_file_larger_than_a_submission_is_split_and_nothing_is_lost(
    tmp_path: Path,
) -> None:
    config = make_config(tmp_path, max_submit_batch=10)
    write_spool(config.spool_path, [f.leaf(i) for i in range(35)])
    write_spool(config.spool_path, [f.leaf(i) for i in range(35, 47)] + [b"\x93\x01\x02\x03"])
    n = Node.open(config)
    async with _run(n) as running_node:
        assert running_node.own_log is not None and running_node.own_log.size == 47
    assert pending_spool_files(config.spool_path) == []
    # The file with one invalid leaf was logged in full otherwise, and kept for inspection.
    (kept,) = (config.spool_path / "rejected").iterdir()
    assert kept.name.endswith(".spool")
    with Store(config.db_path) as store:
        leaves = [leaf for _, leaf in store.log(KEY.public_key.log_id()).leaves(0, 100)]
    assert leaves == [f.leaf(i) for i in range(47)]


# -- the control socket path and the directories -------------------------------------------


def test_a_control_socket_path_naming_a_regular_file_is_never_deleted(tmp_path: Path) -> None:
    key_file = tmp_path / "node.key"
    config, _ = node_config(tmp_path)
    config.write_text(config.read_text().replace('"control.sock"', '"node.key"'))
    before = key_file.read_bytes()
    assert_one_line_error(cli("node", "--config", str(config)), "control_socket", "not a socket")
    assert key_file.read_bytes() == before


async def test_a_stale_socket_is_replaced_and_a_live_one_is_refused(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(config.socket_path))
    stale.close()  # a socket file nothing listens on: a node that died
    n = Node.open(config)
    async with _run(n) as running_node:
        status = await call(ControlClient(config.socket_path).status)
        assert status.log_id == KEY.public_key.log_id()
        (tmp_path / "other").mkdir()
        other = make_config(tmp_path / "other", control_socket=config.socket_path)
        second = Node.open(other)
        try:
            with pytest.raises(ConfigError, match="another node is already listening"):
                await second.run(install_signal_handlers=False)
        finally:
            second.close()
        assert running_node.ready.is_set()
        assert stat.S_ISSOCK(os.lstat(config.socket_path).st_mode)


@pytest.mark.parametrize("which", ["state_dir", "spool_dir", "control_socket"])
def test_a_directory_others_may_write_is_refused(tmp_path: Path, which: str) -> None:
    directory = tmp_path / "shared"
    directory.mkdir(mode=0o700)
    os.chmod(directory, 0o775)
    if which == "state_dir":
        config = make_config(tmp_path, state_dir=directory)
    elif which == "spool_dir":
        config = make_config(tmp_path, spool_dir=directory)
    else:
        config = make_config(tmp_path, control_socket=directory / "c.sock")
    with pytest.raises(ConfigError, match=f"{which}: {directory} is writable by group or others"):
        Node.open(config)
    assert sorted(os.listdir(directory)) == []


def test_directories_the_node_creates_are_private(tmp_path: Path) -> None:
    old = os.umask(0o002)
    try:
        n = Node.open(make_config(tmp_path, control_socket=tmp_path / "run" / "c.sock"))
        n.close()
    finally:
        os.umask(old)
    for d in (tmp_path / "state", tmp_path / "state" / "spool", tmp_path / "run"):
        assert stat.S_IMODE(os.stat(d).st_mode) == 0o700, d


def test_a_sticky_shared_directory_may_hold_the_socket(tmp_path: Path) -> None:
    shared = tmp_path / "tmp"
    shared.mkdir()
    os.chmod(shared, 0o1777)
    Node.open(make_config(tmp_path, control_socket=shared / "c.sock")).close()


# -- limits on the control socket ---------------------------------------------------------


async def test_a_frame_of_nested_empty_arrays_costs_memory_in_proportion(node: Node) -> None:
    inner = protocol.MAX_FRAME - 64
    body = b"\x92\xa6submit\xdd" + struct.pack(">I", inner) + b"\x90" * inner
    frame = struct.pack(">I", len(body)) + body

    def send() -> bytes:
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(30)
        s.connect(str(node.config.socket_path))
        s.sendall(frame)
        reply = s.recv(4096)
        s.close()
        return reply

    tracemalloc.start()
    try:
        reply = await call(send)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert b"error" in reply
    assert peak < 3 * len(frame), peak
    assert await call(submit_leaves, node.config.socket_path, [f.leaf(1)]) == [0]


async def test_clients_that_never_read_cannot_block_anyone(
    node: Node, caplog: pytest.LogCaptureFixture
) -> None:
    sock = node.config.socket_path
    await call(submit_leaves, sock, [f.leaf(i) for i in range(5)])
    request = protocol.encode_request(protocol.LookupRequest(f.entry(3).out_path))

    def flood() -> socket.socket:
        s = socket.socket(socket.AF_UNIX)
        s.connect(str(sock))
        s.setblocking(False)
        try:
            for _ in range(20_000):  # far more replies than the socket buffers hold
                s.send(request)
        except BlockingIOError:
            pass
        return s

    with caplog.at_level(logging.INFO, logger="trustix_p2p.control"):
        flooders = [await call(flood) for _ in range(48)]  # below the 64 slots: none evicted
        try:
            with trio.fail_after(10):
                status = await call(ControlClient(sock).status)
            assert status.size == 5
            with trio.fail_after(30):
                while sum("did not take its reply" in r.getMessage() for r in caplog.records) < 48:
                    await trio.sleep(0.05)
        finally:
            for s in flooders:
                s.close()


def _connect_idle(path: str, count: int) -> list[socket.socket]:
    sockets = []
    for _ in range(count):
        s = socket.socket(socket.AF_UNIX)
        s.connect(path)  # blocking: a Unix socket's connect fails at once when non-blocking
        sockets.append(s)
    return sockets


async def test_status_answers_at_once_with_many_idle_clients_connected(tmp_path: Path) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4096)), hard))
    n = Node.open(make_config(tmp_path))
    idle: list[socket.socket] = []
    async with _run(n) as running_node:
        path = str(running_node.config.socket_path)
        # Connected from a thread: a blocking connect waits for the node's accept loop.
        idle.extend(await call(_connect_idle, path, 500))
        try:
            with trio.fail_after(10):
                status = await call(ControlClient(path).status)
            assert status.log_id == KEY.public_key.log_id()
        finally:
            for s in idle:
                s.close()


async def test_when_full_the_longest_idle_client_makes_room(node: Node) -> None:
    path = str(node.config.socket_path)
    idle = await call(_connect_idle, path, node.control_limits.max_connections + 10)
    try:
        with trio.fail_after(10):
            status = await call(ControlClient(path).status)
        assert status.size == 0
    finally:
        for s in idle:
            s.close()


# -- errors people see ---------------------------------------------------------------------


def test_a_port_in_use_is_a_one_line_error_naming_listen(tmp_path: Path) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    try:
        config, _ = node_config(tmp_path, extra=f'listen = ["127.0.0.1:{port}"]\n')
        assert_one_line_error(cli("node", "--config", str(config)), "listen", "in use")
    finally:
        taken.close()


@pytest.mark.parametrize(
    ("extra", "fragments"),
    [
        ('listen = ["127.0.0.1:99999"]\n', ("'listen'", "out of range")),
        ('seeds = ["garbage"]\n', ("'seeds'", "host:port")),
    ],
)
def test_bad_addresses_are_one_line_errors(
    tmp_path: Path, extra: str, fragments: tuple[str, ...]
) -> None:
    config, _ = node_config(tmp_path, extra=extra)
    assert_one_line_error(cli("node", "--config", str(config)), *fragments)


def test_a_too_long_socket_path_is_a_one_line_error(tmp_path: Path) -> None:
    config, _ = node_config(tmp_path)
    long_name = "s" * 120 + ".sock"
    config.write_text(config.read_text().replace('"control.sock"', f'"{long_name}"'))
    assert_one_line_error(cli("node", "--config", str(config)), "control_socket", "bytes long")


def test_a_socket_already_served_is_a_one_line_error(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    config, sock = node_config(tmp_path / "a")
    with running(config, sock):
        (tmp_path / "b").mkdir()
        other, _ = node_config(tmp_path / "b")
        other.write_text(other.read_text().replace('"control.sock"', f'"{sock}"'))
        assert_one_line_error(cli("node", "--config", str(other)), "control_socket", "already")


def test_a_state_dir_that_is_a_file_is_a_one_line_error(tmp_path: Path) -> None:
    config, _ = node_config(tmp_path, state="afile")
    (tmp_path / "afile").write_text("")
    assert_one_line_error(cli("node", "--config", str(config)), "state_dir", "not a directory")


def test_an_unwritable_state_dir_is_a_one_line_error(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a read-only tmpfs needs root (CI runs as root)")
    ro = tmp_path / "ro"
    mount_tmpfs(ro, "ro,size=1m,mode=0700")
    try:
        config, _ = node_config(tmp_path, state=str(ro / "state"))
        line = assert_one_line_error(cli("node", "--config", str(config)), "state_dir")
        assert "Read-only file system" in line
        config, _ = node_config(tmp_path, state=str(ro))
        assert_one_line_error(cli("node", "--config", str(config)), "state_dir", "not writable")
    finally:
        umount(ro)


def test_a_permission_error_on_the_store_says_what_was_denied(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import plyvel

    def denied(*_args: object, **_kw: object) -> None:
        raise plyvel.IOError(b"IO error: /x/db/LOCK: Permission denied")

    monkeypatch.setattr(plyvel, "DB", denied)
    with pytest.raises(StoreError, match="permission denied") as info:
        Store(tmp_path / "db")
    assert "still running" not in str(info.value)


# -- entry limits ----------------------------------------------------------------------------


def _longest_entry(references: int) -> Entry:
    names = [f.store_path(f"r{i}".ljust(211, "x"))[len("/nix/store/") :] for i in range(references)]
    return Entry(
        out_path=f.store_path("o".ljust(211, "o")),
        nar_hash=bytes(32),
        nar_size=2**63 - 1,
        references=tuple(sorted(names)),
        deriver=f.store_path("d".ljust(207, "d") + ".drv"),
        output_name="o" * 255,
        built_at=2**63 - 1,
    )


async def test_the_largest_valid_entry_fits_and_larger_ones_are_refused_with_a_reason(
    node: Node,
) -> None:
    sock = node.config.socket_path
    biggest = encode_entry(_longest_entry(MAX_REFERENCES))
    assert len(biggest) <= MAX_ENTRY_BYTES
    assert await call(submit_leaves, sock, [biggest]) == [0]
    too_many = pack_entry(_longest_entry(MAX_REFERENCES + 1))
    with pytest.raises(RemoteProtocolError, match="more than 4096 references"):
        await call(submit_leaves, sock, [too_many])
    with pytest.raises(RemoteProtocolError, match=r"leaves\[0\]: \d+ bytes outside \[1, 1048576\]"):
        await call(submit_leaves, sock, [b"\xc6" + bytes(MAX_ENTRY_BYTES + 1)])


# -- one error policy --------------------------------------------------------------------


async def test_a_bug_in_a_control_handler_closes_only_that_connection(
    node: Node, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    sock = node.config.socket_path

    def broken(self: Node, *args: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(Node, "status", broken)
    with (
        caplog.at_level(logging.ERROR, logger="trustix_p2p.control"),
        pytest.raises(NodeUnavailableError),
    ):
        await call(ControlClient(sock).status)
    (failed,) = [r for r in caplog.records if r.getMessage().startswith("control request failed")]
    assert fields_of(failed) == {"node": node.name, "request": "StatusRequest"}
    assert "RuntimeError: a bug" in render([failed])  # with its traceback
    monkeypatch.undo()
    assert await call(submit_leaves, sock, [f.leaf(3)]) == [0]
    assert (await call(ControlClient(sock).status)).size == 1


async def test_every_log_line_names_the_node(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = make_config(
        tmp_path, listen=("127.0.0.1:0",), metrics=MetricsSettings(True, "127.0.0.1:0")
    )
    n = Node.open(config, name="alice")
    with caplog.at_level(logging.DEBUG, logger="trustix_p2p"):
        async with _run(n) as running_node:
            await call(submit_leaves, running_node.config.socket_path, [f.leaf(1)])
            await running_node.sign_checkpoint_now()
    ours = [r for r in caplog.records if r.name.startswith("trustix_p2p.")]
    assert {r.name for r in ours} >= {
        "trustix_p2p.node",
        "trustix_p2p.transport.server",
        "trustix_p2p.proxy.server",  # hypercorn, serving the metrics
    }
    assert all(fields_of(r).get("node") == "alice" for r in ours), render(ours)
    assert all(not r.getMessage().startswith("[") for r in ours), render(ours)
