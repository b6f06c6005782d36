"""What a run observed, in the same form whichever driver ran it.

A driver (`simulations.events_driver`, `simulations.trio_driver`) fills an `Observations`
with facts the real code reported: each checkpoint a builder signed, each head an engine
accepted (and from which peer), each piece of evidence an engine recorded, what every node
received, the links at the end, and the evidence each node holds then.
`simulations.metrics.summarize` turns it into `summary.json`.  Times are virtual seconds
since the start of the run; nodes are indices `0 .. nodes-1`.
"""

from __future__ import annotations

from typing import Any

import attrs

from trustix_p2p.core import evidence as ev

from .scenario import Scenario

__all__ = ["AcceptObs", "CheckpointObs", "EvidenceObs", "Observations"]


@attrs.frozen
class CheckpointObs:
    time: float
    builder: int  # the node that signed it
    log_id: bytes
    size: int
    head_hash: bytes  # SHA-256 of the checkpoint body (the engine's `Accepted.head_hash`)
    honest: bool  # signed by an honest builder (not one of an attack's forks)


@attrs.frozen
class AcceptObs:
    time: float
    node: int
    log_id: bytes
    size: int
    head_hash: bytes
    source: int | None  # the peer it came from; None when signed here


@attrs.frozen
class EvidenceObs:
    time: float
    node: int
    ident: str
    kind: str
    log_id: bytes
    source: int | None  # the peer that sent it; None when found here


@attrs.define
class Observations:
    scenario: Scenario
    driver: str
    nodes: int
    honest: frozenset[int]  # the honest nodes (builders included, attackers not)
    builders: tuple[int, ...]  # every node that signs checkpoints (a twin included)
    attacked_log: bytes | None = None  # the log an attack makes inconsistent
    attack_time: float | None = None  # when both views (or the rewrite) existed
    checkpoints: list[CheckpointObs] = attrs.field(factory=list)
    accepts: list[AcceptObs] = attrs.field(factory=list)
    evidence: list[EvidenceObs] = attrs.field(factory=list)
    received: list[int] = attrs.field(factory=list)  # messages received, per node
    bytes_in: list[int] = attrs.field(factory=list)  # bytes received (framed), per node
    sent: list[int] = attrs.field(factory=list)
    # The links at the end of the run, each once with a < b.
    final_links: set[tuple[int, int]] = attrs.field(factory=set)
    # What each honest node holds at the end: evidence documents (verified again when
    # summarised, once per distinct document).
    held: dict[int, list[ev.Evidence]] = attrs.field(factory=dict)
    # Nodes that were up at the end (crashed nodes that came back count).
    alive: frozenset[int] = frozenset()
    # Scenario-specific sections of the summary (eclipse, sybil, withholding, clients, ...).
    extra: dict[str, Any] = attrs.field(factory=dict)
    topology: str = ""
