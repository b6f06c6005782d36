"""End to end with real Nix: builds run the post-build hook, the node logs what Nix built.

Each test runs a real `trustix-p2p node` process and real `nix-build`s whose `post-build-hook`
is one of the two an operator may install per docs/nix-builder.md: a shell script that sets
TRUSTIX_P2P_CONFIG and execs `trustix-p2p nix-hook`, or the program that
`trustix-p2p nix-hook --write-wrapper` generates.  The log is then read back with `trustix-p2p log
entries` and compared, output by output, with `nix path-info --json`.

The tests share the machine's real /nix/store (setup: tests/nix/setup-nix.sh).  Every
derivation carries a fresh nonce so that Nix really builds it and runs the hook, instead of
finding a valid path from an earlier run.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

from tests.nix import nix_env, require_nix
from trustix_p2p.control.client import ControlClient
from trustix_p2p.core.entry import Entry, decode_entry
from trustix_p2p.core.nix32 import parse_nar_hash
from trustix_p2p.errors import NodeUnavailableError
from trustix_p2p.spool import pending_spool_files

pytestmark = pytest.mark.nix

READY_TIMEOUT = 30.0  # generous: CI machines are slow and shared


def trustix_command() -> list[str]:
    script = Path(sys.executable).parent / "trustix-p2p"
    return [str(script)] if script.exists() else [sys.executable, "-m", "trustix_p2p"]


def run_trustix(*args: str | Path, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(
        [*trustix_command(), *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@attrs.define
class Builder:
    """A builder's node (as a process) plus the nix.conf settings of its post-build hook."""

    root: Path
    config: Path
    hook: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def state(self) -> Path:
        return self.root / "state"

    @property
    def spool(self) -> Path:
        return self.state / "spool"

    @property
    def socket(self) -> Path:
        return self.state / "control.sock"

    def start(self) -> None:
        assert self.process is None
        log = (self.root / "node.log").open("ab")
        self.process = subprocess.Popen(
            [*trustix_command(), "node", "--config", str(self.config)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            assert self.process.poll() is None, (self.root / "node.log").read_text()
            try:
                with ControlClient(self.socket, timeout=1.0) as client:
                    client.status()
                return
            except NodeUnavailableError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=READY_TIMEOUT)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
            self.process = None

    def status(self) -> dict[str, object]:
        with ControlClient(self.socket, timeout=5.0) as client:
            status = client.status()
        return {"size": status.size, "spool_pending": status.spool_pending}

    def entries(self) -> list[Entry]:
        """Every entry in the log (node stopped, so the state can be opened)."""
        assert self.process is None
        lines = run_trustix("log", "entries", "--state", self.state).splitlines()
        return [decode_entry(base64.b64decode(json.loads(line)["leaf"])) for line in lines]

    def nix_build(self, expr: str) -> list[str]:
        """Build a Nix expression with the hook configured; return all outputs' paths."""
        env = nix_env(f"post-build-hook = {self.hook}\n")
        proc = subprocess.run(
            ["nix-build", "--no-out-link", "-E", expr],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        assert "running post-build-hook" in proc.stderr, proc.stderr
        drv = subprocess.run(
            ["nix-instantiate", "-E", expr],
            capture_output=True,
            text=True,
            env=nix_env(),
            check=True,
        ).stdout.strip()
        outputs = subprocess.run(
            ["nix-store", "--query", "--outputs", drv],
            capture_output=True,
            text=True,
            env=nix_env(),
            check=True,
        ).stdout.split()
        return sorted(outputs)


# The two post-build hooks docs/nix-builder.md offers an operator: a shell script that runs
# `trustix-p2p nix-hook`, and the program `trustix-p2p nix-hook --write-wrapper` generates.
HOOKS = ["shell script", "generated wrapper"]


@pytest.fixture(params=HOOKS)
def builder(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Builder]:
    require_nix()
    root = tmp_path / "builder"
    root.mkdir()
    run_trustix("keygen", root / "node.key")
    config = root / "node.toml"
    config.write_text(
        'state_dir = "state"\n'
        'key_file = "node.key"\n'
        "checkpoint_interval = 0.2\n"
        "spool_poll_interval = 0.1\n"
    )
    hook = root / "post-build-hook"
    if request.param == "generated wrapper":
        run_trustix("nix-hook", "--config", config, "--write-wrapper", hook)
    else:
        command = " ".join(f"'{part}'" for part in trustix_command())
        hook.write_text(
            f"#!/bin/sh\nexport TRUSTIX_P2P_CONFIG='{config}'\nexec {command} nix-hook\n"
        )
        hook.chmod(0o755)
    b = Builder(root, config, hook)
    try:
        yield b
    finally:
        b.stop()


def derivations(nonce: str) -> dict[str, str]:
    """Three small derivations: a file, a tree with an executable and symlinks, 3 outputs."""
    common = (
        f'system = builtins.currentSystem; builder = "/bin/sh"; PATH = "/usr/bin:/bin";'
        f' nonce = "{nonce}";'
    )
    return {
        "file": f'derivation {{ name = "e2e-file"; {common}'
        ' args = [ "-c" "echo hello > $out" ]; }',
        "tree": f'derivation {{ name = "e2e-tree"; {common}'
        ' args = [ "-c" "mkdir -p $out/bin $out/share/empty-dir;'
        " printf '#!/bin/sh\\necho hi\\n' > $out/bin/hello; chmod +x $out/bin/hello;"
        " ln -s ../bin/hello $out/share/link; ln -s /nowhere $out/dangling;"
        ' : > $out/share/empty-file" ]; }',
        "multi": f'derivation {{ name = "e2e-multi"; {common}'
        ' outputs = [ "out" "dev" "doc" ];'
        ' args = [ "-c" "echo lib > $out; mkdir -p $dev/include; ln -s $out $dev/lib;'
        ' echo see $dev > $doc" ]; }',
    }


def path_info(paths: list[str]) -> dict[str, dict[str, object]]:
    out = subprocess.run(
        ["nix", "path-info", "--json", *paths],
        capture_output=True,
        text=True,
        env=nix_env(),
        check=True,
    ).stdout
    return {info["path"]: info for info in json.loads(out)}


def assert_logged_exactly_once(entries: list[Entry], outputs: list[str]) -> None:
    infos = path_info(outputs)
    for path in outputs:
        mine = [e for e in entries if e.out_path == path]
        assert len(mine) == 1, f"{path} logged {len(mine)} times"
        entry, info = mine[0], infos[path]
        assert entry.nar_hash == parse_nar_hash(str(info["narHash"]))
        assert entry.nar_size == info["narSize"]
        assert entry.references == tuple(
            sorted(str(r).rsplit("/", 1)[1] for r in info["references"])  # type: ignore[attr-defined]
        )
        assert entry.deriver == info["deriver"]


def test_the_hook_logs_every_output_as_nix_path_info_reports_it(builder: Builder) -> None:
    builder.start()
    built: dict[str, list[str]] = {}
    for kind, expr in derivations(uuid.uuid4().hex).items():
        built[kind] = builder.nix_build(expr)
    assert builder.status()["size"] == 5
    builder.stop()
    entries = builder.entries()
    assert len(entries) == 5
    assert_logged_exactly_once(entries, [p for paths in built.values() for p in paths])
    names = {e.out_path: e.output_name for e in entries}
    multi = {names[p]: p for p in built["multi"]}
    assert sorted(multi) == ["dev", "doc", "out"]
    assert multi["out"].endswith("-e2e-multi")
    assert multi["dev"].endswith("-e2e-multi-dev")
    by_path = {e.out_path: e for e in entries}
    # dev links to out, doc names dev: Nix found those references, and so does the entry.
    assert by_path[multi["dev"]].references == (os.path.basename(multi["out"]),)
    assert by_path[multi["doc"]].references == (os.path.basename(multi["dev"]),)


def test_with_the_node_down_builds_succeed_and_spooled_entries_are_logged_once(
    builder: Builder,
) -> None:
    built: list[str] = []
    for expr in derivations(uuid.uuid4().hex).values():
        built += builder.nix_build(expr)  # the node is not running
    spooled = pending_spool_files(builder.spool)
    assert len(spooled) == 3  # one file per build
    # A hand-over retried after a crash can leave the same leaves twice in the spool.
    duplicate = builder.spool / ("0" + spooled[0].name)
    duplicate.write_bytes(spooled[0].read_bytes())

    builder.start()
    deadline = time.monotonic() + READY_TIMEOUT
    while pending_spool_files(builder.spool) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert pending_spool_files(builder.spool) == []
    # A build while the node runs again goes straight to the node.
    later = builder.nix_build(derivations(uuid.uuid4().hex)["file"])
    builder.stop()

    entries = builder.entries()
    assert len(entries) == len(built) + 1
    assert_logged_exactly_once(entries, built + later)


@pytest.mark.parametrize("builder", HOOKS[:1], indirect=True)  # submit uses no hook
def test_submit_hands_over_a_store_path_idempotently(builder: Builder) -> None:
    nonce = uuid.uuid4().hex
    paths = subprocess.run(
        ["nix-build", "--no-out-link", "-E", derivations(nonce)["tree"]],
        capture_output=True,
        text=True,
        env=nix_env(),  # no hook: submitted by hand below
        check=True,
    ).stdout.split()
    env = {**os.environ, "TRUSTIX_P2P_CONFIG": str(builder.config)}
    builder.start()
    first = run_trustix("submit", *paths, env=env)
    # Cross a second boundary so the re-submission's entry differs in built_at: only the
    # lookup of the identical build in the node's log can keep it from being logged twice.
    time.sleep(1.1)
    again = run_trustix("submit", *paths, env=env)
    assert first == again == f"0 {paths[0]}\n"
    builder.stop()
    assert_logged_exactly_once(builder.entries(), paths)
