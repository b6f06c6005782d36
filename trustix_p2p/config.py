"""Node configuration: a TOML file, every option with a sensible default.

Relative paths in the file are resolved against the file's own directory, so a state
directory can be moved along with its config.  Unknown keys are an error (a typo must not
silently fall back to a default).  Reading and checking the file is `trustix_p2p.configfile`
(plain values, shared with the Nix post-build hook); this module turns the result into a
`NodeConfig`.  It only reads and validates; it starts nothing.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import attrs

from trustix_p2p.configfile import (
    CONFIG_ENV,
    SOCKET_NAME,
    SPOOL_NAME,
    check_options,
    default_config_file,
    read_config,
)
from trustix_p2p.configfile import DEFAULT_CONFIG_PATH as _DEFAULT_CONFIG_FILE
from trustix_p2p.errors import ConfigError

__all__ = [
    "CONFIG_ENV",
    "DEFAULT_CONFIG_PATH",
    "NodeConfig",
    "config_from_dict",
    "default_config_path",
    "load_node_config",
]

DEFAULT_CONFIG_PATH = Path(_DEFAULT_CONFIG_FILE)


def default_config_path() -> Path:
    """$TRUSTIX_P2P_CONFIG if set, else /etc/trustix-p2p/node.toml."""
    return Path(default_config_file())


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
        return self.control_socket or self.state_dir / SOCKET_NAME

    @property
    def spool_path(self) -> Path:
        return self.spool_dir or self.state_dir / SPOOL_NAME


def _optional_path(value: str | None) -> Path | None:
    return None if value is None else Path(value)


def _check_addresses(options: dict[str, Any]) -> None:
    """Parse every listen and seed address now, so garbage is refused when the file loads."""
    # Imported here: the post-build hook reads configs through `configfile` and must not load
    # the transport (attrs, nacl) on every build.
    from trustix_p2p.transport.address import parse_listen_address, parse_peer_address

    for option, parse in (("listen", parse_listen_address), ("seeds", parse_peer_address)):
        for text in options[option]:
            try:
                parse(text)
            except ConfigError as exc:
                raise ConfigError(f"configuration option {option!r}: {exc}") from exc


def _from_options(options: dict[str, Any]) -> NodeConfig:
    _check_addresses(options)
    return NodeConfig(
        state_dir=Path(options["state_dir"]),
        key_file=_optional_path(options["key_file"]),
        control_socket=_optional_path(options["control_socket"]),
        spool_dir=_optional_path(options["spool_dir"]),
        checkpoint_interval=options["checkpoint_interval"],
        spool_poll_interval=options["spool_poll_interval"],
        listen=options["listen"],
        seeds=options["seeds"],
        max_submit_batch=options["max_submit_batch"],
        log_level=options["log_level"],
    )


def config_from_dict(data: dict[str, Any], base_dir: Path) -> NodeConfig:
    """Validate a parsed TOML table into a NodeConfig (ConfigError names the bad key)."""
    return _from_options(check_options(data, os.fspath(base_dir)))


def load_node_config(path: str | os.PathLike[str]) -> NodeConfig:
    """Read and validate a node's TOML configuration file."""
    return _from_options(read_config(path))
