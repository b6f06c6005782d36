"""A blocking client for the node's control socket.

Blocking on purpose: the post-build hook runs once per build and must start and finish in
milliseconds, so it does not start an event loop.  Every call has a timeout; a node that is
absent, refuses, or does not answer in time raises NodeUnavailableError so the caller can spool.

For the same reason submitting (`submit_leaves`, `ControlClient.submit`) loads neither attrs
nor pathlib: it goes through the lean layer's `trustix_p2p.core.lean.control`, and the attrs
message classes of `protocol` are imported only by the other requests.
"""

from __future__ import annotations

# The C socket type itself rather than the `socket` module, whose import (building its
# IntEnums, loading `selectors`) costs the hook milliseconds on every build; a blocking
# AF_UNIX client needs nothing that `socket.socket` adds to it.
import _socket
import os
import time

from trustix_p2p.core.lean.control import (
    decode_reply,
    frame_length,
    indices_from_wire,
    submit_chunks,
    submit_request,
)
from trustix_p2p.errors import NodeUnavailableError, RemoteProtocolError

# Not `from typing import TYPE_CHECKING`: importing typing adds milliseconds to the start of
# the post-build hook, on every build.  Type checkers treat this name as true all the same.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

    from trustix_p2p.control import protocol


class ControlClient:
    """One connection to a node's control socket."""

    def __init__(self, socket_path: str | os.PathLike[str], timeout: float = 10.0) -> None:
        self.socket_path = socket_path
        self.timeout = timeout
        self._deadline = time.monotonic() + timeout
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(os.fspath(socket_path))
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

    def _exchange(self, request: bytes) -> Any:
        """Send one framed request; the payload of the node's ok reply."""
        try:
            self._sock.sendall(request)
            n = frame_length(self._recv_exact(4))
            return decode_reply(self._recv_exact(n))
        except (TimeoutError, ConnectionError, OSError) as exc:
            raise NodeUnavailableError(
                f"the node on {self.socket_path} did not answer: {exc}"
            ) from exc

    def call(self, request: protocol.Request) -> Any:
        from trustix_p2p.control import protocol

        return self._exchange(protocol.encode_request(request))

    def submit(self, leaves: Sequence[bytes]) -> list[int]:
        """Log leaves; their indices once durable.  Large submissions go in several frames,
        each acknowledged on its own (a retry of the whole is safe: submission is idempotent)."""
        indices: list[int] = []
        for chunk in submit_chunks(list(leaves)):
            reply = self._exchange(submit_request(chunk))
            indices += indices_from_wire(reply, len(chunk))
        return indices

    def status(self) -> protocol.Status:
        from trustix_p2p.control import protocol

        return protocol.status_from_wire(self.call(protocol.StatusRequest()))

    def checkpoint(self, log_id: bytes | None = None) -> bytes | None:
        from trustix_p2p.control import protocol

        reply = self.call(protocol.CheckpointRequest(log_id))
        if reply is not None and not isinstance(reply, bytes):
            raise RemoteProtocolError("malformed checkpoint reply")
        return reply

    def lookup(self, out_path: str) -> list[protocol.LookupHit]:
        from trustix_p2p.control import protocol

        return protocol.hits_from_wire(self.call(protocol.LookupRequest(out_path)))


def submit_leaves(
    socket_path: str | os.PathLike[str], leaves: Sequence[bytes], timeout: float = 10.0
) -> list[int]:
    """Hand leaves to the node; their log indices once durable.  Idempotent per leaf bytes.

    Raises NodeUnavailableError when the node is absent, refuses or is too slow, and
    RemoteProtocolError when it rejects a leaf.
    """
    with ControlClient(socket_path, timeout) as client:
        return client.submit(leaves)
