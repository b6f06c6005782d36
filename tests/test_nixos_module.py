"""The NixOS module parses with Debian's Nix, and names the options the README shows."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MODULE = ROOT / "nixos" / "module.nix"


@pytest.mark.skipif(shutil.which("nix-instantiate") is None, reason="needs Nix (CI installs it)")
def test_nix_instantiate_parses_the_module() -> None:
    done = subprocess.run(
        ["nix-instantiate", "--parse", str(MODULE)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr


def test_the_readme_configuration_uses_options_the_module_declares() -> None:
    text = MODULE.read_text()
    readme = (ROOT / "README.md").read_text()
    block = readme.split("```nix\n", 1)[1].split("```", 1)[0]
    used = set(re.findall(r"services\.trustix-p2p\.([A-Za-z.]+?)\s*=", block))
    assert used
    for option in used:
        leaf = option.split(".")[-1]
        assert re.search(rf"\b{re.escape(leaf)}\b\s*=", text), option
    for wired in ("post-build-hook", "substituters", "trusted-public-keys"):
        assert f"nix.settings.{wired}" in text
