"""Parse Nix derivation files (`.drv`, the ATerm `Derive(...)` form) to learn their outputs.

Nix 2.8's post-build hook gets `DRV_PATH` but an empty `OUT_PATHS`, so the hook reads the
derivation to find which outputs it just built.  A `.drv` is one ATerm term (Nix
`src/libstore/derivations.cc`, `parseDerivation` / `unparse`):

    Derive([(name, path, hashAlgo, hash), ...],       outputs, sorted by name
           [(drvPath, [outputName, ...]), ...],       input derivations
           [srcPath, ...],                            input sources
           system, builder, [arg, ...],
           [(key, value), ...])                       environment

Strings are double-quoted with `\\"`, `\\\\`, `\\n`, `\\r`, `\\t` escapes.  A floating
content-addressed output has an empty path (it is known only after the build), which the
caller then asks the Nix store for.

`parse_derivation` is pure; `read_derivation` is the only function here that touches a file, and
nothing here runs Nix.  It never guesses: anything that is not exactly the grammar above raises
`DecodeError`.  It must not import attrs: the post-build hook parses a `.drv` on every build.
"""

from __future__ import annotations

import os
import re

from trustix_p2p.errors import DecodeError, NixStoreError

__all__ = ["Derivation", "DerivationOutput", "parse_derivation", "read_derivation"]

MAX_DRV_BYTES = 64 * 1024 * 1024


# Values are the lean layer's NamedTuples (`typing.NamedTuple` for type checkers, which treat
# `TYPE_CHECKING` as true): the post-build hook uses them on every build, and importing
# `typing` (like attrs) would add milliseconds to every build's start.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NamedTuple
else:
    from trustix_p2p.core.lean import NamedTuple


class DerivationOutput(NamedTuple):
    """One output of a derivation; `path` is "" for a floating content-addressed output."""

    name: str
    path: str
    hash_algo: str
    hash: str


class Derivation(NamedTuple):
    """A parsed `.drv`: every field of the ATerm, in order."""

    outputs: tuple[DerivationOutput, ...]
    input_drvs: tuple[tuple[str, tuple[str, ...]], ...]
    input_srcs: tuple[str, ...]
    system: str
    builder: str
    args: tuple[str, ...]
    env: tuple[tuple[str, str], ...]

    def output_paths(self) -> dict[str, str]:
        """Output name to store path, for the outputs whose path is fixed in the .drv."""
        return {o.name: o.path for o in self.outputs if o.path}


_STRING = re.compile(r'"((?:[^"\\]|\\.)*)"', re.DOTALL)
_ESCAPE = re.compile(r"\\(.)", re.DOTALL)
_UNESCAPE = {"n": "\n", "r": "\r", "t": "\t"}


def _unescape(match: re.Match[str]) -> str:
    ch = match.group(1)
    return _UNESCAPE.get(ch, ch)


class _Parser:
    """A cursor over the text; each method consumes one grammar element or raises."""

    __slots__ = ("pos", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def fail(self, expected: str) -> DecodeError:
        got = self.text[self.pos : self.pos + 20]
        return DecodeError(f"derivation: expected {expected} at offset {self.pos}, got {got!r}")

    def expect(self, token: str) -> None:
        if not self.text.startswith(token, self.pos):
            raise self.fail(repr(token))
        self.pos += len(token)

    def peek(self, token: str) -> bool:
        return self.text.startswith(token, self.pos)

    def string(self) -> str:
        match = _STRING.match(self.text, self.pos)
        if match is None:
            raise self.fail("a string")
        self.pos = match.end()
        body = match.group(1)
        return _ESCAPE.sub(_unescape, body) if "\\" in body else body

    def strings(self) -> tuple[str, ...]:
        self.expect("[")
        items: list[str] = []
        while not self.peek("]"):
            if items:
                self.expect(",")
            items.append(self.string())
        self.expect("]")
        return tuple(items)

    def tuples(self, arity: int) -> list[list[str | tuple[str, ...]]]:
        """A list of tuples of strings; a tuple's last element may be a list of strings."""
        self.expect("[")
        out: list[list[str | tuple[str, ...]]] = []
        while not self.peek("]"):
            if out:
                self.expect(",")
            self.expect("(")
            fields: list[str | tuple[str, ...]] = []
            for i in range(arity):
                if i:
                    self.expect(",")
                fields.append(self.strings() if self.peek("[") else self.string())
            self.expect(")")
            out.append(fields)
        self.expect("]")
        return out


def _str(value: str | tuple[str, ...], what: str) -> str:
    if not isinstance(value, str):
        raise DecodeError(f"derivation: {what} must be a string")
    return value


def parse_derivation(text: str) -> Derivation:
    """Parse the text of a `.drv` file."""
    p = _Parser(text)
    p.expect("Derive(")
    outputs = tuple(
        DerivationOutput(*(_str(f, "output field") for f in fields)) for fields in p.tuples(4)
    )
    p.expect(",")
    input_drvs: list[tuple[str, tuple[str, ...]]] = []
    for path, outs in p.tuples(2):
        if not isinstance(outs, tuple):
            raise DecodeError("derivation: input derivation outputs must be a list")
        input_drvs.append((_str(path, "input derivation"), outs))
    p.expect(",")
    input_srcs = p.strings()
    p.expect(",")
    system = p.string()
    p.expect(",")
    builder = p.string()
    p.expect(",")
    args = p.strings()
    p.expect(",")
    env = tuple((_str(k, "env name"), _str(v, "env value")) for k, v in p.tuples(2))
    p.expect(")")
    if p.pos != len(text):
        raise p.fail("end of derivation")
    if not outputs:
        raise DecodeError("derivation has no outputs")
    names = [o.name for o in outputs]
    if len(set(names)) != len(names):
        raise DecodeError("derivation has duplicate output names")
    return Derivation(outputs, tuple(input_drvs), input_srcs, system, builder, args, env)


def read_derivation(path: str | os.PathLike[str]) -> Derivation:
    """Read and parse a `.drv` file from the store."""
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_DRV_BYTES + 1)
    except OSError as exc:
        raise NixStoreError(f"cannot read derivation {path}: {exc.strerror or exc}") from exc
    if len(raw) > MAX_DRV_BYTES:
        raise NixStoreError(f"derivation {path} is larger than {MAX_DRV_BYTES} bytes")
    # Nix strings are bytes; an environment value need not be UTF-8, and only the (ASCII)
    # outputs matter here, so undecodable bytes are carried along rather than refused.
    text = raw.decode("utf-8", "surrogateescape")
    try:
        return parse_derivation(text)
    except DecodeError as exc:
        raise DecodeError(f"{path}: {exc}") from exc
