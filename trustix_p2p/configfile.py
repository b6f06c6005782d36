"""Reading and checking a node's TOML configuration file, as plain values.

`trustix_p2p.config` builds its `NodeConfig` from what `read_config` returns; the Nix
post-build hook uses it directly, because the hook runs once per build and pays for every
import (this module loads neither attrs nor pathlib).  Both therefore accept exactly the same
files with the same messages.

Relative paths in the file are resolved against the file's own directory, so a state
directory can be moved along with its config.  Unknown keys are an error (a typo must not
silently fall back to a default).  This module only reads and validates; it starts nothing.
"""

from __future__ import annotations

import os
import tomllib
from typing import Any

from trustix_p2p.errors import ConfigError

__all__ = [
    "CONFIG_ENV",
    "DEFAULT_CONFIG_PATH",
    "SOCKET_NAME",
    "SPOOL_NAME",
    "check_options",
    "default_config_file",
    "read_config",
    "socket_path",
    "spool_path",
]

DEFAULT_CONFIG_PATH = "/etc/trustix-p2p/node.toml"
CONFIG_ENV = "TRUSTIX_P2P_CONFIG"
#: Where the control socket and the spool directory live inside `state_dir` by default.
SOCKET_NAME = "control.sock"
SPOOL_NAME = "spool"
MAX_CONFIG_BYTES = 1 << 20

_FIELDS: dict[str, type | tuple[type, ...]] = {
    "state_dir": str,
    "key_file": str,
    "control_socket": str,
    "spool_dir": str,
    "checkpoint_interval": (int, float),
    "spool_poll_interval": (int, float),
    "listen": list,
    "seeds": list,
    "max_submit_batch": int,
    "log_level": str,
}


def default_config_file() -> str:
    """$TRUSTIX_P2P_CONFIG if set, else /etc/trustix-p2p/node.toml."""
    return os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG_PATH


def check_options(data: dict[str, Any], base_dir: str) -> dict[str, Any]:
    """Validate a parsed TOML table; every option, defaults filled in, paths absolute.

    Paths are strings (`None` when unset); `ConfigError` names the bad key.
    """
    unknown = sorted(set(data) - set(_FIELDS))
    if unknown:
        raise ConfigError(f"unknown configuration option(s): {', '.join(unknown)}")
    for key, typ in _FIELDS.items():
        if key in data and (not isinstance(data[key], typ) or isinstance(data[key], bool)):
            raise ConfigError(f"configuration option {key!r} has the wrong type")
    if "state_dir" not in data:
        raise ConfigError("configuration needs 'state_dir'")

    def path(key: str) -> str | None:
        value = data.get(key)
        if value is None:
            return None
        p = os.path.expanduser(value)
        return p if os.path.isabs(p) else os.path.join(base_dir, p)

    interval = float(data.get("checkpoint_interval", 2.0))
    if not 0.01 <= interval <= 86400:
        raise ConfigError("checkpoint_interval must be between 0.01 and 86400 seconds")
    poll = float(data.get("spool_poll_interval", 1.0))
    if not 0.01 <= poll <= 3600:
        raise ConfigError("spool_poll_interval must be between 0.01 and 3600 seconds")
    batch = int(data.get("max_submit_batch", 10_000))
    if not 1 <= batch <= 1_000_000:
        raise ConfigError("max_submit_batch must be between 1 and 1000000")
    listen = data.get("listen", ["127.0.0.1:0"])
    seeds = data.get("seeds", [])
    for name, items in (("listen", listen), ("seeds", seeds)):
        if not all(isinstance(x, str) for x in items) or len(items) > 1024:
            raise ConfigError(f"{name!r} must be a list of address strings")
    level = data.get("log_level", "info")
    if level not in ("debug", "info", "warning", "error"):
        raise ConfigError("log_level must be one of debug, info, warning, error")
    return {
        "state_dir": path("state_dir"),
        "key_file": path("key_file"),
        "control_socket": path("control_socket"),
        "spool_dir": path("spool_dir"),
        "checkpoint_interval": interval,
        "spool_poll_interval": poll,
        "listen": tuple(listen),
        "seeds": tuple(seeds),
        "max_submit_batch": batch,
        "log_level": level,
    }


def read_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and validate a node's TOML configuration file (see `check_options`)."""
    name = os.fspath(path)
    try:
        with open(name, "rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read configuration {name}: {exc.strerror}") from exc
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"configuration {name} is larger than 1 MiB")
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"configuration {name} is not valid TOML: {exc}") from exc
    return check_options(data, os.path.dirname(os.path.realpath(name)))


def socket_path(options: dict[str, Any]) -> str:
    """The control socket of a node configured by `options` (from `read_config`)."""
    explicit: str | None = options["control_socket"]
    return explicit or os.path.join(options["state_dir"], SOCKET_NAME)


def spool_path(options: dict[str, Any]) -> str:
    """The spool directory of a node configured by `options` (from `read_config`)."""
    explicit: str | None = options["spool_dir"]
    return explicit or os.path.join(options["state_dir"], SPOOL_NAME)
