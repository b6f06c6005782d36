"""The gossip engine: sans-IO, events in, actions out (DESIGN §6).

One `Engine` is one node's gossip logic.  Its shell tells it what happened: a connection
opened (`peer_connected`) or closed (`peer_disconnected`), a message arrived (`message`), time
passed (`tick`, at the latest at `next_deadline()`), this node signed a checkpoint
(`local_checkpoint`).  Each call returns the actions that follow: send a message to a peer,
drop a peer (with the reason), peers learned, and the facts a shell reports (a head accepted,
entries synced, evidence found).  The engine reads no clock (`now`, unix seconds, comes with
every event), opens no socket, starts no task and touches no file: its log data is a
`trustix_p2p.storage.Store` (LevelDB on a node, memory in a simulation), and its randomness an
injected `random.Random`.  The node (`trustix_p2p.node`) drives it over Noise connections; the
simulation harness drives the very same engine for thousands of nodes in virtual time.

What a node knows of a log is its *head*: the latest checkpoint it accepted, kept in the store
(`LogStore.head`).  A checkpoint is judged against it (`_judge`):

- signature first (cached by exact bytes, so a duplicate costs a dictionary lookup);
- the same size and another root: a split view, evidence at once;
- smaller than the head: a mirror that holds those entries compares roots itself; otherwise
  the engine asks a peer for a consistency proof from its size to the head's;
- larger than the head: it is accepted only once a peer's consistency proof, with the
  `prefix_root` at the head's size, shows that it extends the head; a proof whose prefix root
  differs from a signed checkpoint of that size is evidence of an inconsistent history.

A log's *final* checkpoint (it names a successor key, `trustix-p2p log retire`) closes the log:
a checkpoint larger than it, or another final one naming a different successor, is
retirement-conflict evidence at once (two signatures suffice; no proof is needed), so nothing
signed after the close is ever accepted.  A final head at the size of the head replaces it.  A
node that follows a log follows its successor too, in the same mode and under the same name
(`follow_successors`), unless evidence names the retired log.

A checkpoint that cannot be judged yet is kept (per log, up to `max_pending_per_log`) and
judged again whenever the head advances or entries arrive.  A mirror then fetches entries in
bounded ranges, each with the responder's signed checkpoint of the head's size and the
consistency proof from the end of the range to it, and stores them only when they rebuild that
root (`LogStore.append(check=...)`).  Only signatures and proofs move a head or make evidence;
a peer's word never does, and a peer whose data fails a check is scored down and dropped.

Memory is bounded whatever peers send: the logs followed (`max_logs`), the pending checkpoints
per log, the notes remembered as seen, one request in flight per log, and per-peer budgets of
messages and bytes per second.
"""

from __future__ import annotations

import contextlib
import hashlib
import random
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from typing import Final

import attrs
import msgpack

from trustix_p2p.core import evidence as ev
from trustix_p2p.core import merkle, wire
from trustix_p2p.core.checkpoint import (
    Checkpoint,
    Cosignature,
    SignedCheckpoint,
    add_cosignatures,
    cosign,
    cosignature_key_id,
    origin_for,
    verify_checkpoint,
    verify_cosignature,
)
from trustix_p2p.core.entry import decode_entry
from trustix_p2p.core.keys import PrivateKey, PublicKey
from trustix_p2p.core.note import Note, format_note, parse_note, parse_signature_line
from trustix_p2p.errors import (
    DecodeError,
    LocalProtocolError,
    TrustixError,
    VerificationError,
)
from trustix_p2p.gossip import messages as m
from trustix_p2p.storage import LeafRecord, LogStore, Store

__all__ = [
    "Accepted",
    "Action",
    "Disconnect",
    "Engine",
    "EngineConfig",
    "EvidenceFound",
    "Follow",
    "LearnedPeers",
    "Send",
    "Synced",
    "Verifier",
]

MODES: Final = ("mirror", "witness")
# The newest pieces of evidence a node sends each peer when it connects.
EVIDENCE_ON_CONNECT: Final = 16
UNKNOWN_MODES: Final = ("mirror", "witness", "ignore")
# Heads of logs not followed, remembered (the newest) for successors followed later.
IGNORED_HEADS: Final = 1024


# What a node answers when asked for entries of a log it does not keep (a peer that says so
# is not asked again for a while: `not_mirroring_retry`).
NOT_FOLLOWED: Final = "this node does not follow that log"
NOT_MIRRORED: Final = "this node does not mirror that log"
_NOT_MIRRORING: Final = (NOT_FOLLOWED, NOT_MIRRORED)


# -- configuration --------------------------------------------------------------------------


@attrs.frozen
class Follow:
    """A log this node follows by configuration."""

    public_key: PublicKey
    mode: str = "mirror"
    name: str | None = None


@attrs.frozen
class EngineConfig:
    follow: tuple[Follow, ...] = ()
    follow_unknown: str = "witness"
    anti_entropy_interval: float = 5.0
    request_timeout: float = 10.0
    retry_after: float = 2.0
    max_logs: int = 10_000
    entries_per_request: int = 4096
    max_reply_bytes: int = 1 << 20
    max_pending_per_log: int = 16
    seen_notes: int = 1 << 16
    peer_message_rate: float = 1000.0
    peer_message_burst: float = 5000.0
    peer_byte_rate: float = float(32 << 20)
    peer_byte_burst: float = float(128 << 20)
    ban_score: int = -100
    advertise: tuple[str, ...] = ()
    cosign: bool = True
    # A head learned from a peer is relayed after this many seconds (times 1 to 3, at random):
    # the peers that send it meanwhile are known to have it and are not sent it again.  A
    # head signed here goes out at once.
    relay_delay: float = 0.2
    # A peer that does not mirror a log is not asked for its entries again for this long.
    not_mirroring_retry: float = 300.0
    # Follow the successor a retired log names (its final checkpoint), as the log was.
    follow_successors: bool = True


# -- actions ----------------------------------------------------------------------------------


@attrs.frozen
class Send:
    peer: int
    message: wire.Message


@attrs.frozen
class Disconnect:
    peer: int
    reason: str


@attrs.frozen
class LearnedPeers:
    peer: int
    addresses: tuple[str, ...]


@attrs.frozen
class Accepted:
    """A new head of a log: `size`, and the peer it came from (None: signed here)."""

    log_id: bytes
    size: int
    note_hash: bytes
    peer: int | None


@attrs.frozen
class Synced:
    """A mirror stored `count` more entries of a log; it now holds `size` of `target`."""

    log_id: bytes
    count: int
    size: int
    target: int


@attrs.frozen
class EvidenceFound:
    """Verified evidence, new to this node (`peer`: who sent it; None: found here)."""

    id: str
    kind: str
    log_id: bytes
    peer: int | None


Action = Send | Disconnect | LearnedPeers | Accepted | Synced | EvidenceFound


# -- verification cache -------------------------------------------------------------------------


class Verifier:
    """Signature checks cached by the exact bytes checked.

    One per engine by default; a simulation may share one between all its engines (one check
    per distinct signed note per run).  Only successes are kept: what fails is checked again
    every time, and costs its sender its score.
    """

    def __init__(self, max_entries: int = 1 << 16) -> None:
        self._max = max_entries
        self._checkpoints: OrderedDict[tuple[bytes, bytes], SignedCheckpoint] = OrderedDict()
        self._evidence: OrderedDict[str, None] = OrderedDict()
        self._cosignatures: OrderedDict[tuple[bytes, bytes, int, bytes], None] = OrderedDict()
        self.checks = 0

    def checkpoint(self, note: bytes, public_key: PublicKey) -> SignedCheckpoint:
        # Keyed by the body and the first signature line: when that line is the log's own
        # signature (as in every note this code writes), cosignature lines after it do not
        # change the answer, so the same checkpoint with other cosignatures is not checked
        # again, and the note returned is that plain part.  A note whose first line is
        # another signature is cached (and returned) whole.
        first = note.find(_SIGNATURE_LINE)
        end = note.find(b"\n", first + 1) if first >= 0 else -1
        prefix = note[: end + 1] if end >= 0 else note
        key = (prefix, public_key.raw)
        cached = self._checkpoints.get(key) or self._checkpoints.get((note, public_key.raw))
        if cached is not None:
            return cached
        self.checks += 1
        signed = verify_checkpoint(note, public_key)
        if plain_note(signed) == prefix:
            # What the caller gets is the checkpoint with the log's own signature only: the
            # rest of the note (cosignatures) is not vouched for by this check.
            signed = SignedCheckpoint(signed.checkpoint, prefix)
        else:
            key = (note, public_key.raw)
        self._checkpoints[key] = signed
        if len(self._checkpoints) > self._max:
            self._checkpoints.popitem(last=False)
        return signed

    def cosignature(self, checkpoint: Checkpoint, c: Cosignature, witness: PublicKey) -> None:
        """Verify a cosignature (VerificationError if invalid)."""
        key = (checkpoint.body(), witness.raw, c.time, c.signature)
        if key in self._cosignatures:
            self._cosignatures.move_to_end(key)
            return
        self.checks += 1
        verify_cosignature(checkpoint, c, witness)
        self._cosignatures[key] = None
        if len(self._cosignatures) > self._max:
            self._cosignatures.popitem(last=False)

    def evidence(self, evidence: ev.Evidence) -> str:
        """Verify evidence (VerificationError if invalid); its id."""
        ident = ev.evidence_id(evidence)
        if ident in self._evidence:
            return ident
        self.checks += 1
        ev.verify_evidence(evidence)
        self._evidence[ident] = None
        if len(self._evidence) > self._max:
            self._evidence.popitem(last=False)
        return ident


# Every signature line of a signed note starts so (C2SP signed-note: an em dash, a space).
_SIGNATURE_LINE: Final = "\n\u2014 ".encode()


def _contradicts(final: Checkpoint, other: Checkpoint) -> bool:
    """Whether `other` contradicts `final`, if `final` closes its log (names a successor):
    larger than it, or final too and naming another successor."""
    if final.successor is None:
        return False
    return other.size > final.size or (
        other.successor is not None and other.successor != final.successor
    )


def _sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def plain_note(signed: SignedCheckpoint) -> bytes:
    """The note with only the log's own signature line (cosignature lines dropped)."""
    if signed.note.count(_SIGNATURE_LINE) == 1:
        return signed.note  # one signature line: the log's own (it verified)
    note = parse_note(signed.note)
    own = tuple(s for s in note.signatures if s.key_name == signed.checkpoint.origin)
    if len(own) == len(note.signatures):
        return signed.note
    return format_note(Note(note.text, own[:1]))


def witness_name(public_key: PublicKey) -> str:
    """The name a node cosigns under: its own log's origin."""
    return origin_for(public_key.log_id())


# -- state --------------------------------------------------------------------------------------


@attrs.define(eq=False)
class _Request:
    peer: int
    kind: str  # "consistency" | "entries"
    old: int  # consistency: old size; entries: start
    new: int  # consistency: new size; entries: target size
    count: int
    deadline: float
    target: SignedCheckpoint | None = None


@attrs.define(eq=False)
class _Log:
    log_id: bytes
    public_key: PublicKey
    mode: str  # "own" | "mirror" | "witness"
    name: str | None
    store: LogStore
    head: SignedCheckpoint | None = None
    head_hash: bytes = b""  # SHA-256 of the head's body
    cosigs: dict[bytes, Cosignature] = attrs.field(factory=dict)
    pending: OrderedDict[bytes, tuple[SignedCheckpoint, int | None]] = attrs.field(
        factory=OrderedDict
    )
    request: _Request | None = None
    # While mirroring: the range after `request`, asked of the same peer (a pipeline of two,
    # so the responder reads the next range while this node verifies and stores one).
    next_request: _Request | None = None
    # Peers that answered NoData, until when they are not asked again (or until the head
    # moves, or they tell us a new head: a mirror that was syncing may have the data then).
    refused: dict[int, float] = attrs.field(factory=dict)
    # The verified consistency proof from the previous head to this one: (previous size,
    # root of this head's tree at that size, proof); pushed with the head, served on request.
    head_proof: tuple[int, bytes, tuple[bytes, ...]] | None = None
    evidence: int = 0
    synced_entries: int = 0
    # How the head arrived: the key of the peer it came from first (None: signed here or
    # loaded), and how many times it was received since (the first time included).
    head_from: bytes | None = None
    head_receipts: int = 0
    head_digests: set[bytes] = attrs.field(factory=set)
    # Peers that said they do not mirror this log, until when they are not asked for its
    # entries (kept across heads, unlike `refused`: a witness stays a witness).
    no_entries: dict[int, float] = attrs.field(factory=dict)
    # The head's note with the cosignatures gathered (None: to be rebuilt), and whether the
    # store's copy lags behind it (written at the next tick: cosignatures are not worth a
    # write each).
    note_cache: bytes | None = None
    note_dirty: bool = False
    # Peers that have this node's cosignature of the head (in a Cosigned message, or in the
    # note of a head sent them): each gets it once.
    cosig_to: set[int] = attrs.field(factory=set)


@attrs.define(eq=False)
class _Peer:
    id: int
    key: bytes
    outbound: bool
    address: str
    connected_at: float
    msg_tokens: float
    byte_tokens: float
    refilled: float
    score: int = 0
    advertised: tuple[str, ...] = ()
    # What this peer is known to have of each log: (size, body hash) of the largest head it
    # sent us or we sent it, so nothing is echoed back and anti-entropy sends only news.
    told: dict[bytes, tuple[int, bytes]] = attrs.field(factory=dict)
    messages: int = 0
    bytes_in: int = 0
    # The name it cosigns under, and the start of its cosignature lines in a note.
    witness: str = ""
    cosig_marker: bytes = b""
    witness_key: PublicKey | None = None
    witness_key_id: bytes = b""


@attrs.frozen
class PeerInfo:
    id: int
    key: bytes
    outbound: bool
    address: str
    score: int
    connected_at: float
    messages: int
    bytes_in: int


@attrs.frozen
class LogInfo:
    log_id: bytes
    public_key: PublicKey
    mode: str
    name: str | None
    size: int  # entries stored (0 for a witness)
    head_size: int | None
    head_time: int | None
    cosignatures: int
    evidence: int
    syncing: bool
    head_from: bytes | None = None
    head_receipts: int = 0
    # The successor key the log's final head names (the log is retired), if any.
    successor: bytes | None = None


@attrs.frozen
class EvidenceRecord:
    id: str
    kind: str
    log_id: bytes
    public_key: bytes
    found_at: int
    evidence: ev.Evidence


# -- the engine ---------------------------------------------------------------------------------


class Engine:
    """One node's gossip logic (see the module docstring)."""

    def __init__(
        self,
        store: Store,
        config: EngineConfig,
        *,
        key: PrivateKey | None,
        rng: random.Random,
        now: float,
        verifier: Verifier | None = None,
    ) -> None:
        self.store = store
        self.config = config
        self.key = key
        self.rng = rng
        self.verifier = verifier if verifier is not None else Verifier()
        self._logs: dict[bytes, _Log] = {}
        self._peers: dict[int, _Peer] = {}
        self._seen: OrderedDict[bytes, None] = OrderedDict()
        self._evidence: dict[str, EvidenceRecord] = {}
        self._attention: set[bytes] = set()
        # Logs that want something no connected peer can give yet: out of `_attention` (so a
        # message does not cost a look at each), back when a peer tells a head of the log, a
        # refusal expires, or at anti-entropy.
        self._stalled: set[bytes] = set()
        self._dirty_notes: set[bytes] = set()
        # The latest head heard of each log not followed: log id -> (public key, note, head
        # message, peer), so a successor followed later is judged at once.
        self._ignored: OrderedDict[bytes, tuple[bytes, bytes, m.Head | None, int]] = OrderedDict()
        self._next_anti_entropy = now + config.anti_entropy_interval * rng.uniform(0.5, 1.0)
        self._now = now
        # The digest of the head message being judged (so a new head counts its receipts).
        self._arriving = b""
        # Heads pushed during the event being handled, per peer (sent batched at its end), and
        # heads waiting for their relay time: log id -> (when, head hash).
        self._pushes: dict[int, list[m.Head]] = {}
        self._relays: dict[bytes, tuple[float, bytes]] = {}
        self._own_id = key.public_key.log_id() if key is not None else None
        self._witness_name = witness_name(key.public_key) if key is not None else None
        self._load(now)

    # -- start-up --------------------------------------------------------------------------

    def _load(self, now: float) -> None:
        for log_id in self.store.log_ids():
            lg = self.store.log(log_id)
            mode = "own" if lg.own else lg.mode
            self._add_log(lg, mode, None)
        for follow in self.config.follow:
            log_id = follow.public_key.log_id()
            if log_id == self._own_id:
                continue
            view = self._logs.get(log_id)
            if view is None:
                self._open(follow.public_key, follow.mode, follow.name)
            else:
                view.name = follow.name
                if view.mode != follow.mode and view.mode != "own":
                    view.store.set_mode(follow.mode)
                    view.mode = follow.mode
        for _name, raw in self.store.records(b"V"):
            try:
                record = _decode_evidence_record(raw)
            except (DecodeError, TrustixError, ValueError, TypeError):
                continue  # a damaged record: verify-on-load keeps only what still proves
            self._evidence[record.id] = record
            view = self._logs.get(record.log_id)
            if view is not None:
                view.evidence += 1
        for view in list(self._logs.values()):
            self._follow_successor(view)

    def _add_log(self, lg: LogStore, mode: str, name: str | None) -> _Log:
        view = _Log(lg.log_id, lg.public_key, mode, name, lg)
        note = lg.head()
        signed: SignedCheckpoint | None = None
        if note is not None:
            try:
                signed = self.verifier.checkpoint(note, lg.public_key)
            except (DecodeError, VerificationError):
                signed = None
        stored = lg.checkpoint()
        if signed is None or (
            stored is not None and stored.checkpoint.size > signed.checkpoint.size
        ):
            signed = stored
        if signed is not None:
            view.head = signed
            view.head_hash = _sha(signed.checkpoint.body())
        self._logs[lg.log_id] = view
        if mode == "mirror" and signed is not None and lg.size < signed.checkpoint.size:
            self._attend_to(lg.log_id)
        return view

    def _follow_successor(self, view: _Log, out: list[Action] | None = None) -> None:
        """Follow the successor named by the log's final head, as the log is followed (and
        judge the successor's head, if one was heard of before it was followed)."""
        head = view.head
        if (
            head is None
            or head.checkpoint.successor is None
            or view.mode == "own"
            or view.evidence
            or not self.config.follow_successors
        ):
            return
        try:
            successor = PublicKey(head.checkpoint.successor)
        except (TrustixError, ValueError):
            return
        known = self._logs.get(successor.log_id())
        if known is None:
            if len(self._logs) < self.config.max_logs:
                self._open(successor, view.mode, view.name)
                heard = self._ignored.pop(successor.log_id(), None)
                p = self._peers.get(heard[3]) if heard is not None else None
                if heard is not None and p is not None and out is not None:
                    self._on_checkpoint(p, heard[0], heard[1], self._now, out, heard[2])
            return
        if known.name is None:
            known.name = view.name
        if known.mode == "witness" and view.mode == "mirror":
            known.store.set_mode("mirror")
            known.mode = "mirror"
            if known.head is not None:
                self._attend_to(known.log_id)

    def _open(self, public_key: PublicKey, mode: str, name: str | None) -> _Log:
        lg = self.store.open_log(public_key, own=False, mode=mode)
        if lg.mode != mode:
            lg.set_mode(mode)
        return self._add_log(lg, mode, name)

    # -- queries (for status, the CLI and simulations) ------------------------------------------

    def logs(self) -> list[LogInfo]:
        return [self._log_info(v) for v in self._logs.values()]

    def _log_info(self, v: _Log) -> LogInfo:
        head = v.head.checkpoint if v.head is not None else None
        return LogInfo(
            v.log_id,
            v.public_key,
            v.mode,
            v.name,
            0 if v.mode == "witness" else v.store.size,
            None if head is None else head.size,
            None if head is None else head.time,
            len(v.cosigs),
            v.evidence,
            v.mode == "mirror" and head is not None and v.store.size < head.size,
            v.head_from,
            v.head_receipts,
            None if head is None else head.successor,
        )

    def log_info(self, log_id: bytes) -> LogInfo | None:
        v = self._logs.get(log_id)
        return None if v is None else self._log_info(v)

    def head_note(self, log_id: bytes) -> bytes | None:
        """The head with the cosignatures gathered for it (what light clients are given)."""
        v = self._logs.get(log_id)
        if v is None or v.head is None:
            return None
        return self._head_note(v)

    def peers(self) -> list[PeerInfo]:
        return [
            PeerInfo(
                p.id, p.key, p.outbound, p.address, p.score, p.connected_at, p.messages, p.bytes_in
            )
            for p in self._peers.values()
        ]

    def evidence(self) -> list[EvidenceRecord]:
        return sorted(self._evidence.values(), key=lambda r: (r.found_at, r.id))

    def _attend_to(self, log_id: bytes) -> None:
        self._attention.add(log_id)
        self._stalled.discard(log_id)

    def next_deadline(self) -> float:
        deadline = self._next_anti_entropy
        for log_id in self._stalled:
            view = self._logs[log_id]
            later = [until for until in view.refused.values() if until > self._now]
            if later:
                deadline = min(deadline, min(later))
        if self._relays:
            deadline = min(deadline, min(due for due, _ in self._relays.values()))
        for log_id in self._attention:
            view = self._logs[log_id]
            if view.request is not None:
                deadline = min(deadline, view.request.deadline)
            else:
                later = [until for until in view.refused.values() if until > self._now]
                if later:
                    deadline = min(deadline, min(later))
        return deadline

    # -- events ---------------------------------------------------------------------------------

    def peer_connected(
        self, peer: int, key: bytes, *, outbound: bool, address: str, now: float
    ) -> list[Action]:
        self._now = now
        c = self.config
        p = self._peers[peer] = _Peer(
            peer, key, outbound, address, now, c.peer_message_burst, c.peer_byte_burst, now
        )
        with contextlib.suppress(TrustixError, ValueError):
            p.witness_key = PublicKey(key)
            p.witness = witness_name(p.witness_key)
            p.witness_key_id = cosignature_key_id(p.witness, p.witness_key)
            p.cosig_marker = _SIGNATURE_LINE + p.witness.encode() + b" "
        out: list[Action] = [Send(peer, m.Hello(tuple(c.advertise[:8])))]
        out += self._heads_for(peer, want_reply=True)
        # Evidence held goes to every new peer: the heads of an exposed log are no longer
        # pushed, so a node that joins (or comes back) after the exposure learns it so.
        for record in self.evidence()[-EVIDENCE_ON_CONNECT:]:
            out.append(Send(peer, ev.to_message(record.evidence)))
        out.append(Send(peer, m.GetPeers()))
        return out

    def _finish(self, out: list[Action]) -> list[Action]:
        """The actions of one event, with the heads pushed during it batched per peer."""
        if self._relays:
            self._relay_due(self._now)
        pushes = self._pushes
        if pushes:
            self._pushes = {}
            for peer, heads in pushes.items():
                for i in range(0, len(heads), m.MAX_HEADS):
                    out.append(Send(peer, m.Heads(tuple(heads[i : i + m.MAX_HEADS]), False)))
        return out

    def peer_disconnected(self, peer: int, now: float) -> list[Action]:
        self._now = now
        self._peers.pop(peer, None)
        for view in self._logs.values():
            if view.request is not None and view.request.peer == peer:
                view.request = view.next_request = None
                self._attend_to(view.log_id)
        return self._finish(self._attend(now))

    def local_checkpoint(self, signed: SignedCheckpoint, now: float) -> list[Action]:
        """This node signed a checkpoint of its own log: push it to every peer, with the
        consistency proof from the previous one."""
        self._now = now
        view = self._logs.get(signed.log_id)
        if view is None:
            view = self._add_log(self.store.log(signed.log_id), "own", None)
        out: list[Action] = []
        previous = view.head
        if previous is not None and previous.checkpoint.body() == signed.checkpoint.body():
            return out
        proof: tuple[int, bytes, tuple[bytes, ...]] | None = None
        size = signed.checkpoint.size
        if previous is not None and 0 < previous.checkpoint.size < size <= view.store.size:
            old = previous.checkpoint.size
            proof = (old, view.store.root(old), tuple(view.store.consistency_proof(old, size)))
        self._set_head(view, signed, None, out, proof)
        return self._finish(out)

    def tick(self, now: float) -> list[Action]:
        self._now = now
        out: list[Action] = []
        for log_id in sorted(self._attention):  # requests are only ever made for these
            view = self._logs[log_id]
            if view.refused:
                view.refused = {p: until for p, until in view.refused.items() if until > now}
            request = view.request
            if request is not None and request.deadline <= now:
                view.request = view.next_request = None
                self._attend_to(view.log_id)
                self._penalise(request.peer, 5, f"no answer to a {request.kind} request", out)
        for log_id in sorted(self._stalled):
            view = self._logs[log_id]
            if any(until <= now for until in view.refused.values()):
                view.refused = {p: until for p, until in view.refused.items() if until > now}
                self._attend_to(log_id)
        if now >= self._next_anti_entropy:
            for log_id in sorted(self._stalled):
                self._attend_to(log_id)
            for log_id in sorted(self._dirty_notes):
                self._flush_note(log_id)
            interval = self.config.anti_entropy_interval
            self._next_anti_entropy = now + interval * self.rng.uniform(0.9, 1.1)
            if self._peers:
                peer = self.rng.choice(sorted(self._peers))
                out += self._heads_for(peer, want_reply=True)
        out += self._attend(now)
        return self._finish(out)

    def message(self, peer: int, msg: wire.Message, size: int, now: float) -> list[Action]:
        """A message from a connected peer (`size`: its encoded size, for the byte budget)."""
        self._now = now
        self._arriving = b""
        p = self._peers.get(peer)
        if p is None:
            return []
        out: list[Action] = []
        if not self._spend(p, size, now):
            out.append(Disconnect(peer, "message or byte rate budget exceeded"))
            self._peers.pop(peer, None)
            return out
        self._dispatch(p, msg, now, out)
        out += self._attend(now)
        return self._finish(out)

    # -- budgets and scores ---------------------------------------------------------------------

    def _spend(self, p: _Peer, size: int, now: float) -> bool:
        c = self.config
        elapsed = max(0.0, now - p.refilled)
        p.refilled = now
        p.msg_tokens = min(c.peer_message_burst, p.msg_tokens + elapsed * c.peer_message_rate)
        p.byte_tokens = min(c.peer_byte_burst, p.byte_tokens + elapsed * c.peer_byte_rate)
        p.msg_tokens -= 1
        p.byte_tokens -= size
        p.messages += 1
        p.bytes_in += size
        return p.msg_tokens >= 0 and p.byte_tokens >= 0

    def _penalise(self, peer: int, amount: int, reason: str, out: list[Action]) -> None:
        p = self._peers.get(peer)
        if p is None:
            return
        p.score -= amount
        if p.score <= self.config.ban_score:
            self._peers.pop(peer, None)
            out.append(Disconnect(peer, reason))

    def _drop(self, peer: int, reason: str, out: list[Action]) -> None:
        """A peer sent data that fails a check no honest node's data fails."""
        if self._peers.pop(peer, None) is not None:
            out.append(Disconnect(peer, reason))

    def _reward(self, p: _Peer) -> None:
        p.score = min(100, p.score + 1)

    # -- dispatch ---------------------------------------------------------------------------------

    def _dispatch(self, p: _Peer, msg: wire.Message, now: float, out: list[Action]) -> None:
        match msg:
            case m.Heads(heads, want_reply):
                for head in heads:
                    self._on_checkpoint(p, head.public_key, head.note, now, out, head)
                    if p.id not in self._peers:
                        return
                if want_reply:
                    out += self._heads_for(p.id, want_reply=False)
            case m.Hello(addresses):
                p.advertised = addresses
                if addresses:  # so the shell can dial it back later, pinned to its key
                    key = PublicKey(p.key).to_base64()
                    out.append(LearnedPeers(p.id, tuple(f"{key}@{a}" for a in addresses[:2])))
            case m.GetPeers():
                out.append(Send(p.id, m.Peers(self._peer_addresses(exclude=p.id))))
            case m.Peers(addresses):
                if addresses:
                    out.append(LearnedPeers(p.id, addresses))
            case m.GetConsistency():
                out.append(Send(p.id, self._serve_consistency(msg)))
            case m.Consistency():
                self._on_consistency(p, msg, now, out)
            case m.GetEntries():
                out.append(Send(p.id, self._serve_entries(msg)))
            case m.GetPathEntries(out_path):
                out.append(Send(p.id, m.PathEntries(out_path, tuple(self.path_hits(out_path)))))
            case m.Entries():
                self._on_entries(p, msg, now, out)
            case m.NoData(log_id, reason):
                view = self._logs.get(log_id)
                if view is not None and view.request is not None and view.request.peer == p.id:
                    if view.request.kind == "entries" and reason in _NOT_MIRRORING:
                        view.no_entries[p.id] = now + self.config.not_mirroring_retry
                    view.request = view.next_request = None
                    view.refused[p.id] = now + self.config.retry_after
                    self._attend_to(log_id)
            case m.Cosigned():
                self._on_cosigned(p, msg, now, out)
            case ev.EvidenceMessage():
                self._on_evidence(p, msg, now, out)
            case wire.Ping(nonce):
                out.append(Send(p.id, wire.Pong(nonce)))
            case _:
                pass  # Pong, Error: the shell's business

    def _peer_addresses(self, exclude: int) -> tuple[str, ...]:
        addresses: list[str] = []
        for p in self._peers.values():
            if p.id == exclude or not p.advertised:
                continue
            key = PublicKey(p.key).to_base64()
            addresses += [f"{key}@{a}" for a in p.advertised[:2]]
        self.rng.shuffle(addresses)
        return tuple(addresses[: m.MAX_PEERS])

    # -- heads ------------------------------------------------------------------------------------

    def _head_note(self, view: _Log) -> bytes:
        assert view.head is not None
        if view.note_cache is not None:
            return view.note_cache
        note = plain_note(view.head)
        if view.cosigs:
            with contextlib.suppress(LocalProtocolError):  # too many: serve the plain note
                note = add_cosignatures(
                    SignedCheckpoint(view.head.checkpoint, note), view.cosigs.values()
                )
        view.note_cache = note
        return note

    def _flush_note(self, log_id: bytes) -> None:
        """Write the head's note with its cosignatures to the store, if it changed."""
        self._dirty_notes.discard(log_id)
        view = self._logs.get(log_id)
        if view is None or not view.note_dirty or view.head is None:
            return
        view.note_dirty = False
        if view.mode != "own":
            view.store.set_head(self._head_note(view))

    def _head_message(self, view: _Log) -> m.Head:
        if view.head_proof is None:
            return m.Head(view.public_key.raw, self._head_note(view), 0, None, ())
        old, prefix_root, proof = view.head_proof
        return m.Head(view.public_key.raw, self._head_note(view), old, prefix_root, proof)

    def _heads_for(self, peer: int, *, want_reply: bool) -> list[Action]:
        """Heads this peer is not known to have, in messages of at most MAX_HEADS."""
        p = self._peers.get(peer)
        if p is None:
            return []
        heads: list[m.Head] = []
        for view in self._logs.values():
            if view.head is None or view.evidence:
                continue
            told = p.told.get(view.log_id)
            if told is not None and (
                told[1] == view.head_hash or told[0] > view.head.checkpoint.size
            ):
                continue  # it has this head, or a larger one
            p.told[view.log_id] = (view.head.checkpoint.size, view.head_hash)
            view.cosig_to.add(p.id)
            heads.append(self._head_message(view))
        out: list[Action] = []
        for i in range(0, len(heads), m.MAX_HEADS):
            out.append(Send(peer, m.Heads(tuple(heads[i : i + m.MAX_HEADS]), False)))
        if want_reply:
            if out:
                last = out[-1]
                assert isinstance(last, Send) and isinstance(last.message, m.Heads)
                out[-1] = Send(peer, m.Heads(last.message.heads, True))
            else:
                out.append(Send(peer, m.Heads((), True)))
        return out

    def _push(self, view: _Log, source: int | None, out: list[Action]) -> None:
        """Send the head once to every peer not known to have it, never back to its source.

        A head signed here goes at once; one learned from a peer after `relay_delay`, so that
        the copies its other peers send in the meantime (flooding delivers most of them at
        about the same moment) spare them a copy from us.
        """
        if view.head is None or view.evidence:
            return
        if source is not None and self.config.relay_delay > 0:
            delay = self.config.relay_delay * (1 + 2 * self.rng.random())
            self._relays[view.log_id] = (self._now + delay, view.head_hash)
            return
        self._send_head(view)

    def _send_head(self, view: _Log) -> None:
        if view.head is None or view.evidence:
            return
        head = self._head_message(view)
        for p in self._peers.values():
            told = p.told.get(view.log_id)
            if told is not None and (
                told[1] == view.head_hash or told[0] > view.head.checkpoint.size
            ):
                continue  # it sent us this head, or we sent it: never twice, never back
            p.told[view.log_id] = (view.head.checkpoint.size, view.head_hash)
            view.cosig_to.add(p.id)
            self._pushes.setdefault(p.id, []).append(head)

    def _relay_due(self, now: float) -> None:
        """Relay the heads whose delay is over (and that are still the head)."""
        for log_id, (due, head_hash) in sorted(self._relays.items()):
            if due > now:
                continue
            del self._relays[log_id]
            view = self._logs.get(log_id)
            if view is not None and view.head_hash == head_hash:
                self._send_head(view)

    def _view_for(self, public_key_raw: bytes) -> _Log | None:
        log_id = _sha(public_key_raw)
        view = self._logs.get(log_id)
        if view is not None:
            return view
        mode = self.config.follow_unknown
        if mode == "ignore" or len(self._logs) >= self.config.max_logs:
            return None
        try:
            public_key = PublicKey(public_key_raw)
        except (TrustixError, ValueError):
            return None
        return self._open(public_key, mode, None)

    def _seen_before(self, digest: bytes) -> bool:
        if digest in self._seen:
            self._seen.move_to_end(digest)
            return True
        self._seen[digest] = None
        if len(self._seen) > self.config.seen_notes:
            self._seen.popitem(last=False)
        return False

    def _on_checkpoint(
        self,
        p: _Peer,
        public_key_raw: bytes,
        note: bytes,
        now: float,
        out: list[Action],
        head: m.Head | None = None,
        *,
        count: bool = True,
    ) -> None:
        digest = _sha(public_key_raw + note)
        if self._seen_before(digest):
            known = self._logs.get(_sha(public_key_raw))
            if count and known is not None and digest in known.head_digests:
                known.head_receipts += 1
            return  # a duplicate: no signature check, no store read
        view = self._view_for(public_key_raw)
        if view is None:
            # Not followed (yet): a successor this node may follow soon, once the final
            # checkpoint of the log it follows arrives (perhaps later in this very message).
            self._seen.pop(digest, None)
            ignored = self._ignored
            ignored[_sha(public_key_raw)] = (public_key_raw, note, head, p.id)
            ignored.move_to_end(_sha(public_key_raw))
            while len(ignored) > IGNORED_HEADS:
                ignored.popitem(last=False)
            return
        try:
            signed = self.verifier.checkpoint(note, view.public_key)
        except (DecodeError, VerificationError) as exc:
            self._seen.pop(digest, None)
            # Honest peers forward only what verified: this one is lying or broken.
            self._drop(p.id, f"invalid checkpoint for log {view.log_id.hex()[:16]}: {exc}", out)
            return
        body_hash = _sha(signed.checkpoint.body())
        told = p.told.get(view.log_id)
        if told is None or signed.checkpoint.size >= told[0]:
            # What the peer is known to have: a peer that shows an older checkpoint still
            # has the newer one it showed before.
            p.told[view.log_id] = (signed.checkpoint.size, body_hash)
        view.refused.pop(p.id, None)
        if view.log_id in self._stalled:
            self._attend_to(view.log_id)
        self._reward(p)
        if body_hash == view.head_hash:
            view.head_digests.add(digest)
            view.head_receipts += count
            self._exchange_cosignatures(p, view, note, out)
            return
        self._arriving = digest
        ours = view.head
        if (
            head is not None
            and head.prefix_root is not None
            and ours is not None
            and view.mode != "own"
            and head.prev_size == ours.checkpoint.size
            and ours.checkpoint.size < signed.checkpoint.size
        ):
            # The sender proved the step from its previous head: if that is our head, the
            # note is judged here and now.
            try:
                merkle.verify_consistency(
                    head.prev_size,
                    signed.checkpoint.size,
                    head.proof,
                    head.prefix_root,
                    signed.checkpoint.root,
                )
            except VerificationError:
                self._drop(p.id, "invalid consistency proof with a head", out)
                return
            else:
                self._learn_prefix(
                    view, signed, head.prev_size, head.prefix_root, head.proof, p.id, now, out
                )
                if view.head_hash == body_hash:
                    self._exchange_cosignatures(p, view, note, out)
                return
        self._judge(view, signed, p.id, now, out)
        if view.head_hash == body_hash:
            self._exchange_cosignatures(p, view, note, out)

    def _exchange_cosignatures(self, p: _Peer, view: _Log, note: bytes, out: list[Action]) -> None:
        """A peer showed it has our head: keep its own cosignature if its note carries one,
        and give it ours if it does not have it yet."""
        if view.head is None or p.id not in self._peers:
            return
        if p.cosig_marker and p.cosig_marker in note and p.key not in view.cosigs:
            self._take_cosignature(p, view, note, out)
        if (
            self.key is not None
            and p.id not in view.cosig_to
            and (own := view.cosigs.get(self.key.public_key.raw)) is not None
        ):
            view.cosig_to.add(p.id)
            out.append(
                Send(
                    p.id,
                    m.Cosigned(
                        view.public_key.raw,
                        view.head.note,
                        self.key.public_key.raw,
                        own.time,
                        own.signature,
                    ),
                )
            )

    def _take_cosignature(self, p: _Peer, view: _Log, note: bytes, out: list[Action]) -> None:
        """The sender's own cosignature of our head, from the note it sent (one hop: the
        other cosignatures in it are the sender's business)."""
        assert view.head is not None
        # The note verified as a whole already: only the sender's line is read here.
        start = note.find(p.cosig_marker) + 1
        end = note.find(b"\n", start)
        witness, key_id = p.witness_key, p.witness_key_id
        if witness is None:
            return
        try:
            sig = parse_signature_line(note[start:end].decode("utf-8"))
        except (DecodeError, TrustixError, ValueError):
            return
        found = [sig] if sig.key_name == p.witness and sig.key_id == key_id else []
        for sig in found[:1]:
            if len(sig.signature) != 72:
                self._drop(p.id, "invalid cosignature in a note", out)
                return
            c = Cosignature(
                p.witness, key_id, int.from_bytes(sig.signature[:8], "big"), sig.signature[8:]
            )
            try:
                self.verifier.cosignature(view.head.checkpoint, c, witness)
            except VerificationError:
                self._drop(p.id, "invalid cosignature in a note", out)
                return
            self._attach_cosignature(view, p.key, c)

    def _attach_cosignature(self, view: _Log, witness_key: bytes, c: Cosignature) -> None:
        if witness_key in view.cosigs or len(view.cosigs) >= 32:
            return
        view.cosigs[witness_key] = c
        view.note_cache = None
        if view.mode != "own":
            view.note_dirty = True
            self._dirty_notes.add(view.log_id)

    # -- judging -----------------------------------------------------------------------------------

    def _judge(
        self, view: _Log, c: SignedCheckpoint, source: int | None, now: float, out: list[Action]
    ) -> None:
        """Accept, keep for later, or turn into evidence: checkpoint `c` of `view`'s log."""
        head = view.head
        cp = c.checkpoint
        if head is None:
            if view.mode == "own":
                self._judge_own(view, c, out)
                return
            self._set_head(view, c, source, out)
            return
        h = head.checkpoint
        if cp.body() == h.body():
            return
        if _contradicts(h, cp):
            self._record_retirement_conflict(view, head, c, source, out)
            return
        if _contradicts(cp, h):
            self._record_retirement_conflict(view, c, head, source, out)
            return
        if cp.size == h.size:
            if cp.root != h.root:
                self._record_split_view(view, head, c, source, out)
            elif cp.successor is not None and h.successor is None and view.mode != "own":
                # The log's final checkpoint, over the head's tree: the log is closed.
                self._set_head(view, c, source, out, view.head_proof)
                self._store_final(view, c)
            return  # the same tree signed at another time: nothing to learn
        if view.mode == "own":
            self._judge_own(view, c, out)
            return
        if cp.size == 0:
            return  # the empty tree is a prefix of every tree
        if view.mode == "mirror" and self._judge_locally(view, c, source, out):
            return
        self._keep(view, c, source)
        if cp.size > h.size:
            self._ask_consistency(view, h.size, cp.size, source, now, out)
        else:
            self._ask_consistency(view, cp.size, h.size, source, now, out)

    def _judge_own(self, view: _Log, c: SignedCheckpoint, out: list[Action]) -> None:
        """A checkpoint of this node's own log that it did not sign here (a stolen key, or an
        old checkpoint): judged against the own stored tree, which holds every entry."""
        lg = view.store
        cp = c.checkpoint
        if cp.size == 0 or view.head is None:
            return
        if cp.size > lg.size:
            # Larger than anything signed here: only a stolen key signs that.  It proves
            # nothing by itself; with a consistency proof it would (not asked for own logs).
            return
        root = lg.root(cp.size)
        if root != cp.root:
            newer = view.head
            if newer.checkpoint.size == cp.size:
                self._record_split_view(view, newer, c, None, out)
            elif newer.checkpoint.size > cp.size:
                proof = lg.consistency_proof(cp.size, newer.checkpoint.size)
                self._record_inconsistent(view, c, newer, root, proof, None, out)

    def _judge_locally(
        self, view: _Log, c: SignedCheckpoint, source: int | None, out: list[Action]
    ) -> bool:
        """A mirror judges a checkpoint no larger than its stored, verified checkpoint from
        its own entries.  True when judged."""
        lg = view.store
        stored = lg.checkpoint()
        cp = c.checkpoint
        if stored is None or cp.size > stored.checkpoint.size:
            return False
        root = lg.root(cp.size)
        if root == cp.root:
            return True
        s = stored.checkpoint
        if s.size == cp.size:
            self._record_split_view(view, stored, c, source, out)
        else:
            proof = lg.consistency_proof(cp.size, s.size)
            self._record_inconsistent(view, c, stored, root, proof, source, out)
        return True

    def _keep(self, view: _Log, c: SignedCheckpoint, source: int | None) -> None:
        key = _sha(c.checkpoint.body())
        if key in view.pending:
            return
        view.pending[key] = (c, source)
        while len(view.pending) > self.config.max_pending_per_log:
            view.pending.popitem(last=False)
        self._attend_to(view.log_id)

    def _set_head(
        self,
        view: _Log,
        c: SignedCheckpoint,
        source: int | None,
        out: list[Action],
        proof: tuple[int, bytes, tuple[bytes, ...]] | None = None,
    ) -> None:
        if view.head is not None and _contradicts(view.head.checkpoint, c.checkpoint):
            self._record_retirement_conflict(view, view.head, c, source, out)
            return
        plain = SignedCheckpoint(c.checkpoint, plain_note(c))
        view.head = plain
        view.head_hash = _sha(c.checkpoint.body())
        view.head_proof = proof
        view.cosigs = {}
        view.cosig_to = set()
        view.note_cache = None
        view.note_dirty = False
        self._dirty_notes.discard(view.log_id)
        view.refused.clear()
        peer = self._peers.get(source) if source is not None else None
        view.head_from = peer.key if peer is not None else None
        view.head_receipts = 1 if peer is not None else 0
        view.head_digests = {self._arriving} if peer is not None and self._arriving else set()
        if view.mode != "own":
            view.store.set_head(plain.note)
        out.append(Accepted(view.log_id, c.checkpoint.size, view.head_hash, source))
        if view.mode == "mirror":
            self._attend_to(view.log_id)
        if view.mode != "own" and self.key is not None and self.config.cosign:
            self._cosign(view, out)
        self._push(view, source, out)
        if c.checkpoint.successor is not None:
            self._follow_successor(view, out)

    def _store_final(self, view: _Log, c: SignedCheckpoint) -> None:
        """A mirror that holds every entry of a final head keeps it as its stored checkpoint
        (what it serves entries against, and what `_judge_locally` compares with)."""
        lg = view.store
        if view.mode != "mirror" or lg.size != c.checkpoint.size:
            return
        stored = lg.checkpoint()
        if stored is not None and stored.checkpoint.successor is not None:
            return
        with contextlib.suppress(TrustixError):
            lg.set_checkpoint(SignedCheckpoint(c.checkpoint, plain_note(c)))

    def _cosign(self, view: _Log, out: list[Action]) -> None:
        assert view.head is not None and self.key is not None and self._witness_name is not None
        if view.evidence:
            return
        c = cosign(view.head.checkpoint, self._witness_name, self.key, view.head.checkpoint.time)
        view.cosigs[self.key.public_key.raw] = c
        view.note_cache = None
        # To the peers that have this head (they will not be sent it); the others get the
        # cosignature in the note of the head when it is relayed to them.
        msg = m.Cosigned(
            view.public_key.raw, view.head.note, self.key.public_key.raw, c.time, c.signature
        )
        for p in self._peers.values():
            told = p.told.get(view.log_id)
            if told is not None and told[1] == view.head_hash:
                view.cosig_to.add(p.id)
                out.append(Send(p.id, msg))

    # -- consistency ----------------------------------------------------------------------------

    def _pick_peer(
        self, view: _Log, size: int, prefer: int | None, *, entries: bool = False
    ) -> int | None:
        """A connected peer likely to hold a tree of `size` for this log (and its entries)."""
        now = self._now
        refused = {peer for peer, until in view.refused.items() if until > now}
        if entries and view.no_entries:
            view.no_entries = {p: until for p, until in view.no_entries.items() if until > now}
            refused.update(view.no_entries)
        if prefer is not None and prefer in self._peers and prefer not in refused:
            told = self._peers[prefer].told.get(view.log_id)
            if told is not None and told[0] >= size:
                return prefer
        candidates = [
            p.id
            for p in self._peers.values()
            if (t := p.told.get(view.log_id)) is not None
            and t[0] >= size
            and p.id not in refused
            and p.score > -50
        ]
        if not candidates:
            return None
        return self.rng.choice(sorted(candidates))

    def _ask_consistency(
        self, view: _Log, old: int, new: int, prefer: int | None, now: float, out: list[Action]
    ) -> None:
        if view.request is not None or old >= new or old == 0:
            return
        peer = self._pick_peer(view, new, prefer)
        if peer is None:
            return
        view.request = _Request(peer, "consistency", old, new, 0, now + self.config.request_timeout)
        out.append(Send(peer, m.GetConsistency(view.log_id, old, new)))

    def serve_consistency(self, msg: m.GetConsistency) -> m.Consistency | m.NoData:
        """What this node answers to `msg` (peers and light clients alike)."""
        reply = self._serve_consistency(msg)
        assert isinstance(reply, m.Consistency | m.NoData)
        return reply

    def _serve_consistency(self, msg: m.GetConsistency) -> wire.Message:
        view = self._logs.get(msg.log_id)
        if view is None:
            return m.NoData(msg.log_id, NOT_FOLLOWED)
        lg = view.store
        old, new = msg.old_size, msg.new_size
        if (
            view.head is not None
            and view.head_proof is not None
            and view.head_proof[0] == old
            and view.head.checkpoint.size == new
        ):
            _, prefix_root, proof = view.head_proof
            return m.Consistency(msg.log_id, old, prefix_root, view.head.note, proof)
        if view.mode == "witness":
            return m.NoData(msg.log_id, "this node only witnesses that log")
        if not old < new <= lg.size:
            return m.NoData(msg.log_id, "no tree of that size here")
        note = self._note_of_size(view, new)
        if note is None:
            return m.NoData(msg.log_id, "no checkpoint of that size here")
        path = tuple(lg.consistency_proof(old, new))
        return m.Consistency(msg.log_id, old, lg.root(old), note, path)

    def _note_of_size(self, view: _Log, size: int) -> bytes | None:
        if view.head is not None and view.head.checkpoint.size == size:
            return view.head.note
        return view.store.checkpoint_of_size(size)

    def _asked(
        self, p: _Peer, log_id: bytes, kind: str, old: int, out: list[Action]
    ) -> tuple[_Log, _Request] | None:
        """The log and request a reply answers, or None (and a penalty) if it was not asked."""
        view = self._logs.get(log_id)
        request = view.request if view is not None else None
        if (
            view is None
            or request is None
            or (request.peer, request.kind, request.old)
            != (
                p.id,
                kind,
                old,
            )
        ):
            self._penalise(p.id, 5, f"unsolicited {kind} reply", out)
            return None
        return view, request

    def _on_consistency(self, p: _Peer, msg: m.Consistency, now: float, out: list[Action]) -> None:
        found = self._asked(p, msg.log_id, "consistency", msg.old_size, out)
        if found is None:
            return
        view, request = found
        view.request = None
        self._attend_to(view.log_id)
        try:
            n = self.verifier.checkpoint(msg.note, view.public_key)
        except (DecodeError, VerificationError) as exc:
            self._drop(p.id, f"consistency reply with an invalid checkpoint: {exc}", out)
            return
        ncp = n.checkpoint
        if ncp.size != request.new:
            self._drop(p.id, "consistency reply for another size than asked", out)
            return
        try:
            merkle.verify_consistency(msg.old_size, ncp.size, msg.proof, msg.prefix_root, ncp.root)
        except VerificationError:
            self._drop(p.id, f"invalid consistency proof for log {view.log_id.hex()[:16]}", out)
            return
        self._reward(p)
        self._learn_prefix(view, n, msg.old_size, msg.prefix_root, tuple(msg.proof), p.id, now, out)

    def _learn_prefix(
        self,
        view: _Log,
        n: SignedCheckpoint,
        old: int,
        prefix_root: bytes,
        proof: tuple[bytes, ...],
        source: int,
        now: float,
        out: list[Action],
    ) -> None:
        """Signed checkpoint `n`'s tree has `prefix_root` at size `old` (proof verified)."""
        # Every signed checkpoint of size `old` we hold with another root is now exposed.
        known = [c for c, _ in view.pending.values() if c.checkpoint.size == old]
        if view.head is not None and view.head.checkpoint.size == old:
            known.append(view.head)
        for c in known:
            if c.checkpoint.root != prefix_root:
                self._record_inconsistent(view, c, n, prefix_root, proof, source, out)
                if view.evidence:
                    break
        for key in [k for k, (c, _) in view.pending.items() if c.checkpoint.size == old]:
            del view.pending[key]
        if view.evidence:
            return
        head = view.head
        if (
            head is not None
            and head.checkpoint.size == old
            and head.checkpoint.root == prefix_root
            and n.checkpoint.size > old
        ):
            # `n` extends the head.
            self._set_head(view, n, source, out, (old, prefix_root, proof))
        elif head is not None and n.checkpoint.size == head.checkpoint.size:
            if n.checkpoint.root != head.checkpoint.root:
                self._record_split_view(view, head, n, source, out)
        elif head is not None and n.checkpoint.size > head.checkpoint.size:
            self._keep(view, n, source)
        self._rejudge(view, now, out)

    def _rejudge(self, view: _Log, now: float, out: list[Action]) -> None:
        """Judge kept checkpoints again now that the head or the stored entries moved."""
        if view.request is not None or view.evidence:
            return
        items = list(view.pending.items())
        view.pending.clear()
        for _key, (c, source) in items:
            self._judge(view, c, source, now, out)
            if view.evidence:
                view.pending.clear()
                return

    # -- entries ----------------------------------------------------------------------------------

    def _ask_entries(self, view: _Log, now: float, out: list[Action]) -> None:
        head = view.head
        lg = view.store
        if head is None or lg.size >= head.checkpoint.size:
            return
        target = head.checkpoint.size
        first = view.request
        if first is None:
            peer = self._pick_peer(view, target, None, entries=True)
            if peer is None:
                return
            count = min(self.config.entries_per_request, target - lg.size, m.MAX_ENTRIES)
            first = view.request = _Request(
                peer, "entries", lg.size, target, count, now + self.config.request_timeout, head
            )
            out.append(Send(peer, m.GetEntries(view.log_id, lg.size, count, target)))
        if first.kind != "entries" or first.new != target or view.next_request is not None:
            return
        start = first.old + first.count
        if start < target:
            count = min(self.config.entries_per_request, target - start, m.MAX_ENTRIES)
            view.next_request = _Request(
                first.peer, "entries", start, target, count, first.deadline, head
            )
            out.append(Send(first.peer, m.GetEntries(view.log_id, start, count, target)))

    def path_hits(self, out_path: str) -> list[m.PathHit]:
        """Every entry about `out_path` in the logs this node holds entries of, each with its
        inclusion proof against the log's stored checkpoint (the latest one its entries
        rebuild), for light clients.  At most MAX_PATH_HITS."""
        hits: list[m.PathHit] = []
        for log_id in sorted(self._logs):
            view = self._logs[log_id]
            if view.mode == "witness":
                continue
            lg = view.store
            stored = lg.checkpoint()
            # A bare `/nix/store/<hash part>` asks for the path with that hash, whatever name.
            bare = len(out_path.rpartition("/")[2]) == 32 and "-" not in out_path.rpartition("/")[2]
            indices = lg.lookup_prefix(out_path + "-") if bare else lg.lookup(out_path)
            for index in indices:
                if len(hits) >= m.MAX_PATH_HITS:
                    return hits
                if stored is not None and index < stored.checkpoint.size:
                    size = stored.checkpoint.size
                    note = self._note_with_cosignatures(view, stored)
                    proof = tuple(lg.inclusion_proof(index, size))
                    hits.append(m.PathHit(view.public_key.raw, index, lg.leaf(index), note, proof))
                else:
                    hits.append(m.PathHit(view.public_key.raw, index, lg.leaf(index), None, ()))
        return hits

    def _note_with_cosignatures(self, view: _Log, signed: SignedCheckpoint) -> bytes:
        """The note of `signed`, with the cosignatures gathered if it is the head."""
        if view.head is not None and view.head.checkpoint.body() == signed.checkpoint.body():
            return self._head_note(view)
        return signed.note

    def _serve_entries(self, msg: m.GetEntries) -> wire.Message:
        view = self._logs.get(msg.log_id)
        if view is None:
            return m.NoData(msg.log_id, NOT_FOLLOWED)
        if view.mode == "witness":
            return m.NoData(msg.log_id, NOT_MIRRORED)
        lg = view.store
        target = msg.target_size
        if not msg.start < target <= lg.size:
            return m.NoData(msg.log_id, "no entries of that range here")
        note = self._note_of_size(view, target)
        if note is None:
            return m.NoData(msg.log_id, "no checkpoint of that size here")
        end = min(target, msg.start + msg.count)
        leaves: list[bytes] = []
        budget = self.config.max_reply_bytes
        for _index, leaf in lg.leaves(msg.start, end):
            budget -= len(leaf) + 5
            if leaves and budget < 0:
                break
            leaves.append(leaf)
        stop = msg.start + len(leaves)
        proof = lg.consistency_proof(stop, target) if stop < target else []
        return m.Entries(msg.log_id, msg.start, tuple(leaves), note, tuple(proof))

    def _on_entries(self, p: _Peer, msg: m.Entries, now: float, out: list[Action]) -> None:
        found = self._asked(p, msg.log_id, "entries", msg.start, out)
        if found is None:
            return
        view, request = found
        view.request, view.next_request = view.next_request, None
        self._attend_to(view.log_id)
        lg = view.store
        if msg.start != lg.size or len(msg.leaves) > request.count:
            # Stale (the store moved meanwhile, or the range before it came back short):
            # drop the rest of the pipeline and ask again.
            view.request = view.next_request = None
            return
        try:
            n = self.verifier.checkpoint(msg.note, view.public_key)
        except (DecodeError, VerificationError) as exc:
            self._drop(p.id, f"entries with an invalid checkpoint: {exc}", out)
            return
        asked = request.target
        assert asked is not None
        if n.checkpoint.size != asked.checkpoint.size:
            self._drop(p.id, "entries proven against another size than asked", out)
            return
        if n.checkpoint.root != asked.checkpoint.root:
            # Another signed tree of the size asked for: a split view, whatever the entries say.
            self._record_split_view(view, asked, n, p.id, out)
            return
        try:
            records = [LeafRecord(leaf, decode_entry(leaf).out_path) for leaf in msg.leaves]
        except DecodeError as exc:
            self._drop(p.id, f"entries that are not valid log entries: {exc}", out)
            return
        target = n.checkpoint

        def check(size: int, root: bytes) -> None:
            if size == target.size:
                if root != target.root:
                    raise VerificationError("entries do not rebuild the checkpoint's root")
            else:
                merkle.verify_consistency(size, target.size, msg.proof, root, target.root)

        stored = n if msg.start + len(records) == target.size else None
        try:
            lg.append(records, checkpoint=stored, check=check)
        except VerificationError:
            self._drop(
                p.id,
                f"entries that do not rebuild the checkpoint of log {view.log_id.hex()[:16]}",
                out,
            )
            return
        view.synced_entries += len(records)
        self._reward(p)
        out.append(Synced(view.log_id, len(records), lg.size, target.size))
        self._rejudge(view, now, out)

    # -- attention: requests that are due -------------------------------------------------------

    def _attend(self, now: float) -> list[Action]:
        out: list[Action] = []
        # Sorted: a set of bytes iterates in an order that changes with the process's hash
        # seed, and a run must replay the same in every process.
        for log_id in sorted(self._attention):
            view = self._logs.get(log_id)
            if view is None:
                self._attention.discard(log_id)
                continue
            if view.request is not None:
                if view.request.kind == "entries" and view.next_request is None:
                    self._ask_entries(view, now, out)  # refill the pipeline
                continue
            if view.pending and not view.evidence:
                self._rejudge(view, now, out)
            if view.request is None and view.mode == "mirror":
                self._ask_entries(view, now, out)
            syncing = (
                view.mode == "mirror"
                and view.head is not None
                and view.store.size < view.head.checkpoint.size
            )
            if view.request is None:
                self._attention.discard(log_id)
                if view.pending or syncing:
                    self._stalled.add(log_id)
        return out

    # -- cosignatures -----------------------------------------------------------------------------

    def _on_cosigned(self, p: _Peer, msg: m.Cosigned, now: float, out: list[Action]) -> None:
        # A node sends its own cosignatures to its peers, which keep them with their head and
        # serve them in its note; they are not forwarded further (flooding every node's
        # cosignature of every checkpoint through every link would cost nodes x links).
        if msg.witness_key != p.key:
            self._penalise(p.id, 5, "a cosignature by another key than its own", out)
            return
        digest = _sha(b"cosigned" + msg.witness_key + msg.note + msg.time.to_bytes(8, "big"))
        if self._seen_before(digest):
            return
        self._on_checkpoint(p, msg.public_key, msg.note, now, out, count=False)
        view = self._logs.get(_sha(msg.public_key))
        if view is None or view.head is None or p.id not in self._peers:
            return
        try:
            witness = PublicKey(msg.witness_key)
            signed = self.verifier.checkpoint(msg.note, view.public_key)
        except (DecodeError, VerificationError, TrustixError, ValueError):
            return
        if signed.checkpoint.body() != view.head.checkpoint.body():
            return  # not (or no longer) the head: nothing to attach it to
        name = witness_name(witness)
        c = Cosignature(name, cosignature_key_id(name, witness), msg.time, msg.signature)
        try:
            self.verifier.cosignature(signed.checkpoint, c, witness)
        except VerificationError:
            self._drop(p.id, "invalid cosignature", out)
            return
        self._attach_cosignature(view, msg.witness_key, c)

    # -- evidence ---------------------------------------------------------------------------------

    def _record_split_view(
        self,
        view: _Log,
        a: SignedCheckpoint,
        b: SignedCheckpoint,
        source: int | None,
        out: list[Action],
    ) -> None:
        try:
            evidence = ev.split_view(view.public_key, plain_note(a), plain_note(b))
        except VerificationError:
            return
        self._record(evidence, source, out)

    def _record_retirement_conflict(
        self,
        view: _Log,
        final: SignedCheckpoint,
        other: SignedCheckpoint,
        source: int | None,
        out: list[Action],
    ) -> None:
        try:
            evidence = ev.retirement_conflict(view.public_key, plain_note(final), plain_note(other))
        except VerificationError:
            return
        self._record(evidence, source, out)

    def _record_inconsistent(
        self,
        view: _Log,
        older: SignedCheckpoint,
        newer: SignedCheckpoint,
        prefix_root: bytes,
        proof: Sequence[bytes],
        source: int | None,
        out: list[Action],
    ) -> None:
        try:
            evidence = ev.inconsistent_history(
                view.public_key, plain_note(older), plain_note(newer), prefix_root, list(proof)
            )
        except VerificationError:
            return
        self._record(evidence, source, out)

    def _record(
        self, evidence: ev.Evidence, source: int | None, out: list[Action], *, relayed: bool = False
    ) -> None:
        """Keep verified evidence and send it on: to every peer, but the one it came from
        when it was relayed (a peer that sent a checkpoint that exposed its log may know only
        that one view: it needs the evidence too)."""
        ident = ev.evidence_id(evidence)
        if ident in self._evidence:
            return
        log_id = evidence.public_key.log_id()
        record = EvidenceRecord(
            ident, evidence.kind, log_id, evidence.public_key.raw, int(self._now), evidence
        )
        self._evidence[ident] = record
        self.store.put_record(b"V", bytes.fromhex(ident), _encode_evidence_record(record))
        view = self._logs.get(log_id)
        if view is not None:
            view.evidence += 1
            view.pending.clear()
        out.append(EvidenceFound(ident, evidence.kind, log_id, source))
        msg = ev.to_message(evidence)
        skip = source if relayed else None
        out.extend(Send(p.id, msg) for p in self._peers.values() if p.id != skip)

    def _on_evidence(
        self, p: _Peer, msg: ev.EvidenceMessage, now: float, out: list[Action]
    ) -> None:
        try:
            evidence = ev.from_message(msg)
            ident = self.verifier.evidence(evidence)
        except (DecodeError, VerificationError) as exc:
            self._drop(p.id, f"invalid evidence: {exc}", out)
            return
        if ident in self._evidence:
            return
        self._reward(p)
        log_id = evidence.public_key.log_id()
        if log_id not in self._logs and self.config.follow_unknown != "ignore":
            self._view_for(evidence.public_key.raw)
        self._record(evidence, p.id, out, relayed=True)


# -- evidence records in the store --------------------------------------------------------------


def _encode_evidence_record(record: EvidenceRecord) -> bytes:
    msg = ev.to_message(record.evidence)
    body: bytes = msgpack.packb(
        [record.found_at, wire.REGISTRY.encode_body(msg)], use_bin_type=True
    )
    return body


def _decode_evidence_record(raw: bytes) -> EvidenceRecord:
    found_at, body = msgpack.unpackb(raw)
    msg = wire.REGISTRY.decode_body(body)
    if not isinstance(msg, ev.EvidenceMessage):
        raise DecodeError("not an evidence record")
    evidence = ev.from_message(msg)
    ev.verify_evidence(evidence)
    return EvidenceRecord(
        ev.evidence_id(evidence),
        evidence.kind,
        evidence.public_key.log_id(),
        evidence.public_key.raw,
        int(found_at),
        evidence,
    )


def heads_of(messages: Iterable[wire.Message]) -> Iterator[m.Head]:
    """Every head the messages carry (tests and simulations)."""
    for msg in messages:
        if isinstance(msg, m.Heads):
            yield from msg.heads
