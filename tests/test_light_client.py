"""The light client against real nodes (in process: TCP, Noise, LevelDB): 3-of-4 decisions,
lying nodes detected and routed around, the state file, and the `decide` command."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import attrs
import pytest
import trio

from tests import factories as f
from tests.test_gossip_node import make_config, pinned, running
from trustix_p2p import cli
from trustix_p2p.client.light import ControlSource, Hit, LightClient, NoiseSource, Proof, Source
from trustix_p2p.client.policy import Policy, load_policy
from trustix_p2p.client.state import ClientState
from trustix_p2p.core.decision import Decision
from trustix_p2p.errors import ConfigError
from trustix_p2p.node import Node

NAMES = ("alice", "bob", "chuck", "dan")
SHARED = 5  # entries 0..4 built by all four; chuck's entry 2 differs
ONLY_TWO = 7  # entry 7 built by alice and bob only


def leaves_for(name: str) -> list[bytes]:
    out = [
        f.leaf(i, nar_seed="chuck" if (name == "chuck" and i == 2) else "") for i in range(SHARED)
    ]
    if name in ("alice", "bob"):
        out.append(f.leaf(ONLY_TWO))
    return out


@asynccontextmanager
async def network(tmp_path: Path) -> AsyncIterator[dict[str, Node]]:
    nodes: dict[str, Node] = {}
    async with AsyncExitStack() as stack:
        for name in NAMES:
            seeds = tuple(pinned(n) for n in nodes.values())
            config = make_config(tmp_path / name, f.key(name), seeds=seeds)
            node = await stack.enter_async_context(running(config))
            nodes[name] = node
            await node.submit(tuple(leaves_for(name)))
            await node.sign_checkpoint_now()
        alice = nodes["alice"]
        ids = [f.key(n).public_key.log_id() for n in NAMES]
        with trio.fail_after(30):
            await alice.wait_until(
                lambda: all(
                    alice.store.has_log(i)
                    and alice.store.log(i).checkpoint() is not None
                    and alice.store.log(i).size == len(leaves_for(n))
                    for i, n in zip(ids, NAMES, strict=True)
                )
            )
        yield nodes


def write_policy(
    tmp_path: Path, *, socket: Path | None = None, nodes: tuple[str, ...] = ()
) -> Path:
    lines = ["threshold = 3", 'state_file = "state.json"']
    if socket is not None:
        lines.append(f'node_socket = "{socket}"')
    if nodes:
        lines.append("nodes = [" + ", ".join(json.dumps(n) for n in nodes) + "]")
    for name in NAMES:
        lines += [
            "[[builders]]",
            f'name = "{name}"',
            f'public_key = "{f.key(name).public_key.to_base64()}"',
        ]
    path = tmp_path / "policy.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


async def test_three_of_four_decide_with_a_dissenter_over_both_transports(tmp_path: Path) -> None:
    async with network(tmp_path) as nodes:
        alice = nodes["alice"]
        for policy_path in (
            write_policy(tmp_path, socket=alice.config.socket_path),
            write_policy(tmp_path, nodes=(pinned(alice),)),
        ):
            policy = load_policy(policy_path)
            sources: list[Source] = (
                [ControlSource(str(alice.config.socket_path))]
                if policy.node_socket
                else [NoiseSource(policy.nodes[0])]
            )
            client = LightClient(policy, sources, ClientState.load(policy))
            try:
                d = await client.decide(f.entry(2).out_path)
                assert d.trusted and d.agreed == ("alice", "bob", "dan")
                assert [n for n, _ in d.dissented] == ["chuck"]
                assert d.nar_hash == f.entry(2).nar_hash
                d = await client.decide(f.entry(ONLY_TWO).out_path)
                assert not d.trusted and d.agreed == ("alice", "bob")
                assert d.missing == ("chuck", "dan")
                # A hash part names the same path.
                part = f.entry(0).out_path.split("/")[-1][:32]
                d = await client.decide(f"/nix/store/{part}")
                assert d.trusted and d.store_path == f.entry(0).out_path
                assert client.problems == []
            finally:
                await client.aclose()
            state = json.loads(policy.state_file.read_text())
            assert len(state["checkpoints"]) == 4


@attrs.define
class Liar:
    """An honest source whose answers are tampered with in one way."""

    honest: Source
    how: str
    name: str = "liar"

    async def path_hits(self, out_path: str) -> list[Hit]:
        hits = await self.honest.path_hits(out_path)
        if self.how == "forged-entry":
            return [attrs.evolve(h, leaf=f.leaf(2, nar_seed="forged")) for h in hits]
        if self.how == "bad-proof":
            return [
                attrs.evolve(h, proof=(bytes(32), *h.proof[1:])) if h.proof else h for h in hits
            ]
        return hits

    async def consistency(self, log_id: bytes, old: int, new: int) -> Proof:
        proof = await self.honest.consistency(log_id, old, new)
        if self.how == "inconsistent":
            return attrs.evolve(proof, proof=tuple(bytes(32) for _ in proof.proof) or (bytes(32),))
        return proof

    async def latest_checkpoint(self, log_id: bytes) -> bytes | None:
        return await self.honest.latest_checkpoint(log_id)

    async def aclose(self) -> None:
        await self.honest.aclose()


@pytest.mark.parametrize("how", ["forged-entry", "bad-proof", "inconsistent"])
async def test_a_lying_node_is_detected_and_routed_around(tmp_path: Path, how: str) -> None:
    async with network(tmp_path) as nodes:
        alice = nodes["alice"]
        policy = load_policy(write_policy(tmp_path, socket=alice.config.socket_path))
        honest = ControlSource(str(alice.config.socket_path))
        state = ClientState.load(policy)
        if how == "inconsistent":
            # The client's cache holds each log's first checkpoint; the builders then grow,
            # so checking the node's newer checkpoint needs a consistency proof (which lies).
            warmup = LightClient(policy, [honest], state)
            await warmup.decide(f.entry(0).out_path)
            for name in NAMES:
                await nodes[name].submit((f.leaf(100 + NAMES.index(name)),))
                await nodes[name].sign_checkpoint_now()
            ids = [f.key(n).public_key.log_id() for n in NAMES]

            def grown() -> bool:
                return all(
                    (cp := alice.store.log(i).checkpoint()) is not None
                    and cp.checkpoint.size == len(leaves_for(n)) + 1
                    for i, n in zip(ids, NAMES, strict=True)
                )

            with trio.move_on_after(60):
                await alice.wait_until(grown)
            # Say what Alice's node knew if it did not get there (for a rare CI failure).
            assert grown(), (alice.engine.logs(), alice.engine.peers(), alice.peering.dropped)
        client = LightClient(policy, [Liar(honest, how), ControlSource(honest.socket_path)], state)
        d = await client.decide(f.entry(2).out_path)
        assert d.trusted and d.agreed == ("alice", "bob", "dan"), client.problems
        assert any(line.startswith("liar: ") for line in client.problems), client.problems
        assert not state.evidence  # a lying node is not the builder's fault


async def test_the_decide_command_exits_by_verdict(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with network(tmp_path) as nodes:
        policy = write_policy(tmp_path, socket=nodes["alice"].config.socket_path)
        argv = ["decide", "--policy", str(policy), "--json", f.entry(2).out_path]
        status = await trio.to_thread.run_sync(cli.main, argv)
        assert status == 0
        line = json.loads(capsys.readouterr().out.strip())
        assert set(line) == {
            "store_path", "trusted", "nar_hash", "agreed", "dissented", "missing", "excluded",
            "conflicting",
        }  # fmt: skip
        assert line["dissented"][0]["name"] == "chuck"
        argv = ["decide", "--policy", str(policy), f.entry(2).out_path, f.entry(ONLY_TWO).out_path]
        assert await trio.to_thread.run_sync(cli.main, argv) == 1
        assert "NOT trusted" in capsys.readouterr().out
        # --state-file: the state kept elsewhere than the policy says (a read-only policy).
        elsewhere = tmp_path / "service-state" / "client-state.json"
        (tmp_path / "state.json").unlink()
        argv = ["decide", "--policy", str(policy), "--state-file", str(elsewhere)]
        assert await trio.to_thread.run_sync(cli.main, [*argv, f.entry(2).out_path]) == 0
        assert len(json.loads(elsewhere.read_text())["checkpoints"]) == 4
        assert not (tmp_path / "state.json").exists()


def test_a_policy_naming_a_key_twice_or_a_bad_threshold_is_refused(tmp_path: Path) -> None:
    key = f.key("alice").public_key.to_base64()
    base = 'node_socket = "/tmp/x.sock"\n'
    twice = base + "threshold = 1\n" + f'[[builders]]\nname = "a"\npublic_key = "{key}"\n' * 1
    twice += f'[[builders]]\nname = "b"\npublic_key = "{key}"\n'
    for text, message in (
        (twice, "name the same key"),
        (
            base + "threshold = 0\n" + f'[[builders]]\nname = "a"\npublic_key = "{key}"\n',
            "between 1 and",
        ),
        (
            base + "threshold = 2\n" + f'[[builders]]\nname = "a"\npublic_key = "{key}"\n',
            "between 1 and",
        ),
        ("threshold = 1\n" + f'[[builders]]\nname = "a"\npublic_key = "{key}"\n', "no node to ask"),
    ):
        path = tmp_path / "p.toml"
        path.write_text(text)
        with pytest.raises(ConfigError, match=message):
            load_policy(path)
    status = cli.main(["decide", "--policy", str(path), "/nix/store/x"])
    assert status == 2


async def test_witness_cosignatures_are_required_when_the_policy_asks(tmp_path: Path) -> None:
    async with network(tmp_path) as nodes:
        alice = nodes["alice"]
        path = write_policy(tmp_path, socket=alice.config.socket_path)
        base = path.read_text()
        # Alice's node cosigns every head it accepted and gathers its peers' cosignatures.
        with trio.fail_after(30):
            await alice.wait_until(
                lambda: all(
                    (info := alice.engine.log_info(f.key(n).public_key.log_id())) is not None
                    and info.cosignatures >= 2
                    for n in ("bob", "dan")
                )
            )
        for witnesses, k, trusted in ((("alice", "bob"), 1, True), (("stranger",), 1, False)):
            lines = [f"witness_threshold = {k}"]
            for name in witnesses:
                key = f.key(name.strip()).public_key.to_base64()
                lines += ["[[witnesses]]", f'name = "w-{name.strip()}"', f'public_key = "{key}"']
            path.write_text(lines[0] + "\n" + base + "\n".join(lines[1:]) + "\n")
            policy = load_policy(path)
            state = tmp_path / "state.json"
            state.unlink(missing_ok=True)
            client = LightClient(
                policy, [ControlSource(str(alice.config.socket_path))], ClientState.load(policy)
            )
            d = await client.decide(f.entry(0).out_path)
            if trusted:
                # Each log's head at Alice's node is cosigned by Alice or by Bob.
                assert "bob" in d.agreed and "dan" in d.agreed, client.problems
            else:
                assert not d.trusted and d.agreed == ()
                assert any("witness cosignatures" in p for p in client.problems), client.problems


def test_store_path_arguments_may_be_hash_parts_or_derivations(tmp_path: Path) -> None:
    import subprocess
    import uuid

    from tests.nix import nix_env, require_nix
    from trustix_p2p.commands.client import resolve_paths

    part = f.entry(0).out_path.split("/")[-1][:32]
    assert resolve_paths([part]) == [f"/nix/store/{part}"]
    assert resolve_paths([f.entry(0).out_path]) == [f.entry(0).out_path]
    with pytest.raises(ConfigError, match="neither a store path"):
        resolve_paths(["/tmp/not-a-store-path"])
    require_nix()
    expr = (
        'derivation { name = "two-outputs"; system = builtins.currentSystem; builder = "/bin/sh";'
        f' outputs = [ "out" "dev" ]; args = [ "-c" "true" ]; nonce = "{uuid.uuid4().hex}"; }}'
    )
    drv = subprocess.run(
        ["nix-instantiate", "-E", expr], capture_output=True, text=True, env=nix_env(), check=True
    ).stdout.strip()
    outputs = resolve_paths([drv])
    assert len(outputs) == 2
    assert all(p.startswith("/nix/store/") and "two-outputs" in p for p in outputs)


async def decide_once(policy: Policy, node: Node, path: str) -> tuple[LightClient, Decision]:
    """One decision through `node`'s control socket, the client closed after it."""
    client = LightClient(
        policy, [ControlSource(str(node.config.socket_path))], ClientState.load(policy)
    )
    try:
        return client, await client.decide(path)
    finally:
        await client.aclose()


def pin_policy(tmp_path: Path, socket: Path, pins: dict[str, str]) -> Path:
    path = write_policy(tmp_path, socket=socket)
    text = path.read_text()
    for name, note in pins.items():
        marker = f'name = "{name}"\n'
        text = text.replace(marker, marker + f"pinned_checkpoint = {json.dumps(note)}\n")
    path.write_text(text)
    return path


async def test_a_pinned_checkpoint_the_log_extends_is_accepted(tmp_path: Path) -> None:
    async with network(tmp_path) as nodes:
        alice = nodes["alice"]
        # Dan's real checkpoint, pinned; Dan then grows his log honestly.
        dan_log = alice.store.log(f.key("dan").public_key.log_id())
        pin = dan_log.checkpoint()
        assert pin is not None
        await nodes["dan"].submit((f.leaf(200),))
        await nodes["dan"].sign_checkpoint_now()
        policy = load_policy(
            pin_policy(tmp_path, alice.config.socket_path, {"dan": pin.note.decode()})
        )
        client, d = await decide_once(policy, alice, f.entry(2).out_path)
        assert d.trusted and "dan" in d.agreed, client.problems
        assert not client.state.evidence


async def test_a_checkpoint_inconsistent_with_the_pin_is_evidence(tmp_path: Path) -> None:
    from trustix_p2p.ownlog import MemoryCheckpointFile, OwnLog
    from trustix_p2p.storage import LeafRecord, Store

    async with network(tmp_path) as nodes:
        alice = nodes["alice"]
        # Someone pinned a checkpoint of Dan's key over another history (what Dan's log was
        # before a stolen key rewrote it, say): the log the nodes serve now contradicts it.
        other = OwnLog.open(Store.in_memory(), f.key("dan"), MemoryCheckpointFile())
        rewritten = [f.leaf(300 + i) for i in range(2)]
        other.append([LeafRecord(x, f.entry(300 + i).out_path) for i, x in enumerate(rewritten)])
        pin = other.sign(1_700_000_000)
        assert pin is not None
        policy = load_policy(
            pin_policy(tmp_path, alice.config.socket_path, {"dan": pin.note.decode()})
        )
        client, d = await decide_once(policy, alice, f.entry(2).out_path)
        assert "dan" not in d.agreed
        assert [e.kind for e in client.state.evidence] == ["inconsistent-history"]
        assert any("pinned checkpoint" in p for p in client.problems), client.problems


def test_a_pin_the_key_did_not_sign_is_refused(tmp_path: Path) -> None:
    path = pin_policy(tmp_path, tmp_path / "sock", {"dan": "not a checkpoint\n"})
    with pytest.raises(ConfigError, match="pinned_checkpoint"):
        load_policy(path)
