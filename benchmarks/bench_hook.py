"""Post-build hook overhead beyond hashing, with the node up and with it down.

Builds one small three-output derivation with real Nix, starts a real node, then runs the hook
exactly as Nix does (`DRV_PATH` set, `OUT_PATHS` empty, `TRUSTIX_P2P_CONFIG` pointing at the
node's config) `--runs` times per case and reports medians:

* hashing: `hash_path` over the outputs, in-process (what the hook cannot avoid);
* hook work in-process: everything `nix-hook` does after Python has started and imported;
* hook: the whole hook process, wall time; overhead = hook - hashing;
* for reference: a bare `python -c pass` and the hook's imports alone;
* end to end: `nix-build` of fresh derivations with and without the hook configured.

Two entry points are measured: `trustix-p2p nix-hook` (the main CLI, which imports every
command group first) and `python -m trustix_p2p.nix nix-hook` (only the Nix commands).

    .venv/bin/python benchmarks/bench_hook.py [--runs 15]

Target (issue 3): overhead under 50 ms per build with the node up, under 100 ms with it down.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from trustix_p2p.config import load_node_config
from trustix_p2p.control.client import ControlClient
from trustix_p2p.errors import NodeUnavailableError
from trustix_p2p.nix.hook import hand_over, hook_leaves, hook_outputs
from trustix_p2p.nix.nardump import hash_path
from trustix_p2p.nix.store import open_nix_store

NIX_CONFIG = (
    "build-users-group =\nsandbox = false\nstore = local\nsubstituters =\n"
    "experimental-features = nix-command\n"
)


def expr(nonce: str) -> str:
    return (
        'derivation { name = "bench-hook"; system = builtins.currentSystem;'
        ' builder = "/bin/sh"; PATH = "/usr/bin:/bin"; outputs = [ "out" "dev" "doc" ];'
        f' nonce = "{nonce}";'
        ' args = [ "-c" "mkdir -p $out/bin; printf x > $out/bin/a; chmod +x $out/bin/a;'
        ' mkdir $dev; ln -s $out $dev/lib; echo $dev > $doc" ]; }'
    )


def median_ms(runs: int, fn: Callable[[], object]) -> float:
    fn()  # warm-up
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


def build_fresh(count: int, env: dict[str, str]) -> list[str]:
    """Build `count` new derivations (no hook); return their .drv paths."""
    exprs = [expr(uuid.uuid4().hex) for _ in range(count)]
    run(["nix-build", "--no-out-link", *[a for e in exprs for a in ("-E", e)]], env)
    return run(["nix-instantiate", *[a for e in exprs for a in ("-E", e)]], env).split()


def hook_in_process(drv: str, config_path: Path) -> None:
    """What `nix-hook` does after start-up, node up, timed without interpreter and imports."""
    config = load_node_config(config_path)
    store = open_nix_store()
    drv_path, outputs = hook_outputs({"DRV_PATH": drv, "OUT_PATHS": ""}, store)
    infos = store.path_infos([path for _, path in outputs])
    leaves = hook_leaves(outputs, infos, int(time.time()), drv_path, store.store_dir)
    result = hand_over(leaves, config.socket_path, config.spool_path, 5.0)
    assert result.indices is not None


def run(args: list[str], env: dict[str, str], check: bool = True) -> str:
    proc = subprocess.run(args, env=env, capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{proc.stderr}")
    return proc.stdout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    if shutil.which("nix-build") is None:
        print("nix-build not found: install nix-bin (tests/nix/setup-nix.sh)", file=sys.stderr)
        return 1
    python = sys.executable
    script = Path(python).parent / "trustix-p2p"
    full_cli = [str(script)] if script.exists() else [python, "-m", "trustix_p2p"]
    fast = [python, "-m", "trustix_p2p.nix"]

    base = Path(tempfile.mkdtemp(prefix="bench-hook-"))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["NIX_CONFIG"] = NIX_CONFIG
    env.pop("NIX_REMOTE", None)
    node = None
    try:
        run([*full_cli, "keygen", str(base / "node.key")], env)
        up, down = base / "up.toml", base / "down.toml"
        common = f'key_file = "{base / "node.key"}"\ncheckpoint_interval = 0.5\n'
        up.write_text(f'state_dir = "{base / "up"}"\n{common}')
        down.write_text(f'state_dir = "{base / "down"}"\n{common}')
        node = subprocess.Popen(
            [*full_cli, "node", "--config", str(up)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                with ControlClient(base / "up" / "control.sock", timeout=1.0) as client:
                    client.status()
                break
            except NodeUnavailableError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

        e = expr(uuid.uuid4().hex)
        run(["nix-build", "--no-out-link", "-E", e], env)
        drv = run(["nix-instantiate", "-E", e], env).strip()
        outputs = run(["nix-store", "--query", "--outputs", drv], env).split()
        hashing = median_ms(args.runs, lambda: [hash_path(p) for p in outputs])
        bare = median_ms(args.runs, lambda: run([python, "-c", "pass"], env))
        imports = median_ms(
            args.runs,
            lambda: run(
                [python, "-c", "import trustix_p2p.commands.nix, trustix_p2p.nix.hook"], env
            ),
        )
        print(f"derivation with {len(outputs)} outputs; hashing them in-process: {hashing:.1f} ms")
        print(f"python -c pass: {bare:.1f} ms; hook imports incl. interpreter: {imports:.1f} ms")
        in_process = median_ms(args.runs, lambda: hook_in_process(drv, up))
        print(
            f"hook work in-process (config, .drv, Nix DB, hashing, encode, submit): "
            f"{in_process:.1f} ms, i.e. {in_process - hashing:.1f} ms beyond hashing"
        )
        print(f"{'entry point':<36}{'node':<6}{'hook':>10}{'overhead':>12}")
        for label, command in (
            ("trustix-p2p nix-hook", full_cli),
            ("python -m trustix_p2p.nix", fast),
        ):
            for state, config in (("up", up), ("down", down)):
                # A fresh derivation per run: the node must durably append new entries, as
                # for a real build (re-submitting identical leaves would be a cheap lookup).
                fresh = iter(build_fresh(args.runs + 1, env))

                def one(
                    c: list[str] = command, cfg: Path = config, drvs: Iterator[str] = fresh
                ) -> str:
                    hook_env = {
                        **env,
                        "DRV_PATH": next(drvs),
                        "OUT_PATHS": "",
                        "TRUSTIX_P2P_CONFIG": str(cfg),
                    }
                    return run([*c, "nix-hook"], hook_env)

                total = median_ms(args.runs, one)
                print(f"{label:<36}{state:<6}{total:>8.1f} ms{total - hashing:>9.1f} ms")
        spooled = len(list((base / "down" / "spool").glob("*.spool")))
        print(f"(node down: {spooled} spool files written, one per hook run)")

        # End to end: what a build costs with the hook configured, against no hook at all.
        hook = base / "hook.sh"
        hook.write_text(
            f"#!/bin/sh\nexport TRUSTIX_P2P_CONFIG='{up}'\nexec {' '.join(fast)} nix-hook\n"
        )
        hook.chmod(0o755)
        hooked = {**env, "NIX_CONFIG": NIX_CONFIG + f"post-build-hook = {hook}\n"}
        plain = median_ms(
            args.runs,
            lambda: run(["nix-build", "--no-out-link", "-E", expr(uuid.uuid4().hex)], env),
        )
        with_hook = median_ms(
            args.runs,
            lambda: run(["nix-build", "--no-out-link", "-E", expr(uuid.uuid4().hex)], hooked),
        )
        print(
            f"nix-build of a fresh derivation: {plain:.1f} ms without the hook, "
            f"{with_hook:.1f} ms with it (+{with_hook - plain:.1f} ms)"
        )
    finally:
        if node is not None:
            node.send_signal(signal.SIGTERM)
            node.wait(timeout=30)
        subprocess.run(["rm", "-rf", str(base)], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
