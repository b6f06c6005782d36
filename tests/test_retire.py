"""Key rotation and compromise: a log's final checkpoint names its successor (`trustix-p2p log
retire`), nothing signed after it is accepted, and nodes and light clients follow the
successor where they are allowed to.

From the format up: the checkpoint's `successor` line, retirement-conflict evidence, the own
log's rules (retire, refuse, hand over to the successor's key on the same state directory),
the gossip engine (refuse and expose what contradicts a final checkpoint, follow the
successor), then real nodes (in process: TCP, Noise, LevelDB) and the light client.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import attrs
import pytest
import trio

from tests import factories as f
from tests.test_gossip_node import make_config, pinned, running
from trustix_p2p import cli
from trustix_p2p.client.light import ControlSource, Hit, LightClient, Proof
from trustix_p2p.client.policy import load_policy
from trustix_p2p.client.state import ClientState
from trustix_p2p.core import evidence as ev
from trustix_p2p.core.b64 import b64encode
from trustix_p2p.core.checkpoint import (
    Checkpoint,
    origin_for,
    parse_checkpoint_body,
    sign_checkpoint,
    verify_checkpoint,
)
from trustix_p2p.core.keys import PrivateKey, PublicKey
from trustix_p2p.errors import (
    ConfigError,
    DecodeError,
    LogRetiredError,
    NodeUnavailableError,
    VerificationError,
)
from trustix_p2p.gossip import engine as eng
from trustix_p2p.gossip import messages as m
from trustix_p2p.keyfile import write_key_file
from trustix_p2p.node import Node
from trustix_p2p.options import FollowEntry
from trustix_p2p.ownlog import MemoryCheckpointFile, OwnLog, StaleStoreError
from trustix_p2p.spool import pending_spool_files, write_spool
from trustix_p2p.storage import Store

T0 = 1_700_000_000
NAR = "sha256:" + "0" * 52
OLD, NEW, THIEF = f.key("alice"), f.key("alice rotated"), f.key("thief")


def own_log(key: PrivateKey, count: int) -> tuple[OwnLog, MemoryCheckpointFile]:
    file = MemoryCheckpointFile()
    own = OwnLog.open(Store.in_memory(), key, file)
    if count:
        own.append([f.record(i) for i in range(count)])
    return own, file


def checkpoint_of(key: PrivateKey, count: int, *, successor: bytes | None = None) -> bytes:
    """A checkpoint note of `key`'s log over entries 0..count-1 (any time)."""
    own, _ = own_log(key, count)
    if successor is not None:
        return own.retire(PublicKey(successor), T0 + count).note
    signed = own.sign(T0 + count)
    assert signed is not None
    return signed.note


# -- the format ------------------------------------------------------------------------------


def test_a_final_checkpoint_has_a_fifth_line_naming_the_successor() -> None:
    note = checkpoint_of(OLD, 3, successor=NEW.public_key.raw)
    signed = verify_checkpoint(note, OLD.public_key)
    cp = signed.checkpoint
    assert cp.successor == NEW.public_key.raw and cp.final
    lines = cp.body_text().split("\n")
    assert lines[3] == f"time {T0 + 3}"
    assert lines[4] == f"successor {NEW.public_key.to_base64()}"
    assert len(lines) == 6 and lines[5] == ""
    assert parse_checkpoint_body(cp.body_text()) == cp
    plain = verify_checkpoint(checkpoint_of(OLD, 3), OLD.public_key).checkpoint
    assert plain.successor is None and not plain.final
    assert len(plain.body_text().split("\n")) == 5


@pytest.mark.parametrize(
    "fifth",
    [
        "succesor {key}",  # misspelt
        "successor {key}=",  # not canonical base64
        "successor " + b64encode(bytes(31)),  # not a 32-byte key
        "successor  {key}",
        "time 5",  # a second time line
        "",
    ],
)
def test_any_other_fifth_line_is_refused(fifth: str) -> None:
    origin = origin_for(OLD.public_key.log_id())
    body = (
        f"{origin}\n3\n{b64encode(bytes(32))}\ntime 5\n"
        + fifth.format(key=NEW.public_key.to_base64())
        + "\n"
    )
    with pytest.raises(DecodeError):
        parse_checkpoint_body(body)


def test_a_log_cannot_name_its_own_key_as_successor() -> None:
    origin = origin_for(OLD.public_key.log_id())
    body = f"{origin}\n3\n{b64encode(bytes(32))}\ntime 5\nsuccessor {OLD.public_key.to_base64()}\n"
    with pytest.raises(DecodeError, match="its own key"):
        parse_checkpoint_body(body)
    own, _ = own_log(OLD, 1)
    with pytest.raises(ConfigError, match="its own key"):
        own.retire(OLD.public_key, T0)


# -- evidence ----------------------------------------------------------------------------------


def test_a_checkpoint_larger_than_the_final_one_is_retirement_conflict_evidence() -> None:
    final = checkpoint_of(OLD, 3, successor=NEW.public_key.raw)
    later = checkpoint_of(OLD, 5)  # the thief goes on signing with the stolen key
    evidence = ev.retirement_conflict(OLD.public_key, final, later)
    assert evidence.kind == "retirement-conflict"
    assert "signed after the log was closed at size 3" in ev.describe_evidence(evidence)
    # The document and the wire message carry it exactly, and verify again after.
    document = ev.to_json(evidence)
    assert json.loads(document)["kind"] == "retirement-conflict"
    assert sorted(json.loads(document)) == ["checkpoints", "kind", "public_key", "version"]
    back = ev.from_json(document)
    ev.verify_evidence(back)
    assert ev.evidence_id(back) == ev.evidence_id(evidence)
    message = ev.from_message(ev.to_message(evidence))
    ev.verify_evidence(message)


def test_evidence_verify_accepts_a_retirement_conflict_document(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    final = checkpoint_of(OLD, 3, successor=NEW.public_key.raw)
    document = tmp_path / "evidence.json"
    document.write_text(
        ev.to_json(ev.retirement_conflict(OLD.public_key, final, checkpoint_of(OLD, 4)))
    )
    assert cli.main(["evidence", "verify", str(document)]) == 0
    assert "retirement-conflict" in capsys.readouterr().out


def test_two_final_checkpoints_naming_different_successors_are_evidence() -> None:
    a = checkpoint_of(OLD, 3, successor=NEW.public_key.raw)
    b = checkpoint_of(OLD, 3, successor=THIEF.public_key.raw)
    one = ev.retirement_conflict(OLD.public_key, a, b)
    other = ev.retirement_conflict(OLD.public_key, b, a)
    assert one == other  # put in canonical order, so both give one id
    assert "different successors" in ev.describe_evidence(one)
    with pytest.raises(VerificationError, match="canonical order"):
        ev.verify_evidence(ev.RetirementConflict(OLD.public_key, tuple(reversed(one.checkpoints))))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("first", "second", "why"),
    [
        ("final3", "plain2", "does not contradict"),  # an older checkpoint
        ("final3", "plain3", "does not contradict"),  # the same tree, before it was closed
        ("final3", "final3-again", "does not contradict"),  # closed twice, same successor
        ("plain3", "plain5", "not a final checkpoint"),
    ],
)
def test_what_does_not_contradict_a_final_checkpoint_is_no_evidence(
    first: str, second: str, why: str
) -> None:
    notes = {
        "final3": checkpoint_of(OLD, 3, successor=NEW.public_key.raw),
        "plain2": checkpoint_of(OLD, 2),
        "plain3": checkpoint_of(OLD, 3),
        "plain5": checkpoint_of(OLD, 5),
    }
    final = verify_checkpoint(notes["final3"], OLD.public_key).checkpoint
    notes["final3-again"] = sign_checkpoint(attrs.evolve(final, time=T0 + 99), OLD).note
    with pytest.raises(VerificationError, match=why):
        ev.verify_evidence(ev.RetirementConflict(OLD.public_key, (notes[first], notes[second])))


def test_retirement_evidence_signed_by_another_key_is_refused() -> None:
    final = checkpoint_of(THIEF, 3, successor=NEW.public_key.raw)
    with pytest.raises(VerificationError, match="origin"):
        ev.retirement_conflict(OLD.public_key, final, checkpoint_of(THIEF, 4))


# -- the own log -------------------------------------------------------------------------------


def test_retire_signs_every_stored_entry_and_then_the_log_takes_nothing_more() -> None:
    own, file = own_log(OLD, 3)
    own.sign(T0)
    own.append([f.record(3), f.record(4)])  # appended after the last checkpoint: covered too
    final = own.retire(NEW.public_key, T0 + 10)
    cp = final.checkpoint
    assert (cp.size, cp.successor) == (5, NEW.public_key.raw)
    assert cp.root == own.log.root(5) and file.note == final.note
    assert own.final == final and own.log.checkpoint() == final
    with pytest.raises(LogRetiredError, match="retired"):
        own.append([f.record(9)])
    assert own.sign(T0 + 20) == final  # never a checkpoint after the final one
    assert own.retire(NEW.public_key, T0 + 30) == final  # idempotent
    with pytest.raises(LogRetiredError):
        own.retire(THIEF.public_key, T0 + 30)


def test_the_successor_key_takes_over_the_state_directory(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    with Store(state / "db") as store:
        own = OwnLog.open(store, OLD, state)
        own.append([f.record(i) for i in range(4)])
        final = own.retire(NEW.public_key, T0)
    with Store(state / "db") as store:
        # The old key reopens its closed log; a stranger's key is refused.
        assert OwnLog.open(store, OLD, state).final == final
        with pytest.raises(StaleStoreError, match="another key"):
            OwnLog.open(store, THIEF, state)
        successor = OwnLog.open(store, NEW, state)
        assert successor.log.size == 0 and successor.final is None
        successor.append([f.record(10)])
        first = successor.sign(T0 + 1)
        assert first is not None
        # The old log stays, closed, beside the new one; the new one is "the own log".
        assert store.log(OLD.public_key.log_id()).checkpoint() == final
        assert store.own_log_id() == NEW.public_key.log_id()
    with Store(state / "db") as store:
        # The checkpoint file now holds the successor's checkpoint: the old key is refused.
        assert OwnLog.open(store, NEW, state).log.checkpoint() == first
        with pytest.raises(StaleStoreError):
            OwnLog.open(store, OLD, state)


def test_a_handover_stores_a_final_checkpoint_that_reached_only_the_file() -> None:
    store = Store.in_memory()
    file = MemoryCheckpointFile()
    own = OwnLog.open(store, OLD, file)
    own.append([f.record(i) for i in range(3)])
    own.sign(T0)
    # A crash after the final checkpoint was written to the file, before the store had it.
    final = sign_checkpoint(
        Checkpoint(origin_for(own.log_id), 3, own.log.root(3), T0 + 1, NEW.public_key.raw), OLD
    )
    file.note = final.note
    OwnLog.open(store, NEW, file)
    assert store.log(OLD.public_key.log_id()).checkpoint() == final


def test_the_log_retire_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    old_key, new_key = tmp_path / "old.key", tmp_path / "new.key"
    write_key_file(old_key, OLD)
    write_key_file(new_key, NEW)
    entries = tmp_path / "e.jsonl"
    entries.write_text(
        "\n".join(
            json.dumps({"out_path": f.store_path(f"p{i}"), "nar_hash": NAR, "nar_size": 1})
            for i in range(3)
        )
    )
    state = tmp_path / "state"
    base = ["log", "append", "--state", str(state), "--jsonl", str(entries)]
    assert cli.main([*base, "--key", str(old_key)]) == 0
    capsys.readouterr()
    retire = ["log", "retire", "--state", str(state), "--key", str(old_key)]
    # By base64 public key, or by the successor's key file: the same final checkpoint.
    assert cli.main([*retire, "--successor", NEW.public_key.to_base64()]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["size"] == 3 and out["successor"] == NEW.public_key.to_base64()
    assert out["successor_log_id"] == NEW.public_key.log_id_hex()
    assert out["log_id"] == OLD.public_key.log_id_hex()
    assert verify_checkpoint(out["checkpoint"].encode(), OLD.public_key).checkpoint.final
    assert cli.main([*retire, "--successor", str(new_key)]) == 0
    assert json.loads(capsys.readouterr().out) == out
    # Another successor, a bad key, or more entries with the old key: one line, exit 2.
    assert cli.main([*retire, "--successor", THIEF.public_key.to_base64()]) == 2
    assert "is retired" in capsys.readouterr().err
    assert cli.main([*retire, "--successor", "not-a-key"]) == 2
    assert "neither a base64 public key nor a key file" in capsys.readouterr().err
    assert cli.main([*base, "--key", str(old_key)]) == 2
    assert "is retired" in capsys.readouterr().err
    # The successor's key appends to its own, new log in the same state directory.
    assert cli.main([*base, "--key", str(new_key)]) == 0
    assert json.loads(capsys.readouterr().out)["log_id"] == NEW.public_key.log_id_hex()
    assert cli.main(["log", "verify", "--state", str(state)]) == 0


# -- the gossip engine -------------------------------------------------------------------------


def engine(config: eng.EngineConfig | None = None, store: Store | None = None) -> eng.Engine:
    e = eng.Engine(
        store or Store.in_memory(),
        config or eng.EngineConfig(cosign=False),
        key=f.key("witness"),
        rng=random.Random(1),
        now=0.0,
    )
    e.peer_connected(1, f.key("peer").public_key.raw, outbound=True, address="p:1", now=0.0)
    return e


def show(e: eng.Engine, note: bytes, key: PrivateKey = OLD) -> list[eng.Action]:
    head = m.Head(key.public_key.raw, note, 0, None, ())
    return e.message(1, m.Heads((head,), False), len(note), 1.0)


def head_of(e: eng.Engine, key: PrivateKey = OLD) -> eng.LogInfo:
    info = e.log_info(key.public_key.log_id())
    assert info is not None
    return info


def test_a_node_refuses_checkpoints_after_the_final_one_and_exposes_them() -> None:
    e = engine()
    show(e, checkpoint_of(OLD, 3, successor=NEW.public_key.raw))
    assert head_of(e).head_size == 3 and head_of(e).successor == NEW.public_key.raw
    out = show(e, checkpoint_of(OLD, 5))
    assert head_of(e).head_size == 3  # never accepted
    found = [a for a in out if isinstance(a, eng.EvidenceFound)]
    assert [a.kind for a in found] == ["retirement-conflict"]
    assert not any(isinstance(a, eng.Disconnect) for a in out)  # the peer may not have known
    assert [r.kind for r in e.evidence()] == ["retirement-conflict"]


def test_a_final_checkpoint_smaller_than_the_head_exposes_the_head() -> None:
    e = engine()
    show(e, checkpoint_of(OLD, 5))  # the thief's checkpoint arrived first
    show(e, checkpoint_of(OLD, 3, successor=NEW.public_key.raw))
    assert [r.kind for r in e.evidence()] == ["retirement-conflict"]


def test_two_final_checkpoints_naming_different_successors_are_exposed() -> None:
    e = engine()
    show(e, checkpoint_of(OLD, 3, successor=NEW.public_key.raw))
    show(e, checkpoint_of(OLD, 3, successor=THIEF.public_key.raw))
    assert [r.kind for r in e.evidence()] == ["retirement-conflict"]
    # The evidence is not followed: the thief's key is not opened as a successor.
    assert e.log_info(THIEF.public_key.log_id()) is None


def test_a_final_head_over_the_same_tree_replaces_the_head_and_the_successor_is_followed() -> None:
    follow = (eng.Follow(OLD.public_key, "mirror", "alice"),)
    store = Store.in_memory()
    e = engine(eng.EngineConfig(follow=follow, follow_unknown="ignore", cosign=False), store)
    show(e, checkpoint_of(OLD, 3))
    assert e.log_info(NEW.public_key.log_id()) is None
    show(e, checkpoint_of(OLD, 3, successor=NEW.public_key.raw))
    assert head_of(e).successor == NEW.public_key.raw and e.evidence() == []
    successor = e.log_info(NEW.public_key.log_id())
    assert successor is not None
    assert (successor.mode, successor.name) == ("mirror", "alice")
    # After a restart too, from what the store kept.
    again = engine(eng.EngineConfig(follow=follow, follow_unknown="ignore", cosign=False), store)
    successor = again.log_info(NEW.public_key.log_id())
    assert successor is not None and (successor.mode, successor.name) == ("mirror", "alice")


def test_follow_successors_off_leaves_the_successor_alone() -> None:
    config = eng.EngineConfig(follow_unknown="ignore", follow_successors=False, cosign=False)
    e = engine(attrs.evolve(config, follow=(eng.Follow(OLD.public_key, "mirror", "alice"),)))
    show(e, checkpoint_of(OLD, 3, successor=NEW.public_key.raw))
    assert head_of(e).successor == NEW.public_key.raw
    assert e.log_info(NEW.public_key.log_id()) is None


def test_a_node_whose_own_key_was_stolen_exposes_a_final_checkpoint_it_did_not_sign() -> None:
    store = Store.in_memory()
    own = OwnLog.open(store, OLD, MemoryCheckpointFile())
    own.append([f.record(i) for i in range(5)])
    signed = own.sign(T0)
    assert signed is not None
    e = eng.Engine(store, eng.EngineConfig(cosign=False), key=OLD, rng=random.Random(1), now=0.0)
    e.peer_connected(1, f.key("peer").public_key.raw, outbound=True, address="p:1", now=0.0)
    # The thief "retires" the log at an older size, naming its own key.
    show(e, checkpoint_of(OLD, 3, successor=THIEF.public_key.raw))
    assert [r.kind for r in e.evidence()] == ["retirement-conflict"]
    assert e.log_info(THIEF.public_key.log_id()) is None


# -- real nodes ----------------------------------------------------------------------------------


async def test_nodes_follow_a_retired_log_to_its_successor(tmp_path: Path) -> None:
    alice_config = make_config(tmp_path / "alice", OLD)
    async with running(alice_config) as alice:
        await alice.submit(tuple(f.leaf(i) for i in range(3)))
        await alice.sign_checkpoint_now()
    # The operator stops the node and retires its key for a new one.
    new_key = tmp_path / "alice" / "new.key"
    write_key_file(new_key, NEW)
    retire = ["log", "retire", "--state", str(alice_config.state_dir)]
    code = cli.main([*retire, "--key", str(alice_config.key_file), "--successor", str(new_key)])
    assert code == 0

    # Started again with the old key, the node takes no more entries: they wait in the spool.
    async with running(alice_config) as alice:
        with pytest.raises(NodeUnavailableError, match="retired"):
            await alice.submit((f.leaf(9),))
        status = await alice.executor.run(alice.status)
        assert status.successor == NEW.public_key.raw
        # What the post-build hook spools meanwhile stays for the successor.
        write_spool(alice.config.spool_path, [f.leaf(20)])
        assert await alice.ingest_spool() == 0
        assert len(pending_spool_files(alice.config.spool_path)) == 1

    # With the successor's key on the same state directory it logs into the new log, and
    # serves the old one, closed.  Bob follows only the old key, and follows it to the new one.
    follow = (FollowEntry(OLD.public_key.to_base64(), "alice", "mirror"),)
    new_config = attrs.evolve(alice_config, key_file=new_key)
    async with running(new_config) as alice:
        assert alice.own is not None and alice.own.log_id == NEW.public_key.log_id()
        assert pending_spool_files(alice.config.spool_path) == []  # ingested on start
        assert alice.own.log.size == 1
        await alice.submit(tuple(f.leaf(i) for i in range(10, 14)))
        await alice.sign_checkpoint_now()
        bob_config = make_config(
            tmp_path / "bob",
            f.key("bob"),
            seeds=(pinned(alice),),
            follow=follow,
            follow_unknown="ignore",
        )
        async with running(bob_config) as bob:
            new_id, old_id = NEW.public_key.log_id(), OLD.public_key.log_id()
            with trio.fail_after(30):
                await bob.wait_until(
                    lambda: (
                        bob.store.has_log(new_id)
                        and bob.store.log(new_id).size == 5
                        and bob.store.log(old_id).size == 3
                    )
                )
            info = await bob.executor.run(bob.engine.log_info, new_id)
            assert info is not None and (info.name, info.mode) == ("alice", "mirror")
            assert bob.engine.evidence() == []

            # A light client that follows alice's successor counts the new log as alice's.
            for follow_successor, trusted in ((True, True), (False, False)):
                policy = load_policy(write_policy(tmp_path, bob, follow_successor))
                client = LightClient(
                    policy, [ControlSource(str(bob.config.socket_path))], ClientState.load(policy)
                )
                try:
                    new_path = f.entry(11).out_path
                    d = await client.decide(new_path)
                    assert d.trusted is trusted
                    if trusted:
                        assert d.agreed == ("alice",)
                    else:
                        assert d.missing == ("alice",)
                        assert any("not followed" in p for p in client.problems), client.problems
                    old = await client.decide(f.entry(1).out_path)
                    assert old.trusted and old.agreed == ("alice",)  # the old log still counts
                finally:
                    await client.aclose()
                policy.state_file.unlink()


def write_policy(tmp_path: Path, node: Node, follow_successor: bool) -> Path:
    path = tmp_path / "policy.toml"
    path.write_text(
        "threshold = 1\n"
        'state_file = "state.json"\n'
        f'node_socket = "{node.config.socket_path}"\n'
        "[[builders]]\n"
        'name = "alice"\n'
        f'public_key = "{OLD.public_key.to_base64()}"\n'
        f"follow_successor = {'true' if follow_successor else 'false'}\n"
    )
    return path


async def test_a_light_client_exposes_a_checkpoint_signed_after_the_final_one(
    tmp_path: Path,
) -> None:
    alice_config = make_config(tmp_path / "alice", OLD)
    async with running(alice_config) as alice:
        await alice.submit(tuple(f.leaf(i) for i in range(3)))
        await alice.sign_checkpoint_now()
    code = cli.main(
        [
            "log",
            "retire",
            "--state",
            str(alice_config.state_dir),
            "--key",
            str(alice_config.key_file),
            "--successor",
            NEW.public_key.to_base64(),
        ]
    )
    assert code == 0
    async with running(alice_config) as alice:
        policy = load_policy(write_policy(tmp_path, alice, True))
        honest = ControlSource(str(alice.config.socket_path))
        client = LightClient(policy, [honest], ClientState.load(policy))
        try:
            assert (await client.decide(f.entry(1).out_path)).trusted
            # The thief signs a larger checkpoint with the stolen key; a node serves it.
            stolen = StolenKeySource(honest, OLD)
            client.sources = [stolen]
            d = await client.decide(f.entry(1).out_path)
            assert not d.trusted
            assert d.excluded == (("alice", "evidence: retirement-conflict"),)
            kinds = [e.kind for e in ClientState.load(policy).evidence]
            assert kinds == ["retirement-conflict"]
        finally:
            await client.aclose()


@attrs.define
class StolenKeySource:
    """A node serving the honest hits under a checkpoint the thief signed, with the stolen
    key, after the log was closed: the same leaves and one more entry."""

    honest: ControlSource
    key: PrivateKey
    name: str = "thief's node"

    async def path_hits(self, out_path: str) -> list[Hit]:
        hits = await self.honest.path_hits(out_path)
        own, _ = own_log(self.key, 4)
        signed = own.sign(T0 + 100)
        assert signed is not None
        return [
            attrs.evolve(h, note=signed.note, proof=tuple(own.log.inclusion_proof(h.index, 4)))
            for h in hits
        ]

    async def consistency(self, log_id: bytes, old: int, new: int) -> Proof:
        return await self.honest.consistency(log_id, old, new)

    async def latest_checkpoint(self, log_id: bytes) -> bytes | None:
        return await self.honest.latest_checkpoint(log_id)

    async def aclose(self) -> None:
        await self.honest.aclose()


async def test_a_running_node_retires_its_log_and_gossips_the_final_checkpoint_at_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    alice_config = make_config(tmp_path / "alice", OLD)
    async with running(alice_config) as alice:
        await alice.submit(tuple(f.leaf(i) for i in range(3)))
        await alice.sign_checkpoint_now()
        bob_config = make_config(tmp_path / "bob", f.key("bob"), seeds=(pinned(alice),))
        async with running(bob_config) as bob:
            old_id = OLD.public_key.log_id()

            def head_size() -> int | None:
                info = bob.engine.log_info(old_id)
                return None if info is None else info.head_size

            with trio.fail_after(30):
                await bob.wait_until(lambda: head_size() == 3)
            argv = ["log", "retire", "--socket", str(alice.config.socket_path)]
            argv += ["--successor", NEW.public_key.to_base64()]
            assert await trio.to_thread.run_sync(cli.main, argv) == 0
            out = json.loads(capsys.readouterr().out)
            assert (out["size"], out["log_id"]) == (3, OLD.public_key.log_id_hex())
            assert alice.own is not None and alice.own.final is not None
            # Bob has it without a restart of anything, and follows the successor.
            with trio.fail_after(30):
                await bob.wait_until(
                    lambda: (
                        (info := bob.engine.log_info(old_id)) is not None
                        and info.successor == NEW.public_key.raw
                    )
                )
            # Read through bob's executor, as its control socket does: the engine runs there,
            # and the predicate above may see the head a moment before the successor is open.
            successor = await bob.executor.run(bob.engine.log_info, NEW.public_key.log_id())
            assert successor is not None and successor.mode == "mirror"
            with pytest.raises(NodeUnavailableError, match="retired"):
                await alice.submit((f.leaf(9),))
            # Again with the same successor: the same checkpoint; another: refused.
            assert await trio.to_thread.run_sync(cli.main, argv) == 0
            assert json.loads(capsys.readouterr().out) == out
            argv[-1] = THIEF.public_key.to_base64()
            assert await trio.to_thread.run_sync(cli.main, argv) == 2
            assert "is retired" in capsys.readouterr().err
            # Half of the stopped-node form is a usage error.
            half = ["log", "retire", "--state", str(tmp_path), "--successor", argv[-1]]
            assert await trio.to_thread.run_sync(cli.main, half) == 2
            assert "--state and --key" in capsys.readouterr().err
