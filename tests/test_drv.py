"""Parsing `.drv` files: a derivation written by Nix 2.8, escapes, malformed input, real Nix."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.nix import nix_env, require_nix
from trustix_p2p.errors import DecodeError, NixStoreError
from trustix_p2p.nix.drv import Derivation, DerivationOutput, parse_derivation, read_derivation

# Written by Nix 2.8 for a three-output derivation (see tests/nix/test_hook_e2e.py).
MULTI = (
    'Derive([("dev","/nix/store/dfvznz8r1d731ibzxm37vfyhzmmmvkma-multi-dev","",""),'
    '("doc","/nix/store/q3kdnxxwclsq6h1xkmdji220qmz0982y-multi-doc","",""),'
    '("out","/nix/store/rylsp0pgzjlhy25qszai59dqc7kkdkpn-multi","","")],[],[],"x86_64-linux",'
    '"/bin/sh",["-c","echo o > $out; mkdir -p $dev/x; echo d > $dev/x/f; ln -s $out $dev/l; '
    'echo doc > $doc"],[("builder","/bin/sh"),'
    '("dev","/nix/store/dfvznz8r1d731ibzxm37vfyhzmmmvkma-multi-dev"),'
    '("doc","/nix/store/q3kdnxxwclsq6h1xkmdji220qmz0982y-multi-doc"),("name","multi"),'
    '("out","/nix/store/rylsp0pgzjlhy25qszai59dqc7kkdkpn-multi"),("outputs","out dev doc"),'
    '("system","x86_64-linux")])'
)


def test_outputs_of_a_nix_written_multi_output_derivation() -> None:
    drv = parse_derivation(MULTI)
    assert drv.output_paths() == {
        "dev": "/nix/store/dfvznz8r1d731ibzxm37vfyhzmmmvkma-multi-dev",
        "doc": "/nix/store/q3kdnxxwclsq6h1xkmdji220qmz0982y-multi-doc",
        "out": "/nix/store/rylsp0pgzjlhy25qszai59dqc7kkdkpn-multi",
    }
    assert drv.builder == "/bin/sh"
    assert drv.args[0] == "-c"
    assert dict(drv.env)["outputs"] == "out dev doc"


def test_input_derivations_and_sources() -> None:
    text = (
        'Derive([("out","/nix/store/a","","")],[("/nix/store/b.drv",["dev","out"])],'
        '["/nix/store/src"],"s","b",[],[])'
    )
    drv = parse_derivation(text)
    assert drv.input_drvs == (("/nix/store/b.drv", ("dev", "out")),)
    assert drv.input_srcs == ("/nix/store/src",)


def test_floating_ca_output_has_no_fixed_path() -> None:
    text = 'Derive([("out","","r:sha256","")],[],[],"s","b",[],[])'
    drv = parse_derivation(text)
    assert drv.outputs == (DerivationOutput("out", "", "r:sha256", ""),)
    assert drv.output_paths() == {}


def test_escapes_are_decoded() -> None:
    text = r'Derive([("out","/nix/store/a","","")],[],[],"s","b",["q\"b\\n\nr\rt\tx\y"],[])'
    assert parse_derivation(text).args == ('q"b\\n\nr\rt\txy',)


def _quote(s: str) -> str:
    # Nix's printString: escape quote and backslash, and \n \r \t.
    return (
        '"'
        + (
            s.replace("\\", "\\\\")
            .replace('"', '\\"')
            .replace("\n", "\\n")
            .replace("\r", "\\r")
            .replace("\t", "\\t")
        )
        + '"'
    )


def unparse(d: Derivation) -> str:
    """A test-only writer following Nix's `Derivation::unparse`."""

    def lst(items: list[str]) -> str:
        return "[" + ",".join(items) + "]"

    outputs = lst(
        [f"({','.join(map(_quote, (o.name, o.path, o.hash_algo, o.hash)))})" for o in d.outputs]
    )
    inputs = lst([f"({_quote(p)},{lst([_quote(o) for o in outs])})" for p, outs in d.input_drvs])
    return (
        f"Derive({outputs},{inputs},{lst([_quote(s) for s in d.input_srcs])},"
        f"{_quote(d.system)},{_quote(d.builder)},{lst([_quote(a) for a in d.args])},"
        f"{lst([f'({_quote(k)},{_quote(v)})' for k, v in d.env])})"
    )


text = st.text(max_size=20)
derivations = st.builds(
    Derivation,
    outputs=st.lists(
        st.builds(DerivationOutput, text, text, text, text),
        min_size=1,
        max_size=3,
        unique_by=lambda o: o.name,
    ).map(tuple),
    input_drvs=st.lists(st.tuples(text, st.lists(text, max_size=2).map(tuple)), max_size=2).map(
        tuple
    ),
    input_srcs=st.lists(text, max_size=2).map(tuple),
    system=text,
    builder=text,
    args=st.lists(text, max_size=3).map(tuple),
    env=st.lists(st.tuples(text, text), max_size=3).map(tuple),
)


@settings(max_examples=80, deadline=None)
@given(derivations)
def test_parse_inverts_nix_unparse(d: Derivation) -> None:
    assert parse_derivation(unparse(d)) == d


def test_every_truncation_and_trailing_junk_is_refused() -> None:
    for cut in range(len(MULTI)):
        with pytest.raises(DecodeError):
            parse_derivation(MULTI[:cut])
    with pytest.raises(DecodeError, match="end of derivation"):
        parse_derivation(MULTI + "\n")


@pytest.mark.parametrize(
    "bad",
    [
        'Derive([],[],[],"s","b",[],[])',
        'Derive([("out","/a","",""),("out","/b","","")],[],[],"s","b",[],[])',
        'Derive([("out","/a","")],[],[],"s","b",[],[])',
        'Derive([("out","/a","","")],[("/b.drv","out")],[],"s","b",[],[])',
        'DrvWithVersion("xp-dyn-drv",[("out","/a","","")],[],[],"s","b",[],[])',
    ],
)
def test_malformed_derivations_are_refused(bad: str) -> None:
    with pytest.raises(DecodeError):
        parse_derivation(bad)


def test_reading_a_missing_drv_is_a_store_error(tmp_path: Path) -> None:
    with pytest.raises(NixStoreError):
        read_derivation(tmp_path / "missing.drv")
    (tmp_path / "junk.drv").write_bytes(b"Derive(\xff")
    with pytest.raises(DecodeError, match=r"junk\.drv"):
        read_derivation(tmp_path / "junk.drv")


@pytest.mark.nix
def test_agrees_with_nix_show_derivation(tmp_path: Path) -> None:
    require_nix()
    expr = tmp_path / "d.nix"
    expr.write_text(
        'derivation { name = "parse-me"; system = builtins.currentSystem; builder = "/bin/sh";'
        ' outputs = [ "out" "lib" "man" ];'
        ' tricky = "quote \\" backslash \\\\ newline \\n tab \\t dollar \\${x} unicode \u2603";'
        ' args = [ "-c" "exit 1" ]; }'
    )
    env = nix_env()
    drv_path = subprocess.run(
        ["nix-instantiate", expr], check=True, env=env, capture_output=True, text=True
    ).stdout.strip()
    shown = json.loads(
        subprocess.run(
            ["nix", "show-derivation", drv_path], check=True, env=env, capture_output=True
        ).stdout
    )[drv_path]
    drv = read_derivation(drv_path)
    assert drv.output_paths() == {name: o["path"] for name, o in shown["outputs"].items()}
    assert dict(drv.env) == shown["env"]
    assert list(drv.args) == shown["args"]
