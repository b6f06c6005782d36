"""A blocking client for the node's control socket.

Blocking on purpose: the post-build hook runs once per build and must start and finish in
milliseconds, so it does not start an event loop.  Every call has a timeout; a node that is
absent, refuses, or does not answer in time raises NodeUnavailableError so the caller can spool.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from trustix_p2p.control import protocol
from trustix_p2p.errors import NodeUnavailableError, RemoteProtocolError


class ControlClient:
    """One connection to a node's control socket."""

    def __init__(self, socket_path: Path, timeout: float = 10.0) -> None:
        self.socket_path = Path(socket_path)
        self.timeout = timeout
        self._deadline = time.monotonic() + timeout
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(str(self.socket_path))
        except (FileNotFoundError, ConnectionRefusedError, TimeoutError, OSError) as exc:
            sock.close()
            raise NodeUnavailableError(
                f"no node answers on {self.socket_path}: {exc.strerror or exc}"
            ) from exc
        self._sock = sock

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _recv_exact(self, n: int) -> bytes:
        chunks = []
        while n:
            chunk = self._sock.recv(min(n, 1 << 20))
            if not chunk:
                raise NodeUnavailableError("the node closed the control connection")
            chunks.append(chunk)
            n -= len(chunk)
        return b"".join(chunks)

    def call(self, request: protocol.Request) -> Any:
        try:
            self._sock.sendall(protocol.encode_request(request))
            n = protocol.frame_length(self._recv_exact(4))
            return protocol.decode_reply(self._recv_exact(n))
        except (TimeoutError, ConnectionError, OSError) as exc:
            raise NodeUnavailableError(
                f"the node on {self.socket_path} did not answer: {exc}"
            ) from exc

    def submit(self, leaves: Sequence[bytes]) -> list[int]:
        reply = self.call(protocol.Submit(tuple(leaves)))
        return protocol.indices_from_wire(reply, len(leaves))

    def status(self) -> protocol.Status:
        return protocol.status_from_wire(self.call(protocol.StatusRequest()))

    def checkpoint(self, log_id: bytes | None = None) -> bytes | None:
        reply = self.call(protocol.CheckpointRequest(log_id))
        if reply is not None and not isinstance(reply, bytes):
            raise RemoteProtocolError("malformed checkpoint reply")
        return reply

    def lookup(self, out_path: str) -> list[protocol.LookupHit]:
        return protocol.hits_from_wire(self.call(protocol.LookupRequest(out_path)))


def submit_leaves(socket_path: Path, leaves: Sequence[bytes], timeout: float = 10.0) -> list[int]:
    """Hand leaves to the node; their log indices once durable.  Idempotent per leaf bytes.

    Raises NodeUnavailableError when the node is absent, refuses or is too slow, and
    RemoteProtocolError when it rejects a leaf.
    """
    with ControlClient(socket_path, timeout) as client:
        return client.submit(leaves)
