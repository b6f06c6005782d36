"""Real Nix end to end through the workstation: paths built on node-backed builders (their
post-build hooks log them), NARs in a `file://` cache made with `nix copy`, the cache proxy in
front, and `nix` substituting into a fresh store: a trusted path arrives; a path only one
builder logged is refused; a trusted path whose NAR the upstream tampered with fails, and is
not valid in the store afterwards."""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.nix import require_nix
from trustix_p2p import demo

pytestmark = [pytest.mark.nix, pytest.mark.slow]


def _expression(root: Path, nonce: str) -> Path:
    text = f"""
let
  mk = name: text: derivation {{
    inherit name;
    system = builtins.currentSystem;
    builder = "/bin/sh";
    args = [ "-c" "mkdir -p $out; echo '${{text}}' > $out/file" ];
    PATH = "/usr/bin:/bin";
    nonce = "{nonce}";
  }};
in {{
  good = mk "e2e-good" "trusted";
  solo = mk "e2e-solo" "built by one builder only";
  tampered = mk "e2e-tampered" "served tampered";
}}
"""
    path = root / "e2e.nix"
    path.write_text(text)
    return path


def test_nix_substitutes_only_trusted_and_intact_paths_through_the_proxy(tmp_path: Path) -> None:
    require_nix()
    expression = _expression(tmp_path, uuid.uuid4().hex)
    marker = tmp_path / "who-builds"
    nodes = demo._make_nodes(tmp_path)[:3]  # alice, bob, chuck
    cache, tampered_cache = tmp_path / "cache", tmp_path / "tampered-cache"
    fresh = tmp_path / "fresh-store"
    procs: list[subprocess.Popen[bytes]] = []
    built: set[str] = set()
    env = demo._nix_env()
    try:
        with demo._processes(procs):
            for node in nodes:
                demo._start(node)
                assert node.proc is not None
                procs.append(node.proc)
            outputs: dict[str, str] = {}
            for node in nodes:
                names = ["good", "tampered"] + (["solo"] if node.name == "alice" else [])
                for name in names:
                    outputs[name] = demo._build(node, expression, name, marker)
                    built.add(outputs[name])
                if node.name == "alice":
                    demo._run(
                        [
                            "nix",
                            "copy",
                            "--to",
                            f"file://{cache}",
                            outputs["good"],
                            outputs["solo"],
                        ],
                        env=env,
                    )
                    uncompressed = f"file://{tampered_cache}?compression=none"
                    demo._run(["nix", "copy", "--to", uncompressed, outputs["tampered"]], env=env)
                demo._run(["nix-store", "--delete", *[outputs[n] for n in names]], env=env)
            # Flip one byte in the middle of the uncompressed NAR the second cache serves.
            (nar,) = (tampered_cache / "nar").glob("*.nar")
            data = bytearray(nar.read_bytes())
            data[len(data) // 2] ^= 0x01
            nar.write_bytes(bytes(data))
            expected = {n.public_key.log_id(): (3 if n.name == "alice" else 2) for n in nodes}
            demo._wait_for_logs(nodes[0], expected)

            lines = [
                "threshold = 2",
                f'node_socket = "{nodes[0].socket}"',
                f'upstreams = ["file://{cache}", "file://{tampered_cache}"]',
            ]
            for node in nodes:
                lines += [
                    "[[builders]]",
                    f'name = "{node.name}"',
                    f'public_key = "{node.public_key.to_base64()}"',
                ]
            policy = tmp_path / "policy.toml"
            policy.write_text("\n".join(lines) + "\n")
            decided = subprocess.run(
                [*demo._trustix(), "decide", "--policy", str(policy), "--json", outputs["good"],
                 outputs["solo"], outputs["tampered"]],
                capture_output=True, text=True, check=False,
            )  # fmt: skip
            assert decided.returncode == 1, decided.stderr
            verdicts = [json.loads(line)["trusted"] for line in decided.stdout.splitlines()]
            assert verdicts == [True, False, True]

            key = tmp_path / "proxy.key"
            public = demo._run([*demo._trustix(), "nix-keygen", "e2e-proxy-1", str(key)]).strip()
            port = demo._free_port()
            proxy = subprocess.Popen(
                [*demo._trustix(), "cache-proxy", "--policy", str(policy), "--listen",
                 f"127.0.0.1:{port}", "--nix-key", str(key)],
                stdout=subprocess.DEVNULL, stderr=open(tmp_path / "proxy.log", "wb"),  # noqa: SIM115
            )  # fmt: skip
            procs.append(proxy)
            demo._wait_http(port)
            sub_env = dict(env)
            sub_env["NIX_CONFIG"] = sub_env["NIX_CONFIG"].replace("substituters =\n", "")
            substitute = [
                "nix-store", "--store", str(fresh), "-r",
                "--option", "substituters", f"http://127.0.0.1:{port}",
                "--option", "trusted-public-keys", public,
            ]  # fmt: skip

            def realise(path: str) -> subprocess.CompletedProcess[str]:
                return subprocess.run(
                    [*substitute, path], capture_output=True, text=True, env=sub_env, timeout=120
                )

            def valid(path: str) -> bool:
                check = subprocess.run(
                    ["nix-store", "--store", str(fresh), "--check-validity", path],
                    capture_output=True, env=sub_env, check=False,
                )  # fmt: skip
                return check.returncode == 0

            good = realise(outputs["good"])
            assert good.returncode == 0, good.stderr
            assert valid(outputs["good"])
            assert (fresh / outputs["good"].lstrip("/") / "file").read_text() == "trusted\n"

            solo = realise(outputs["solo"])
            assert solo.returncode != 0
            assert not valid(outputs["solo"])
            assert not (fresh / outputs["solo"].lstrip("/")).exists()

            tampered = realise(outputs["tampered"])
            assert tampered.returncode != 0, tampered.stdout
            assert not valid(outputs["tampered"])
            # A NAR below the proxy's hold-back (1 MiB) is checked whole before any byte goes
            # out: nothing of it reaches the store, not even a partial file.
            assert not (fresh / outputs["tampered"].lstrip("/")).exists()
    finally:
        for path in built:
            subprocess.run(
                ["nix-store", "--delete", path], capture_output=True, env=env, check=False
            )
