"""NAR hashing throughput: trustix-p2p's walker side by side with `nix-hash` on the same trees.

Two trees, as in issue 3: one 1 GiB file, and 50,000 small files (0..4 KiB, seeded sizes) in
nested directories.  Each tool hashes each tree `--repeat` times after one warm-up run (so
both read from the page cache) and the best time counts.  Nix's figure is the wall time of
`nix-hash --type sha256 --base32 TREE`; ours is `trustix_p2p.nix.nardump.hash_path` in-process,
and also the `trustix-p2p nar-hash` command as a whole process.  Both hashes must agree.

    .venv/bin/python benchmarks/bench_nar.py [--dir DIR] [--repeat 3] [--big-mib 1024]

Figures to reach (issue 3): at least 0.8x Nix's speed on the large file, 0.5x on small files.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from trustix_p2p.nix.nardump import hash_path


def make_big(path: Path, mib: int) -> None:
    chunk = random.Random(1).randbytes(1 << 20)
    with path.open("wb") as f:
        for i in range(mib):
            # Vary each MiB cheaply so the file is not one repeated block.
            f.write(i.to_bytes(8, "little") + chunk[8:])


def make_small(root: Path, files: int) -> None:
    rng = random.Random(2)
    per_dir = 50
    made = 0
    top = 0
    while made < files:
        for sub in range(20):
            d = root / f"d{top:03}" / f"s{sub:02}"
            d.mkdir(parents=True)
            for k in range(per_dir):
                if made == files:
                    return
                p = d / f"f{k:03}"
                p.write_bytes(rng.randbytes(rng.randint(0, 4096)))
                if k % 10 == 0:
                    p.chmod(0o755)
                made += 1
        top += 1


def best_of(repeat: int, fn: Callable[[], str]) -> tuple[float, str]:
    result = fn()  # warm-up: page cache, and Python's imports for the command
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t)
    return best, result


def nix_hash(path: Path) -> str:
    out = subprocess.run(
        ["nix-hash", "--type", "sha256", "--base32", str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    return "sha256:" + out.stdout.strip()


def ours(path: Path) -> str:
    return hash_path(path).nix32()


def ours_cli(path: Path) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "trustix_p2p", "nar-hash", str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.split()[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=None, help="where to build the trees")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--big-mib", type=int, default=1024)
    parser.add_argument("--small-files", type=int, default=50_000)
    args = parser.parse_args()
    if shutil.which("nix-hash") is None:
        print("nix-hash not found: install nix-bin (tests/nix/setup-nix.sh)", file=sys.stderr)
        return 1

    base = Path(tempfile.mkdtemp(prefix="bench-nar-", dir=args.dir))
    try:
        big = base / "big"
        make_big(big, args.big_mib)
        small = base / "small"
        make_small(small, args.small_files)
        size = hash_path(small).size
        print(f"trees: {args.big_mib} MiB file; {args.small_files} small files (NAR {size} B)")
        print(f"{'tree':<12}{'nix-hash':>12}{'ours (lib)':>14}{'ratio':>8}{'ours (cli)':>14}")
        for label, tree, mib in (
            ("1 file", big, args.big_mib),
            ("small files", small, size / (1 << 20)),
        ):
            t_nix, h_nix = best_of(args.repeat, lambda t=tree: nix_hash(t))
            t_lib, h_lib = best_of(args.repeat, lambda t=tree: ours(t))
            t_cli, h_cli = best_of(args.repeat, lambda t=tree: ours_cli(t))
            if not h_nix == h_lib == h_cli:
                print(f"HASH MISMATCH on {label}: {h_nix} {h_lib} {h_cli}", file=sys.stderr)
                return 1
            print(
                f"{label:<12}{t_nix:>10.3f} s{t_lib:>12.3f} s{t_nix / t_lib:>7.2f}x"
                f"{t_cli:>12.3f} s   ({mib / t_lib:.0f} MiB/s lib, {mib / t_nix:.0f} MiB/s nix)"
            )
        print("ratio = nix-hash time / our library time (>= 0.8 big file, >= 0.5 small files)")
    finally:
        subprocess.run(["rm", "-rf", str(base)], check=False)
    return 0


if __name__ == "__main__":
    os.umask(0o022)
    sys.exit(main())
