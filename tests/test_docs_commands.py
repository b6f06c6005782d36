"""Every command a doc shows runs in a test (issue 12).

The shell blocks (fences ```sh, ```bash, ```shell, ```console) of README.md and docs/**/*.md are
split into commands (`\\` continuations joined, a heredoc kept with its command, comments and
blank lines dropped, only `$ ` lines of a console block) and each command is either

- **executed** here, for real, in a sandbox per doc file, block after block in document order:
  a temporary root with `HOME` in it, `PATH` starting with `.venv/bin`, a working directory that
  is a symlinked copy of the checkout, and the absolute paths the docs use (`/etc/...`,
  `/var/...`, `/srv/...`, `/opt/...`, `/usr/local/...`, `/root/...`) rewritten into the root,
  as `tests/test_containerfile.py` maps the Containerfile's.  `$TRUSTIX_P2P_CONFIG` is the
  sandbox's `/etc/trustix-p2p/node.toml` (the CLI's default).  The fixed ports the docs show
  (`DOC_PORTS`, on 0.0.0.0, 127.0.0.1 or localhost) become free loopback ports.  Each command
  must exit 0 (`bash -o pipefail`; see `EXPECTED_STATUS` for others).
  `trustix-p2p node` and `trustix-p2p cache-proxy` run until they answer (the control socket's
  status, or `/nix-cache-info`); written in the foreground they are then stopped and must exit
  cleanly, written with `&` they run until the end of their block.  Shell state a block sets up
  (`export`, `cd`, `umask`, `NAME=value`) is replayed before its later commands;
- **stood in for** (`STAND_INS`): a command that cannot run here but whose effect later
  commands need, replaced by what it would do, e.g. `systemctl enable --now trustix-p2p` starts
  the ExecStart line of the unit the doc installed into the sandbox, as systemd would;
- or **mapped** (`MAPPED`): a regex of the command and the node id of the existing test that
  runs the equivalent (a container engine, Nix substituting into a fresh store, a long demo or
  simulation, the CI run that runs this very file).  Every node id must exist.

Commands with placeholders (`<hash>`, `ID`, `[--json]`, `<bob-public-key>`, ...) get them
replaced from `SUBSTITUTIONS` by real values of the sandbox: a real store path (added with
`nix-store --add`), the nodes of a small `World` of builders on loopback (alice, bob, carol, and
mallory, whose key signs two histories so that evidence exists), an evidence id.  `CONTEXTS`
starts what a block needs before it runs (a node to talk to, a policy file).

A doc that gains a command which fails here fails `test_the_shell_blocks_of_a_doc_run[FILE]`
with the file, line, command, the command as run and its output; one that names a command
which may never run here (`NEVER_RUN`: sudo, systemctl, podman, ...) without a mapping or a
stand-in fails `test_every_command_is_executed_stood_in_or_mapped` at once.

How to add a command (for example the `trustix-p2p log retire ...` commands that the sections
marked `<!-- retire: ... -->` in docs/builder-guide.md and docs/workstation-guide.md will get;
they come last in their guides, so the nodes and files of the sections before are there):

- it runs as written in the sandbox (a key generated, a config edited, `systemctl stop` and
  `start` of the unit the guide installed): nothing to add;
- it has a placeholder: one line in `SUBSTITUTIONS`, e.g.
  `Sub("docs/builder-guide.md", r"<new-public-key>", lambda sb, m: sb.world.public_key("bob"))`;
- it cannot run here: one line in `MAPPED`, e.g.
  `Mapped(r"^trustix-p2p log retire\\b", "tests/test_retire.py::test_name", "why")`;
- it exits with another documented status: one line in `EXPECTED_STATUS`, e.g.
  `(r"^trustix-p2p decide .*only-two", 1)`;
- its block needs something running first: one line in `CONTEXTS` (a function of the sandbox).

`pytest -s tests/test_docs_commands.py` prints what ran, what was stood in for and what is
mapped to which test, with the first lines of each command's output.
"""

from __future__ import annotations

import ast
import base64
import contextlib
import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest

from tests.nodeproc import free_port, terminate
from trustix_p2p.config import load_node_config
from trustix_p2p.control.client import ControlClient
from trustix_p2p.control.protocol import Status
from trustix_p2p.errors import NodeUnavailableError, TrustixError

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = ROOT / ".venv" / "bin"
SHELL_LANGS = {"sh", "bash", "shell", "console"}
COMMAND_TIMEOUT = 60.0
READY_TIMEOUT = 30.0
#: Ports the docs show; on a loopback or wildcard address they are replaced by free ones.
DOC_PORTS = (7946, 8080, 9464, 9465)
#: Directories of the docs' absolute paths that are moved into the sandbox root.
SANDBOXED = ("/etc", "/var", "/srv", "/opt", "/usr/local", "/root", "/mnt", "/media")
#: A fixed build time, so that builders that agree log byte-identical entries.
BUILT_AT = 1764547200
#: Programs the docs' commands use besides trustix-p2p and Nix.
TOOLS = ("jq", "curl", "tar", "sed", "install", "useradd")


def doc_files() -> list[str]:
    docs = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").rglob("*.md"))
    return ["README.md", *docs]


# --- extraction -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Command:
    file: str  # relative to the checkout
    line: int  # of the command's first line
    text: str  # comments dropped; continuation and heredoc lines kept, joined by newlines
    block: int  # line of the block's opening fence
    script: bool = False  # a whole block that is a script file (starts with #!)

    def where(self) -> str:
        return f"{self.file}:{self.line}: {self.text}"


@dataclass(frozen=True)
class Block:
    file: str
    line: int  # of the opening fence
    lang: str
    lines: tuple[tuple[int, str], ...]


FENCE = re.compile(r"^(?P<indent> *)(?P<fence>`{3,}|~{3,})\s*(?P<lang>[^\s`]*)")


def blocks(file: str, text: str | None = None) -> list[Block]:
    """The fenced shell blocks of a Markdown file."""
    if text is None:
        text = (ROOT / file).read_text(encoding="utf-8")
    out: list[Block] = []
    opening: tuple[int, str, str, int] | None = None  # line, fence, language, indentation
    body: list[tuple[int, str]] = []
    for number, raw in enumerate(text.splitlines(), 1):
        if opening is None:
            m = FENCE.match(raw)
            if m:
                opening = (number, m["fence"], m["lang"].lower(), len(m["indent"]))
                body = []
            continue
        stripped = raw.strip()
        fence = opening[1]
        if stripped.startswith(fence[0] * len(fence)) and not stripped.strip(fence[0]):
            if opening[2] in SHELL_LANGS:
                out.append(Block(file, opening[0], opening[2], tuple(body)))
            opening = None
            continue
        # A fence indented in a list item: its lines carry the same indentation.
        indent = len(raw) - len(raw.lstrip(" "))
        body.append((number, raw[min(indent, opening[3]) :]))
    return out


def strip_comment(line: str) -> str:
    """`line` without a shell comment (a `#` starting a word outside quotes)."""
    quote = ""
    escaped = False
    for i, ch in enumerate(line):
        if escaped:
            escaped = False
        elif ch == "\\" and quote != "'":
            escaped = True
        elif quote:
            if ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1] in " \t;&|("):
            return line[:i].rstrip()
    return line.rstrip()


HEREDOC = re.compile(r"(?<!<)<<(?!<)(-?)\s*(['\"]?)([A-Za-z_][A-Za-z0-9_]*)\2")


def commands(block: Block) -> list[Command]:
    """Split a shell block into commands."""
    lines = list(block.lines)
    first = next((text for _, text in lines if text.strip()), "")
    if first.startswith("#!"):
        text = "\n".join(t for _, t in lines).strip("\n")
        return [Command(block.file, lines[0][0], text, block.line, script=True)]
    out: list[Command] = []
    current: list[str] = []
    start = 0
    heredoc: tuple[str, bool] | None = None  # terminator, strip leading tabs
    continued = False
    for number, raw in lines:
        if heredoc is not None:
            current.append(raw)
            end = raw.lstrip("\t") if heredoc[1] else raw
            if end == heredoc[0]:
                heredoc = None
                if not continued:
                    out.append(Command(block.file, start, "\n".join(current), block.line))
                    current = []
            continue
        line = raw
        if not continued:
            if block.lang == "console":
                if not line.startswith("$ "):
                    continue  # output
                line = line[2:]
            start = number
        elif block.lang == "console" and line.startswith("> "):
            line = line[2:]  # the prompt of a continuation line
        line = strip_comment(line)
        if not line.strip() and not continued:
            continue
        continued = line.endswith("\\")
        current.append(line)
        m = HEREDOC.search(line)
        if m:
            heredoc = (m[3], m[1] == "-")
            continue
        if not continued:
            out.append(Command(block.file, start, "\n".join(current), block.line))
            current = []
    if current:
        out.append(Command(block.file, start, "\n".join(current), block.line))
    return out


def doc_commands(file: str) -> list[tuple[Block, list[Command]]]:
    return [(b, commands(b)) for b in blocks(file)]


def all_commands() -> list[Command]:
    return [c for f in doc_files() for _, cs in doc_commands(f) for c in cs]


# --- the tables -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Mapped:
    pattern: str  # re.search on the command (comments dropped)
    node_id: str  # the test that runs the equivalent
    why: str


CONTAINERFILE_TEST = (
    "tests/test_containerfile.py::test_the_install_and_start_steps_give_a_node_that_answers_status"
)
MAPPED = [
    Mapped(
        r"^bash scripts/demo\.sh\b",
        "tests/test_demo.py::"
        "test_the_demo_decides_3_of_4_names_chuck_and_nix_substitutes_only_the_trusted_path",
        "scripts/demo.sh is scripts/bootstrap.sh and `trustix-p2p demo`; the test runs the demo",
    ),
    Mapped(
        r"^bash \.ci/run\b",
        "tests/test_docs_commands.py::test_ci_run_is_the_suite_that_runs_this_test",
        "the CI run is what runs this test; running it here would recurse",
    ),
    Mapped(
        r"^(podman|docker) ",
        CONTAINERFILE_TEST,
        "no container engine runs here; the test runs the Containerfile's own steps",
    ),
    Mapped(
        r"^python3? -m venv /opt/trustix-p2p|^/usr/bin/python3 -m venv /opt/trustix-p2p"
        r"|^/opt/trustix-p2p/bin/pip install",
        CONTAINERFILE_TEST,
        "installing the package into a fresh venv takes a minute (and an index); the "
        "Containerfile's RUN line does exactly this and the test runs it",
    ),
    Mapped(
        r"^nixos-rebuild ",
        "tests/test_nixos_module.py::test_nix_instantiate_parses_the_module",
        "no NixOS here; Debian's Nix parses the module",
    ),
    Mapped(
        r"^nix-store --realise ",
        "tests/nix/test_workstation_e2e.py::"
        "test_nix_substitutes_only_trusted_and_intact_paths_through_the_proxy",
        "the path exists in this machine's store; the test substitutes into a fresh store",
    ),
    Mapped(
        r"-m simulations run split-view --nodes 200\b",
        "tests/test_sim_drivers.py::test_summary_json_is_byte_identical_across_processes",
        "a 200-node run takes about a minute; the test runs `python -m simulations run "
        "split-view` with 20 nodes",
    ),
    Mapped(
        r"-m simulations run eclipse\b",
        "tests/test_sim_events.py::"
        "test_the_eclipsed_victim_detects_only_once_an_honest_link_appears",
        "10 s of simulation; the test runs the eclipse scenario, smaller",
    ),
    Mapped(
        r"-m simulations sweep ",
        "tests/test_sim_cli.py::test_sweep",
        "a sweep up to 1,000 nodes takes many minutes; the test runs the sweep command",
    ),
    Mapped(
        r"(?s)^#!/bin/sh\n.*trustix-p2p-nix-hook",
        "tests/nix/test_hook_e2e.py::test_the_hook_logs_every_output_as_nix_path_info_reports_it",
        "a post-build-hook script, run by Nix after a build: the test installs a shell-script "
        "hook running `trustix-p2p nix-hook` and builds with real Nix",
    ),
    Mapped(
        r"benchmarks/bench_hook\.py",
        "tests/nix/test_hook_e2e.py::test_the_hook_logs_every_output_as_nix_path_info_reports_it",
        "a benchmark of minutes (wheels into fresh venvs, 15 runs); the hook it times is run "
        "exactly as Nix runs it by the test",
    ),
]

#: Commands that must never be executed here: without a mapping or a stand-in they fail.
NEVER_RUN = re.compile(
    r"^(sudo|doas|su|podman|docker|systemctl|journalctl|service|nixos-rebuild|apt|apt-get|dpkg"
    r"|reboot|shutdown|ssh|scp|rsync|git|curl\s.*\|\s*(ba)?sh|nix-collect-garbage|nix-env"
    r"|nix-channel|mount|umount|kill|killall|pkill)\b|pip install|\bbash \.ci/run\b"
)

#: Documented exit statuses other than 0.
EXPECTED_STATUS: list[tuple[str, int]] = []


# --- the world: builders on loopback ------------------------------------------------------------


@dataclass
class WorldNode:
    name: str
    key: str  # the file; the twins share one
    port: int
    seeds: tuple[str, ...]
    entries: str  # "hello", "dissent" or a twin's own entry
    follow_unknown: str = "witness"
    dir: Path = Path()
    proc: subprocess.Popen[bytes] | None = None
    public_key: str = ""

    @property
    def config(self) -> Path:
        return self.dir / "node.toml"

    @property
    def socket(self) -> Path:
        return self.dir / "control.sock"


def cli_path() -> str:
    return str(VENV_BIN / "trustix-p2p")


def trustix(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> str:
    done = subprocess.run(
        [cli_path(), *args], capture_output=True, text=True, env=env, timeout=timeout
    )
    if done.returncode != 0:
        raise AssertionError(f"trustix-p2p {' '.join(args)}: {done.stderr.strip()[-2000:]}")
    return done.stdout


def status(socket: Path, timeout: float = 2) -> Status:
    """A node's status, asked in-process (the CLI's `status` costs a process start)."""
    with ControlClient(socket, timeout=timeout) as client:
        return client.status()


def wait_for(what: str, check: Callable[[], bool], timeout: float = READY_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


class World:
    """A few builder nodes on loopback, started when a doc first needs them.

    alice, bob and carol log the same store path (carol with another NAR hash); the two
    mallory nodes share one key and log different histories, so carol and bob (which hear of
    both) hold evidence of a split view; alice mirrors bob and carol.
    """

    SPECS: ClassVar[dict[str, tuple[str, tuple[str, ...], str, str]]] = {
        "mallory-a": ("mallory", (), "mallory-a", "witness"),
        "mallory-b": ("mallory", (), "mallory-b", "witness"),
        "carol": ("carol", ("mallory-b",), "dissent", "witness"),
        "bob": ("bob", ("mallory-a", "carol"), "hello", "witness"),
        "alice": ("alice", ("bob", "carol"), "hello", "mirror"),
    }

    def __init__(self, root: Path) -> None:
        self.root = root
        self.nodes: dict[str, WorldNode] = {}
        self.keys: dict[str, str] = {}
        self._store_path: str | None = None
        self._nar: tuple[str, int] | None = None

    # the store path the builders logged: real, so that submit, nar-hash and nix accept it
    def store_path(self) -> str:
        if self._store_path is None:
            from tests.nix import nix_env, require_nix

            require_nix()
            source = self.root / "hello-2.12.1"
            source.write_text("trustix-p2p docs: a store path the builders of the test log\n")
            done = subprocess.run(
                ["nix-store", "--add", str(source)],
                capture_output=True,
                text=True,
                env=nix_env(),
                check=True,
            )
            self._store_path = done.stdout.strip()
        return self._store_path

    def nar(self) -> tuple[str, int]:
        if self._nar is None:
            nar_hash, size = trustix("nar-hash", self.store_path()).split()
            self._nar = (nar_hash, int(size))
        return self._nar

    def entry(self, kind: str) -> dict[str, object]:
        nar_hash, size = self.nar()
        path = self.store_path()
        if kind == "dissent":
            nar_hash = "sha256:" + "c0" * 32
        elif kind.startswith("mallory"):
            path = "/nix/store/" + "0" * 32 + "-" + kind
            nar_hash = "sha256:" + ("a1" if kind.endswith("a") else "b2") * 32
        return {
            "out_path": path,
            "nar_hash": nar_hash,
            "nar_size": size,
            "references": [],
            "deriver": "",
            "output": "out",
            "built_at": BUILT_AT,
        }

    def public_key(self, name: str) -> str:
        return self.node(name).public_key

    def address(self, name: str) -> str:
        node = self.node(name)
        return f"{node.public_key}@127.0.0.1:{node.port}"

    def node(self, name: str) -> WorldNode:
        self.start(name)
        return self.nodes[name]

    def _plan(self, name: str, wanted: dict[str, WorldNode]) -> None:
        if name in self.nodes or name in wanted:
            return
        key_name, seeds, entries, follow = self.SPECS[name]
        for seed in seeds:
            self._plan(seed, wanted)
        directory = self.root / name
        directory.mkdir(mode=0o700)
        if key_name not in self.keys:
            key = self.root / f"{key_name}.key"
            self.keys[key_name] = json.loads(trustix("keygen", str(key)))["public_key"]
        wanted[name] = WorldNode(
            name,
            str(self.root / f"{key_name}.key"),
            free_port(),
            seeds,
            entries,
            follow,
            directory,
            public_key=self.keys[key_name],
        )

    def start(self, *names: str) -> None:
        wanted: dict[str, WorldNode] = {}
        for name in names:
            self._plan(name, wanted)
        if not wanted:
            return
        known = {**self.nodes, **wanted}
        appends = []
        for node in wanted.values():
            seeds = ", ".join(
                json.dumps(f"{known[s].public_key}@127.0.0.1:{known[s].port}") for s in node.seeds
            )
            node.config.write_text(
                'state_dir = "state"\ncontrol_socket = "control.sock"\n'
                f'key_file = "{node.key}"\nlisten = ["127.0.0.1:{node.port}"]\n'
                f"seeds = [{seeds}]\nfollow_unknown = {json.dumps(node.follow_unknown)}\n"
                "checkpoint_interval = 0.2\nspool_poll_interval = 0.1\n"
                "anti_entropy_interval = 0.3\nredial_interval = 0.1\n"
                # The mallory twins dial nobody: a node keeps one connection per key, so a
                # twin that dialled carol first would keep carol from seeing the other view.
                + ("peers_target = 0\n" if node.name.startswith("mallory") else "")
            )
            jsonl = node.dir / "entries.jsonl"
            jsonl.write_text(json.dumps(self.entry(node.entries)) + "\n")
            args = ["log", "append", "--state", str(node.dir / "state"), "--key", node.key]
            appends.append(
                subprocess.Popen(
                    [cli_path(), *args, "--jsonl", str(jsonl)],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                )
            )
        for proc in appends:
            _, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, err.decode()
        # In waves, each once its seeds answer: a node whose seed is not listening yet may meet
        # the other mallory twin first (peer exchange), and keeps one connection per key.
        waiting = dict(wanted)
        while waiting:
            wave = [n for n in waiting.values() if all(s in self.nodes for s in n.seeds)]
            assert wave, f"seeds that never start: {sorted(waiting)}"
            for node in wave:
                log = open(node.dir / "node.log", "wb")  # noqa: SIM115 - the child's
                node.proc = subprocess.Popen(
                    [cli_path(), "node", "--config", str(node.config)],
                    stdout=subprocess.DEVNULL,
                    stderr=log,
                )
                log.close()
            for node in wave:
                assert node.proc is not None
                wait_node(node.socket, node.proc, node.dir / "node.log")
                self.nodes[node.name] = node
                del waiting[node.name]

    def wait_evidence(self, name: str) -> None:
        node = self.node(name)
        self.start("mallory-a", "mallory-b")
        wait_for(f"evidence at {name}", lambda: status(node.socket).evidence > 0)

    def wait_mirrored(self, name: str, *logs: str) -> None:
        node = self.node(name)
        self.start(*logs)
        want = {base64.b64decode(self.public_key(n)) for n in logs}

        def mirrored() -> bool:
            done = {
                f.public_key
                for f in status(node.socket).follows
                if f.mode == "mirror" and f.size >= 1 and f.head_size == f.size
            }
            return want <= done

        wait_for(f"{name} to mirror {', '.join(logs)}", mirrored)

    def close(self) -> None:
        for node in self.nodes.values():
            if node.proc is not None:
                terminate(node.proc)


def wait_node(socket: Path, proc: subprocess.Popen[bytes], log: Path | None) -> None:
    def up() -> bool:
        if proc.poll() is not None:
            text = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
            raise AssertionError(f"the node exited with {proc.returncode}: {text}")
        try:
            status(socket)
        except (NodeUnavailableError, OSError, TrustixError):
            return False
        return True

    wait_for(f"a node to answer on {socket}", up)


def wait_http(url: str, proc: subprocess.Popen[bytes], log: Path | None) -> None:
    def up() -> bool:
        if proc.poll() is not None:
            text = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
            raise AssertionError(f"the server exited with {proc.returncode}: {text}")
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                return bool(answer.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    wait_for(f"{url} to answer", up)


# --- the sandbox ---------------------------------------------------------------------------------


@dataclass
class Proc:
    what: str
    popen: subprocess.Popen[bytes]
    log: Path
    lifetime: str  # "block" or "file"
    socket: Path | None = None  # a node's control socket
    clean: tuple[int, ...] | None = None  # a server's exit statuses of a clean stop


class Failure(AssertionError):
    pass


class Sandbox:
    def __init__(self, root: Path, world: World, file: str, text: str | None = None) -> None:
        self.root = root
        self.world = world
        self.file = file
        self.text = text  # the doc's text (default: read the file)
        self.home = root / "home" / "user"
        self.work = root / "work"
        self.ports: dict[int, int] = {}
        self.procs: list[Proc] = []
        self.values: dict[str, str] = {}
        self.block_env: dict[str, str] = {}
        self.logs = root / "logs"
        for d in ("etc/nix", "etc/systemd/system", "var/lib", "var/backups", "srv", "opt"):
            (root / d).mkdir(parents=True, exist_ok=True)
        for d in ("usr/local/bin", "root", "mnt", "media"):
            (root / d).mkdir(parents=True, exist_ok=True)
        self.home.mkdir(parents=True)
        self.logs.mkdir()
        # A minimal user database, for a doc's useradd (run with --prefix, below).
        (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
        (root / "etc/group").write_text("root:x:0:\n")
        for name, line in (("shadow", "root:*:19000:0:99999:7:::\n"), ("gshadow", "root:*::\n")):
            (root / "etc" / name).write_text(line)
            (root / "etc" / name).chmod(0o600)
        # The working directory: the checkout, entry by entry, so relative paths work and
        # whatever a command writes stays in the sandbox.
        self.work.mkdir()
        for entry in ROOT.iterdir():
            if entry.name not in (".git", "__pycache__"):
                (self.work / entry.name).symlink_to(entry)
        from tests.nix import nix_env

        self.env = {
            "HOME": str(self.home),
            "USER": "root",
            "PATH": f"{VENV_BIN}:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin",
            "LANG": "C.UTF-8",
            "TRUSTIX_P2P_CONFIG": str(root / "etc/trustix-p2p/node.toml"),
            "NIX_CONFIG": nix_env()["NIX_CONFIG"],
            "PYTHONDONTWRITEBYTECODE": "1",
        }

    # --- values for placeholders
    def port(self, doc_port: int) -> int:
        if doc_port not in self.ports:
            self.ports[doc_port] = free_port()
        return self.ports[doc_port]

    def current_env(self) -> dict[str, str]:
        return {**self.env, **self.block_env}

    def default_socket(self) -> Path:
        return load_node_config(self.current_env()["TRUSTIX_P2P_CONFIG"]).socket_path

    def evidence_id(self) -> str:
        """The id of the first evidence the default node (the block's) holds."""
        socket = self.default_socket()
        found: list[str] = []

        def held() -> bool:
            out = trustix("evidence", "list", "--json", "--socket", str(socket))
            found[:] = [item["id"] for item in json.loads(out)]
            return bool(found)

        wait_for(f"evidence at the node of {socket}", held)
        return found[0]

    def evidence_file(self) -> str:
        path = self.root / "evidence.json"
        shown = trustix(
            "evidence", "show", self.evidence_id(), "--socket", str(self.default_socket())
        )
        path.write_text(shown)
        return str(path)

    def entries_file(self) -> str:
        path = self.root / "entries.jsonl"
        if not path.exists():
            other = {**self.world.entry("hello"), "out_path": "/nix/store/" + "1" * 32 + "-more"}
            lines = [self.world.entry("hello"), other]
            path.write_text("".join(json.dumps(e) + "\n" for e in lines))
        return str(path)

    def retire_a_copy(self) -> str:
        """`log retire` of the README's reference block, on a copy of the state: the
        rotation the README shows next retires the log itself."""
        state = self.root / "scratch" / "state"
        shutil.copytree(
            self.root / "var/lib/trustix-p2p",
            state,
            symlinks=True,
            ignore=shutil.ignore_patterns("control.sock"),
        )
        successor = self.root / "scratch" / "successor.key"
        trustix("keygen", str(successor))
        key = self.root / "var/lib/trustix-p2p/node.key"
        return f"log retire --state {state} --key {key} --successor {successor}"

    def client_key(self) -> str:
        path = self.root / "client.key"
        if not path.exists():
            trustix("keygen", str(path))
        return str(path)

    # --- rewriting
    def rewrite(self, command: Command) -> str:
        text = command.text
        for sub in SUBSTITUTIONS:
            if fnmatch.fnmatch(command.file, sub.file):
                text = re.sub(sub.pattern, lambda m, s=sub: s.replace(self, m), text)  # type: ignore[misc]
        text = self.map_text(text)
        for rule in EXEC_REWRITES:
            text = rule(self, text)
        return text

    def map_text(self, text: str) -> str:
        """The docs' absolute paths and fixed ports, moved into the sandbox."""
        text = map_paths(text, self.root)
        return re.sub(
            r"\b(?:0\.0\.0\.0|127\.0\.0\.1|localhost):(\d+)\b",
            lambda m: f"127.0.0.1:{self.port(int(m[1]))}" if int(m[1]) in DOC_PORTS else m[0],
            text,
        )

    def ids(self, database: str) -> dict[str, str]:
        """Users ("passwd") or groups ("group") a doc's useradd created in the sandbox: name ->
        numeric id."""
        ids: dict[str, str] = {}
        for line in (self.root / "etc" / database).read_text().splitlines():
            parts = line.split(":")
            if len(parts) > 2 and parts[0] != "root":
                ids[parts[0]] = parts[2]
        return ids

    def value(self, name: str) -> str:
        """A value a context set (e.g. the running node's address)."""
        if name not in self.values:
            raise Failure(f"no {name}: the block needs a context that sets it (CONTEXTS)")
        return self.values[name]

    # --- running
    def run_file(self) -> None:
        try:
            for block in blocks(self.file, self.text):
                self.run_block(block, commands(block))
        except BaseException:
            with contextlib.suppress(Failure):
                self.stop("file")
            raise
        self.stop("file")

    def run_block(self, block: Block, cmds: list[Command]) -> None:
        self.block_env = {}
        prelude: list[str] = []
        try:
            for context in CONTEXTS:
                if context.file == self.file and any(
                    re.search(context.pattern, c.text) for c in cmds
                ):
                    context.setup(self)
            for command in cmds:
                mapped = mapping_for(command)
                if mapped is not None:
                    print(f"mapped    {command.where()}\n          -> {mapped.node_id}")
                    continue
                stand_in = stand_in_for(command)
                if stand_in is not None:
                    print(f"stand-in  {command.where()}")
                    try:
                        stand_in.run(self, command)
                    except AssertionError as exc:
                        raise Failure(f"{command.where()}\n  (stood in for) {exc}") from exc
                    continue
                if NEVER_RUN.search(command.text):
                    raise Failure(
                        f"{command.where()}\n  may not run here, and no test is named for it: "
                        "add a line to MAPPED in tests/test_docs_commands.py"
                    )
                self.settle()
                print(f"run       {command.where()}")
                self.run_command(command, prelude)
                if SHELL_STATE.match(command.text):
                    prelude.append(self.rewrite(command))
        except BaseException:
            with contextlib.suppress(Failure):
                self.stop("block")
            raise
        finally:
            self.block_env = {}
        self.stop("block")

    def run_command(self, command: Command, prelude: list[str]) -> None:
        text = self.rewrite(command)
        background = bool(re.search(r"(?<!&)&\s*$", text))
        if background:
            text = re.sub(r"&\s*$", "", text).rstrip()
        long_running = LONG_RUNNING.match(command.text.lstrip())
        env = self.current_env()
        if long_running or background:
            log = self.logs / f"{len(self.procs)}-{command.line}.log"
            with open(log, "wb") as out:
                popen = subprocess.Popen(
                    ["bash", "-c", "\n".join([*prelude, "exec " + text])],
                    cwd=self.work,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            proc = Proc(command.where(), popen, log, "block")
            self.procs.append(proc)
            if long_running:
                try:
                    self.wait_ready(long_running[1], text, proc)
                except AssertionError as exc:
                    raise Failure(f"{command.where()}\n  ran: {text}\n  {exc}") from exc
                if not background:  # a foreground server: it ran; stop it as Ctrl-C would
                    self.stop_proc(proc)
            return
        done = subprocess.run(
            ["bash", "-o", "pipefail", "-c", "\n".join([*prelude, text])],
            cwd=self.work,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
            check=False,
        )
        for line in (done.stdout + done.stderr).splitlines()[:4]:
            print(f"          | {line[:150]}")
        expected = next((s for p, s in EXPECTED_STATUS if re.search(p, command.text)), 0)
        if done.returncode != expected:
            raise Failure(
                f"{command.where()}\n  ran: {text}\n  exit status {done.returncode} "
                f"(expected {expected})\n--- stdout ---\n{done.stdout[-3000:]}\n"
                f"--- stderr ---\n{done.stderr[-3000:]}\n"
                "If it cannot run here, map it (MAPPED) or give its placeholders values "
                "(SUBSTITUTIONS): see the top of tests/test_docs_commands.py."
            )

    def wait_ready(self, kind: str, text: str, proc: Proc) -> None:
        argv = shlex.split(text.replace("\\\n", " "))
        proc.clean = (0,)
        if kind == "node":
            config = argv[argv.index("--config") + 1]
            proc.socket = load_node_config(Path(self.work, config)).socket_path
            wait_node(proc.socket, proc.popen, proc.log)
        else:
            listen = argv[argv.index("--listen") + 1]
            wait_http(f"http://{listen}/nix-cache-info", proc.popen, proc.log)

    def start_service(self, what: str, argv: list[str], kind: str, socket: Path | None) -> Proc:
        log = self.logs / f"{len(self.procs)}-{what}.log"
        with open(log, "wb") as out:
            popen = subprocess.Popen(
                argv,
                cwd="/",
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        proc = Proc(what, popen, log, "file", socket)
        self.procs.append(proc)
        self.wait_ready(kind, shlex.join(argv), proc)
        return proc

    def settle(self) -> None:
        """Let the running nodes take their spools and sign what they hold, as they do within
        a few seconds, so that what a command reads does not depend on timing."""
        for proc in self.procs:
            if proc.socket is None or proc.popen.poll() is not None:
                continue
            socket = proc.socket

            def settled(socket: Path = socket) -> bool:
                s = status(socket)
                return s.spool_pending == 0 and s.checkpoint_size == s.size

            wait_for(f"the node of {proc.what} to sign what it holds", settled)

    def stop_proc(self, proc: Proc) -> None:
        code = terminate(proc.popen)
        self.procs.remove(proc)
        if proc.clean is not None and code not in proc.clean:
            text = proc.log.read_text(errors="replace")[-3000:]
            raise Failure(f"{proc.what}\n  stopped with exit status {code}:\n{text}")

    def stop(self, lifetime: str) -> None:
        errors = []
        for proc in [p for p in self.procs if p.lifetime == lifetime]:
            try:
                self.stop_proc(proc)
            except Failure as exc:
                errors.append(str(exc))
        if errors:
            raise Failure("\n".join(errors))


LONG_RUNNING = re.compile(r"^\S*trustix-p2p\s+(node|cache-proxy)\b")
#: Commands that change the shell's state; replayed before the block's later commands.
SHELL_STATE = re.compile(
    r"^((export|cd|umask|set|source|\.)\s.*|[A-Za-z_]\w*=(\$\(.*\)|\"[^\"]*\"|'[^']*'|\S*))$"
)


def map_paths(text: str, root: Path) -> str:
    """The docs' absolute paths, moved under `root` (paths already under it are left alone)."""
    dirs = "|".join(re.escape(d) for d in SANDBOXED)
    return re.sub(rf"(?:(?<=://)|(?<![\w.~/-]))({dirs})(?=/|\b)", lambda m: f"{root}{m[1]}", text)


def _useradd(sb: Sandbox, text: str) -> str:
    # Users are created in the sandbox's /etc/passwd only (the test needs root for that).
    return re.sub(r"^useradd ", f"useradd --prefix {sb.root} ", text)


def _chown(sb: Sandbox, text: str) -> str:
    # The users a doc created exist only in the sandbox: chown to their numeric ids.
    if not re.match(r"^(chown|install) ", text):
        return text
    users, groups = sb.ids("passwd"), sb.ids("group")

    def owner(m: re.Match[str]) -> str:
        user, colon, group = m[2].partition(":")
        if colon and not group:
            group = user  # `chown user:` is the user's login group (--user-group)
        new = users.get(user, user) + colon + (groups.get(group, group) if colon else "")
        return m[1] + new

    text = re.sub(r"^(chown (?:-R )?)(\S+)", owner, text)
    text = re.sub(r"(\s-o )(\S+)", lambda m: m[1] + users.get(m[2], m[2]), text)
    return re.sub(r"(\s-g )(\S+)", lambda m: m[1] + groups.get(m[2], m[2]), text)


EXEC_REWRITES: list[Callable[[Sandbox, str], str]] = [_useradd, _chown]


@dataclass(frozen=True)
class Sub:
    file: str  # glob of the doc files it applies to
    pattern: str
    replace: Callable[[Sandbox, re.Match[str]], str]


def _world_key(sb: Sandbox, m: re.Match[str]) -> str:
    return sb.world.public_key(m[1])


def _world_host(sb: Sandbox, m: re.Match[str]) -> str:
    return f"127.0.0.1:{sb.world.node(m[1]).port}"


SUBSTITUTIONS = [
    # Synopsis notation: optional parts are left out.
    Sub("*", r" \[(?:--|\.\.\.)[^\]]*\]", lambda sb, m: ""),
    # A store path the builders of the world logged (a real one: nix knows it).
    Sub("*", r"/nix/store/(?:<hash>|\.\.\.)[^\s'\"]*", lambda sb, m: sb.world.store_path()),
    # The builders of the guides are the world's.
    Sub("docs/*", r"<(alice|bob|carol)-public-key>", _world_key),
    Sub("docs/*", r"\b(alice|bob|carol)\.example\.org:7946\b", _world_host),
    Sub("docs/*", r"<evidence-id>", lambda sb, m: sb.evidence_id()),
    # README.md's reference lines.
    Sub("README.md", r"\bevidence show ID\b", lambda sb, m: f"evidence show {sb.evidence_id()}"),
    Sub(
        "README.md",
        r"\bevidence verify FILE\b",
        lambda sb, m: f"evidence verify {sb.evidence_file()}",
    ),
    Sub("README.md", r"\bnar-hash PATH\b", lambda sb, m: f"nar-hash {sb.world.store_path()}"),
    Sub(
        "README.md",
        r"log retire --state DIR --key KEYFILE --successor NEWKEY",
        lambda sb, m: sb.retire_a_copy(),
    ),
    Sub("README.md", r"--state DIR\b", lambda sb, m: "--state /var/lib/trustix-p2p"),
    Sub("README.md", r"--key KEYFILE\b", lambda sb, m: "--key /var/lib/trustix-p2p/node.key"),
    Sub("README.md", r"--jsonl FILE\b", lambda sb, m: f"--jsonl {sb.entries_file()}"),
    Sub("README.md", r"--index I\b", lambda sb, m: "--index 0"),
    Sub("README.md", r"--old M\b", lambda sb, m: "--old 1"),
    Sub("README.md", r"127\.0\.0\.1:40123", lambda sb, m: sb.value("node_listen")),
    Sub("README.md", r"<base64 pubkey>", lambda sb, m: sb.value("node_key")),
    Sub("README.md", r"--key my\.key\b", lambda sb, m: f"--key {sb.client_key()}"),
    Sub(
        "README.md",
        r"--config node\.toml\b",
        lambda sb, m: f"--config {sb.world.node('alice').config}",
    ),
]


# --- contexts: what a block needs running before it ---------------------------------------------


@dataclass(frozen=True)
class Context:
    file: str
    pattern: str  # re.search on any command of the block
    setup: Callable[[Sandbox], None]
    why: str


def fresh_machine(sb: Sandbox) -> None:
    for d in ("etc/trustix-p2p", "var/lib/trustix-p2p"):
        shutil.rmtree(sb.root / d, ignore_errors=True)


def doc_node(sb: Sandbox) -> None:
    """The node of the sandbox's /etc/trustix-p2p/node.toml, running for the block."""
    config = sb.root / "etc/trustix-p2p/node.toml"
    socket = load_node_config(config).socket_path
    if not any(p.socket == socket and p.popen.poll() is None for p in sb.procs):
        log = sb.logs / "doc-node.log"
        with open(log, "wb") as out:
            popen = subprocess.Popen(
                [cli_path(), "node", "--config", str(config)],
                env=sb.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        sb.procs.append(Proc(f"the node of {config}", popen, log, "block", socket, (0,)))
        wait_node(socket, popen, log)
    sb.settle()
    s = status(socket)
    assert s.public_key is not None
    sb.values["node_listen"] = s.listen[0]
    sb.values["node_key"] = base64.b64encode(s.public_key).decode()


def node_service(sb: Sandbox) -> None:
    """The node of the sections before as the service that a block stops and starts: the
    unit installed (as deploy/systemd/trustix-p2p.service says) and running."""
    unit = sb.root / "etc/systemd/system/trustix-p2p.service"
    if not unit.exists():
        shutil.copy(ROOT / "deploy/systemd/trustix-p2p.service", unit)
    if "trustix-p2p" not in sb.ids("passwd"):  # the unit's user, as its comments say
        subprocess.run(
            ["useradd", "--prefix", str(sb.root), "--system", "--user-group", "trustix-p2p"],
            check=True,
            capture_output=True,
        )
    if not any(p.what == unit.name for p in sb.procs):
        start_unit(sb, Command(sb.file, 0, "systemctl start trustix-p2p.service", 0))


def world_bob(sb: Sandbox) -> None:
    """Bob's node (which holds evidence against mallory) answers the block's commands."""
    sb.world.wait_evidence("bob")
    sb.block_env["TRUSTIX_P2P_CONFIG"] = str(sb.world.node("bob").config)


def metrics_node(sb: Sandbox) -> None:
    directory = sb.root / "metrics-node"
    directory.mkdir(mode=0o700)
    config = directory / "node.toml"
    config.write_text(
        f'state_dir = "."\n[metrics]\nenabled = true\nlisten = "127.0.0.1:{sb.port(9464)}"\n'
    )
    popen = subprocess.Popen(
        [cli_path(), "node", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    sb.procs.append(Proc("a node with metrics", popen, directory / "node.log", "block"))
    wait_http(f"http://127.0.0.1:{sb.port(9464)}/metrics", popen, None)


def local_policy(sb: Sandbox) -> None:
    """policy.toml in the working directory: 2 of alice, bob and carol, asked through the
    control socket of alice's node, which mirrors the other two."""
    sb.world.wait_mirrored("alice", "bob", "carol")
    builders = "".join(
        f'\n[[builders]]\nname = "{n}"\npublic_key = "{sb.world.public_key(n)}"\n'
        for n in ("alice", "bob", "carol")
    )
    (sb.work / "policy.toml").write_text(
        f'threshold = 2\nnode_socket = "{sb.world.node("alice").socket}"\n'
        f'upstreams = ["file://{sb.root}/srv/nix-cache"]\n{builders}'
    )


CONTEXTS = [
    Context(
        "README.md",
        r"trustix-p2p status \[--config FILE",
        world_bob,
        "status, lookup and evidence of a node that holds entries and evidence",
    ),
    Context(
        "README.md",
        r"curl -s http://127\.0\.0\.1:9464/metrics",
        metrics_node,
        "a node with [metrics] enabled on the port shown",
    ),
    Context(
        "README.md",
        r"^printf 'state_dir = ",
        fresh_machine,
        "'Logging what Nix builds' starts over: its key is another than the section before's",
    ),
    Context(
        "README.md",
        r"trustix-p2p keygen /var/lib/trustix-p2p/node-2\.key",
        node_service,
        "the rotation stops and starts the node's service",
    ),
    Context(
        "README.md",
        r"trustix-p2p status \| jq \.listen",
        doc_node,
        "the builder node of the sections before, running",
    ),
    Context(
        "README.md",
        r"trustix-p2p decide --policy policy\.toml",
        local_policy,
        "the policy the README's TOML block describes, for builders that exist",
    ),
    Context(
        "docs/nix-builder.md",
        r"^trustix-p2p status\b",
        doc_node,
        "'run it as a service': the node of section 1, running",
    ),
]


# --- stand-ins ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class StandIn:
    pattern: str
    run: Callable[[Sandbox, Command], None]
    why: str


def unit_service(sb: Sandbox, unit: str) -> dict[str, str]:
    path = sb.root / "etc/systemd/system" / unit
    if not path.exists():
        raise AssertionError(f"{unit} is not installed in /etc/systemd/system")
    section, out = "", {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line.startswith("["):
            section = line
        elif section == "[Service]" and "=" in line and not line.startswith(("#", ";")):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


def _unit_name(command: Command) -> str:
    name = command.text.split()[-1]
    return name if name.endswith(".service") else name + ".service"


def start_unit(sb: Sandbox, command: Command) -> None:
    unit = _unit_name(command)
    service = unit_service(sb, unit)
    for state in service.get("StateDirectory", "").split():
        directory = sb.root / "var/lib" / state
        directory.mkdir(mode=0o700, exist_ok=True)
        # systemd gives a StateDirectory whose owner is not the unit's user to that user,
        # recursively; the stand-in runs the unit as this test's user.
        if directory.stat().st_uid != os.getuid():
            for path in [directory, *directory.rglob("*")]:
                os.lchown(path, os.getuid(), os.getgid())
    argv = shlex.split(sb.map_text(service["ExecStart"]))
    assert argv[0] == "/usr/bin/trustix-p2p", argv
    argv[0] = cli_path()
    kind = "node" if argv[1] == "node" else "proxy"
    for proc in sb.procs:
        if proc.what == unit:
            sb.stop_proc(proc)  # restart
    if kind == "node":
        socket = load_node_config(argv[argv.index("--config") + 1]).socket_path
        sb.start_service(unit, argv, kind, socket)
    else:
        sb.start_service(unit, argv, kind, None)


def stop_unit(sb: Sandbox, command: Command) -> None:
    unit = _unit_name(command)
    for proc in list(sb.procs):
        if proc.what == unit:
            sb.stop_proc(proc)
            return
    raise AssertionError(f"{unit} is not running")


def daemon_reload(sb: Sandbox, command: Command) -> None:
    units = sorted((sb.root / "etc/systemd/system").glob("*.service"))
    assert units, "no unit installed in /etc/systemd/system"
    for unit in units:
        assert unit_service(sb, unit.name).get("ExecStart"), f"{unit.name} has no ExecStart"


STAND_INS = [
    StandIn(
        r"^systemctl (enable --now|start|restart) trustix-p2p(-cache-proxy)?(\.service)?$",
        start_unit,
        "starts the ExecStart line of the unit the doc installed, as systemd would",
    ),
    StandIn(
        r"^systemctl stop trustix-p2p(-cache-proxy)?(\.service)?$",
        stop_unit,
        "stops what the unit's stand-in started",
    ),
    StandIn(
        r"^systemctl daemon-reload$",
        daemon_reload,
        "reads the installed units' [Service] sections",
    ),
]


def mapping_for(command: Command) -> Mapped | None:
    return next((m for m in MAPPED if re.search(m.pattern, command.text)), None)


def stand_in_for(command: Command) -> StandIn | None:
    return next((s for s in STAND_INS if re.search(s.pattern, command.text)), None)


# --- the tests ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    w = World(tmp_path_factory.mktemp("docs-world"))
    try:
        yield w
    finally:
        w.close()


def files_with_commands() -> list[str]:
    return [f for f in doc_files() if any(cs for _, cs in doc_commands(f))]


@pytest.mark.parametrize("file", files_with_commands())
def test_the_shell_blocks_of_a_doc_run(file: str, world: World, tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("the sandbox runs the docs' commands as root does (useradd, /etc)")
    used = " ".join(c.text for _, cs in doc_commands(file) for c in cs)
    missing = [t for t in TOOLS if re.search(rf"\b{t}\b", used) and shutil.which(t) is None]
    if missing:
        message = f"the commands of {file} use {', '.join(missing)}, which are not installed"
        if os.environ.get("CI"):
            pytest.fail(message)  # as tests/nix's require_nix: CI must have what the docs use
        pytest.skip(message)
    try:
        Sandbox(tmp_path / "root", world, file).run_file()
    except Failure as exc:
        message = str(exc)
    else:
        return
    pytest.fail(message, pytrace=False)


def test_every_command_is_executed_stood_in_or_mapped() -> None:
    """A command that may never run here needs a mapping or a stand-in."""
    bad = [
        c.where()
        for c in all_commands()
        if NEVER_RUN.search(c.text) and mapping_for(c) is None and stand_in_for(c) is None
    ]
    assert not bad, (
        "commands in the docs that cannot run here and that no test runs (add a line to "
        "MAPPED in tests/test_docs_commands.py naming the test that runs the equivalent):\n"
        + "\n".join(bad)
    )


def node_id_exists(node_id: str) -> bool:
    path, _, name = node_id.partition("::")
    file = ROOT / path
    if not file.is_file():
        return False
    parts = re.sub(r"\[.*\]$", "", name).split("::")
    tree = ast.parse(file.read_text(encoding="utf-8"))
    scope: list[ast.stmt] = tree.body
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        kinds = (ast.FunctionDef, ast.AsyncFunctionDef) if last else (ast.ClassDef,)
        found = next((n for n in scope if isinstance(n, kinds) and n.name == part), None)
        if found is None:
            return False
        if not last:
            scope = found.body
    return True


def test_every_mapping_names_a_test_that_exists() -> None:
    missing = [m.node_id for m in MAPPED if not node_id_exists(m.node_id)]
    assert not missing, missing


def test_every_table_entry_is_used() -> None:
    """No stale entries: each mapping, stand-in, substitution and context matches the docs."""
    cmds = all_commands()
    unused = [m.pattern for m in MAPPED if not any(re.search(m.pattern, c.text) for c in cmds)]
    unused += [s.pattern for s in STAND_INS if not any(re.search(s.pattern, c.text) for c in cmds)]
    unused += [
        s.pattern
        for s in SUBSTITUTIONS
        if not any(fnmatch.fnmatch(c.file, s.file) and re.search(s.pattern, c.text) for c in cmds)
    ]
    for context in CONTEXTS:
        matching = [
            b.line
            for b, cs in doc_commands(context.file)
            if any(re.search(context.pattern, c.text) for c in cs)
        ]
        if len(matching) != 1:
            unused.append(f"{context.file}: {context.pattern} (blocks {matching})")
    assert not unused, unused


def test_ci_run_is_the_suite_that_runs_this_test() -> None:
    """`.ci/run` (README: "runs lint, type checks and the tests") runs bootstrap, ruff, mypy
    and scripts/test.sh, which runs pytest over tests/, this file included."""
    ci = (ROOT / ".ci/run").read_text()
    test_sh = (ROOT / "scripts/test.sh").read_text()
    for script in (ROOT / ".ci/run", ROOT / "scripts/test.sh"):
        assert subprocess.run(["bash", "-n", str(script)], check=False).returncode == 0
    for step in ("scripts/bootstrap.sh", "ruff check", "ruff format --check", "mypy", "test.sh"):
        assert step in ci, step
    assert "pytest" in test_sh
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'testpaths = \["tests"\]', pyproject)


SAMPLE = """\
Text.

```sh
trustix-p2p keygen k   # a comment
# a whole comment line

cat > f <<'EOF'
a = "x"  # not a comment: the heredoc's text
EOF
trustix-p2p node --config f \\
    --verbose &
echo '# not a comment' "#nor this" x#y
grep -c x <<< "not a heredoc"
```

```console
$ trustix-p2p status
{"size": 1}
$ echo one \\
> two
```

```toml
not = "shell"
```

```bash
#!/bin/sh
exec true
```

1. In a list:

   ```shell
   trustix-p2p peers
   ```
"""


def test_blocks_are_split_into_commands() -> None:
    found = [(c.line, c.text, c.script) for b in blocks("x.md", SAMPLE) for c in commands(b)]
    assert found == [
        (4, "trustix-p2p keygen k", False),
        (7, "cat > f <<'EOF'\na = \"x\"  # not a comment: the heredoc's text\nEOF", False),
        (10, "trustix-p2p node --config f \\\n    --verbose &", False),
        (12, "echo '# not a comment' \"#nor this\" x#y", False),
        (13, 'grep -c x <<< "not a heredoc"', False),
        (17, "trustix-p2p status", False),
        (19, "echo one \\\ntwo", False),
        (28, "#!/bin/sh\nexec true", True),
        (35, "trustix-p2p peers", False),
    ]


def test_shell_state_is_told_from_commands() -> None:
    state = ["export A=1", "cd /tmp", "umask 077", 'K="$(x y)"', "K=$(x y)", "K=v"]
    others = ["K=v trustix-p2p status", "trustix-p2p status", "(umask 077 && tar x)"]
    assert all(SHELL_STATE.match(t) for t in state)
    assert not any(SHELL_STATE.match(t) for t in others)


def test_paths_are_moved_into_the_sandbox(tmp_path: Path) -> None:
    doc = "x /etc/trustix-p2p/a file:///srv/c ~/.config/d /nix/store/e /usr/bin/f /var"
    moved = map_paths(doc, tmp_path)
    assert moved == (
        f"x {tmp_path}/etc/trustix-p2p/a file://{tmp_path}/srv/c ~/.config/d /nix/store/e "
        f"/usr/bin/f {tmp_path}/var"
    )
    assert map_paths(moved, tmp_path) == moved


def test_the_users_a_doc_creates_are_chowned_to_by_number(tmp_path: Path) -> None:
    sb = Sandbox(tmp_path / "root", World(tmp_path / "world"), "README.md")
    (sb.root / "etc/passwd").write_text("root:x:0:0::/:/bin/sh\nsvc:x:999:998::/:/bin/sh\n")
    (sb.root / "etc/group").write_text("root:x:0:\nsvc:x:998:\n")
    assert _chown(sb, "chown svc: f") == "chown 999:998 f"
    assert _chown(sb, "chown -R svc:svc d") == "chown -R 999:998 d"
    assert _chown(sb, "install -m 0600 -o svc -g svc a b") == "install -m 0600 -o 999 -g 998 a b"
    assert _chown(sb, "cp -o svc a b") == "cp -o svc a b"


KEYGEN = """\
```sh
mkdir -p /etc/trustix-p2p
trustix-p2p keygen /etc/trustix-p2p/node.key
```
"""


@pytest.mark.parametrize(
    ("block", "where"),
    [
        ("```sh\ntrustix-p2p frobnicate --hard\n```\n", "new.md:9: trustix-p2p frobnicate --hard"),
        ("```sh\nsystemctl restart nix-daemon\n```\n", "new.md:9: systemctl restart nix-daemon"),
    ],
    ids=["fails", "may-not-run"],
)
def test_a_command_that_fails_or_may_not_run_here_is_reported_where_it_is(
    tmp_path: Path, block: str, where: str
) -> None:
    text = KEYGEN + "\nMore text.\n\n" + block
    sandbox = Sandbox(tmp_path / "root", World(tmp_path / "world"), "new.md", text)
    with pytest.raises(Failure) as failed:
        sandbox.run_file()
    assert str(failed.value).startswith(where)
    assert (tmp_path / "root/etc/trustix-p2p/node.key").exists()  # what ran before, in the root
