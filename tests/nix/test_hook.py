"""The hook's logic without Nix: outputs from a .drv, entries, hand-over and spooling.

A fake store directory under tmp_path stands in for /nix/store (store paths may live in any
absolute store directory), and a fake `NixStore` answers what Nix's database would.
"""

from __future__ import annotations

import ast
import inspect
import os
import socket
import subprocess
import sys
import threading
import types
from collections.abc import Iterator, Sequence
from pathlib import Path

import attrs
import msgpack
import pytest

import trustix_p2p
from trustix_p2p.core import nix32
from trustix_p2p.core.entry import decode_entry
from trustix_p2p.core.lean import entry as lean_entry
from trustix_p2p.errors import ConfigError, LocalProtocolError, NixStoreError
from trustix_p2p.nix import drv as drv_module
from trustix_p2p.nix import hook as hook_module
from trustix_p2p.nix import store as store_module
from trustix_p2p.nix import wrapper
from trustix_p2p.nix.hook import hand_over, hook_leaves, hook_outputs, output_entries
from trustix_p2p.nix.nardump import hash_path
from trustix_p2p.nix.store import PathInfo
from trustix_p2p.nix.submit import encode_all, entries_for_paths, submit_once
from trustix_p2p.nix.wrapper import config_stamp, write_wrapper
from trustix_p2p.spool import pending_spool_files, read_spool

BUILT_AT = 1_700_000_000


def fake_path(store: Path, name: str) -> str:
    return f"{store}/{nix32.encode(name.encode().ljust(20, b'.')[:20])}-{name}"


@attrs.define
class FakeStore:
    """Answers like Nix's database for the paths the test registered."""

    store_dir: str
    infos: dict[str, PathInfo] = attrs.field(factory=dict)
    outputs: dict[str, dict[str, str]] = attrs.field(factory=dict)

    def path_infos(self, paths: Sequence[str]) -> list[PathInfo]:
        missing = [p for p in paths if p not in self.infos]
        if missing:
            raise NixStoreError(f"{missing[0]} is not valid")
        return [self.infos[p] for p in paths]

    def derivation_outputs(self, drv_path: str) -> dict[str, str]:
        return dict(self.outputs.get(drv_path, {}))


@attrs.define
class World:
    store: FakeStore
    drv: str
    out: str
    dev: str


@pytest.fixture
def world(tmp_path: Path) -> World:
    store_dir = tmp_path / "store"
    store_dir.mkdir()
    out, dev = fake_path(store_dir, "pkg"), fake_path(store_dir, "pkg-dev")
    drv = fake_path(store_dir, "pkg.drv")
    Path(out).write_text("library\n")
    Path(dev).mkdir()
    (Path(dev) / "include").symlink_to(out)
    Path(drv).write_text(
        f'Derive([("dev","{dev}","",""),("out","{out}","","")],[],[],"x86_64-linux",'
        f'"/bin/sh",[],[("name","pkg")])'
    )
    store = FakeStore(str(store_dir))
    store.infos[out] = PathInfo(out, drv, (), bytes(32), 0)
    store.infos[dev] = PathInfo(dev, drv, (os.path.basename(out),), bytes(32), 0)
    return World(store, drv, out, dev)


def test_empty_out_paths_means_every_output_of_the_derivation(world: World) -> None:
    # Nix 2.8 runs the hook with OUT_PATHS="" (the case this project must handle).
    drv, outputs = hook_outputs({"DRV_PATH": world.drv, "OUT_PATHS": ""}, world.store)
    assert drv == world.drv
    assert outputs == [("dev", world.dev), ("out", world.out)]


def test_out_paths_when_nix_sets_it(world: World) -> None:
    _, outputs = hook_outputs({"DRV_PATH": world.drv, "OUT_PATHS": world.out}, world.store)
    assert outputs == [("out", world.out)]


def test_floating_outputs_are_named_by_the_store(world: World, tmp_path: Path) -> None:
    ca_drv = fake_path(Path(world.store.store_dir), "ca.drv")
    Path(ca_drv).write_text('Derive([("out","","r:sha256","")],[],[],"s","b",[],[])')
    world.store.outputs[ca_drv] = {"out": world.out}
    _, outputs = hook_outputs({"DRV_PATH": ca_drv}, world.store)
    assert outputs == [("out", world.out)]


def test_a_path_that_is_no_output_is_an_error(world: World) -> None:
    stranger = fake_path(Path(world.store.store_dir), "stranger")
    with pytest.raises(NixStoreError, match="not an output"):
        hook_outputs({"DRV_PATH": world.drv, "OUT_PATHS": stranger}, world.store)


@pytest.mark.parametrize("env", [{}, {"DRV_PATH": ""}, {"DRV_PATH": "/etc/passwd"}])
def test_running_outside_nix_is_a_one_line_config_error(world: World, env: dict[str, str]) -> None:
    with pytest.raises(ConfigError) as info:
        hook_outputs(env, world.store)
    assert "\n" not in str(info.value)


def test_entries_carry_our_nar_hash_and_the_stores_references(world: World) -> None:
    _, outputs = hook_outputs({"DRV_PATH": world.drv}, world.store)
    infos = world.store.path_infos([p for _, p in outputs])
    entries = output_entries(outputs, infos, BUILT_AT, world.drv)
    dev, out = entries
    assert out.nar_hash == hash_path(world.out).sha256
    assert out.nar_size == hash_path(world.out).size
    assert dev.references == (os.path.basename(world.out),)
    assert (dev.output_name, out.output_name) == ("dev", "out")
    assert {e.deriver for e in entries} == {world.drv}
    assert {e.built_at for e in entries} == {BUILT_AT}
    leaves = encode_all(entries, world.store.store_dir)
    assert [decode_entry(leaf, world.store.store_dir) for leaf in leaves] == entries
    # The hook (which loads no attrs) produces the very same leaf bytes.
    assert hook_leaves(outputs, infos, BUILT_AT, world.drv, world.store.store_dir) == leaves


def test_the_build_derivation_is_the_deriver_when_the_store_knows_none(world: World) -> None:
    info = world.store.infos[world.out]._replace(deriver="")
    (entry,) = output_entries([("out", world.out)], [info], BUILT_AT, world.drv)
    assert entry.deriver == world.drv


def test_submit_names_outputs_from_their_deriver(world: World) -> None:
    entries = entries_for_paths([world.dev, world.out], world.store, BUILT_AT)
    assert [e.output_name for e in entries] == ["dev", "out"]
    with pytest.raises(ConfigError, match="not a store path"):
        entries_for_paths(["/etc/passwd"], world.store, BUILT_AT)


def test_an_output_holding_a_special_file_is_refused(world: World) -> None:
    os.mkfifo(Path(world.dev) / "fifo")
    _, outputs = hook_outputs({"DRV_PATH": world.drv}, world.store)
    infos = world.store.path_infos([p for _, p in outputs])
    with pytest.raises(LocalProtocolError, match="FIFO"):
        output_entries(outputs, infos, BUILT_AT)


# --- Hand-over ------------------------------------------------------------------------------


def test_no_node_means_the_leaves_are_spooled(tmp_path: Path) -> None:
    leaves = [b"leaf one", b"leaf two"]
    result = hand_over(leaves, tmp_path / "absent.sock", tmp_path / "spool", timeout=1.0)
    assert result.indices is None
    assert result.spool_file is not None
    assert pending_spool_files(tmp_path / "spool") == [result.spool_file]
    assert read_spool(result.spool_file) == leaves


def test_submit_with_no_node_spools_the_encoded_entries(world: World, tmp_path: Path) -> None:
    entries = entries_for_paths([world.out], world.store, BUILT_AT)
    result = submit_once(
        entries, world.store.store_dir, tmp_path / "absent.sock", tmp_path / "spool", 1.0
    )
    assert result.spool_file is not None
    assert read_spool(result.spool_file) == encode_all(entries, world.store.store_dir)


@pytest.fixture
def silent_node(tmp_path: Path) -> Iterator[Path]:
    """A control socket that accepts connections and never answers (a hung node)."""
    path = tmp_path / "hung.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.listen()
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.05)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept)
    thread.start()
    try:
        yield path
    finally:
        stop.set()
        thread.join()
        for conn in accepted:
            conn.close()
        server.close()


def test_a_hung_node_means_the_leaves_are_spooled_after_the_timeout(
    tmp_path: Path, silent_node: Path
) -> None:
    result = hand_over([b"leaf"], silent_node, tmp_path / "spool", timeout=0.2)
    assert result.spool_file is not None
    assert read_spool(result.spool_file) == [b"leaf"]


def test_an_unwritable_spool_is_a_one_line_config_error(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    with pytest.raises(ConfigError, match="spool") as info:
        hand_over([b"leaf"], tmp_path / "absent.sock", blocker / "spool", timeout=0.2)
    assert "\n" not in str(info.value)


# --- The command line -----------------------------------------------------------------------


# Both entry points: the main CLI and the hook's fast path (`python -m trustix_p2p.nix`).
ENTRY_POINTS = ["trustix_p2p", "trustix_p2p.nix"]


@pytest.fixture(params=ENTRY_POINTS)
def entry_point(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def run_cli(*args: str, env: dict[str, str], module: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )


def test_nix_hook_without_drv_path_exits_2_with_one_line(tmp_path: Path, entry_point: str) -> None:
    config = tmp_path / "node.toml"
    config.write_text(f'state_dir = "{tmp_path / "state"}"\n')
    env = {k: v for k, v in os.environ.items() if k not in ("DRV_PATH", "OUT_PATHS")}
    env["TRUSTIX_P2P_CONFIG"] = str(config)
    proc = run_cli("nix-hook", env=env, module=entry_point)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1
    assert "DRV_PATH" in proc.stderr


def test_nix_hook_with_a_missing_config_exits_2_with_one_line(
    tmp_path: Path, entry_point: str
) -> None:
    env = {**os.environ, "TRUSTIX_P2P_CONFIG": str(tmp_path / "missing.toml")}
    proc = run_cli("nix-hook", env=env, module=entry_point)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1
    assert "missing.toml" in proc.stderr


def test_nar_hash_command_prints_hash_and_size(tmp_path: Path, entry_point: str) -> None:
    (tmp_path / "f").write_bytes(b"hello\n")
    proc = run_cli("nar-hash", str(tmp_path / "f"), env=dict(os.environ), module=entry_point)
    assert proc.returncode == 0, proc.stderr
    # tests/vectors/nar.json "file-only": the same contents, hashed by Nix 2.8.
    assert proc.stdout == "sha256:04zwf782yjwnh3q6hz5izfd6jyip8kgw6g6yj43fiqhbyhdd0dqw 120\n"


# --- The hook's own program and the generated wrapper ----------------------------------------


def run_hook_program(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    # What the `trustix-p2p-nix-hook` console script runs (it exits through `os._exit`).
    code = "from trustix_p2p.nix.cli import hook_program; hook_program()"
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, check=False
    )


def hookless_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DRV_PATH", "OUT_PATHS")}
    return {**env, **extra}


def test_hook_program_without_arguments_uses_the_default_config(tmp_path: Path) -> None:
    missing = hookless_env(TRUSTIX_P2P_CONFIG=str(tmp_path / "missing.toml"))
    proc = run_hook_program(env=missing)
    assert (proc.returncode, proc.stderr.count("\n")) == (2, 1)
    assert "missing.toml" in proc.stderr
    config = tmp_path / "node.toml"
    config.write_text(f'state_dir = "{tmp_path / "state"}"\n')
    proc = run_hook_program(env=hookless_env(TRUSTIX_P2P_CONFIG=str(config)))
    assert (proc.returncode, proc.stderr.count("\n")) == (2, 1)
    assert "DRV_PATH" in proc.stderr


def test_hook_program_takes_the_nix_hook_options(tmp_path: Path) -> None:
    proc = run_hook_program("--config", str(tmp_path / "other.toml"), env=hookless_env())
    assert (proc.returncode, proc.stderr.count("\n")) == (2, 1)
    assert "other.toml" in proc.stderr
    proc = run_hook_program("--bogus", env=hookless_env())
    assert proc.returncode == 2
    assert "usage: trustix-p2p-nix-hook" in proc.stderr


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "node.toml"
    path.write_text('state_dir = "state"\n')
    return path


def test_the_written_wrapper_is_an_isolated_program_with_the_config_built_in(
    tmp_path: Path, config: Path
) -> None:
    hook = tmp_path / "post-build-hook"
    write_wrapper(hook, str(config), 2.5)
    text = hook.read_text()
    assert text.startswith(f"#!{sys.executable} -IS\n")
    assert os.stat(hook).st_mode & 0o777 == 0o755
    assert repr(str(tmp_path / "state" / "control.sock")) in text
    assert repr(str(tmp_path / "state" / "spool")) in text
    # Run as Nix runs it, with an environment that must not change which code runs (-I).
    env = hookless_env(PYTHONPATH=str(tmp_path / "nowhere"), PYTHONSTARTUP="/dev/null/x")
    proc = subprocess.run([hook], capture_output=True, text=True, env=env, check=False)
    assert (proc.returncode, proc.stderr.count("\n")) == (2, 1), proc.stderr
    assert "DRV_PATH is not set" in proc.stderr


def test_the_wrapper_uses_its_built_in_settings_until_the_config_changes(
    tmp_path: Path,
    config: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    calls: list[tuple[str, str, float]] = []
    monkeypatch.setattr(
        hook_module,
        "run_hook",
        lambda socket_path, spool_dir, timeout: calls.append((socket_path, spool_dir, timeout)),
    )
    stamp = config_stamp(str(config))
    assert stamp is not None
    assert wrapper.run(str(config), stamp, "/built/in.sock", "/built/in-spool", 1.5) == 0
    assert calls == [("/built/in.sock", "/built/in-spool", 1.5)]
    assert capsys.readouterr().err == ""

    config.write_text('state_dir = "state"\nspool_dir = "elsewhere"\n')
    assert wrapper.run(str(config), stamp, "/built/in.sock", "/built/in-spool", 1.5) == 0
    assert calls[1] == (str(tmp_path / "state" / "control.sock"), str(tmp_path / "elsewhere"), 1.5)
    assert "changed since this hook was written" in capsys.readouterr().err

    config.write_text('state_dir = "state"\nbogus = 1\n')  # now broken: say so, exit 2
    assert wrapper.run(str(config), stamp, "/built/in.sock", "/built/in-spool", 1.5) == 2
    assert "unknown configuration option" in capsys.readouterr().err
    assert len(calls) == 2


def test_a_wrapper_is_never_written_for_a_bad_config(tmp_path: Path) -> None:
    bad = tmp_path / "node.toml"
    bad.write_text("state_dir = 3\n")
    with pytest.raises(ConfigError, match="wrong type"):
        write_wrapper(tmp_path / "hook", str(bad), 5.0)
    with pytest.raises(ConfigError, match="cannot read"):
        write_wrapper(tmp_path / "hook", str(tmp_path / "absent.toml"), 5.0)
    good = tmp_path / "good.toml"
    good.write_text('state_dir = "state"\n')
    with pytest.raises(ConfigError, match="naming"):
        write_wrapper(tmp_path / "hook\nimport os", str(good), 5.0)
    assert set(os.listdir(tmp_path)) == {"node.toml", "good.toml"}  # nothing was written


# --- What the hook loads ------------------------------------------------------------------

# The lean layer, the one place the hook's rules live, and the typed modules built on it that
# re-export it (attrs, typing): the hook must load the former and none of the latter.
LEAN_MODULES = {
    f"trustix_p2p.core.lean.{name}" for name in ("entry", "storepath", "nar", "control")
}
TYPED_MODULES = {
    "trustix_p2p.core.entry",
    "trustix_p2p.core.storepath",
    "trustix_p2p.core.nar",
    "trustix_p2p.control.protocol",
    "trustix_p2p.config",
}


def hook_modules(code: str) -> set[str]:
    """The package's modules a fresh `python -I -S`, as the wrapper runs, holds after `code`."""
    paths = [os.path.dirname(os.path.dirname(m.__file__ or "")) for m in (trustix_p2p, msgpack)]
    proc = subprocess.run(
        [
            sys.executable,
            "-I",
            "-S",
            "-c",
            f"import sys; sys.path[:0] = {paths!r}; {code}; print(' '.join(sys.modules))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return {m for m in proc.stdout.split() if m.startswith("trustix_p2p")}


@pytest.mark.parametrize(
    "code",
    [
        "import trustix_p2p.nix.wrapper, trustix_p2p.nix.hook",  # the generated program
        "import trustix_p2p.nix.cli, trustix_p2p.nix.hook, trustix_p2p.configfile",
    ],
)
def test_the_hook_builds_on_the_lean_layer_alone(code: str) -> None:
    modules = hook_modules(code)
    assert modules >= LEAN_MODULES
    assert not modules & TYPED_MODULES
    # The generated program does not load the command line either.
    if "wrapper" in code:
        assert "trustix_p2p.nix.cli" not in modules


# --- Values declared once, for type checkers and at run time --------------------------------


@pytest.mark.parametrize("module", [hook_module, store_module, drv_module, lean_entry])
def test_the_declared_and_the_run_time_namedtuples_have_the_same_fields(
    module: types.ModuleType,
) -> None:
    # The hook's values are declared once, as `typing.NamedTuple` classes for type checkers,
    # and built without typing at run time (`trustix_p2p.core.lean.NamedTuple`): the run-time
    # class must have exactly the declared fields, in order.
    tree = ast.parse(inspect.getsource(module))
    declared = {
        node.name: tuple(
            stmt.target.id
            for stmt in node.body
            if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)
        )
        for node in ast.walk(tree)
        if isinstance(node, ast.ClassDef)
        and any(isinstance(base, ast.Name) and base.id == "NamedTuple" for base in node.bases)
    }
    assert declared
    for name, fields in declared.items():
        assert getattr(module, name)._fields == fields, name
