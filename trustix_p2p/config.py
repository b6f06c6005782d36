"""Node configuration: a TOML file, every option with a sensible default.

Relative paths in the file are resolved against the file's own directory, so a state
directory can be moved along with its config.  Unknown keys are an error (a typo must not
silently fall back to a default).  The options themselves are one table,
`trustix_p2p.options.OPTIONS`; reading and checking the file is `trustix_p2p.configfile`
(plain values, shared with the Nix post-build hook); this module turns the result into a
`NodeConfig`, whose fields and defaults are generated from the table.  It only reads and
validates; it starts nothing.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from trustix_p2p.configfile import (
    CONFIG_ENV,
    SOCKET_NAME,
    SPOOL_NAME,
    check_options,
    config_dir,
    default_config_file,
    find_problems,
    problem_message,
    read_config,
    read_toml,
)
from trustix_p2p.configfile import DEFAULT_CONFIG_PATH as _DEFAULT_CONFIG_FILE
from trustix_p2p.errors import ConfigError, KeyFileError
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
    FollowEntry,
    MdnsSettings,
    MetricsSettings,
    Option,
)

if TYPE_CHECKING:
    from trustix_p2p.transport.connection import TransportLimits

__all__ = [
    "CONFIG_ENV",
    "DEFAULT_CONFIG_PATH",
    "FollowEntry",
    "MdnsSettings",
    "MetricsSettings",
    "NodeConfig",
    "config_file_problems",
    "config_from_dict",
    "default_config_path",
    "field_annotation",
    "load_node_config",
]

DEFAULT_CONFIG_PATH = Path(_DEFAULT_CONFIG_FILE)

_ANNOTATIONS = {
    PATH: "Path | None",
    NUMBER: "float",
    INTEGER: "int",
    CHOICE: "str",
    BOOL: "bool",
    STRINGS: "tuple[str, ...]",
    FOLLOW: "tuple[FollowEntry, ...]",
    MDNS: "MdnsSettings",
    METRICS: "MetricsSettings",
}


def default_config_path() -> Path:
    """$TRUSTIX_P2P_CONFIG if set, else /etc/trustix-p2p/node.toml."""
    return Path(default_config_file())


def field_annotation(option: Option) -> str:
    """The type of `option`'s field in `NodeConfig` (a required path is never None).

    What the declaration for type checkers below must say; tests/test_config.py checks it.
    """
    return "Path" if option.kind == PATH and option.required else _ANNOTATIONS[option.kind]


def _field(option: Option) -> Any:
    return attrs.field() if option.required else attrs.field(default=option.default)


# `NodeConfig`'s fields are generated from the option table, in its order, with its defaults.
# Type checkers cannot see a generated class, so they are shown this declaration instead;
# tests/test_config.py checks that it names the same fields, types and defaults (not values:
# those exist only in the table).
if TYPE_CHECKING:
    _DEFAULT: Any = ...

    @attrs.frozen
    class _Options:
        state_dir: Path
        key_file: Path | None = _DEFAULT
        control_socket: Path | None = _DEFAULT
        spool_dir: Path | None = _DEFAULT
        checkpoint_interval: float = _DEFAULT
        spool_poll_interval: float = _DEFAULT
        listen: tuple[str, ...] = _DEFAULT
        seeds: tuple[str, ...] = _DEFAULT
        advertise: tuple[str, ...] = _DEFAULT
        peers_target: int = _DEFAULT
        max_outbound: int = _DEFAULT
        redial_interval: float = _DEFAULT
        anti_entropy_interval: float = _DEFAULT
        follow_unknown: str = _DEFAULT
        follow_successors: bool = _DEFAULT
        follow: tuple[FollowEntry, ...] = _DEFAULT
        max_logs: int = _DEFAULT
        entries_per_request: int = _DEFAULT
        mdns: MdnsSettings = _DEFAULT
        metrics: MetricsSettings = _DEFAULT
        max_submit_batch: int = _DEFAULT
        log_level: str = _DEFAULT
        handshake_timeout: float = _DEFAULT
        idle_timeout: float = _DEFAULT
        send_timeout: float = _DEFAULT
        max_connections: int = _DEFAULT
        max_pending_handshakes: int = _DEFAULT
        max_connections_per_source: int = _DEFAULT
        max_message_size: int = _DEFAULT

else:
    _Options = attrs.make_class(
        "_Options", {option.name: _field(option) for option in OPTIONS}, frozen=True, slots=True
    )


@attrs.frozen
class NodeConfig(_Options):
    """Everything a node needs to run: one field per option of `trustix_p2p.options`."""

    @property
    def db_path(self) -> Path:
        return self.state_dir / "db"

    @property
    def socket_path(self) -> Path:
        return self.control_socket or self.state_dir / SOCKET_NAME

    @property
    def spool_path(self) -> Path:
        return self.spool_dir or self.state_dir / SPOOL_NAME

    def transport_limits(self) -> TransportLimits:
        """The transport options as the transport's own `TransportLimits`."""
        # Imported here: the transport loads trio and nacl, which reading a config must not.
        from trustix_p2p.transport.connection import TransportLimits

        limits = {o.name: getattr(self, o.name) for o in OPTIONS if o.group == TRANSPORT}
        return TransportLimits(**limits)


def address_problems(options: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(option, reason) for every listen and seed address in `options` that does not parse.

    An option missing from `options` (because it was itself invalid) is skipped.
    """
    # Imported here: the post-build hook reads configs through `configfile` and must not load
    # the transport (attrs, nacl) on every build.
    from trustix_p2p.transport.address import parse_listen_address, parse_peer_address

    for option, parse in (
        ("listen", parse_listen_address),
        ("seeds", parse_peer_address),
        ("advertise", parse_listen_address),
    ):
        for text in options.get(option, ()):
            try:
                parse(text)
            except ConfigError as exc:
                yield option, str(exc)


def _check_addresses(options: dict[str, Any]) -> None:
    """Parse every listen and seed address now, so garbage is refused when the file loads."""
    problem = next(address_problems(options), None)
    if problem is not None:
        raise ConfigError(problem_message(problem))


def _from_options(options: dict[str, Any]) -> NodeConfig:
    _check_addresses(options)
    fields: dict[str, Any] = {
        o.name: _optional_path(options[o.name]) if o.kind == PATH else options[o.name]
        for o in OPTIONS
    }
    return NodeConfig(**fields)


def _optional_path(value: str | None) -> Path | None:
    return None if value is None else Path(value)


def config_from_dict(data: dict[str, Any], base_dir: Path) -> NodeConfig:
    """Validate a parsed TOML table into a NodeConfig (ConfigError names the bad key)."""
    return _from_options(check_options(data, os.fspath(base_dir)))


def load_node_config(path: str | os.PathLike[str]) -> NodeConfig:
    """Read and validate a node's TOML configuration file."""
    return _from_options(read_config(path))


def config_file_problems(path: str | os.PathLike[str]) -> list[tuple[str, str]]:
    """Every problem a node would have with the configuration file `path`, as (option, reason).

    What `load_node_config` checks, all of it rather than the first problem, and also that the
    key file, if one is named, exists and loads (`trustix_p2p.keyfile.load_key_file`: a
    regular file, mode 0600 or stricter, well formed).  An empty list means the file is good.
    `ConfigError` if the file cannot be read or is not TOML at all.
    """
    options, problems = find_problems(read_toml(path), config_dir(path))
    problems.extend(address_problems(options))
    key_file = options.get("key_file")
    if key_file is not None:
        from trustix_p2p.keyfile import load_key_file  # loads nacl

        try:
            load_key_file(key_file)
        except KeyFileError as exc:
            problems.append(("key_file", str(exc)))
    return problems
