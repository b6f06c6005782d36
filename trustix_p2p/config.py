"""Node configuration: a TOML file, every option with a sensible default.

Relative paths in the file are resolved against the file's own directory, so a state
directory can be moved along with its config.  Unknown keys are an error (a typo must not
silently fall back to a default).  This module only reads and validates; it starts nothing.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

import attrs

from trustix_p2p.errors import ConfigError

DEFAULT_CONFIG_PATH = Path("/etc/trustix-p2p/node.toml")
CONFIG_ENV = "TRUSTIX_P2P_CONFIG"


def default_config_path() -> Path:
    """$TRUSTIX_P2P_CONFIG if set, else /etc/trustix-p2p/node.toml."""
    env = os.environ.get(CONFIG_ENV)
    return Path(env) if env else DEFAULT_CONFIG_PATH


@attrs.frozen
class NodeConfig:
    """Everything a node needs to run; see the README's configuration table."""

    state_dir: Path
    key_file: Path | None = None
    control_socket: Path | None = None
    spool_dir: Path | None = None
    checkpoint_interval: float = 2.0
    spool_poll_interval: float = 1.0
    listen: tuple[str, ...] = ("127.0.0.1:0",)
    seeds: tuple[str, ...] = ()
    max_submit_batch: int = 10_000
    log_level: str = "info"

    @property
    def db_path(self) -> Path:
        return self.state_dir / "db"

    @property
    def socket_path(self) -> Path:
        return self.control_socket or self.state_dir / "control.sock"

    @property
    def spool_path(self) -> Path:
        return self.spool_dir or self.state_dir / "spool"


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


def config_from_dict(data: dict[str, Any], base_dir: Path) -> NodeConfig:
    """Validate a parsed TOML table into a NodeConfig (ConfigError names the bad key)."""
    unknown = sorted(set(data) - set(_FIELDS))
    if unknown:
        raise ConfigError(f"unknown configuration option(s): {', '.join(unknown)}")
    for key, typ in _FIELDS.items():
        if key in data and (not isinstance(data[key], typ) or isinstance(data[key], bool)):
            raise ConfigError(f"configuration option {key!r} has the wrong type")
    if "state_dir" not in data:
        raise ConfigError("configuration needs 'state_dir'")

    def path(key: str) -> Path | None:
        value = data.get(key)
        if value is None:
            return None
        p = Path(value).expanduser()
        return p if p.is_absolute() else (base_dir / p)

    state_dir = path("state_dir")
    assert state_dir is not None
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
    return NodeConfig(
        state_dir=state_dir,
        key_file=path("key_file"),
        control_socket=path("control_socket"),
        spool_dir=path("spool_dir"),
        checkpoint_interval=interval,
        spool_poll_interval=poll,
        listen=tuple(listen),
        seeds=tuple(seeds),
        max_submit_batch=batch,
        log_level=level,
    )


def load_node_config(path: str | os.PathLike[str]) -> NodeConfig:
    """Read and validate a node's TOML configuration file."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read configuration {p}: {exc.strerror}") from exc
    if len(raw) > 1 << 20:
        raise ConfigError(f"configuration {p} is larger than 1 MiB")
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"configuration {p} is not valid TOML: {exc}") from exc
    return config_from_dict(data, p.resolve().parent)
