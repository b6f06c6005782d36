"""The one table of a node's configuration options: name, type, default, bounds, meaning.

Everything else about options derives from `OPTIONS`: `trustix_p2p.configfile` checks a TOML
table against it, `trustix_p2p.config` builds `NodeConfig`'s fields and defaults from it, and
`trustix_p2p.configdoc` generates docs/configuration.md from it.  To add an option, add a row
here (and, for type checkers, a line to `trustix_p2p.config._Options`; a test says so).

The Nix post-build hook reads configuration files through `configfile` on every build, so
this module must stay plain data and plain checks: no attrs, no typing, no pathlib, no I/O.
An option's `why_invalid` says what is wrong with a TOML value in one phrase that reads after
"configuration option 'NAME': ", or returns None; it never raises and never converts.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, NamedTuple
else:
    from trustix_p2p.core.lean import NamedTuple

__all__ = [
    "BOOL",
    "CHOICE",
    "FOLLOW",
    "INTEGER",
    "MDNS",
    "METRICS",
    "NODE",
    "NUMBER",
    "OPTIONS",
    "OPTIONS_BY_NAME",
    "PATH",
    "STRINGS",
    "TRANSPORT",
    "FollowEntry",
    "MdnsSettings",
    "MetricsSettings",
    "Option",
    "toml_type_name",
]

# Kinds of option, i.e. what a TOML value must be.  A NUMBER may be written as an integer
# or a float and is read as a float; an INTEGER must be a TOML integer.  A boolean is never a
# number (in Python `True == 1`, so it must be refused explicitly).
PATH = "path"  # a string; `~` expanded, relative to the file's directory
NUMBER = "number"
INTEGER = "integer"
CHOICE = "choice"  # a string, one of `choices`
BOOL = "bool"  # true or false
STRINGS = "strings"  # an array of strings, at most `max_items`
FOLLOW = "follow"  # an array of tables {public_key, name?, mode?}: `FollowEntry` values
MDNS = "mdns"  # a table {enabled?, interfaces?}: an `MdnsSettings` value
METRICS = "metrics"  # a table {enabled?, listen?}: a `MetricsSettings` value

# Groups: TRANSPORT options are the fields of `transport.connection.TransportLimits`, by name.
NODE = "node"
TRANSPORT = "transport"

_EXPECTED = {
    PATH: "a string (a path)",
    NUMBER: "a number",
    INTEGER: "an integer",
    CHOICE: "a string",
    BOOL: "a boolean (true or false)",
    STRINGS: "an array of strings",
    FOLLOW: "an array of tables",
    MDNS: "a table",
    METRICS: "a table",
}

FOLLOW_MODES = ("mirror", "witness")
_FOLLOW_KEYS = ("public_key", "name", "mode")
_MDNS_KEYS = ("enabled", "interfaces")
_METRICS_KEYS = ("enabled", "listen")
DEFAULT_METRICS_LISTEN = "127.0.0.1:9464"


class FollowEntry(NamedTuple):
    """One `[[follow]]` table: a log this node follows, by its builder's key."""

    public_key: str
    name: str | None
    mode: str


class MdnsSettings(NamedTuple):
    """The `[mdns]` table."""

    enabled: bool
    interfaces: tuple[str, ...]


class MetricsSettings(NamedTuple):
    """The `[metrics]` table: the Prometheus endpoint, off by default, on loopback."""

    enabled: bool
    listen: str


def _metrics_problem(value: object) -> str | None:
    if not isinstance(value, dict):
        return None
    unknown = sorted(set(value) - set(_METRICS_KEYS))
    if unknown:
        return f"unknown key {unknown[0]!r} (known: enabled, listen)"
    enabled = value.get("enabled", False)
    if not isinstance(enabled, bool):
        return f"enabled must be true or false, not {toml_type_name(enabled)}"
    listen = value.get("listen", DEFAULT_METRICS_LISTEN)
    if not isinstance(listen, str):
        return f"listen must be a host:port string, not {toml_type_name(listen)}"
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        return f"listen {listen!r} must look like host:port"
    return None


def _base64_key_problem(text: str) -> str | None:
    import binascii

    try:
        raw = binascii.a2b_base64(text.encode("ascii"), strict_mode=True)
    except (ValueError, UnicodeEncodeError):
        return "is not valid base64"
    return None if len(raw) == 32 else f"is {len(raw)} bytes, not a 32-byte Ed25519 key"


def _follow_problem(value: object) -> str | None:
    if not isinstance(value, list):
        return None  # the caller reports the type
    for i, item in enumerate(value, 1):
        where = f"the {_ordinal(i)}"
        if not isinstance(item, dict):
            return f"wrong type: expected an array of tables, but {where} is {toml_type_name(item)}"
        unknown = sorted(set(item) - set(_FOLLOW_KEYS))
        if unknown:
            return f"{where} has an unknown key {unknown[0]!r} (known: public_key, name, mode)"
        key = item.get("public_key")
        if not isinstance(key, str):
            return f"{where} needs public_key, a base64 Ed25519 key"
        problem = _base64_key_problem(key)
        if problem is not None:
            return f"{where}: public_key {problem}"
        name = item.get("name")
        if name is not None and (not isinstance(name, str) or not 0 < len(name) <= 64):
            return f"{where}: name must be a string of 1 to 64 characters"
        mode = item.get("mode", "mirror")
        if mode not in FOLLOW_MODES:
            return f"{where}: mode must be one of mirror, witness, not {mode!r}"
    keys = [item["public_key"] for item in value]
    if len(set(keys)) != len(keys):
        return "names the same public_key twice"
    return None


def _mdns_problem(value: object) -> str | None:
    if not isinstance(value, dict):
        return None
    unknown = sorted(set(value) - set(_MDNS_KEYS))
    if unknown:
        return f"unknown key {unknown[0]!r} (known: enabled, interfaces)"
    enabled = value.get("enabled", False)
    if not isinstance(enabled, bool):
        return f"enabled must be true or false, not {toml_type_name(enabled)}"
    interfaces = value.get("interfaces", [])
    if not isinstance(interfaces, list) or not all(isinstance(x, str) for x in interfaces):
        return "interfaces must be an array of interface addresses (strings)"
    if len(interfaces) > 64:
        return "interfaces must hold at most 64 addresses"
    if enabled and not interfaces:
        return "enabled needs interfaces: the addresses of the interfaces mDNS may use"
    return None


def convert_table(option: Option, value: Any) -> object:
    """A valid FOLLOW or MDNS value as its record (`FollowEntry`s, `MdnsSettings`)."""
    if option.kind == FOLLOW:
        return tuple(
            FollowEntry(item["public_key"], item.get("name"), item.get("mode", "mirror"))
            for item in value
        )
    if option.kind == METRICS:
        return MetricsSettings(
            value.get("enabled", False), value.get("listen", DEFAULT_METRICS_LISTEN)
        )
    return MdnsSettings(value.get("enabled", False), tuple(value.get("interfaces", ())))


class Option:
    """One configuration option.  Bounds are inclusive; `default` is what `read_config`
    returns for an absent option (None for an optional path, a tuple for STRINGS)."""

    __slots__ = (
        "choices",
        "default",
        "default_text",
        "doc",
        "group",
        "kind",
        "max_items",
        "maximum",
        "minimum",
        "name",
        "required",
        "unit",
    )

    def __init__(
        self,
        name: str,
        kind: str,
        doc: str,
        *,
        default: object = None,
        required: bool = False,
        minimum: float | None = None,
        maximum: float | None = None,
        choices: tuple[str, ...] = (),
        max_items: int | None = None,
        unit: str = "",
        default_text: str = "",
        group: str = NODE,
    ) -> None:
        self.name = name
        self.kind = kind
        #: One line for docs/configuration.md (Markdown).
        self.doc = doc
        self.default = default
        self.required = required
        self.minimum = minimum
        self.maximum = maximum
        self.choices = choices
        self.max_items = max_items
        #: What numbers count ("seconds", "bytes"), for messages and the docs.
        self.unit = unit
        #: How the docs describe a default of None ("`<state_dir>/spool`").
        self.default_text = default_text
        self.group = group

    def __repr__(self) -> str:
        return f"Option({self.name!r}, {self.kind!r})"

    def why_invalid(self, value: object) -> str | None:
        """What is wrong with `value` (as tomllib parsed it) for this option; None if fine."""
        kind = self.kind
        if kind in (PATH, CHOICE):
            if not isinstance(value, str):
                return self._wrong_type(value)
            if kind == CHOICE and value not in self.choices:
                return f"must be one of {', '.join(self.choices)}, not {value!r}"
            if kind == PATH and not value:
                return "must not be empty"
            if kind == PATH and "\0" in value:
                return "must not contain a NUL character"
            return None
        if kind in (NUMBER, INTEGER):
            allowed = int if kind == INTEGER else (int, float)
            if isinstance(value, bool) or not isinstance(value, allowed):
                return self._wrong_type(value)
            low = self.minimum if self.minimum is not None else value
            high = self.maximum if self.maximum is not None else value
            if not low <= value <= high:  # also refuses nan
                return f"must be between {self.bounds_text()}, not {value!r}"
            return None
        if kind == BOOL:
            return None if isinstance(value, bool) else self._wrong_type(value)
        if kind == FOLLOW:
            if not isinstance(value, list):
                return self._wrong_type(value)
            return _follow_problem(value)
        if kind == MDNS:
            if not isinstance(value, dict):
                return self._wrong_type(value)
            return _mdns_problem(value)
        if kind == METRICS:
            if not isinstance(value, dict):
                return self._wrong_type(value)
            return _metrics_problem(value)
        if kind == STRINGS:
            if not isinstance(value, list):
                return self._wrong_type(value)
            for i, item in enumerate(value, 1):
                if not isinstance(item, str):
                    actual = toml_type_name(item)
                    return (
                        f"wrong type: expected {_EXPECTED[kind]}, but the {_ordinal(i)} is {actual}"
                    )
            if self.max_items is not None and len(value) > self.max_items:
                return f"must hold at most {self.max_items} items, not {len(value)}"
            return None
        raise AssertionError(f"option {self.name!r} has an unknown kind {kind!r}")

    def bounds_text(self) -> str:
        """The range of a number option in words: `0.01 and 86400 seconds`."""
        text = f"{_number(self.minimum)} and {_number(self.maximum)}"
        return f"{text} {self.unit}" if self.unit else text

    def _wrong_type(self, value: object) -> str:
        return f"wrong type: expected {_EXPECTED[self.kind]}, got {toml_type_name(value)}"


def toml_type_name(value: object) -> str:
    """What a value tomllib produced is called in TOML, with its article."""
    if isinstance(value, bool):  # before int: bool is a subclass of int
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return "a date or time"


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix} item"


def _number(x: float | None) -> str:
    if x is None:
        return "any"
    if isinstance(x, float) and x.is_integer():
        return str(int(x))
    return repr(x)


OPTIONS: tuple[Option, ...] = (
    # --- Where the node keeps things -------------------------------------------------------
    Option(
        "state_dir",
        PATH,
        "the node's directory: `db/` (LevelDB), `control.sock`, `spool/`",
        required=True,
    ),
    Option(
        "key_file",
        PATH,
        "the builder's key; without one the node keeps no log of its own (witness/relay)",
        default_text="none",
    ),
    Option(
        "control_socket",
        PATH,
        "local control socket, created mode 0600",
        default_text="`<state_dir>/control.sock`",
    ),
    Option(
        "spool_dir",
        PATH,
        "where the post-build hook leaves entries while the node is down",
        default_text="`<state_dir>/spool`",
    ),
    # --- The node's own pace ---------------------------------------------------------------
    Option(
        "checkpoint_interval",
        NUMBER,
        "seconds between checkpoints (signed only if the log grew; also signed on shutdown)",
        default=2.0,
        minimum=0.01,
        maximum=86400,
        unit="seconds",
    ),
    Option(
        "spool_poll_interval",
        NUMBER,
        "seconds between spool scans",
        default=1.0,
        minimum=0.01,
        maximum=3600,
        unit="seconds",
    ),
    # --- Peers -----------------------------------------------------------------------------
    Option(
        "listen",
        STRINGS,
        "TCP addresses `host:port` for Noise connections from peers (port 0: any free port)",
        default=("127.0.0.1:0",),
        max_items=1024,
    ),
    Option(
        "seeds",
        STRINGS,
        "peer addresses `[<base64 pubkey>@]host:port`; a key pins the peer",
        default=(),
        max_items=1024,
    ),
    Option(
        "advertise",
        STRINGS,
        "addresses `host:port` peers may dial this node at, told to them for peer exchange",
        default=(),
        max_items=8,
    ),
    Option(
        "peers_target",
        INTEGER,
        "outbound connections the node keeps (it dials seeds and learned peers until it has them)",
        default=8,
        minimum=0,
        maximum=1024,
        unit="connections",
    ),
    Option(
        "max_outbound",
        INTEGER,
        "most outbound peer connections at once",
        default=32,
        minimum=0,
        maximum=4096,
        unit="connections",
    ),
    Option(
        "redial_interval",
        NUMBER,
        "first wait before dialling a failed peer again; doubles per failure, up to 64 times",
        default=1.0,
        minimum=0.01,
        maximum=3600,
        unit="seconds",
    ),
    # --- Gossip ----------------------------------------------------------------------------
    Option(
        "anti_entropy_interval",
        NUMBER,
        "seconds between exchanges of every log's latest checkpoint with a random peer",
        default=5.0,
        minimum=0.01,
        maximum=86400,
        unit="seconds",
    ),
    Option(
        "follow_unknown",
        CHOICE,
        "logs heard of but not in `[[follow]]`: mirror them, witness them, or ignore them",
        default="witness",
        choices=("mirror", "witness", "ignore"),
    ),
    Option(
        "follow_successors",
        BOOL,
        "follow the successor key a retired log's final checkpoint names, as that log was "
        "followed (`trustix-p2p log retire`)",
        default=True,
    ),
    Option(
        "follow",
        FOLLOW,
        "`[[follow]]` tables: `public_key` (base64), optional `name`, `mode` = mirror or witness",
        default=(),
    ),
    Option(
        "max_logs",
        INTEGER,
        "most logs the node follows (listed and heard of together)",
        default=10_000,
        minimum=1,
        maximum=1_000_000,
        unit="logs",
    ),
    Option(
        "entries_per_request",
        INTEGER,
        "entries asked for at once while mirroring a log (two such ranges are in flight)",
        default=4096,
        minimum=1,
        maximum=4096,
        unit="entries",
    ),
    Option(
        "mdns",
        MDNS,
        "`[mdns]`: `enabled` (default false) and `interfaces`, the addresses it binds to",
        default=MdnsSettings(False, ()),
    ),
    Option(
        "metrics",
        METRICS,
        "`[metrics]`: a Prometheus endpoint, `enabled` (default false) on `listen` "
        f"(default {DEFAULT_METRICS_LISTEN!r}); docs/metrics.md lists the metrics",
        default=MetricsSettings(False, DEFAULT_METRICS_LISTEN),
    ),
    Option(
        "max_submit_batch",
        INTEGER,
        "most leaves accepted in one submission / one group commit",
        default=10_000,
        minimum=1,
        maximum=1_000_000,
        unit="leaves",
    ),
    Option(
        "log_level",
        CHOICE,
        "the least severe messages the node logs",
        default="info",
        choices=("debug", "info", "warning", "error"),
    ),
    # --- Transport limits (DESIGN §6; `TransportLimits`, same names and defaults) ------------
    # Lower bounds keep an honest peer working (a handshake takes milliseconds, but a slow
    # link or a loaded machine may take a few hundred); upper bounds keep one silent or
    # greedy peer from pinning a connection slot or memory for more than a day.
    Option(
        "handshake_timeout",
        NUMBER,
        "seconds from accept (or dial) until the Noise handshake must have completed",
        default=5.0,
        minimum=0.1,
        maximum=600,
        unit="seconds",
        group=TRANSPORT,
    ),
    Option(
        "idle_timeout",
        NUMBER,
        "the longest a receive waits for the peer's next bytes, in seconds",
        default=300.0,
        minimum=1,
        maximum=86400,
        unit="seconds",
        group=TRANSPORT,
    ),
    Option(
        "send_timeout",
        NUMBER,
        "the longest a send may go without progress before the connection is dropped, in seconds",
        default=30.0,
        minimum=0.1,
        maximum=3600,
        unit="seconds",
        group=TRANSPORT,
    ),
    # Counts: every connection holds a file descriptor and buffers, so 65536 is far above
    # what one process can usefully hold.
    Option(
        "max_connections",
        INTEGER,
        "established peer connections a server holds; more are refused",
        default=256,
        minimum=1,
        maximum=65536,
        unit="connections",
        group=TRANSPORT,
    ),
    Option(
        "max_pending_handshakes",
        INTEGER,
        "accepted connections not yet handshaken; when full, the fullest source's oldest goes",
        default=64,
        minimum=1,
        maximum=65536,
        unit="connections",
        group=TRANSPORT,
    ),
    Option(
        "max_connections_per_source",
        INTEGER,
        "connections, pending and established, from one remote IP address; more are refused",
        default=16,
        minimum=1,
        maximum=65536,
        unit="connections",
        group=TRANSPORT,
    ),
    # 64 KiB at least, so that a slip of the finger (4096 for 4194304) cannot make ordinary
    # messages too large; 64 MiB at most, because a receiver may buffer a message of up to
    # this size on every connection before it decodes it.
    Option(
        "max_message_size",
        INTEGER,
        "the largest message sent or received on a peer connection, in bytes",
        default=4 * 1024 * 1024,
        minimum=64 * 1024,
        maximum=64 * 1024 * 1024,
        unit="bytes",
        group=TRANSPORT,
    ),
)

OPTIONS_BY_NAME: dict[str, Option] = {option.name: option for option in OPTIONS}
