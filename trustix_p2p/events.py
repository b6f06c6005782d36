"""What a node tells an observer: structured events, one per thing that happened.

The node emits these to an optional subscriber (`Node.events`): the simulation harness
records them as its trace, metrics count them.  Events are values; `line()` renders one as a
stable text line (a trace of them is compared byte for byte between runs).  Times are the
node's trio clock (virtual in a simulation).
"""

from __future__ import annotations

from collections.abc import Callable

import attrs

__all__ = [
    "CheckpointSigned",
    "ConnectionClosed",
    "ConnectionOpened",
    "EntriesAppended",
    "EvidenceRecorded",
    "HeadAccepted",
    "NodeEvent",
    "PingAnswered",
    "Subscriber",
]


@attrs.frozen
class NodeEvent:
    time: float
    node: str

    def line(self) -> str:
        fields = [f"{a.name}={getattr(self, a.name)}" for a in attrs.fields(type(self))[2:]]
        return f"{self.time:.6f} {self.node} {type(self).__name__} {' '.join(fields)}".rstrip()


@attrs.frozen
class ConnectionOpened(NodeEvent):
    peer: str  # base64 key
    direction: str  # "in" or "out"


@attrs.frozen
class ConnectionClosed(NodeEvent):
    peer: str
    direction: str
    reason: str


@attrs.frozen
class PingAnswered(NodeEvent):
    peer: str
    round_trip: float


@attrs.frozen
class EntriesAppended(NodeEvent):
    count: int
    size: int


@attrs.frozen
class CheckpointSigned(NodeEvent):
    size: int
    root: str  # hex


@attrs.frozen
class HeadAccepted(NodeEvent):
    """The gossip engine took a new head of a log (`peer`: who sent it; "": signed here)."""

    log: str  # hex log id
    size: int
    head_hash: str  # hex SHA-256 of the checkpoint body
    peer: str  # base64 key, or ""


@attrs.frozen
class EvidenceRecorded(NodeEvent):
    """The gossip engine recorded verified evidence new to it (`peer`: "" when found here)."""

    ident: str
    kind: str
    log: str  # hex log id
    peer: str  # base64 key, or ""


Subscriber = Callable[[NodeEvent], None]
