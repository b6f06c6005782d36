"""docs/configuration.md, generated from the option table `trustix_p2p.options.OPTIONS`.

`python -m trustix_p2p.configdoc docs/configuration.md` rewrites the file; without an argument
it prints the text.  tests/test_config.py fails when the committed file differs from
`render()`, so the documentation cannot drift from the options the code accepts.  This module
only formats text; nothing at run time imports it.
"""

from __future__ import annotations

import json
import sys
import textwrap
from collections.abc import Sequence

from trustix_p2p.configfile import CONFIG_ENV, DEFAULT_CONFIG_PATH
from trustix_p2p.options import (
    BOOL,
    CHOICE,
    FOLLOW,
    INTEGER,
    MDNS,
    METRICS,
    NUMBER,
    OPTIONS,
    PATH,
    STRINGS,
    TRANSPORT,
    MdnsSettings,
    MetricsSettings,
    Option,
)

__all__ = ["REGENERATE", "example_toml", "main", "render", "toml_literal"]

#: The command that regenerates the committed file, from the repository's root.
REGENERATE = "python -m trustix_p2p.configdoc docs/configuration.md"

# Values the example file sets; every other option appears commented out, at its default.
_EXAMPLE: dict[str, object] = {
    "state_dir": "/var/lib/trustix-p2p",
    "key_file": "node.key",
    "listen": ["0.0.0.0:7946"],
    "seeds": [
        "ZgN4XXOrNLS3pGWzHRS8Po8ZJxCbchlnbUYJ5GnDCUk=@builder.example.org:7946",
        "mirror.example.org:7946",
    ],
}

_TYPE_NAMES = {
    PATH: "path",
    NUMBER: "number",
    INTEGER: "integer",
    CHOICE: "string",
    BOOL: "boolean",
    STRINGS: "array of strings",
    FOLLOW: "array of tables",
    MDNS: "table",
    METRICS: "table",
}

_INTRO = f"""\
# Node configuration

<!-- Generated from trustix_p2p/options.py by `{REGENERATE}`; do not edit. -->

A node reads one TOML file: `--config FILE`, else `${CONFIG_ENV}`, else
`{DEFAULT_CONFIG_PATH}`.  The Nix post-build hook reads the same file, to find the node's
control socket and spool directory.

- Only `state_dir` is required; every other option has the default below.
- Relative paths are resolved against the directory of the configuration file, and `~` is
  expanded, so a state directory can be moved along with its configuration.
- An unknown option is an error, never ignored: a typo must not fall back to a default.
- Numbers must lie within the bounds below (inclusive).  A *number* may be written `2` or
  `2.5`; an *integer* must be written without a fraction.  `true` and `false` are never
  numbers.
{{transport}}

`trustix-p2p config check FILE` reports every problem of a file, one line each
(`FILE: option 'NAME': reason`), including a key file that is missing or readable by others,
and exits 2; or prints `ok: FILE` and exits 0.
"""


def toml_literal(value: object) -> str:
    """`value` written as TOML (strings, integers, floats and arrays of them)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        # A JSON string with only printable ASCII escapes is a TOML basic string.
        return json.dumps(value)
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, MetricsSettings):
        return f"{{enabled = {toml_literal(value.enabled)}, listen = {toml_literal(value.listen)}}}"
    if isinstance(value, MdnsSettings):
        return (
            f"{{enabled = {toml_literal(value.enabled)}, "
            f"interfaces = {toml_literal(value.interfaces)}}}"
        )
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_literal(item) for item in value) + "]"
    raise TypeError(f"no TOML literal for {value!r}")


def _default(option: Option) -> str:
    if option.required:
        return "(required)"
    if option.default is None:
        return option.default_text or "none"
    return f"`{toml_literal(option.default)}`" + _binary_size(option, option.default)


def _binary_size(option: Option, value: object) -> str:
    if option.unit != "bytes" or not isinstance(value, int):
        return ""
    for size, name in ((1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
        if value % size == 0:
            return f" ({value // size} {name})"
    return ""


def _bounds(option: Option) -> str:
    if option.kind in (NUMBER, INTEGER):
        low = f"{option.minimum!r}"
        high = f"{option.maximum!r}"
        unit = f" {option.unit}" if option.unit else ""
        if option.unit == "bytes":
            low += _binary_size(option, option.minimum)
            high += _binary_size(option, option.maximum)
        return f"{low} to {high}{unit}"
    if option.kind == CHOICE:
        return "one of " + ", ".join(f"`{choice}`" for choice in option.choices)
    if option.kind == STRINGS and option.max_items is not None:
        return f"at most {option.max_items} items"
    return ""


def example_toml() -> str:
    """An example configuration file: the `_EXAMPLE` values, then every other default."""
    lines = [f"# {DEFAULT_CONFIG_PATH}"]
    lines += [f"{name} = {toml_literal(value)}" for name, value in _EXAMPLE.items()]
    lines += ["", "# The other options, at their defaults:"]
    for option in OPTIONS:
        if option.name not in _EXAMPLE and option.default is not None:
            lines.append(f"# {option.name} = {toml_literal(option.default)}")
    return "\n".join(lines) + "\n"


def render() -> str:
    """The whole of docs/configuration.md."""
    rows = [
        "| option | type | default | bounds | meaning |",
        "|---|---|---|---|---|",
    ]
    for option in OPTIONS:
        cells = (
            f"`{option.name}`",
            _TYPE_NAMES[option.kind],
            _default(option),
            _bounds(option) or "—",
            option.doc,
        )
        rows.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    names = ", ".join(f"`{o.name}`" for o in OPTIONS if o.group == TRANSPORT)
    transport = textwrap.fill(
        f"- The transport limits are the node's `TransportLimits` (DESIGN §6), whose fields "
        f"have the same names and defaults: {names}.",
        width=95,
        subsequent_indent="  ",
    )
    intro = _INTRO.replace("{transport}", transport)
    return "\n".join(
        [
            intro,
            "## Options",
            "",
            *rows,
            "",
            "## Example",
            "",
            "```toml",
            example_toml().rstrip("\n"),
            "```",
            "",
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if len(args) > 1 or args[:1] in (["-h"], ["--help"]):
        print("usage: python -m trustix_p2p.configdoc [FILE]  (FILE: docs/configuration.md)")
        return 0 if len(args) == 1 else 2
    text = render()
    if not args:
        sys.stdout.write(text)
        return 0
    with open(args[0], "w", encoding="utf-8") as f:
        f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
