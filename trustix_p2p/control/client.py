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
    frame_reader,
    submit_chunks,
    submit_indices,
    submit_request,
)
from trustix_p2p.errors import NodeUnavailableError

# Not `from typing import TYPE_CHECKING`: importing typing adds milliseconds to the start of
# the post-build hook, on every build.  Type checkers treat this name as true all the same.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

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

    def _exchange(self, request: bytes) -> memoryview:
        """Send one framed request; the body of the node's reply frame."""
        reader = frame_reader()
        try:
            self._sock.sendall(request)
            while (body := reader.next_frame()) is None:
                chunk = self._sock.recv(min(reader.wanted(), 1 << 20))
                if not chunk:
                    raise NodeUnavailableError("the node closed the control connection")
                reader.feed(chunk)
        except (TimeoutError, ConnectionError, OSError) as exc:
            raise NodeUnavailableError(
                f"the node on {self.socket_path} did not answer: {exc}"
            ) from exc
        return body

    def call(self, request: protocol.Request) -> protocol.OkReply:
        """Send a request; the node's ok reply (its refusals raise, see `protocol.decode_ok`)."""
        from trustix_p2p.control import protocol

        return protocol.decode_ok(request, self._exchange(protocol.encode_request(request)))

    def submit(self, leaves: Sequence[bytes]) -> list[int]:
        """Log leaves; their indices once durable.  Large submissions go in several frames,
        each acknowledged on its own (a retry of the whole is safe: submission is idempotent)."""
        indices: list[int] = []
        for chunk in submit_chunks(list(leaves)):
            indices += submit_indices(self._exchange(submit_request(chunk)), len(chunk))
        return indices

    def status(self) -> protocol.Status:
        from trustix_p2p.control import protocol

        reply = self.call(protocol.StatusRequest())
        assert isinstance(reply, protocol.StatusReply)
        return reply.status

    def checkpoint(self, log_id: bytes | None = None) -> bytes | None:
        from trustix_p2p.control import protocol

        reply = self.call(protocol.CheckpointRequest(log_id))
        assert isinstance(reply, protocol.CheckpointReply)
        return reply.note

    def retire(self, successor: bytes) -> bytes:
        """Retire the node's own log for `successor` (raw public key): the final checkpoint."""
        from trustix_p2p.control import protocol

        reply = self.call(protocol.RetireRequest(successor))
        assert isinstance(reply, protocol.CheckpointReply) and reply.note is not None
        return reply.note

    def lookup(self, out_path: str) -> list[protocol.LookupHit]:
        from trustix_p2p.control import protocol

        reply = self.call(protocol.LookupRequest(out_path))
        assert isinstance(reply, protocol.LookupReply)
        return list(reply.hits)

    def peers(self) -> list[protocol.PeerRow]:
        from trustix_p2p.control import protocol

        reply = self.call(protocol.PeersRequest())
        assert isinstance(reply, protocol.PeersReply)
        return list(reply.peers)

    def evidence_list(self) -> list[protocol.EvidenceRow]:
        from trustix_p2p.control import protocol

        reply = self.call(protocol.EvidenceListRequest())
        assert isinstance(reply, protocol.EvidenceListReply)
        return list(reply.items)

    def evidence(self, ident: str) -> str:
        """The evidence document (JSON) whose id starts with `ident`."""
        from trustix_p2p.control import protocol

        reply = self.call(protocol.EvidenceRequest(ident))
        assert isinstance(reply, protocol.EvidenceReply)
        return reply.document

    def consistency(self, log_id: bytes, old_size: int, new_size: int) -> protocol.ConsistencyReply:
        """The node's checkpoint of `new_size`, its root at `old_size` and the proof between."""
        from trustix_p2p.control import protocol

        reply = self.call(protocol.ConsistencyRequest(log_id, old_size, new_size))
        assert isinstance(reply, protocol.ConsistencyReply)
        return reply

    def entries(self, log_id: bytes, start: int, count: int) -> list[bytes]:
        """Leaves [start, start + count) of a log (fewer if the reply would be too large)."""
        from trustix_p2p.control import protocol

        reply = self.call(protocol.EntriesRequest(log_id, start, count))
        assert isinstance(reply, protocol.EntriesReply)
        return list(reply.leaves)


def submit_leaves(
    socket_path: str | os.PathLike[str], leaves: Sequence[bytes], timeout: float = 10.0
) -> list[int]:
    """Hand leaves to the node; their log indices once durable.  Idempotent per leaf bytes.

    Raises NodeUnavailableError when the node is absent, refuses or is too slow, and
    RemoteProtocolError when it rejects a leaf.
    """
    with ControlClient(socket_path, timeout) as client:
        return client.submit(leaves)
