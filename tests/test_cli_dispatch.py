"""The main CLI imports only the command group it runs, and the hook's path stays lean.

Start-up time of `trustix-p2p nix-hook` and of the generated post-build-hook wrapper is paid
on every Nix build, so these tests pin down *which modules load*, never how long it takes.
"""

from __future__ import annotations

import argparse
import importlib
import os
import subprocess
import sys

import msgpack
import pytest

import trustix_p2p
from trustix_p2p import cli

# Heavy modules the hook must never pay for (the node's stack, attrs, slow stdlib modules).
HEAVY = ("trio", "nacl", "attr", "attrs", "zeroconf", "plyvel", "typing", "pathlib", "socket")


def registered(module: str) -> set[str]:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    importlib.import_module(module).register(sub)
    return set(sub.choices)


@pytest.mark.parametrize("module", sorted(cli._COMMAND_MODULES))
def test_the_dispatch_table_names_exactly_what_each_module_registers(module: str) -> None:
    assert registered(module) == set(cli._COMMAND_MODULES[module])


def test_every_command_has_exactly_one_owner() -> None:
    names = [name for names in cli._COMMAND_MODULES.values() for name in names]
    assert len(names) == len(set(names))
    assert cli.command_module(["nix-hook", "--config", "x"]) == "trustix_p2p.commands.nix"
    assert cli.command_module(["status"]) == "trustix_p2p.commands.node"


@pytest.mark.parametrize("argv", [[], ["--help"], ["-h"], ["bogus"], ["--config", "nix-hook"]])
def test_help_and_unknown_commands_load_every_group(argv: list[str]) -> None:
    assert cli.command_module(argv) is None


def loaded_modules(code: str, *, isolated: bool) -> set[str]:
    """The modules a fresh interpreter holds after running `code`."""
    flags = ["-I", "-S"] if isolated else []
    # With -S (as the generated wrapper runs) the package and msgpack are found only where
    # the wrapper would put them.
    paths = [
        os.path.dirname(os.path.dirname(module.__file__ or "")) for module in (trustix_p2p, msgpack)
    ]
    prelude = f"import sys; sys.path[:0] = {paths!r}; "
    tail = "; print('\\n'.join(sorted(sys.modules)))"
    proc = subprocess.run(
        [sys.executable, *flags, "-c", prelude + code + tail],
        capture_output=True,
        text=True,
        check=True,
    )
    return set(proc.stdout.split())


def test_the_hook_command_does_not_load_the_other_command_groups() -> None:
    modules = loaded_modules(
        "from trustix_p2p import cli; cli.build_parser([cli.command_module(['nix-hook'])])",
        isolated=False,
    )
    assert "trustix_p2p.commands.nix" in modules
    assert not {"trio", "nacl", "trustix_p2p.commands.node", "trustix_p2p.node"} & modules


def test_the_wrapper_path_loads_nothing_heavy() -> None:
    modules = loaded_modules("import trustix_p2p.nix.wrapper, trustix_p2p.nix.hook", isolated=True)
    assert "trustix_p2p.nix.hook" in modules
    assert not set(HEAVY) & modules
    assert "tomllib" not in modules  # the config is built into the wrapper
    assert "argparse" not in modules


def test_the_hook_program_without_arguments_loads_nothing_heavy_but_tomllib() -> None:
    modules = loaded_modules(
        "import trustix_p2p.nix.cli, trustix_p2p.nix.hook, trustix_p2p.configfile",
        isolated=True,
    )
    assert not (set(HEAVY) - {"typing"}) & modules  # tomllib itself imports typing
    assert "argparse" not in modules
