"""Querying the Nix store: its SQLite database, the nix-store fallback, and both against Nix."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.nix import nix_env, require_nix
from trustix_p2p.core.nix32 import parse_nar_hash
from trustix_p2p.errors import NixStoreError
from trustix_p2p.nix.store import CliNixStore, SqliteNixStore, open_nix_store

# The tables of Nix's src/libstore/schema.sql that the store module reads.
SCHEMA = """
CREATE TABLE ValidPaths (id integer primary key autoincrement not null, path text unique not null,
  hash text not null, registrationTime integer not null, deriver text, narSize integer,
  ultimate integer, sigs text, ca text);
CREATE TABLE Refs (referrer integer not null, reference integer not null,
  primary key (referrer, reference));
CREATE TABLE DerivationOutputs (drv integer not null, id text not null, path text not null,
  primary key (drv, id));
"""
A = "/nix/store/" + "a" * 32 + "-a"
B = "/nix/store/" + "b" * 32 + "-b"
DRV = "/nix/store/" + "d" * 32 + "-b.drv"


def make_db(state: Path, schema_version: str = "10") -> None:
    (state / "db").mkdir(parents=True)
    (state / "db" / "schema").write_text(schema_version)
    with sqlite3.connect(state / "db" / "db.sqlite") as db:
        db.executescript(SCHEMA)
        db.execute("PRAGMA journal_mode=WAL")  # as Nix runs it
        rows = [(1, A, "sha256:" + "11" * 32, None, 10), (2, B, "sha256:" + "22" * 32, DRV, 20)]
        rows.append((3, DRV, "sha256:" + "33" * 32, None, 30))
        db.executemany(
            "INSERT INTO ValidPaths (id, path, hash, registrationTime, deriver, narSize)"
            " VALUES (?, ?, ?, 0, ?, ?)",
            rows,
        )
        db.executemany("INSERT INTO Refs VALUES (?, ?)", [(2, 1), (2, 2)])
        db.execute("INSERT INTO DerivationOutputs VALUES (3, 'out', ?)", (B,))


def test_sqlite_store_reads_references_deriver_and_outputs(tmp_path: Path) -> None:
    make_db(tmp_path)
    store = SqliteNixStore.open(tmp_path)
    a, b = store.path_infos([A, B])
    assert (a.deriver, a.references, a.nar_size, a.nar_hash) == ("", (), 10, b"\x11" * 32)
    # A self-reference is a reference like any other (Nix records it, path-info shows it).
    assert b.references == tuple(sorted([os.path.basename(A), os.path.basename(B)]))
    assert b.deriver == DRV
    assert store.derivation_outputs(DRV) == {"out": B}
    assert store.derivation_outputs(A) == {}
    with pytest.raises(NixStoreError, match="not a valid path"):
        store.path_infos(["/nix/store/" + "c" * 32 + "-c"])
    store.close()


def test_an_unknown_schema_or_missing_db_falls_back_to_the_cli(tmp_path: Path) -> None:
    make_db(tmp_path / "new", schema_version="11")
    with pytest.raises(NixStoreError, match="schema"):
        SqliteNixStore.open(tmp_path / "new")
    assert isinstance(open_nix_store(tmp_path / "new"), CliNixStore)
    assert isinstance(open_nix_store(tmp_path / "absent"), CliNixStore)
    make_db(tmp_path / "ok")
    assert isinstance(open_nix_store(tmp_path / "ok"), SqliteNixStore)


def fake_nix_store(tmp_path: Path, stdout: str, status: int = 0) -> str:
    script = tmp_path / "nix-store"
    script.write_text(f"#!/bin/sh\ncat <<'EOF'\n{stdout}EOF\nexit {status}\n")
    script.chmod(0o755)
    return str(script)


def test_cli_store_parses_dump_db(tmp_path: Path) -> None:
    dump = f"{A}\n{'11' * 32}\n10\n\n0\n{B}\n{'22' * 32}\n20\n{DRV}\n2\n{A}\n{B}\n"
    store = CliNixStore(nix_store=fake_nix_store(tmp_path, dump))
    b, a = store.path_infos([B, A])
    assert a.references == () and a.deriver == "" and a.nar_size == 10
    assert b.references == (os.path.basename(A), os.path.basename(B))
    assert b.nar_hash == b"\x22" * 32


@pytest.mark.parametrize(
    "dump",
    [
        f"{A}\nnothex\n10\n\n0\n",
        f"{A}\n{'11' * 32}\nten\n\n0\n",
        f"{A}\n{'11' * 32}\n10\n\n2\n{B}\n",
        f"{A}\n{'11' * 32}\n10\n\n1\n../../etc/passwd\n",
    ],
)
def test_cli_store_refuses_malformed_output(tmp_path: Path, dump: str) -> None:
    store = CliNixStore(nix_store=fake_nix_store(tmp_path, dump))
    with pytest.raises(NixStoreError):
        store.path_infos([A])


def test_cli_store_failure_is_a_store_error(tmp_path: Path) -> None:
    store = CliNixStore(nix_store=fake_nix_store(tmp_path, "", status=1))
    with pytest.raises(NixStoreError, match="failed"):
        store.path_infos([A])
    with pytest.raises(NixStoreError, match="cannot run"):
        CliNixStore(nix_store=str(tmp_path / "absent")).path_infos([A])


def test_cli_store_recovers_output_names_from_path_names(tmp_path: Path) -> None:
    out = "/nix/store/" + "f" * 32 + "-b"
    dev = "/nix/store/" + "g" * 32 + "-b-dev"
    store = CliNixStore(nix_store=fake_nix_store(tmp_path, f"{dev}\n{out}\n"))
    assert store.derivation_outputs(DRV) == {"out": out, "dev": dev}
    bad = CliNixStore(nix_store=fake_nix_store(tmp_path, "/nix/store/eeee-b\n"))
    with pytest.raises(NixStoreError):
        bad.derivation_outputs(DRV)


@pytest.mark.nix
def test_both_stores_agree_with_nix_path_info(tmp_path: Path) -> None:
    require_nix()
    expr = (
        'derivation { name = "store-query"; system = builtins.currentSystem;'
        ' builder = "/bin/sh"; PATH = "/usr/bin:/bin"; outputs = [ "out" "bin" ];'
        f' nonce = "{uuid.uuid4().hex}";'
        ' args = [ "-c" "echo x > $out; mkdir $bin; ln -s $out $bin/link" ]; }'
    )
    env = nix_env()

    def run(*args: str) -> str:
        return subprocess.run(args, capture_output=True, text=True, env=env, check=True).stdout

    run("nix-build", "--no-out-link", "-E", expr)
    paths = sorted(
        run("nix-store", "--query", "--outputs", run("nix-instantiate", "-E", expr).strip()).split()
    )
    infos = {
        i["path"]: i
        for i in json.loads(
            subprocess.run(
                ["nix", "path-info", "--json", *paths],
                capture_output=True,
                text=True,
                env=env,
                check=True,
            ).stdout
        )
    }
    sqlite_store = SqliteNixStore.open(Path("/nix/var/nix"))
    for store in (sqlite_store, CliNixStore()):
        for mine in store.path_infos(paths):
            nix = infos[mine.path]
            assert mine.deriver == nix["deriver"]
            assert mine.references == tuple(sorted(os.path.basename(r) for r in nix["references"]))
            assert mine.nar_hash == parse_nar_hash(nix["narHash"])
            assert mine.nar_size == nix["narSize"]
        drv = infos[paths[0]]["deriver"]
        assert sorted(store.derivation_outputs(drv).values()) == paths
    sqlite_store.close()
