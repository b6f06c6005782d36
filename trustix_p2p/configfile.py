"""Reading and checking a node's TOML configuration file, as plain values.

`trustix_p2p.config` builds its `NodeConfig` from what `read_config` returns; the Nix
post-build hook uses it directly, because the hook runs once per build and pays for every
import (this module loads neither attrs nor pathlib).  Both therefore accept exactly the
same files with the same messages.  What the options are, their types, defaults and
bounds, is `trustix_p2p.options.OPTIONS`; nothing here repeats it.

Relative paths in the file are resolved against the file's own directory, so a state
directory can be moved along with its config.  Unknown keys are an error (a typo must not
silently fall back to a default).  This module only reads and validates; it starts nothing.
"""

from __future__ import annotations

import os
import tomllib

from trustix_p2p.errors import ConfigError
from trustix_p2p.options import (
    FOLLOW,
    MDNS,
    METRICS,
    NUMBER,
    OPTIONS,
    OPTIONS_BY_NAME,
    PATH,
    STRINGS,
    convert_table,
)

# Not `from typing import TYPE_CHECKING`, as in the hook's other modules: importing typing
# costs milliseconds on every build.  (tomllib loads it today when a file is read; this module
# does not add a need of its own.)  Type checkers treat this name as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = [
    "CONFIG_ENV",
    "DEFAULT_CONFIG_PATH",
    "SOCKET_NAME",
    "SPOOL_NAME",
    "check_options",
    "config_dir",
    "default_config_file",
    "find_problems",
    "problem_message",
    "read_config",
    "read_toml",
    "socket_path",
    "spool_path",
]

DEFAULT_CONFIG_PATH = "/etc/trustix-p2p/node.toml"
CONFIG_ENV = "TRUSTIX_P2P_CONFIG"
#: Where the control socket and the spool directory live inside `state_dir` by default.
SOCKET_NAME = "control.sock"
SPOOL_NAME = "spool"
MAX_CONFIG_BYTES = 1 << 20


def default_config_file() -> str:
    """$TRUSTIX_P2P_CONFIG if set, else /etc/trustix-p2p/node.toml."""
    return os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG_PATH


def problem_message(problem: tuple[str, str]) -> str:
    """The one line a `ConfigError` says for an (option, reason) pair."""
    option, reason = problem
    return f"configuration option {option!r}: {reason}"


def find_problems(
    data: dict[str, Any], base_dir: str
) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """Check a parsed TOML table against `trustix_p2p.options.OPTIONS`, finding every problem.

    Returns the value of every option that is fine (defaults filled in, numbers as floats,
    arrays as tuples, paths absolute strings or None) and the problems as (option, reason)
    pairs: unknown options first, then the table's options in its order.  A bad option is
    left out of the values, so they are complete exactly when there are no problems.
    """
    problems = [(key, _unknown(key)) for key in sorted(set(data) - set(OPTIONS_BY_NAME))]
    values: dict[str, Any] = {}
    for option in OPTIONS:
        name = option.name
        if name not in data:
            if option.required:
                problems.append((name, f"missing; every configuration needs {name!r}"))
            else:
                values[name] = option.default
            continue
        value = data[name]
        reason = option.why_invalid(value)
        if reason is not None:
            problems.append((name, reason))
        elif option.kind == PATH:
            path = os.path.expanduser(value)
            values[name] = path if os.path.isabs(path) else os.path.join(base_dir, path)
        elif option.kind == NUMBER:
            values[name] = float(value)
        elif option.kind == STRINGS:
            values[name] = tuple(value)
        elif option.kind in (FOLLOW, MDNS, METRICS):
            values[name] = convert_table(option, value)
        else:
            values[name] = value
    return values, problems


def _unknown(key: str) -> str:
    import difflib  # only for a file with a typo in it

    close = difflib.get_close_matches(key, list(OPTIONS_BY_NAME), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"unknown configuration option{hint}"


def check_options(data: dict[str, Any], base_dir: str) -> dict[str, Any]:
    """Validate a parsed TOML table; every option, defaults filled in, paths absolute.

    Paths are strings (`None` when unset).  `ConfigError` names the first bad option (see
    `find_problems` for all of them).
    """
    values, problems = find_problems(data, base_dir)
    _raise_first(problems)
    return values


def _raise_first(problems: list[tuple[str, str]], file: str | None = None) -> None:
    if not problems:
        return
    message = problem_message(problems[0])
    if len(problems) > 1:
        lister = f"; 'trustix-p2p config check {file}' lists them" if file else ""
        more = len(problems) - 1
        message += f" (and {more} more problem{'s' if more > 1 else ''}{lister})"
    raise ConfigError(message)


def read_toml(path: str | os.PathLike[str], what: str = "configuration") -> dict[str, Any]:
    """The TOML table in a file of at most 1 MiB, unchecked; `ConfigError` (naming the file
    as `what`: a node's configuration, a workstation's policy) if it has none."""
    name = os.fspath(path)
    try:
        with open(name, "rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {name}: {exc.strerror}") from exc
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{what} {name} is larger than 1 MiB")
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{what} {name} is not valid TOML: {exc}") from exc


def config_dir(path: str | os.PathLike[str]) -> str:
    """The directory relative paths in the configuration file `path` are resolved against."""
    return os.path.dirname(os.path.realpath(os.fspath(path)))


def read_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and validate a node's TOML configuration file (see `check_options`)."""
    values, problems = find_problems(read_toml(path), config_dir(path))
    _raise_first(problems, os.fspath(path))
    return values


def socket_path(options: dict[str, Any]) -> str:
    """The control socket of a node configured by `options` (from `read_config`)."""
    explicit: str | None = options["control_socket"]
    return explicit or os.path.join(options["state_dir"], SOCKET_NAME)


def spool_path(options: dict[str, Any]) -> str:
    """The spool directory of a node configured by `options` (from `read_config`)."""
    explicit: str | None = options["spool_dir"]
    return explicit or os.path.join(options["state_dir"], SPOOL_NAME)
