"""The light client: asks nodes, verifies everything itself, decides M of N.

It keeps no log, only the last checkpoint it verified of each trusted log (the state file,
`trustix_p2p.client.state`).  For a store path it asks its nodes, in the policy's order, for
every entry they hold about the path, each with an inclusion proof against a checkpoint; then,
per entry:

1. the entry must be in the log of a builder the policy trusts;
2. the checkpoint's signature must verify with that builder's key, and carry at least
   `witness_threshold` valid cosignatures of the policy's witnesses;
3. the checkpoint must be consistent with the one cached for that log: the same size and root,
   or a consistency proof (asked of the same node) from the cached one to it, or from it to the
   cached one when the node is behind.  The proof carries the root of the larger tree at the
   smaller size (`prefix_root`): if the proof holds but that root differs from the signed
   checkpoint of that size the client holds, the builder signed two histories, and the two
   checkpoints with the proof are evidence (DESIGN §4), kept in the state file and reported;
4. the inclusion proof must hold, and the leaf must decode to an entry about the path asked.

A node whose answer fails a check (a forged entry, a bad proof, a checkpoint that does not
verify, a stale or inconsistent one without a valid proof) is reported by name with what
failed, and the builders it answered for are asked of the next node; nothing it said counts.
Votes are then counted by `trustix_p2p.core.decision.decide`, by distinct builder key.

A builder's log may be *retired*: its final checkpoint names the key that continues it
(`trustix-p2p log retire`).  Its entries up to that checkpoint still count; a checkpoint of
that log larger than the final one, or another final one naming a different successor, is
retirement-conflict evidence (the key is in other hands) and excludes the builder.  Where the
policy says `follow_successor = true` for the builder, the successor's log is the builder's
too: its entries are verified with the successor's key and vote as that builder (one vote,
whichever of its logs the entries are in; different NAR hashes across them are a conflict).
The client learns of a retirement from a final checkpoint it verifies, with a path's entries
or by asking its nodes for the latest checkpoint of each builder's newest log (at most every
`SUCCESSOR_REFRESH` seconds).  Without `follow_successor` the successor's entries
count for nothing until the policy lists its key.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Sequence
from typing import Protocol

import attrs
import trio

from trustix_p2p.client.policy import MAX_SUCCESSORS, Policy, PolicyBuilder, successor_of
from trustix_p2p.client.state import ClientState
from trustix_p2p.core import evidence as ev
from trustix_p2p.core import merkle
from trustix_p2p.core.checkpoint import (
    SignedCheckpoint,
    cosignatures_in,
    origin_for,
    verify_checkpoint,
)
from trustix_p2p.core.decision import Decision, decide
from trustix_p2p.core.entry import Entry, decode_entry
from trustix_p2p.core.keys import PrivateKey, PublicKey
from trustix_p2p.errors import (
    DecodeError,
    NodeUnavailableError,
    RemoteProtocolError,
    TrustixError,
    VerificationError,
)

__all__ = [
    "SUCCESSOR_REFRESH",
    "ControlSource",
    "Hit",
    "LightClient",
    "NoiseSource",
    "Source",
    "sources_for",
]

#: Seconds between asks for the latest checkpoint of the builders whose successors are
#: followed (a retirement of a log with no entry for the paths asked is learned so).
SUCCESSOR_REFRESH = 60.0


@attrs.frozen
class Hit:
    log_id: bytes
    index: int
    leaf: bytes
    note: bytes | None
    proof: tuple[bytes, ...]


@attrs.frozen
class Proof:
    prefix_root: bytes
    note: bytes
    proof: tuple[bytes, ...]


class Source(Protocol):
    """A node the client asks (its answers are verified, never trusted)."""

    name: str

    async def path_hits(self, out_path: str) -> list[Hit]: ...

    async def consistency(self, log_id: bytes, old: int, new: int) -> Proof: ...

    async def latest_checkpoint(self, log_id: bytes) -> bytes | None:
        """The newest checkpoint note of the log the node holds, if any."""
        ...

    async def aclose(self) -> None: ...


class NodeLied(TrustixError):
    """A node's answer failed a check (the message says which)."""


# -- sources ------------------------------------------------------------------------------------


@attrs.define
class ControlSource:
    """A local node, over its control socket: blocking client calls in worker threads, over
    connections kept open between calls (a pool, so concurrent decisions do not queue)."""

    socket_path: str
    timeout: float = 10.0
    name: str = ""
    _idle: list[object] = attrs.field(factory=list)

    def __attrs_post_init__(self) -> None:
        self.name = self.name or f"node at {self.socket_path}"

    async def _call(self, method: str, *args: object) -> object:
        from trustix_p2p.control.client import ControlClient

        client = self._idle.pop() if self._idle else None

        def run() -> tuple[object, object]:
            c = client if client is not None else ControlClient(self.socket_path, self.timeout)
            try:
                return c, getattr(c, method)(*args)
            except BaseException:
                c.close()  # type: ignore[attr-defined]
                raise

        used, result = await trio.to_thread.run_sync(run)
        if len(self._idle) < 16:
            self._idle.append(used)
        else:
            used.close()  # type: ignore[attr-defined]
        return result

    async def path_hits(self, out_path: str) -> list[Hit]:
        hits = await self._call("lookup", out_path)
        assert isinstance(hits, list)
        return [Hit(h.log_id, h.index, h.leaf, h.checkpoint, tuple(h.proof or ())) for h in hits]

    async def consistency(self, log_id: bytes, old: int, new: int) -> Proof:
        reply = await self._call("consistency", log_id, old, new)
        return Proof(reply.prefix_root, reply.note, tuple(reply.proof))  # type: ignore[attr-defined]

    async def latest_checkpoint(self, log_id: bytes) -> bytes | None:
        note = await self._call("checkpoint", log_id)
        assert note is None or isinstance(note, bytes)
        return note

    async def evidence_documents(self) -> list[str]:
        rows = await self._call("evidence_list")
        assert isinstance(rows, list)
        return [str(await self._call("evidence", row.id)) for row in rows]

    async def aclose(self) -> None:
        while self._idle:
            self._idle.pop().close()  # type: ignore[attr-defined]


@attrs.define
class NoiseSource:
    """A node over Noise, as a peer with a throwaway key (the node greets it like any peer;
    the client passes over what it did not ask for)."""

    address: str
    timeout: float = 10.0
    name: str = ""
    _connection: object | None = None
    _scope: trio.CancelScope | None = None
    # One request at a time on the connection: replies are matched by arriving next.
    _lock: trio.Lock = attrs.field(factory=trio.Lock)
    # The heads the node pushed (its greeting, then new ones): log id -> checkpoint note.
    _heads: dict[bytes, bytes] = attrs.field(factory=dict)
    _greeted: bool = False

    def __attrs_post_init__(self) -> None:
        self.name = self.name or f"node {self.address}"

    async def _conn(self) -> object:
        from trustix_p2p.transport import connect

        if self._connection is None:
            key = PrivateKey.from_seed(os.urandom(32))
            with trio.fail_after(self.timeout):
                self._connection = await connect(self.address, key)
        return self._connection

    async def _ask(self, request: object, reply_type: type) -> object:

        async with self._lock:
            return await self._ask_locked(request, reply_type)

    async def _ask_locked(self, request: object, reply_type: type) -> object:
        from trustix_p2p.gossip import messages as m
        from trustix_p2p.transport import Connection

        connection = await self._conn()
        assert isinstance(connection, Connection)
        with trio.fail_after(self.timeout):
            await connection.send_message(request)  # type: ignore[arg-type]
            for _ in range(10_000):  # the node's greeting comes first
                message = await connection.receive_message()
                if message is None:
                    raise NodeUnavailableError(f"{self.name} closed the connection")
                if isinstance(message, reply_type):
                    return message
                if isinstance(message, m.Heads) and len(self._heads) < 100_000:
                    for head in message.heads:
                        self._heads[hashlib.sha256(head.public_key).digest()] = head.note
                if isinstance(message, m.NoData):
                    raise NodeUnavailableError(f"{self.name}: {message.reason}")
        raise RemoteProtocolError(f"{self.name} did not answer")

    async def path_hits(self, out_path: str) -> list[Hit]:
        from trustix_p2p.gossip import messages as m

        reply = await self._ask(m.GetPathEntries(out_path), m.PathEntries)
        assert isinstance(reply, m.PathEntries)
        return [
            Hit(hashlib.sha256(h.public_key).digest(), h.index, h.leaf, h.note, h.proof)
            for h in reply.hits
        ]

    async def consistency(self, log_id: bytes, old: int, new: int) -> Proof:
        from trustix_p2p.gossip import messages as m

        reply = await self._ask(m.GetConsistency(log_id, old, new), m.Consistency)
        assert isinstance(reply, m.Consistency)
        return Proof(reply.prefix_root, reply.note, reply.proof)

    async def latest_checkpoint(self, log_id: bytes) -> bytes | None:
        """From the heads the node greeted this client with (a ping's answer comes after
        them on the same stream), and those it pushed since."""
        from trustix_p2p.core import wire

        if not self._greeted:
            await self._ask(wire.Ping(0), wire.Pong)
            self._greeted = True
        return self._heads.get(log_id)

    async def aclose(self) -> None:
        if self._connection is not None:
            from trustix_p2p.transport import Connection

            connection = self._connection
            assert isinstance(connection, Connection)
            self._connection = None
            with trio.move_on_after(2):
                await connection.aclose()


def sources_for(policy: Policy) -> list[Source]:
    """The nodes a policy names: the local node first, then the Noise nodes in order."""
    sources: list[Source] = []
    if policy.node_socket is not None:
        sources.append(ControlSource(str(policy.node_socket), policy.timeout))
    sources += [NoiseSource(address, policy.timeout) for address in policy.nodes]
    return sources


# -- the client ----------------------------------------------------------------------------------


@attrs.define
class LightClient:
    policy: Policy
    sources: Sequence[Source]
    state: ClientState
    problems: list[str] = attrs.field(factory=list)
    # Builders excluded by verified evidence, and why.
    excluded: dict[bytes, str] = attrs.field(factory=dict)
    # Checkpoint notes already verified (by exact bytes and key), and the checkpoint sizes
    # already found consistent with the cached one: one check each per run, not per path.
    _verified: dict[tuple[bytes, bytes], SignedCheckpoint] = attrs.field(factory=dict)
    _consistent: set[tuple[bytes, bytes]] = attrs.field(factory=set)
    # Every log that votes for a policy builder: log id -> (the policy's builder, the builder
    # under that log's key: itself, or a successor followed after a retirement).
    _logs: dict[bytes, tuple[PolicyBuilder, PolicyBuilder]] = attrs.field(factory=dict)
    _successors_asked: float | None = None

    def __attrs_post_init__(self) -> None:
        for builder in self.policy.builders:
            self._logs[builder.log_id] = (builder, builder)
        for builder in self.policy.builders:
            view = builder
            for _ in range(MAX_SUCCESSORS):
                cached = self.state.checkpoint(view)
                nxt = self._follow(builder, view, cached) if cached is not None else None
                if nxt is None:
                    break
                view = nxt
        self._refresh_exclusions()

    def _refresh_exclusions(self) -> None:
        if not self.policy.exclude_on_evidence:
            return
        for document in self.state.evidence:
            known = self._logs.get(document.public_key.log_id())
            key = known[0].public_key.raw if known is not None else document.public_key.raw
            self.excluded.setdefault(key, f"evidence: {document.kind}")

    def builder_for_log(self, log_id: bytes) -> PolicyBuilder | None:
        """The builder under whose key `log_id` is verified (a successor's, for its log)."""
        known = self._logs.get(log_id)
        return known[1] if known is not None else None

    def _root(self, view: PolicyBuilder) -> PolicyBuilder:
        known = self._logs.get(view.log_id)
        return known[0] if known is not None else view

    def _follow(
        self, root: PolicyBuilder, view: PolicyBuilder, signed: SignedCheckpoint
    ) -> PolicyBuilder | None:
        """If `signed` (a verified checkpoint of `view`'s log) closes the log, the builder
        under its successor's key, when the policy follows it (None otherwise)."""
        successor = signed.checkpoint.successor
        if successor is None:
            return None
        try:
            key = PublicKey(successor)
        except (TrustixError, ValueError):
            return None
        known = self._logs.get(key.log_id())
        if known is not None:
            return known[1] if known[0] == root else None
        if not root.follow_successor:
            self._note(
                f"{root.name}: log {view.log_id.hex()[:16]} retired at size "
                f"{signed.checkpoint.size}; its successor {key.to_base64()} is not followed "
                "(follow_successor = false): add the key to the policy to trust it"
            )
            return None
        if root.public_key.raw in self.excluded:
            return None
        if sum(1 for r, _ in self._logs.values() if r == root) > MAX_SUCCESSORS:
            return None
        nxt = successor_of(root, successor)
        self._logs[nxt.log_id] = (root, nxt)
        return nxt

    def _note(self, line: str) -> None:
        if line not in self.problems:
            self.problems.append(line)

    async def refresh_successors(self) -> None:
        """Ask every node for the latest checkpoint of each builder's newest log: a verified
        final one adds its successor's log where the policy follows it (and is reported
        where it does not)."""
        self._successors_asked = trio.current_time()
        for root in self.policy.builders:
            if root.public_key.raw in self.excluded:
                continue
            view = root
            for _ in range(MAX_SUCCESSORS + 1):
                for source in self.sources:
                    try:
                        note = await source.latest_checkpoint(view.log_id)
                        if note is None:
                            continue
                        signed = self._verify_note(note, view)
                        try:
                            self._check_witnesses(view, signed)
                        except VerificationError:
                            continue  # not cosigned as the policy asks: learned from hits
                        await self._check_consistent(source, view, signed)
                    except NodeLied as exc:
                        self.report(source, str(exc))
                    except (TrustixError, OSError, trio.TooSlowError) as exc:
                        self.report(source, f"{root.name}: latest checkpoint: {exc}")
                nxt = None
                cached = self.state.checkpoint(view)
                if cached is not None:
                    nxt = self._follow(root, view, cached)
                if nxt is None:
                    break
                view = nxt

    def report(self, source: Source, what: str) -> None:
        line = f"{source.name}: {what}"
        if line not in self.problems:
            self.problems.append(line)

    async def load_node_evidence(self) -> None:
        """Evidence a local node holds, verified here (only signatures and proofs count)."""
        for source in self.sources:
            if not isinstance(source, ControlSource):
                continue
            try:
                documents = await source.evidence_documents()
            except TrustixError as exc:
                self.report(source, f"cannot list evidence: {exc}")
                continue
            for text in documents:
                try:
                    evidence = ev.from_json(text)
                    ev.verify_evidence(evidence)
                except (DecodeError, VerificationError) as exc:
                    self.report(source, f"served evidence that does not verify: {exc}")
                    continue
                if self.builder_for_log(evidence.public_key.log_id()) is not None:
                    self.state.add_evidence(evidence)
        self._refresh_exclusions()

    async def decide(self, store_path: str) -> Decision:
        """Ask, verify, decide (see the module docstring)."""
        if (
            self._successors_asked is None
            or trio.current_time() - self._successors_asked >= SUCCESSOR_REFRESH
        ):
            await self.refresh_successors()
        verified: dict[bytes, list[Entry]] = {}
        answered: set[bytes] = set()
        full_path = store_path
        for source in self.sources:
            wanted = set(self._logs) - answered
            if not wanted:
                break
            try:
                hits = await source.path_hits(store_path)
            except (TrustixError, OSError, trio.TooSlowError) as exc:
                self.report(source, f"unavailable: {exc}")
                continue
            failed: set[bytes] = set()
            per_log: dict[bytes, list[Entry]] = {}
            for hit in self._in_known_order(hits):
                builder = self.builder_for_log(hit.log_id)
                if builder is None or hit.log_id in answered or hit.log_id in failed:
                    continue
                try:
                    entry = await self._verify_hit(source, builder, hit, store_path)
                except NodeLied as exc:
                    self.report(source, str(exc))
                    failed.add(hit.log_id)
                    per_log.pop(hit.log_id, None)
                    continue
                except (TrustixError, trio.TooSlowError) as exc:
                    self.report(source, f"{builder.name}: {exc}")
                    failed.add(hit.log_id)
                    per_log.pop(hit.log_id, None)
                    continue
                if entry is not None:
                    per_log.setdefault(hit.log_id, []).append(entry)
            # Builders this node proved entries for are settled; the others (no entry here,
            # or an answer that failed a check) are asked of the next node: one node cannot
            # hide a builder's entries from the client.
            for log_id, entries in per_log.items():
                verified[log_id] = entries
                answered.add(log_id)
        for entries in verified.values():
            for entry in entries:
                if entry.out_path != store_path and entry.out_path.startswith(store_path):
                    full_path = entry.out_path  # a hash part asked: the path it names
                    break
        self.state.save()
        self._refresh_exclusions()
        by_key = {
            self._key_of(log_id): [e for e in entries if e.out_path == full_path]
            for log_id, entries in verified.items()
        }
        return decide(
            full_path, self.policy.decision_builders(), self.policy.threshold, by_key, self.excluded
        )

    def _in_known_order(self, hits: Sequence[Hit]) -> Iterator[Hit]:
        """The hits of logs known to vote, then those of successor logs learned meanwhile
        (a final checkpoint in this very answer names them)."""
        rest = list(hits)
        while rest:
            later = []
            for hit in rest:
                if hit.log_id in self._logs:
                    yield hit
                else:
                    later.append(hit)
            if len(later) == len(rest):
                return
            rest = later

    async def decide_many(
        self, store_paths: Sequence[str], concurrency: int = 16
    ) -> list[Decision]:
        """Decide many paths, `concurrency` at a time (answers in the order asked)."""
        results: list[Decision | None] = [None] * len(store_paths)
        limiter = trio.CapacityLimiter(concurrency)

        async def one(i: int, path: str) -> None:
            async with limiter:
                results[i] = await self.decide(path)

        async with trio.open_nursery() as nursery:
            for i, path in enumerate(store_paths):
                nursery.start_soon(one, i, path)
        return [r for r in results if r is not None]

    def _key_of(self, log_id: bytes) -> bytes:
        """The policy builder's key a log votes under (a successor's log: its builder's)."""
        return self._logs[log_id][0].public_key.raw

    async def _verify_hit(
        self, source: Source, builder: PolicyBuilder, hit: Hit, store_path: str
    ) -> Entry | None:
        if hit.note is None:
            return None  # not yet covered by a checkpoint: not provable, not counted
        key = (hit.note, builder.public_key.raw)
        signed = self._verified.get(key)
        if signed is None:
            try:
                signed = verify_checkpoint(hit.note, builder.public_key)
            except (DecodeError, VerificationError) as exc:
                raise NodeLied(
                    f"{builder.name}: a checkpoint that does not verify ({exc})"
                ) from exc
            self._check_witnesses(builder, signed)
            if len(self._verified) > 4096:
                self._verified.clear()
            self._verified[key] = signed
        body = signed.checkpoint.body()
        cached = self.state.checkpoint(builder)
        if cached is None or (cached.checkpoint.body(), body) not in self._consistent:
            await self._check_consistent(source, builder, signed)
            after = self.state.checkpoint(builder)
            if after is not None:
                self._consistent.add((after.checkpoint.body(), body))
        cp = signed.checkpoint
        try:
            merkle.verify_inclusion(
                hit.index, cp.size, merkle.leaf_hash(hit.leaf), hit.proof, cp.root
            )
        except VerificationError as exc:
            raise NodeLied(f"{builder.name}: an inclusion proof that does not verify") from exc
        try:
            entry = decode_entry(hit.leaf)
        except DecodeError as exc:
            raise NodeLied(f"{builder.name}: a leaf that is not a valid entry ({exc})") from exc
        wanted = store_path if "-" in store_path.rpartition("/")[2] else store_path + "-"
        if not (entry.out_path == store_path or entry.out_path.startswith(wanted)):
            raise NodeLied(f"{builder.name}: an entry about another path ({entry.out_path})")
        return entry

    def _check_witnesses(self, builder: PolicyBuilder, signed: SignedCheckpoint) -> None:
        k = self.policy.witness_threshold
        if k == 0:
            return
        count = 0
        for witness in self.policy.witnesses:
            name = origin_for(witness.public_key.log_id())
            try:
                count += bool(cosignatures_in(signed.note, name, witness.public_key))
            except (DecodeError, VerificationError):
                continue
        if count < k:
            raise VerificationError(
                f"its checkpoint of size {signed.checkpoint.size} has {count} of the "
                f"{k} witness cosignatures the policy requires"
            )

    async def _check_consistent(
        self, source: Source, builder: PolicyBuilder, signed: SignedCheckpoint
    ) -> None:
        pin = self._pinned(builder)
        if pin is not None:
            # A known-good checkpoint the policy pins: whatever the builder's key signs later
            # must extend it (a stolen key cannot rewrite what came before it).
            await self._check_pair(source, builder, pin, signed, "the pinned checkpoint")
        cached = self.state.checkpoint(builder)
        cp = signed.checkpoint
        if cached is None:
            self.state.remember(builder, signed)
        else:
            await self._check_pair(source, builder, cached, signed, "the cached checkpoint")
            if cp.size > cached.checkpoint.size or (
                cp.size == cached.checkpoint.size and cp.successor is not None
            ):
                self.state.remember(builder, signed)
        if cp.successor is not None:
            self._follow(self._root(builder), builder, signed)

    def _pinned(self, builder: PolicyBuilder) -> SignedCheckpoint | None:
        if builder.pinned_checkpoint is None:
            return None
        note = builder.pinned_checkpoint.encode("utf-8")
        try:
            return self._verify_note(note, builder)
        except (DecodeError, VerificationError) as exc:
            # load_policy checks pins; one that fails here is the policy's fault, not a node's
            raise TrustixError(f"{builder.name}: pinned_checkpoint does not verify: {exc}") from exc

    def _verify_note(self, note: bytes, builder: PolicyBuilder) -> SignedCheckpoint:
        key = (note, builder.public_key.raw)
        signed = self._verified.get(key)
        if signed is None:
            signed = self._verified[key] = verify_checkpoint(note, builder.public_key)
        return signed

    async def _check_pair(
        self,
        source: Source,
        builder: PolicyBuilder,
        known: SignedCheckpoint,
        signed: SignedCheckpoint,
        what: str,
    ) -> None:
        """`signed` and `known` are checkpoints of one tree, or evidence says otherwise."""
        c, cp = known.checkpoint, signed.checkpoint
        pair = (c.body(), cp.body())
        if pair in self._consistent:
            return
        for final, other in ((known, signed), (signed, known)):
            f, o = final.checkpoint, other.checkpoint
            if f.successor is not None and (
                o.size > f.size or (o.successor is not None and o.successor != f.successor)
            ):
                # Signed after the log was closed, or closed twice: the key is in other hands.
                self._evidence(
                    builder, ev.retirement_conflict(builder.public_key, final.note, other.note)
                )
                raise VerificationError(
                    f"{builder.name}'s retired log has a checkpoint that contradicts its final "
                    "one (evidence kept)"
                )
        if cp.size == c.size:
            if cp.root != c.root:
                self._evidence(builder, ev.split_view(builder.public_key, known.note, signed.note))
                raise VerificationError(
                    f"{builder.name} signed a split view against {what} (evidence kept)"
                )
            self._consistent.add(pair)
            return
        if cp.size == 0 or c.size == 0:
            return
        small, large = (known, signed) if c.size < cp.size else (signed, known)
        try:
            proof = await source.consistency(
                builder.log_id, small.checkpoint.size, large.checkpoint.size
            )
        except (TrustixError, trio.TooSlowError) as exc:
            raise NodeLied(
                f"{builder.name}: no consistency proof from size {small.checkpoint.size} to "
                f"{large.checkpoint.size} ({exc})"
            ) from exc
        try:
            given = verify_checkpoint(proof.note, builder.public_key)
        except (DecodeError, VerificationError) as exc:
            raise NodeLied(f"{builder.name}: a consistency reply with a bad checkpoint") from exc
        g = given.checkpoint
        if g.size != large.checkpoint.size:
            raise NodeLied(f"{builder.name}: a consistency proof to another size")
        try:
            merkle.verify_consistency(
                small.checkpoint.size, g.size, proof.proof, proof.prefix_root, g.root
            )
        except VerificationError as exc:
            raise NodeLied(f"{builder.name}: a consistency proof that does not verify") from exc
        if g.root != large.checkpoint.root:
            self._evidence(builder, ev.split_view(builder.public_key, given.note, large.note))
            raise VerificationError(f"{builder.name} signed a split view (evidence kept)")
        if proof.prefix_root != small.checkpoint.root:
            self._evidence(
                builder,
                ev.inconsistent_history(
                    builder.public_key, small.note, given.note, proof.prefix_root, proof.proof
                ),
            )
            raise VerificationError(
                f"{builder.name} signed a history inconsistent with {what} (evidence kept)"
            )
        self._consistent.add(pair)

    def _evidence(self, builder: PolicyBuilder, evidence: ev.Evidence) -> None:
        self.state.add_evidence(evidence)
        self.problems.append(
            f"evidence against {builder.name}: {evidence.kind} ({ev.evidence_id(evidence)[:16]})"
        )
        if self.policy.exclude_on_evidence:
            self.excluded[self._root(builder).public_key.raw] = f"evidence: {evidence.kind}"

    async def aclose(self) -> None:
        for source in self.sources:
            await source.aclose()
