"""Reports over whole verified logs: bulk verification, reproducibility, builder standings,
the HTML page, and the `r13y` and `builders` commands against real nodes in one process."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

import attrs
import pytest
import trio

from tests import factories as f
from tests.test_gossip_node import make_config, pinned, running
from trustix_p2p import cli
from trustix_p2p.client.bulk import (
    LogTooLarge,
    NoCheckpoint,
    VerifiedLog,
    key_prefix,
    read_verified_log,
)
from trustix_p2p.client.policy import Policy, policy_from_dict
from trustix_p2p.client.reports import (
    BuilderR13y,
    PathReport,
    render_html,
    reproducibility,
    standings,
)
from trustix_p2p.core import evidence as ev
from trustix_p2p.core.checkpoint import Checkpoint, SignedCheckpoint, origin_for, sign_checkpoint
from trustix_p2p.core.entry import Entry, encode_entry
from trustix_p2p.core.keys import PrivateKey
from trustix_p2p.core.merkle import MerkleFrontier, leaf_hash
from trustix_p2p.core.nix32 import format_nar_hash
from trustix_p2p.errors import LocalProtocolError, VerificationError

T0 = 1_700_000_000


def signed_over(key: PrivateKey, leaves: Sequence[bytes], time: int = T0) -> SignedCheckpoint:
    frontier = MerkleFrontier()
    for leaf in leaves:
        frontier.append(leaf_hash(leaf))
    cp = Checkpoint(origin_for(key.public_key.log_id()), len(leaves), frontier.root(), time)
    return sign_checkpoint(cp, key)


class FakeNode:
    """A node's two bulk-read calls over given bytes, answering at most `per_call` leaves."""

    def __init__(self, note: bytes | None, leaves: Sequence[bytes], per_call: int = 3) -> None:
        self.note = note
        self.leaves = list(leaves)
        self.per_call = per_call
        self.calls = 0

    def checkpoint(self, log_id: bytes | None = None) -> bytes | None:
        return self.note

    def entries(self, log_id: bytes, start: int, count: int) -> list[bytes]:
        self.calls += 1
        return self.leaves[start : start + min(count, self.per_call)]


def vlog(name: str, entries: Sequence[Entry], *, time: int = T0) -> VerifiedLog:
    """A log of `entries` signed by `name`'s test key, read back through read_verified_log."""
    key = f.key(name)
    leaves = [encode_entry(e) for e in entries]
    node = FakeNode(signed_over(key, leaves, time).note, leaves)
    return read_verified_log(node, key.public_key.log_id(), key.public_key, name=name)


def policy(names: Sequence[str], threshold: int, tmp_path: Path, **kw: object) -> Policy:
    data: dict[str, object] = {
        "threshold": threshold,
        "node_socket": str(tmp_path / "node.sock"),
        "state_file": str(tmp_path / "state.json"),
        "builders": [{"name": n, "public_key": f.key(n).public_key.to_base64()} for n in names],
    }
    data.update(kw)
    return policy_from_dict(data, tmp_path)


def h(i: int, seed: str = "") -> str:
    return format_nar_hash(f.entry(i, nar_seed=seed).nar_hash)


# -- read_verified_log ------------------------------------------------------------------------


def test_read_verified_log_reads_every_leaf_in_batches_and_keeps_the_signed_checkpoint() -> None:
    key = f.key("alice")
    leaves = [f.leaf(i) for i in range(10)]
    signed = signed_over(key, leaves)
    node = FakeNode(signed.note, leaves, per_call=3)
    log = read_verified_log(node, key.public_key.log_id(), key.public_key, batch=4, name="alice")
    assert log.entries == tuple(f.entry(i) for i in range(10))
    assert log.checkpoint == signed
    assert (log.name, log.mode, log.public_key) == ("alice", "mirror", key.public_key.raw)
    assert node.calls == 4  # 3 + 3 + 3 + 1: a node may answer fewer than asked
    empty = FakeNode(signed_over(key, []).note, [])
    assert read_verified_log(empty, key.public_key.log_id(), key.public_key).entries == ()


def test_leaves_that_do_not_rebuild_the_root_are_refused_naming_the_log() -> None:
    key = f.key("alice")
    leaves = [f.leaf(i) for i in range(5)]
    note = signed_over(key, leaves).note
    swapped = [*leaves[:2], f.leaf(2, nar_seed="forged"), *leaves[3:]]
    with pytest.raises(VerificationError, match=r"log alice .*do not rebuild"):
        read_verified_log(
            FakeNode(note, swapped), key.public_key.log_id(), key.public_key, name="alice"
        )
    with pytest.raises(VerificationError, match="do not rebuild"):
        read_verified_log(FakeNode(note, leaves[::-1]), key.public_key.log_id(), key.public_key)


def test_a_checkpoint_signed_by_another_key_is_refused() -> None:
    alice, mallory = f.key("alice"), f.key("mallory")
    leaves = [f.leaf(i) for i in range(3)]
    node = FakeNode(signed_over(mallory, leaves).note, leaves)
    with pytest.raises(VerificationError, match="checkpoint does not verify"):
        read_verified_log(node, alice.public_key.log_id(), alice.public_key)
    # Asked for one log with another log's key: refused before anything is fetched.
    with pytest.raises(VerificationError, match="is not the log of key"):
        read_verified_log(node, mallory.public_key.log_id(), alice.public_key)


def test_short_answers_missing_checkpoints_bad_leaves_and_bounds() -> None:
    key = f.key("alice")
    log_id = key.public_key.log_id()
    leaves = [f.leaf(i) for i in range(5)]
    note = signed_over(key, leaves).note
    with pytest.raises(VerificationError, match="answered 0 leaves"):
        read_verified_log(FakeNode(note, leaves[:3]), log_id, key.public_key)
    with pytest.raises(NoCheckpoint):
        read_verified_log(FakeNode(None, leaves), log_id, key.public_key)
    with pytest.raises(LogTooLarge):
        read_verified_log(FakeNode(note, leaves), log_id, key.public_key, max_entries=4)
    with pytest.raises(LocalProtocolError):
        read_verified_log(FakeNode(note, leaves), log_id, key.public_key, batch=4097)
    # A leaf the builder itself signed that is not an entry: the root holds, the log does not.
    junk = [*leaves[:2], b"not an entry", *leaves[3:]]
    node = FakeNode(signed_over(key, junk).note, junk)
    with pytest.raises(VerificationError, match="leaf 2 is not a valid entry"):
        read_verified_log(node, log_id, key.public_key)


# -- reproducibility --------------------------------------------------------------------------


def three_builders() -> list[VerifiedLog]:
    """pkg-0, 1: all agree; pkg-2: chuck differs; pkg-3: bob logged two hashes;
    pkg-4: only alice; pkg-5: only bob, twice with different hashes."""
    alice = vlog("alice", [f.entry(i) for i in range(5)])
    bob = vlog(
        "bob",
        [
            *(f.entry(i) for i in range(4)),
            f.entry(3, nar_seed="again"),
            f.entry(5),
            f.entry(5, nar_seed="x"),
            f.entry(0),  # the same entry twice is one hash
        ],
    )
    chuck = vlog("chuck", [f.entry(0), f.entry(1), f.entry(2, nar_seed="evil"), f.entry(3)])
    return [alice, bob, chuck]


def test_every_status_and_the_agreement_rates() -> None:
    paths, builders = reproducibility(three_builders())
    by_path = {p.out_path: p for p in paths}
    assert [p.out_path for p in paths] == sorted(by_path)
    status = {i: by_path[f.entry(i).out_path].status for i in range(6)}
    assert status == {
        0: "reproduced",
        1: "reproduced",
        2: "not-reproduced",
        3: "not-reproduced",
        4: "built-once",
        5: "not-reproduced",  # one builder that did not reproduce itself
    }
    assert by_path[f.entry(2).out_path].builders == (
        ("alice", h(2)),
        ("bob", h(2)),
        ("chuck", h(2, "evil")),
    )
    assert by_path[f.entry(3).out_path].builders == (
        ("alice", h(3)),
        ("bob", h(3)),
        ("bob", h(3, "again")),
        ("chuck", h(3)),
    )
    assert by_path[f.entry(4).out_path].builders == (("alice", h(4)),)
    alice, bob, chuck = builders
    key = f.key("alice").public_key
    assert alice == BuilderR13y("alice", key.log_id_hex(), 5, 5, 4, 2, 2, 0.5)
    assert (bob.entries, bob.paths, bob.shared, bob.agreed, bob.disagreed) == (8, 5, 4, 2, 2)
    assert (chuck.entries, chuck.paths, chuck.shared, chuck.agreed) == (4, 4, 4, 2)
    assert chuck.agreement_rate == 0.5


def test_a_builder_sharing_nothing_has_no_rate_and_a_log_given_twice_counts_once() -> None:
    alice = vlog("alice", [f.entry(0)])
    lone = vlog("lone", [f.entry(9)])
    paths, builders = reproducibility([alice, lone, alice])
    assert [b.name for b in builders] == ["alice", "lone"]
    assert builders[1].agreement_rate is None and builders[1].shared == 0
    assert {p.status for p in paths} == {"built-once"}
    assert reproducibility([]) == ([], [])


def retired_vlog(name: str, entries: Sequence[Entry], successor: str) -> VerifiedLog:
    """`name`'s log of `entries`, closed by a final checkpoint naming `successor`'s key."""
    key = f.key(name)
    leaves = [encode_entry(e) for e in entries]
    plain = signed_over(key, leaves).checkpoint
    final = sign_checkpoint(attrs.evolve(plain, successor=f.key(successor).public_key.raw), key)
    node = FakeNode(final.note, leaves)
    return read_verified_log(node, key.public_key.log_id(), key.public_key, name=name)


def test_a_retired_log_and_its_successor_are_one_builder() -> None:
    old = retired_vlog("alice", [f.entry(0), f.entry(1)], successor="alice 2")
    new = vlog("alice 2", [f.entry(1), f.entry(2)])
    bob = vlog("bob", [f.entry(1), f.entry(2, nar_seed="bob")])
    # In any order: the successor joins the log that names it.
    for logs in ([old, new, bob], [new, bob, old]):
        paths, builders = reproducibility(logs)
        status = {p.out_path: p.status for p in paths}
        assert status[f.entry(1).out_path] == "reproduced"  # alice and bob, not alice twice
        one = {p.out_path: p for p in paths}[f.entry(1).out_path]
        assert sorted(one.builders) == [("alice", h(1)), ("bob", h(1))]  # two logs, one hash
        assert status[f.entry(0).out_path] == "built-once"
        assert status[f.entry(2).out_path] == "not-reproduced"
        # Named by its first log, placed where that log was given.
        assert sorted(b.name for b in builders) == ["alice", "bob"]
        alice = next(b for b in builders if b.name == "alice")
        assert (alice.entries, alice.paths, alice.shared, alice.agreed) == (4, 3, 2, 1)
        assert alice.log_id == old.log_id.hex()


def test_standings_follow_a_retired_builder_to_its_successor(tmp_path: Path) -> None:
    old = retired_vlog("alice", [f.entry(0)], successor="alice 2")
    new = vlog("alice 2", [f.entry(1)])
    bob = vlog("bob", [f.entry(0), f.entry(1)])
    logs = {log.log_id: log for log in (old, new, bob)}
    builders = [
        {"name": "alice", "public_key": f.key("alice").public_key.to_base64()},
        {"name": "bob", "public_key": f.key("bob").public_key.to_base64()},
    ]
    plain = standings(policy(["alice", "bob"], 2, tmp_path), logs, [], T0)
    assert [(s.name, s.agreed) for s in plain] == [("alice", 1), ("bob", 1)]
    builders[0]["follow_successor"] = True
    following = standings(policy(["alice", "bob"], 2, tmp_path, builders=builders), logs, [], T0)
    assert [(s.name, s.agreed) for s in following] == [("alice", 2), ("bob", 2)]
    assert following[0].log_size == 1 and following[0].public_key == builders[0]["public_key"]


def test_logs_sharing_a_name_are_told_apart_by_key() -> None:
    a = vlog("alice", [f.entry(0)])
    b = vlog("bob", [f.entry(0)])
    twin = VerifiedLog(b.log_id, b.public_key, "alice", b.mode, b.checkpoint, b.entries)
    nameless = VerifiedLog(b.log_id, b.public_key, None, b.mode, b.checkpoint, b.entries)
    _, builders = reproducibility([a, twin])
    assert [x.name for x in builders] == [
        f"alice [{key_prefix(a.public_key)}]",
        f"alice [{key_prefix(b.public_key)}]",
    ]
    _, builders = reproducibility([a, nameless])
    assert builders[1].name == key_prefix(b.public_key)


# -- standings --------------------------------------------------------------------------------


def by_name(logs: Sequence[VerifiedLog]) -> dict[bytes, VerifiedLog]:
    return {log.log_id: log for log in logs}


def test_standings_count_agreed_outvoted_self_conflicts_and_missing_logs(tmp_path: Path) -> None:
    logs = by_name(three_builders())
    pol = policy(["alice", "bob", "chuck", "dave"], 2, tmp_path)
    rows = standings(pol, logs, [], now=T0 + 90)
    got = {r.name: (r.agreed, r.outvoted, r.self_conflicts, r.log_size) for r in rows}
    # pkg-0, 1: everyone agrees; pkg-2: chuck outvoted; pkg-3: bob conflicts (no vote),
    # alice and chuck reach 2; pkg-4 and 5: one voter at most, not trusted, nobody counted.
    assert got == {
        "alice": (4, 0, 0, 5),
        "bob": (3, 0, 2, 8),
        "chuck": (3, 1, 0, 4),
        "dave": (0, 0, 0, None),
    }
    assert [r.name for r in rows] == ["alice", "bob", "chuck", "dave"]
    assert rows[0].checkpoint_age == 90 and rows[3].checkpoint_age is None
    assert rows[0].public_key == f.key("alice").public_key.to_base64()
    assert not any(r.excluded or r.evidence for r in rows)
    # M counts out of N: with M = 3, pkg-2 has only two votes for one hash.
    strict = standings(policy(["alice", "bob", "chuck", "dave"], 3, tmp_path), logs, [], T0)
    assert {r.name: r.agreed for r in strict} == {"alice": 2, "bob": 2, "chuck": 2, "dave": 0}
    assert {r.name: r.outvoted for r in strict}["chuck"] == 0


def split_view_against(name: str) -> ev.SplitView:
    key = f.key(name)
    a = signed_over(key, [f.leaf(0), f.leaf(1)]).note
    b = signed_over(key, [f.leaf(0), f.leaf(1, nar_seed="fork")]).note
    return ev.split_view(key.public_key, a, b)


def test_verified_evidence_excludes_a_builder_and_false_evidence_does_not(tmp_path: Path) -> None:
    logs = by_name(three_builders())
    evidence = split_view_against("chuck")
    ident = ev.evidence_id(evidence)
    key = f.key("alice")
    same = signed_over(key, [f.leaf(0)]).note
    bogus = ev.SplitView(key.public_key, (same, same))  # identical checkpoints: not evidence
    pol = policy(["alice", "bob", "chuck"], 2, tmp_path)
    rows = {r.name: r for r in standings(pol, logs, [evidence, evidence, bogus], T0)}
    chuck = rows["chuck"]
    assert chuck.excluded and chuck.reason == "evidence: split-view"
    assert chuck.evidence == (f"split-view {ident}",)  # the same evidence twice is one
    assert (chuck.agreed, chuck.outvoted) == (0, 0)
    assert not rows["alice"].excluded and rows["alice"].evidence == ()
    # Without chuck, pkg-3 has alice alone (bob conflicts): not trusted any more.
    assert (rows["alice"].agreed, rows["bob"].agreed) == (3, 3)
    assert chuck.to_json() == {
        "name": "chuck",
        "public_key": f.key("chuck").public_key.to_base64(),
        "log_size": 4,
        "checkpoint_age": 0,
        "agreed": 0,
        "outvoted": 0,
        "self_conflicts": 0,
        "evidence": [f"split-view {ident}"],
        "excluded": True,
    }
    lenient = policy(["alice", "bob", "chuck"], 2, tmp_path, exclude_on_evidence=False)
    rows = {r.name: r for r in standings(lenient, logs, [evidence], T0)}
    assert not rows["chuck"].excluded and rows["chuck"].reason is None
    assert rows["chuck"].evidence == (f"split-view {ident}",)
    assert (rows["chuck"].agreed, rows["chuck"].outvoted) == (3, 1)


# -- the HTML page ----------------------------------------------------------------------------

HOSTILE = '<script>alert("x")</script>'


def test_the_html_page_is_self_contained_and_escapes_everything() -> None:
    logs = three_builders()
    evil = vlog("eve", [f.entry(0)])
    logs.append(
        VerifiedLog(evil.log_id, evil.public_key, HOSTILE, "mirror", evil.checkpoint, evil.entries)
    )
    paths, builders = reproducibility(logs)
    paths.append(PathReport(f"/nix/store/{HOSTILE}", "not-reproduced", ((HOSTILE, HOSTILE),)))
    page = render_html(paths, builders, title=f"report {HOSTILE}", generated_at=HOSTILE)
    assert HOSTILE not in page and 'alert("x")' not in page
    assert page.count("<script>") == 1  # ours, the sorter
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    assert "http://" not in page and "https://" not in page
    assert not re.search(r"\b(src|href)\s*=", page), "nothing may be loaded"
    assert "default-src 'none'" in page
    assert page.count("<svg") == 2
    # Summary counts per status, and the table of disagreements holds the disagreeing paths.
    assert '<li class="reproduced">reproduced: <b>2</b>' in page  # pkg-0 (eve too) and pkg-1
    assert "not-reproduced: <b>4</b>" in page and "built-once: <b>1</b>" in page
    assert "Paths where builders disagree" in page
    assert h(2, "evil") in page
    assert 'class="sortable"' in page


def test_the_html_tables_are_capped_with_a_note() -> None:
    paths = [PathReport(f.entry(i).out_path, "built-once", (("alice", h(i)),)) for i in range(7)]
    builders = [BuilderR13y("alice", "00" * 32, 7, 7, 0, 0, 0, None)]
    page = render_html(paths, builders, title="t", generated_at="now", max_rows=5)
    assert "Showing the first 5 of 7 paths." in page
    assert f.entry(4).out_path in page and f.entry(6).out_path not in page
    assert "no shared paths" in page
    empty = render_html([], [], title="t", generated_at="now")
    assert "out paths: <b>0</b>" in empty


# -- the commands -----------------------------------------------------------------------------


def test_builders_needs_a_node_socket(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    node_key = f.key("node").public_key.to_base64()
    path = tmp_path / "policy.toml"
    path.write_text(
        f'threshold = 1\nnodes = ["{node_key}@127.0.0.1:1"]\n'
        f'[[builders]]\nname = "alice"\npublic_key = "{f.key("alice").public_key.to_base64()}"\n'
    )
    assert cli.main(["builders", "--policy", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "via node_socket" in err


async def test_r13y_and_builders_against_real_nodes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Three builders (chuck differs on pkg-2, bob logs pkg-3 twice, only alice built pkg-4),
    and an observer that mirrors all three; the reports read the observer's socket."""
    logs = {
        "alice": [f.entry(i) for i in range(5)],
        "bob": [*(f.entry(i) for i in range(4)), f.entry(3, nar_seed="again")],
        "chuck": [f.entry(0), f.entry(1), f.entry(2, nar_seed="evil"), f.entry(3)],
    }
    keys = {name: f.key(name) for name in logs}
    log_ids = {name: key.public_key.log_id() for name, key in keys.items()}
    async with (
        running(make_config(tmp_path / "alice", keys["alice"])) as alice,
        running(make_config(tmp_path / "bob", keys["bob"])) as bob,
        running(make_config(tmp_path / "chuck", keys["chuck"])) as chuck,
    ):
        builders = {"alice": alice, "bob": bob, "chuck": chuck}
        for name, node in builders.items():
            await node.submit(tuple(encode_entry(e) for e in logs[name]))
            assert await node.sign_checkpoint_now() is not None
        seeds = tuple(pinned(node) for node in builders.values())
        config = make_config(tmp_path / "observer", f.key("observer"), seeds=seeds)
        async with running(config) as observer:

            def mirrored() -> bool:
                for name, log_id in log_ids.items():
                    if not observer.store.has_log(log_id):
                        return False
                    cp = observer.store.log(log_id).checkpoint()
                    if cp is None or cp.checkpoint.size != len(logs[name]):
                        return False
                return True

            with trio.fail_after(30):
                await observer.wait_until(mirrored)
            socket = str(config.control_socket)
            html_file = tmp_path / "out.html"
            argv = ["r13y", "--socket", socket, "--json", "--html", str(html_file)]
            capsys.readouterr()
            assert await trio.to_thread.run_sync(cli.main, argv) == 0
            out = capsys.readouterr().out
            report = json.loads(out)
            assert report["paths"] == {"reproduced": 2, "not_reproduced": 2, "built_once": 1}
            # Mirrored logs carry no name: builders show by key prefix.
            label = {key_prefix(k.public_key.raw): n for n, k in keys.items()}
            rows = {label[b["name"]]: b for b in report["builders"] if b["name"] in label}
            assert set(rows) == {"alice", "bob", "chuck"}
            assert {
                n: (r["entries"], r["paths"], r["shared"], r["agreed"]) for n, r in rows.items()
            } == {
                "alice": (5, 5, 4, 2),
                "bob": (5, 4, 4, 2),
                "chuck": (4, 4, 4, 2),
            }
            assert rows["alice"]["agreement_rate"] == 0.5
            assert rows["alice"]["log_id"] == log_ids["alice"].hex()
            disagreements = {d["out_path"]: d["builders"] for d in report["disagreements"]}
            assert set(disagreements) == {f.entry(2).out_path, f.entry(3).out_path}
            chucks = [
                b["nar_hash"]
                for b in disagreements[f.entry(2).out_path]
                if label.get(b["name"]) == "chuck"
            ]
            assert chucks == [h(2, "evil")]
            page = html_file.read_text()
            assert page.startswith("<!DOCTYPE html>") and h(2, "evil") in page
            assert "http://" not in page and "https://" not in page

            # The plain summary says the same in a few lines.
            argv = ["r13y", "--socket", socket]
            assert await trio.to_thread.run_sync(cli.main, argv) == 0
            text = capsys.readouterr().out
            assert "2 reproduced, 2 not reproduced, 1 built once" in text
            assert f.entry(2).out_path in text

            policy_file = tmp_path / "policy.toml"
            policy_file.write_text(
                f"threshold = 2\nnode_socket = {json.dumps(socket)}\n"
                'state_file = "state.json"\n'
                + "".join(
                    f'[[builders]]\nname = "{n}"\npublic_key = "{k.public_key.to_base64()}"\n'
                    for n, k in [*keys.items(), ("dave", f.key("dave"))]
                )
            )
            argv = ["builders", "--policy", str(policy_file), "--json"]
            assert await trio.to_thread.run_sync(cli.main, argv) == 0
            captured = capsys.readouterr()
            standing = {r["name"]: r for r in json.loads(captured.out)}
            assert "dave: the node does not follow" in captured.err
            for r in standing.values():
                assert set(r) == {
                    "name",
                    "public_key",
                    "log_size",
                    "checkpoint_age",
                    "agreed",
                    "outvoted",
                    "self_conflicts",
                    "evidence",
                    "excluded",
                }
            got = {
                n: (r["log_size"], r["agreed"], r["outvoted"], r["self_conflicts"])
                for n, r in standing.items()
            }
            assert got == {
                "alice": (5, 4, 0, 0),
                "bob": (5, 3, 0, 1),
                "chuck": (4, 3, 1, 0),
                "dave": (None, 0, 0, 0),
            }
            assert all(0 <= standing[n]["checkpoint_age"] < 600 for n in keys)
            assert not any(r["excluded"] or r["evidence"] for r in standing.values())

            argv = ["builders", "--policy", str(policy_file)]
            assert await trio.to_thread.run_sync(cli.main, argv) == 0
            table = capsys.readouterr().out.splitlines()
            assert table[0].split() == [
                "builder",
                "log",
                "size",
                "age",
                "agreed",
                "outvoted",
                "self-conflicts",
                "evidence",
            ]
            assert table[3].split()[:1] == ["chuck"] and table[4].split()[:2] == ["dave", "-"]
