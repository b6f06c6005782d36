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


Subscriber = Callable[[NodeEvent], None]
