"""`trustix-p2p config check` on the shipped examples: each malformed one in tests/configs/
is refused with one line naming the option and why; every example in docs/examples/ is
accepted (with a key created next to it, as its comments say)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BAD = sorted((ROOT / "tests" / "configs").glob("*.toml"))
GOOD = sorted((ROOT / "docs" / "examples").glob("*.toml"))


def check(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "trustix_p2p.cli", "config", "check", str(config)],
        capture_output=True,
        text=True,
        check=False,
    )


def keygen(path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "trustix_p2p.cli", "keygen", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def place(example: Path, tmp_path: Path) -> Path:
    config = tmp_path / example.name
    text = example.read_text().replace('"/var/lib/trustix-p2p"', f'"{tmp_path / "state"}"')
    config.write_text(text)
    return config


def test_there_are_examples_of_each_kind() -> None:
    names = {p.stem for p in BAD}
    assert {"unknown-option", "wrong-type", "out-of-range", "unreadable-key", "bad-seed"} <= names
    assert GOOD


@pytest.mark.parametrize("example", BAD, ids=lambda p: p.stem)
def test_a_malformed_config_is_refused_with_one_line_naming_the_option(
    example: Path, tmp_path: Path
) -> None:
    expected = example.read_text().splitlines()[0].removeprefix("# expect: ")
    config = place(example, tmp_path)
    if example.stem != "unreadable-key":
        keygen(tmp_path / "node.key")
    done = check(config)
    assert done.returncode == 2, done.stdout + done.stderr
    lines = [x for x in (done.stdout + done.stderr).splitlines() if x.strip()]
    assert len(lines) == 1, lines
    assert expected in lines[0], lines[0]
    assert lines[0].startswith(f"{config}: option '")


@pytest.mark.parametrize("example", GOOD, ids=lambda p: p.stem)
def test_every_example_config_in_docs_is_accepted(example: Path, tmp_path: Path) -> None:
    config = place(example, tmp_path)
    keygen(tmp_path / "node.key")
    done = check(config)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == f"ok: {config}"
