"""The node process: the only place that starts long-running tasks.

A node owns one LevelDB store.  With a key it is a builder node with a log of its own: it
accepts submissions on the local control socket (and from the spool the post-build hook writes
when the node is down), appends them durably with group commit, and signs a checkpoint at most
every `checkpoint_interval` seconds and once more on clean shutdown.  Without a key it keeps
only mirrored logs (a witness/relay).

Ordering guarantees, which the crash tests pin down:
- a submission is acknowledged only after the write batch holding it was written with sync=True;
- a checkpoint is signed only over entries already durable, and stored in its own sync batch
  after its root was recomputed from the stored nodes; so a signed checkpoint never refers to
  data that is not on disk, and every acknowledged entry survives kill -9;
- on start the stored tree is checked against the last checkpoint; a disagreement stops the
  node (StoreCorruptError) rather than let it sign a second, inconsistent history.

The control socket is created mode 0600 (owner-only) and is the only way to submit: no remote
peer can append to a log.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket as stdlib_socket
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import attrs
import trio

from trustix_p2p.config import NodeConfig
from trustix_p2p.control import protocol
from trustix_p2p.core.checkpoint import Checkpoint, SignedCheckpoint, origin_for, sign_checkpoint
from trustix_p2p.core.entry import decode_entry
from trustix_p2p.core.keys import PrivateKey
from trustix_p2p.errors import (
    ConfigError,
    DecodeError,
    RemoteProtocolError,
    TrustixError,
)
from trustix_p2p.keyfile import load_key_file
from trustix_p2p.spool import pending_spool_files, read_spool, reject_spool, remove_spool
from trustix_p2p.storage import LeafRecord, LogStore, Store
from trustix_p2p.transport import serve_noise

log = logging.getLogger("trustix_p2p.node")

MAX_CONTROL_CONNECTIONS = 64
CONTROL_IDLE_TIMEOUT = 60.0


@attrs.define(eq=False)
class _Pending:
    """One submission waiting for the writer: its leaves, then its result or its error."""

    leaves: tuple[bytes, ...]
    done: trio.Event = attrs.field(factory=trio.Event)
    indices: list[int] | None = None
    error: str | None = None


@attrs.define(eq=False)
class Node:
    """A running node; create with `Node.open(config)`, then `await node.run()`."""

    config: NodeConfig
    store: Store
    key: PrivateKey | None
    own_log: LogStore | None
    clock: Callable[[], float] = time.time
    _send: trio.MemorySendChannel[_Pending] = attrs.field(init=False)
    _recv: trio.MemoryReceiveChannel[_Pending] = attrs.field(init=False)
    _write_lock: trio.Lock = attrs.field(init=False, factory=trio.Lock)
    ready: trio.Event = attrs.field(init=False, factory=trio.Event)
    # The Noise listener's bound addresses (`listen` may ask for port 0).
    listening: tuple[str, ...] = attrs.field(init=False, default=())

    def __attrs_post_init__(self) -> None:
        self._send, self._recv = trio.open_memory_channel[_Pending](1024)

    @classmethod
    def open(cls, config: NodeConfig, clock: Callable[[], float] = time.time) -> Node:
        """Open the store and the own log, refusing to start on a store that disagrees."""
        config.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        key = load_key_file(config.key_file) if config.key_file is not None else None
        store = Store(config.db_path)
        try:
            own = store.open_log(key.public_key, own=True) if key is not None else None
        except BaseException:
            store.close()
            raise
        return cls(config, store, key, own, clock)

    def close(self) -> None:
        self.store.close()

    # -- the writer: group commit --------------------------------------------------------

    async def submit(self, leaves: tuple[bytes, ...]) -> list[int]:
        """Queue leaves for the own log and wait until they are durable."""
        if self.own_log is None:
            raise ConfigError("this node has no key_file, so it keeps no log to submit to")
        if len(leaves) > self.config.max_submit_batch:
            raise RemoteProtocolError(
                f"a submission may hold at most {self.config.max_submit_batch} leaves"
            )
        pending = _Pending(leaves)
        await self._send.send(pending)
        await pending.done.wait()
        if pending.error is not None:
            raise RemoteProtocolError(pending.error)
        assert pending.indices is not None
        return pending.indices

    async def _writer(self) -> None:
        assert self.own_log is not None
        own = self.own_log
        async for first in self._recv:
            batch = [first]
            count = len(first.leaves)
            while count < self.config.max_submit_batch:
                try:
                    item = self._recv.receive_nowait()
                except trio.WouldBlock:
                    break
                batch.append(item)
                count += len(item.leaves)
            accepted: list[tuple[_Pending, list[LeafRecord]]] = []
            for item in batch:
                try:
                    records = [
                        LeafRecord(leaf, decode_entry(leaf).out_path) for leaf in item.leaves
                    ]
                except DecodeError as exc:
                    item.error = f"invalid entry: {exc}"
                    item.done.set()
                    continue
                accepted.append((item, records))
            if not accepted:
                continue
            all_records = [r for _, records in accepted for r in records]
            async with self._write_lock:
                try:
                    indices = await trio.to_thread.run_sync(own.append, all_records)
                except TrustixError as exc:
                    log.error("append failed: %s", exc)
                    for item, _ in accepted:
                        item.error = f"node could not store the entries: {exc}"
                        item.done.set()
                    continue
            pos = 0
            for item, records in accepted:
                item.indices = indices[pos : pos + len(records)]
                pos += len(records)
                item.done.set()

    # -- checkpoints -----------------------------------------------------------------------

    async def sign_checkpoint_now(self) -> SignedCheckpoint | None:
        """Sign a checkpoint over every durable entry if the log grew since the last one."""
        if self.own_log is None or self.key is None:
            return None
        own, key = self.own_log, self.key
        async with self._write_lock:
            previous = own.checkpoint()
            size = own.size
            if previous is not None and previous.checkpoint.size == size:
                return previous
            if previous is None and size == 0:
                return None
            now = int(self.clock())
            if previous is not None:
                now = max(now, previous.checkpoint.time)
            cp = Checkpoint(origin_for(own.log_id), size, own.frontier().root(), now)
            signed = sign_checkpoint(cp, key)
            await trio.to_thread.run_sync(own.set_checkpoint, signed)
            log.info("signed checkpoint: size %d", size)
            return signed

    async def _checkpointer(self) -> None:
        while True:
            await trio.sleep(self.config.checkpoint_interval)
            await self.sign_checkpoint_now()

    # -- spool -----------------------------------------------------------------------------

    async def ingest_spool(self) -> int:
        """Submit every pending spool file, deleting each once its leaves are durable."""
        if self.own_log is None:
            return 0
        ingested = 0
        for path in pending_spool_files(self.config.spool_path):
            try:
                leaves = read_spool(path)
                await self.submit(tuple(leaves))
            except (DecodeError, RemoteProtocolError) as exc:
                target = reject_spool(path)
                log.error("rejected spool file %s (kept as %s): %s", path.name, target, exc)
                continue
            remove_spool(path)
            ingested += len(leaves)
        if ingested:
            log.info("ingested %d spooled entries", ingested)
        return ingested

    async def _spool_loop(self) -> None:
        while True:
            await self.ingest_spool()
            await trio.sleep(self.config.spool_poll_interval)

    # -- control socket --------------------------------------------------------------------

    def status(self) -> protocol.Status:
        own = self.own_log
        cp = own.checkpoint() if own is not None else None
        return protocol.Status(
            public_key=self.key.public_key.raw if self.key is not None else None,
            log_id=own.log_id if own is not None else None,
            size=own.size if own is not None else 0,
            checkpoint_size=cp.checkpoint.size if cp is not None else 0,
            checkpoint_time=cp.checkpoint.time if cp is not None else 0,
            spool_pending=len(pending_spool_files(self.config.spool_path)),
            logs=len(self.store.log_ids()),
            listen=self.listening or tuple(self.config.listen),
        )

    def lookup(self, out_path: str) -> list[protocol.LookupHit]:
        hits: list[protocol.LookupHit] = []
        for log_id in self.store.log_ids():
            lg = self.store.log(log_id)
            cp = lg.checkpoint()
            for index in lg.lookup(out_path)[: protocol.MAX_HITS - len(hits)]:
                if cp is not None and index < cp.checkpoint.size:
                    proof: tuple[bytes, ...] | None = tuple(
                        lg.inclusion_proof(index, cp.checkpoint.size)
                    )
                    note: bytes | None = cp.note
                else:
                    proof, note = None, None
                hits.append(protocol.LookupHit(log_id, index, lg.leaf(index), note, proof))
        return hits

    async def _answer(self, request: protocol.Request) -> bytes:
        """Run one control request; TrustixErrors become error replies, bugs propagate."""
        try:
            match request:
                case protocol.Submit(leaves):
                    return protocol.encode_ok(await self.submit(leaves))
                case protocol.StatusRequest():
                    return protocol.encode_ok(protocol.status_to_wire(self.status()))
                case protocol.CheckpointRequest(log_id):
                    target = self.own_log if log_id is None else self.store.log(log_id)
                    cp = target.checkpoint() if target is not None else None
                    return protocol.encode_ok(cp.note if cp is not None else None)
                case protocol.LookupRequest(out_path):
                    hits = self.lookup(out_path)
                    return protocol.encode_ok([protocol.hit_to_wire(h) for h in hits])
        except TrustixError as exc:
            return protocol.encode_error(str(exc))
        raise AssertionError(f"unhandled request {request!r}")

    async def _serve_control_connection(self, stream: trio.SocketStream) -> None:
        reader = _FrameReader(stream)
        async with stream:
            while True:
                with trio.move_on_after(CONTROL_IDLE_TIMEOUT) as idle:
                    try:
                        data = await reader.read_frame()
                    except RemoteProtocolError as exc:
                        log.warning("control connection: %s", exc)
                        with contextlib.suppress(trio.BrokenResourceError):
                            await stream.send_all(protocol.encode_error(str(exc)))
                        return
                if idle.cancelled_caught or data is None:
                    return
                try:
                    request = protocol.decode_request(data)
                except DecodeError as exc:
                    with contextlib.suppress(trio.BrokenResourceError):
                        await stream.send_all(protocol.encode_error(str(exc)))
                    return
                reply = await self._answer(request)
                try:
                    await stream.send_all(reply)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    return

    async def _control_server(self, task_status: trio.TaskStatus[None]) -> None:
        path = self.config.socket_path
        async with _unix_listener(path) as listener:
            limiter = trio.CapacityLimiter(MAX_CONTROL_CONNECTIONS)

            async def handler(stream: trio.SocketStream) -> None:
                async with limiter:
                    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                        await self._serve_control_connection(stream)

            task_status.started()
            await trio.serve_listeners(handler, [listener])

    # -- lifecycle -------------------------------------------------------------------------

    async def run(self, *, install_signal_handlers: bool = True) -> None:
        """Run until cancelled or until SIGTERM/SIGINT; sign a final checkpoint on the way out."""
        try:
            async with trio.open_nursery() as nursery:
                if self.own_log is not None:
                    nursery.start_soon(self._writer)
                    await self.ingest_spool()
                    nursery.start_soon(self._checkpointer)
                    nursery.start_soon(self._spool_loop)
                if self.key is not None and self.config.listen:
                    bound = await nursery.start(serve_noise, list(self.config.listen), self.key)
                    self.listening = tuple(bound)
                # Last: once the control socket answers, everything it reports is running.
                await nursery.start(self._control_server)
                if install_signal_handlers:
                    nursery.start_soon(self._watch_signals, nursery.cancel_scope)
                log.info(
                    "node ready: control socket %s, peers on %s%s",
                    self.config.socket_path,
                    ", ".join(self.listening) or "nothing (no key_file)",
                    f", log {self.own_log.log_id.hex()}" if self.own_log is not None else "",
                )
                self.ready.set()
        finally:
            with trio.CancelScope(shield=True):
                await self.sign_checkpoint_now()

    async def _watch_signals(self, scope: trio.CancelScope) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                log.info("received signal %d, shutting down", signum)
                scope.cancel()
                return


class _FrameReader:
    """Reads length-prefixed control frames from a stream, never buffering past one frame."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self._stream = stream
        self._buf = bytearray()

    async def _fill(self, n: int) -> bool:
        while len(self._buf) < n:
            chunk = await self._stream.receive_some(min(1 << 20, n - len(self._buf)))
            if not chunk:
                if self._buf:
                    raise RemoteProtocolError("control connection closed mid-message")
                return False
            self._buf += chunk
        return True

    async def read_frame(self) -> bytes | None:
        if not await self._fill(4):
            return None
        n = protocol.frame_length(bytes(self._buf[:4]))
        del self._buf[:4]
        if not await self._fill(n):
            raise RemoteProtocolError("control connection closed mid-message")
        data = bytes(self._buf[:n])
        del self._buf[:n]
        return data


@contextlib.asynccontextmanager
async def _unix_listener(path: Path) -> AsyncIterator[trio.SocketListener]:
    """A Unix listening socket at `path`, mode 0600 from the moment it exists."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if path.exists() or path.is_symlink():
        probe = stdlib_socket.socket(stdlib_socket.AF_UNIX)
        try:
            probe.connect(str(path))
        except OSError:
            path.unlink()  # stale socket of a node that is gone
        else:
            raise ConfigError(f"another node is already listening on {path}")
        finally:
            probe.close()
    sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
    old_umask = os.umask(0o177)  # no window in which the socket is group/world accessible
    try:
        await sock.bind(str(path))
    finally:
        os.umask(old_umask)
    os.chmod(path, 0o600)
    sock.listen(64)
    try:
        yield trio.SocketListener(sock)
    finally:
        sock.close()
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


async def run_node(config: NodeConfig) -> None:
    """Open and run a node until it is told to stop."""
    node = Node.open(config)
    try:
        await node.run()
    finally:
        node.close()
