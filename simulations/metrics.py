"""From what a run observed to `summary.json` (and the series the plots draw).

Definitions (times in virtual seconds):

- **propagation**: for every checkpoint an honest builder signed and every other honest node
  up at the end, the time until that node's head of the log reached the checkpoint's size (a
  node that skips a checkpoint for a later one has it when the later one arrives), and the
  number of gossip hops the head it arrived with travelled (0 at the builder, one more per
  peer that passed it on).  `coverage` is the share of (checkpoint, node) pairs reached.
- **detection**: `expected` is the number of honest nodes connected to the honest majority at
  the end (the largest component of the links between honest nodes), when the attack makes a
  log inconsistent; `detected_by` the honest nodes that hold evidence against that log which
  verifies (checked here again, once per document); `p50`/`max` the time from the moment both
  views existed to each detector's first evidence.  `hops_max` counts hops from the builder
  to where the views met, then the evidence's relays.
- **false_evidence**: honest nodes holding evidence against any other log, or evidence that
  does not verify.
- **messages_per_node_per_checkpoint**: messages received by honest nodes, per honest node,
  per checkpoint signed in the run (all logs).
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from typing import Any

import attrs

from trustix_p2p.core import evidence as ev
from trustix_p2p.errors import DecodeError, VerificationError

from .observe import Observations
from .scenario import EQUIVOCATIONS

__all__ = ["Series", "hop_bound", "summarize"]


@attrs.define
class Series:
    """The per-sample data behind the plots."""

    propagation: list[float] = attrs.field(factory=list)
    hops: list[int] = attrs.field(factory=list)
    detection: dict[int, float] = attrs.field(factory=dict)
    messages: list[int] = attrs.field(factory=list)  # per honest node
    bytes: list[int] = attrs.field(factory=list)  # per honest node


def hop_bound(nodes: int) -> int:
    """The issue's propagation bound: ceil(log2 N) + 3 gossip hops."""
    return math.ceil(math.log2(max(nodes, 2))) + 3


def _quantile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))
    return ordered[k]


def _r(x: float) -> float:
    return round(x, 6)


def _components(nodes: set[int], links: set[tuple[int, int]]) -> list[set[int]]:
    adjacent: dict[int, list[int]] = defaultdict(list)
    for a, b in links:
        if a in nodes and b in nodes:
            adjacent[a].append(b)
            adjacent[b].append(a)
    seen: set[int] = set()
    out: list[set[int]] = []
    for start in sorted(nodes):
        if start in seen:
            continue
        part = {start}
        stack = [start]
        seen.add(start)
        while stack:
            for nxt in adjacent[stack.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    part.add(nxt)
                    stack.append(nxt)
        out.append(part)
    return out


def summarize(
    obs: Observations, *, wall_seconds: float, peak_rss_mb: float
) -> tuple[dict[str, Any], Series]:
    sc = obs.scenario
    series = Series()
    honest = obs.honest
    alive_honest = honest & obs.alive if obs.alive else honest

    # -- hops of every accepted head ---------------------------------------------------------
    accepts = sorted(obs.accepts, key=lambda a: (a.time, a.node))
    hop: dict[tuple[int, bytes], int] = {}
    # Per node and log: (time, size, hops) of each accepted head, in time order.
    heads: dict[tuple[int, bytes], list[tuple[float, int, int | None]]] = defaultdict(list)
    for a in accepts:
        h: int | None
        if a.source is None:
            h = 0
        else:
            prev = hop.get((a.source, a.head_hash))
            h = None if prev is None else prev + 1
        if h is not None and (a.node, a.head_hash) not in hop:
            hop[(a.node, a.head_hash)] = h
        heads[(a.node, a.log_id)].append((a.time, a.size, h))

    # -- propagation -------------------------------------------------------------------------
    checkpoints = [c for c in obs.checkpoints if c.honest and c.builder in honest]
    pairs = reached = 0
    for c in checkpoints:
        for x in sorted(alive_honest):
            if x == c.builder:
                continue
            pairs += 1
            for when, size, h in heads.get((x, c.log_id), ()):
                if size >= c.size and when >= c.time:
                    reached += 1
                    series.propagation.append(when - c.time)
                    if h is not None:
                        series.hops.append(h)
                    break
    propagation = {
        "p50": _r(_quantile(series.propagation, 0.5)),
        "p99": _r(_quantile(series.propagation, 0.99)),
        "max": _r(max(series.propagation, default=0.0)),
        "hops_p99": int(_quantile([float(h) for h in series.hops], 0.99)),
        "hops_max": max(series.hops, default=0),
        "hops_bound": hop_bound(obs.nodes),
        "coverage": _r(reached / pairs) if pairs else 1.0,
        "checkpoints": len(checkpoints),
    }

    # -- detection ---------------------------------------------------------------------------
    attacked = obs.attacked_log if sc.attack.kind in EQUIVOCATIONS else None
    verified: dict[str, bool] = {}

    def verifies(e: ev.Evidence) -> bool:
        ident = ev.evidence_id(e)
        if ident not in verified:
            try:
                ev.verify_evidence(e)
                verified[ident] = True
            except (DecodeError, VerificationError):
                verified[ident] = False
        return verified[ident]

    detectors: set[int] = set()
    false_evidence = 0
    for x in sorted(honest):
        held = obs.held.get(x, [])
        good = False
        wrong = False
        for e in held:
            ok = verifies(e)
            if attacked is not None and e.public_key.log_id() == attacked and ok:
                good = True
            elif not ok or e.public_key.log_id() != obs.attacked_log:
                wrong = True
        if good:
            detectors.add(x)
        if wrong:
            false_evidence += 1

    expected = 0
    if attacked is not None:
        parts = _components(set(alive_honest), obs.final_links)
        majority = max(parts, key=len) if parts else set()
        expected = len(majority)
    first: dict[int, float] = {}
    found: dict[int, tuple[float, str, int | None]] = {}
    for o in sorted(obs.evidence, key=lambda o: (o.time, o.node)):
        if o.log_id != attacked or o.node not in honest or o.node in found:
            continue
        found[o.node] = (o.time, o.ident, o.source)
        first[o.node] = o.time
    start = obs.attack_time if obs.attack_time is not None else 0.0
    series.detection = {x: _r(t - start) for x, t in sorted(first.items()) if x in detectors}
    # Hops: where the views met, the hops the conflicting head had come; then one per relay.
    ehop: dict[int, int] = {}
    for x, (when, ident, source) in sorted(found.items(), key=lambda kv: (kv[1][0], kv[0])):
        relayed = (
            source is not None
            and source in found
            and found[source][1] == ident
            and found[source][0] < when
        )
        if relayed:
            assert source is not None
            if source in ehop:
                ehop[x] = ehop[source] + 1
            continue
        base = source if source is not None else x
        past = [h for t, _s, h in heads.get((base, attacked or b""), ()) if t <= when]
        known = [h for h in past if h is not None]
        ehop[x] = (known[-1] if known else 0) + (1 if source is not None else 0)
    values = list(series.detection.values())
    detection = {
        "expected": expected,
        "detected_by": len(detectors) if attacked is not None else 0,
        "p50": _r(_quantile(values, 0.5)),
        "max": _r(max(values, default=0.0)),
        "hops_max": max((ehop.get(x, 0) for x in detectors), default=0),
        "missed": sorted(
            x
            for x in (
                max(_components(set(alive_honest), obs.final_links), key=len)
                if attacked is not None
                else set()
            )
            if x not in detectors
        )[:20],
    }

    # -- cost --------------------------------------------------------------------------------
    honest_sorted = sorted(honest)
    series.messages = [obs.received[x] for x in honest_sorted]
    series.bytes = [obs.bytes_in[x] for x in honest_sorted]
    signed = len({(c.log_id, c.head_hash) for c in obs.checkpoints})
    per_node = statistics.fmean(series.messages) if series.messages else 0.0
    summary: dict[str, Any] = {
        "scenario": sc.name,
        "seed": sc.seed,
        "nodes": obs.nodes,
        "honest_nodes": len(honest),
        "driver": obs.driver,
        "topology": obs.topology or sc.topology.kind,
        "degree": sc.topology.degree,
        "attack": sc.attack.kind,
        "duration": sc.duration,
        "propagation": propagation,
        "detection": detection,
        "false_evidence": false_evidence,
        "messages_per_node_per_checkpoint": _r(per_node / signed) if signed else 0.0,
        "messages_per_node": _r(per_node),
        "bytes_per_node": _r(statistics.fmean(series.bytes)) if series.bytes else 0.0,
        "checkpoints_signed": signed,
    }
    summary.update({k: obs.extra[k] for k in sorted(obs.extra)})
    summary["wall_seconds"] = round(wall_seconds, 3)
    summary["peak_rss_mb"] = round(peak_rss_mb, 1)
    return summary, series
