"""Post-build hook overhead beyond hashing, with the node up and with it down.

Builds small three-output derivations with real Nix, starts a real node, then runs the hook
exactly as Nix does (`DRV_PATH` set, `OUT_PATHS` empty, no arguments) `--runs` times per case,
each time for a freshly built derivation (so the node durably appends new entries, as after a
real build), and reports medians:

* hashing: `nar_digest` over the outputs, in-process (what the hook cannot avoid);
* hook work in-process: everything the hook does after Python has started and imported;
* hook: the whole hook process, wall time (median and minimum) and CPU time (user + system,
  median); overhead = median wall time - hashing;
* end to end: `nix-build` of fresh derivations with the recommended hook configured, against
  the same builds without any hook (the baseline, measured in the same run).

The hook is measured as a user installs it: a wheel of this checkout is built and installed
into a fresh virtualenv per interpreter (this venv's base Python and, when it is the same
Python version, the system's /usr/bin/python3), with the wheel's byte-code compiled by pip as
usual.  The one shortcut: those venvs find the dependencies (msgpack, attrs, ...) through a
`.pth` line pointing at this venv's site-packages instead of downloading them again.  Three
entry points are measured per install:

* `wrapper`: the program `trustix-p2p nix-hook --write-wrapper` generates (recommended: the
  interpreter runs with -I -S and the config is built in);
* `trustix-p2p-nix-hook`: the hook's own console script, reading the TOML config;
* `trustix-p2p nix-hook`: the main CLI.

The development venv (editable install) is measured too, for reference.

    env -u PYTHONDONTWRITEBYTECODE .venv/bin/python benchmarks/bench_hook.py [--runs 15]

Target (issue 3): overhead under 50 ms per build with the node up, under 100 ms with it down.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from functools import partial
from pathlib import Path

from trustix_p2p.config import load_node_config
from trustix_p2p.control.client import ControlClient
from trustix_p2p.errors import NodeUnavailableError
from trustix_p2p.nix.hook import hand_over, hook_leaves, hook_outputs
from trustix_p2p.nix.nardump import nar_digest
from trustix_p2p.nix.store import open_nix_store

NIX_CONFIG = (
    "build-users-group =\nsandbox = false\nstore = local\nsubstituters =\n"
    "experimental-features = nix-command\n"
)
REPO = Path(__file__).resolve().parent.parent


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


def run(args: list[str], env: dict[str, str], check: bool = True) -> str:
    proc = subprocess.run(args, env=env, capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{proc.stderr}")
    return proc.stdout


def build_fresh(count: int, env: dict[str, str]) -> list[str]:
    """Build `count` new derivations (no hook); return their .drv paths."""
    exprs = [expr(uuid.uuid4().hex) for _ in range(count)]
    run(["nix-build", "--no-out-link", *[a for e in exprs for a in ("-E", e)]], env)
    return run(["nix-instantiate", *[a for e in exprs for a in ("-E", e)]], env).split()


def interleaved(
    runs: int, cases: list[tuple[str, str, Path, list[str]]], env: dict[str, str]
) -> list[tuple[list[float], list[float]]]:
    """Wall and CPU times (ms) of `runs` hook runs per case, the cases taking turns.

    Taking turns spreads whatever else the machine is doing evenly over the cases; every run
    gets a derivation built for it (node up: the node durably appends its new entries).  The
    CPU time (user + system of the hook process) shows what the hook itself costs when the
    machine is shared and the wall time also counts waiting for a core.
    """
    drvs = iter(build_fresh(len(cases) * (runs + 1), env))
    times: list[tuple[list[float], list[float]]] = [([], []) for _ in cases]
    for i in range(runs + 1):
        for (wall, cpu), (_, _, config, argv) in zip(times, cases, strict=True):
            hook_env = {
                **env,
                "DRV_PATH": next(drvs),
                "OUT_PATHS": "",
                "TRUSTIX_P2P_CONFIG": str(config),
            }
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            t = time.perf_counter()
            run(argv, hook_env)
            elapsed = time.perf_counter() - t
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            if i:  # the first round warms the page cache
                wall.append(elapsed * 1000)
                used = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
                cpu.append(used * 1000)
    return times


def build_one(env: dict[str, str]) -> str:
    """Build one fresh derivation with the hook (or none) that `env`'s NIX_CONFIG names."""
    return run(["nix-build", "--no-out-link", "-E", expr(uuid.uuid4().hex)], env)


def hook_in_process(drv: str, config_path: Path) -> None:
    """What the hook does after start-up, node up, timed without interpreter and imports."""
    config = load_node_config(config_path)
    store = open_nix_store()
    drv_path, outputs = hook_outputs({"DRV_PATH": drv, "OUT_PATHS": ""}, store)
    infos = store.path_infos([path for _, path in outputs])
    leaves = hook_leaves(outputs, infos, int(time.time()), drv_path, store.store_dir)
    result = hand_over(leaves, config.socket_path, config.spool_path, 5.0)
    assert result.indices is not None


def build_wheel(work: Path, env: dict[str, str]) -> Path | None:
    """A wheel of this checkout, built from a copy (pip builds in the source tree)."""
    src = work / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(
        REPO / "trustix_p2p", src / "trustix_p2p", ignore=shutil.ignore_patterns("__pycache__")
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            str(src),
            "-w",
            str(work / "wheel"),
        ],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    wheels = list((work / "wheel").glob("*.whl"))
    if proc.returncode != 0 or not wheels:
        print(f"(cannot build a wheel, user installs not measured: {proc.stderr.strip()[-200:]})")
        return None
    return wheels[0]


def user_install(python: str, wheel: Path, where: Path, env: dict[str, str]) -> Path | None:
    """A fresh venv of `python` with the wheel installed; its bin directory."""
    proc = subprocess.run(
        [python, "-m", "venv", "--without-pip", str(where)], capture_output=True, check=False
    )
    if proc.returncode != 0:
        print(f"(no venv for {python}: {proc.stderr.decode().strip()[-200:]})")
        return None
    vpy = where / "bin" / "python"
    run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(vpy),
            "install",
            "-q",
            "--no-deps",
            str(wheel),
        ],
        env,
    )
    site = run([str(vpy), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], env)
    deps = run(
        [sys.executable, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], env
    )
    (Path(site.strip()) / "zz-trustix-bench-deps.pth").write_text(deps.strip() + "\n")
    return where / "bin"


def same_version(python: str) -> bool:
    try:
        out = subprocess.run(
            [python, "-c", "import sys; print(sys.version_info[:2])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return False
    return out == str(sys.version_info[:2])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    if shutil.which("nix-build") is None:
        print("nix-build not found: install nix-bin (tests/nix/setup-nix.sh)", file=sys.stderr)
        return 1
    dev_bin = Path(sys.executable).parent

    base = Path(tempfile.mkdtemp(prefix="bench-hook-"))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["NIX_CONFIG"] = NIX_CONFIG
    env.pop("NIX_REMOTE", None)
    node = None
    try:
        run([str(dev_bin / "trustix-p2p"), "keygen", str(base / "node.key")], env)
        up, down = base / "up.toml", base / "down.toml"
        common = f'key_file = "{base / "node.key"}"\ncheckpoint_interval = 0.5\n'
        up.write_text(f'state_dir = "{base / "up"}"\n{common}')
        down.write_text(f'state_dir = "{base / "down"}"\n{common}')
        node = subprocess.Popen(
            [str(dev_bin / "trustix-p2p"), "node", "--config", str(up)],
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

        # The installs to measure: label -> bin directory.
        installs: dict[str, Path] = {}
        wheel = build_wheel(base, env)
        if wheel is not None:
            pythons = {"venv's Python": os.path.realpath(sys.executable)}
            system = "/usr/bin/python3"
            if (
                os.path.exists(system)
                and os.path.realpath(system) != pythons["venv's Python"]
                and same_version(system)
            ):
                pythons["system Python"] = system
            for i, (label, python) in enumerate(pythons.items()):
                bin_dir = user_install(python, wheel, base / f"venv{i}", env)
                if bin_dir is not None:
                    installs[f"{label} ({python})"] = bin_dir
        installs["dev venv, editable"] = dev_bin

        e = expr(uuid.uuid4().hex)
        run(["nix-build", "--no-out-link", "-E", e], env)
        drv = run(["nix-instantiate", "-E", e], env).strip()
        outputs = run(["nix-store", "--query", "--outputs", drv], env).split()
        hashing = median_ms(args.runs, lambda: [nar_digest(p) for p in outputs])
        print(f"derivation with {len(outputs)} outputs; hashing them in-process: {hashing:.1f} ms")
        in_process = median_ms(args.runs, lambda: hook_in_process(drv, up))
        print(
            f"hook work in-process (config, .drv, Nix DB, hashing, encode, submit): "
            f"{in_process:.1f} ms, i.e. {in_process - hashing:.1f} ms beyond hashing"
        )

        recommended: dict[str, Path] = {}  # per install, its wrapper for the node that is up
        for label, bin_dir in installs.items():
            python = str(bin_dir / "python")
            bare = median_ms(args.runs, partial(run, [python, "-c", "pass"], env))
            isolated = median_ms(args.runs, partial(run, [python, "-I", "-S", "-c", "pass"], env))
            print(
                f"\n{label}: python -c pass {bare:.1f} ms, python -I -S -c pass {isolated:.1f} ms"
            )
            wrappers: dict[str, Path] = {}
            for state, config in (("up", up), ("down", down)):
                wrappers[state] = base / f"hook-{len(wrappers)}-{bin_dir.parent.name}-{state}"
                run(
                    [
                        str(bin_dir / "trustix-p2p"),
                        "nix-hook",
                        "--config",
                        str(config),
                        "--write-wrapper",
                        str(wrappers[state]),
                    ],
                    env,
                )
            recommended[label] = wrappers["up"]
            cases = [
                (entry, state, config, [str(wrappers[state])] if command is None else command)
                for entry, command in (
                    ("wrapper", None),
                    ("trustix-p2p-nix-hook", [str(bin_dir / "trustix-p2p-nix-hook")]),
                    ("trustix-p2p nix-hook", [str(bin_dir / "trustix-p2p"), "nix-hook"]),
                )
                for state, config in (("up", up), ("down", down))
            ]
            times = interleaved(args.runs, cases, env)
            print(
                f"  {'entry point':<24}{'node':<6}{'wall: median':>14}{'min':>9}"
                f"{'overhead':>12}{'CPU: median':>14}"
            )
            for (entry, state, _, _), (wall, cpu) in zip(cases, times, strict=True):
                med = statistics.median(wall)
                print(
                    f"  {entry:<24}{state:<6}{med:>11.1f} ms{min(wall):>6.1f} ms"
                    f"{med - hashing:>9.1f} ms{statistics.median(cpu):>11.1f} ms"
                )
        spooled = len(list((base / "down" / "spool").glob("*.spool")))
        print(f"\n(node down: {spooled} spool files written, one per hook run)")

        # End to end: what a build costs with each install's wrapper, against no hook at all
        # (the baseline), taking turns build by build.
        envs = {"no hook": env} | {
            f"the wrapper of {label}, node up": {
                **env,
                "NIX_CONFIG": NIX_CONFIG + f"post-build-hook = {wrapper}\n",
            }
            for label, wrapper in recommended.items()
        }
        builds: dict[str, list[float]] = {label: [] for label in envs}
        for i in range(args.runs + 1):
            for label, build_env in envs.items():
                t = time.perf_counter()
                build_one(build_env)
                if i:
                    builds[label].append((time.perf_counter() - t) * 1000)
        plain = statistics.median(builds["no hook"])
        print(f"\nnix-build of a fresh derivation (median): {plain:.1f} ms without any hook")
        for label, build_times in builds.items():
            if label != "no hook":
                with_hook = statistics.median(build_times)
                print(f"  with {label}: {with_hook:.1f} ms (+{with_hook - plain:.1f} ms)")
    finally:
        if node is not None:
            node.send_signal(signal.SIGTERM)
            node.wait(timeout=30)
        subprocess.run(["rm", "-rf", str(base)], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
