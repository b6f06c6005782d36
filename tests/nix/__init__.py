"""Helpers for tests that need a real Nix installation (Debian's `nix-bin`, Nix 2.8).

Such tests carry `@pytest.mark.nix` and call `require_nix()`.  Without Nix they are skipped on
a developer machine, but when the `CI` environment variable is set they FAIL: CI installs Nix
(`tests/nix/setup-nix.sh`), so a missing Nix there is a broken pipeline, not a reason to skip.
"""

from __future__ import annotations

import os
import shutil

import pytest

NIX_TOOLS = ("nix-store", "nix-hash", "nix-build", "nix-instantiate", "nix")


def require_nix() -> None:
    """Skip (locally) or fail (under CI) unless every Nix tool the tests use is on PATH."""
    missing = [tool for tool in NIX_TOOLS if shutil.which(tool) is None]
    if not missing:
        return
    message = f"real Nix needed; missing {', '.join(missing)} (run tests/nix/setup-nix.sh)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def nix_env(extra_config: str = "") -> dict[str, str]:
    """The environment for running Nix single-user as root against the local /nix/store.

    `build-users-group =` lets root build without the nixbld users, `sandbox = false` because
    a container cannot create Nix's sandbox namespaces, `store = local` so Nix never tries a
    daemon, and no substituters so nothing is fetched from the network.
    """
    env = dict(os.environ)
    env["NIX_CONFIG"] = (
        "build-users-group =\n"
        "sandbox = false\n"
        "store = local\n"
        "substituters =\n"
        "experimental-features = nix-command\n" + extra_config
    )
    env.pop("NIX_REMOTE", None)
    return env
