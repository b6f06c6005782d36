"""The admin CLI on a stopped node's state directory, driven as a user would."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import plyvel
import pytest

from tests import factories as f
from trustix_p2p.cli import main
from trustix_p2p.core import merkle
from trustix_p2p.core.checkpoint import verify_checkpoint
from trustix_p2p.core.entry import decode_entry, entry_to_json
from trustix_p2p.core.keys import PublicKey


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def append(
    capsys: pytest.CaptureFixture[str], state: str, key: str, jsonl: str
) -> tuple[int, str, str]:
    return run(capsys, "log", "append", "--state", state, "--key", key, "--jsonl", jsonl)


def b64(s: str) -> bytes:
    return base64.b64decode(s)


@pytest.fixture
def keyfile(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[Path, PublicKey]:
    path = tmp_path / "builder.key"
    code, out, _ = run(capsys, "keygen", str(path))
    assert code == 0
    info = json.loads(out)
    pub = PublicKey.from_base64(info["public_key"])
    assert info["log_id"] == pub.log_id_hex()
    assert (path.stat().st_mode & 0o777) == 0o600
    return path, pub


def write_jsonl(path: Path, n: int, start: int = 0) -> list[dict[str, object]]:
    objs = [entry_to_json(f.entry(i)) for i in range(start, start + n)]
    path.write_text("".join(json.dumps(o) + "\n" for o in objs))
    return objs


def test_append_then_every_read_command_agrees(
    tmp_path: Path, keyfile: tuple[Path, PublicKey], capsys: pytest.CaptureFixture[str]
) -> None:
    key, pub = keyfile
    state = tmp_path / "state"
    jsonl = tmp_path / "entries.jsonl"
    write_jsonl(jsonl, 25)
    code, out, _ = run(
        capsys,
        "log",
        "append",
        "--state",
        str(state),
        "--key",
        str(key),
        "--jsonl",
        str(jsonl),
        "--batch",
        "10",
    )
    assert code == 0
    summary = json.loads(out)
    assert summary["appended"] == 25 and summary["size"] == 25

    code, note, _ = run(capsys, "log", "checkpoint", "--state", str(state))
    cp = verify_checkpoint(note.encode(), pub).checkpoint
    assert cp.size == 25 and base64.b64encode(cp.root).decode() == summary["root"]

    code, out, _ = run(
        capsys, "log", "entries", "--state", str(state), "--start", "3", "--end", "6"
    )
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["index"] for r in rows] == [3, 4, 5]
    assert decode_entry(b64(rows[0]["leaf"])) == f.entry(3)

    code, out, _ = run(capsys, "log", "prove-inclusion", "--state", str(state), "--index", "7")
    p = json.loads(out)
    assert p["size"] == 25 and b64(p["root"]) == cp.root
    assert b64(p["leaf_hash"]) == merkle.leaf_hash(f.leaf(7))
    merkle.verify_inclusion(7, 25, b64(p["leaf_hash"]), [b64(x) for x in p["proof"]], cp.root)

    code, out, _ = run(capsys, "log", "prove-consistency", "--state", str(state), "--old", "10")
    c = json.loads(out)
    merkle.verify_consistency(10, 25, [b64(x) for x in c["proof"]], b64(c["old_root"]), cp.root)

    code, out, _ = run(capsys, "log", "verify", "--state", str(state))
    assert code == 0 and json.loads(out)["ok"] is True


def test_appending_the_same_file_twice_logs_it_once(
    tmp_path: Path, keyfile: tuple[Path, PublicKey], capsys: pytest.CaptureFixture[str]
) -> None:
    key, _ = keyfile
    jsonl = tmp_path / "e.jsonl"
    objs = write_jsonl(jsonl, 5)
    jsonl.write_text("".join(json.dumps({**o, "built_at": 1}) + "\n" for o in objs))
    for _ in range(2):
        code, out, _ = run(
            capsys,
            "log",
            "append",
            "--state",
            str(tmp_path / "s"),
            "--key",
            str(key),
            "--jsonl",
            str(jsonl),
        )
        assert code == 0
    assert json.loads(out) | {"root": None} == {
        "log_id": keyfile[1].log_id_hex(),
        "appended": 0,
        "size": 5,
        "root": None,
    }


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "entries.jsonl:3"),
        (
            '{"out_path": "/nix/store/bad", "nar_hash": "sha256:x", "nar_size": 1}',
            "entries.jsonl:3",
        ),
        ("[1, 2, 3]", "entries.jsonl:3"),
    ],
)
def test_a_bad_jsonl_line_is_reported_and_nothing_is_appended(
    tmp_path: Path,
    keyfile: tuple[Path, PublicKey],
    capsys: pytest.CaptureFixture[str],
    line: str,
    message: str,
) -> None:
    key, _ = keyfile
    jsonl = tmp_path / "entries.jsonl"
    good = [json.dumps(entry_to_json(f.entry(i))) for i in range(4)]
    jsonl.write_text("\n".join([*good[:2], line, *good[2:]]) + "\n")
    code, _, err = append(capsys, str(tmp_path / "s"), str(key), str(jsonl))
    assert code == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "s" / "db").exists()


def test_oversized_field_is_refused(
    tmp_path: Path, keyfile: tuple[Path, PublicKey], capsys: pytest.CaptureFixture[str]
) -> None:
    key, _ = keyfile
    obj = entry_to_json(f.entry(1)) | {"output": "o" * 100_000}
    (tmp_path / "e.jsonl").write_text(json.dumps(obj) + "\n")
    code, _, err = append(capsys, str(tmp_path / "s"), str(key), str(tmp_path / "e.jsonl"))
    assert code == 2 and "output" in err


def test_key_file_with_loose_mode_or_wrong_length_is_refused(
    tmp_path: Path, keyfile: tuple[Path, PublicKey], capsys: pytest.CaptureFixture[str]
) -> None:
    key, _ = keyfile
    write_jsonl(tmp_path / "e.jsonl", 1)
    os.chmod(key, 0o644)
    code, _, err = append(capsys, str(tmp_path / "s"), str(key), str(tmp_path / "e.jsonl"))
    assert code == 2 and "chmod" in err
    short = tmp_path / "short.key"
    short.write_text("trustix-p2p-ed25519:" + base64.b64encode(b"x" * 16).decode() + "\n")
    os.chmod(short, 0o600)
    code, _, err = append(capsys, str(tmp_path / "s"), str(short), str(tmp_path / "e.jsonl"))
    assert code == 2 and "short.key" in err


def test_verify_reports_a_flipped_byte_in_a_subtree_hash(
    tmp_path: Path, keyfile: tuple[Path, PublicKey], capsys: pytest.CaptureFixture[str]
) -> None:
    key, pub = keyfile
    state = tmp_path / "state"
    write_jsonl(tmp_path / "e.jsonl", 12)
    assert (
        run(
            capsys,
            "log",
            "append",
            "--state",
            str(state),
            "--key",
            str(key),
            "--jsonl",
            str(tmp_path / "e.jsonl"),
        )[0]
        == 0
    )
    db = plyvel.DB(str(state / "db"))
    num = db.get(b"I" + pub.log_id())
    k = b"E" + num + (3).to_bytes(8, "big")  # leaf 3 completes node (2, 0)
    v = bytearray(db.get(k))
    v[2 * 32 + 5] ^= 0x40
    db.put(k, bytes(v))
    db.close()
    code, out, _ = run(capsys, "log", "verify", "--state", str(state))
    report = json.loads(out)
    assert code == 1 and report["ok"] is False
    assert any("node (2, 0)" in p for p in report["problems"])


def test_commands_on_a_directory_that_is_not_a_state_dir_fail_clearly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "log", "checkpoint", "--state", str(tmp_path))
    assert code == 2 and "not a node state directory" in err
