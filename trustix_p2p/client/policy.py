"""The workstation's trust policy: a TOML file, checked strictly.

```toml
threshold = 3                         # M: a count of builders out of the N below
exclude_on_evidence = true            # a builder with verified evidence casts no vote
nodes = ["<base64 key>@host:port"]    # nodes to ask over Noise, in order of preference
# node_socket = "/var/lib/trustix-p2p/control.sock"   # or a local node's control socket
state_file = "client-state.json"      # last verified checkpoint per log (relative to this file)
upstreams = ["file:///srv/nix-cache", "https://cache.nixos.org"]   # where NARs come from
witness_threshold = 0                 # K cosignatures from the witnesses below, per checkpoint
[[builders]]
name = "alice"
public_key = "<base64 Ed25519 key>"
# pinned_checkpoint = '''<a checkpoint note of alice's known to be good>'''
# follow_successor = false            # trust the key alice's log names when she retires it
[[witnesses]]
name = "w1"
public_key = "<base64 Ed25519 key>"
```

A policy naming the same key twice (among builders, or among witnesses), M < 1 or M > N,
K above the number of witnesses, no node to ask, or an unknown key is refused with one line
naming what is wrong (`ConfigError`).  Relative paths are resolved against the file's own
directory.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs

from trustix_p2p.configfile import read_toml
from trustix_p2p.core.checkpoint import verify_checkpoint
from trustix_p2p.core.decision import Builder
from trustix_p2p.core.keys import PublicKey
from trustix_p2p.errors import ConfigError, DecodeError, VerificationError
from trustix_p2p.transport.address import parse_peer_address

__all__ = [
    "MAX_SUCCESSORS",
    "Policy",
    "PolicyBuilder",
    "load_policy",
    "policy_from_dict",
    "successor_of",
]

MAX_BUILDERS = 1024
#: How many retirements in a row a client follows for one builder.
MAX_SUCCESSORS = 8
_KEYS = {
    "threshold",
    "exclude_on_evidence",
    "nodes",
    "node_socket",
    "state_file",
    "upstreams",
    "witness_threshold",
    "builders",
    "witnesses",
    "timeout",
}


@attrs.frozen
class PolicyBuilder:
    """A trusted builder (or witness): its name and key, a pinned checkpoint of its log, and
    whether its log's successor is followed when the log is retired.  For a successor log
    the client uses a PolicyBuilder of the same name with the successor's key
    (`successor_of`): it votes as the builder of the policy, never as another one."""

    name: str
    public_key: PublicKey
    pinned_checkpoint: str | None = None
    follow_successor: bool = False

    @property
    def log_id(self) -> bytes:
        return self.public_key.log_id()


def successor_of(builder: PolicyBuilder, successor: bytes) -> PolicyBuilder:
    """The builder under the successor key a final checkpoint of its log names."""
    return PolicyBuilder(builder.name, PublicKey(successor), None, builder.follow_successor)


@attrs.frozen
class Policy:
    path: Path | None
    threshold: int
    exclude_on_evidence: bool
    nodes: tuple[str, ...]
    node_socket: Path | None
    state_file: Path
    upstreams: tuple[str, ...]
    witness_threshold: int
    builders: tuple[PolicyBuilder, ...]
    witnesses: tuple[PolicyBuilder, ...]
    timeout: float = 10.0

    def decision_builders(self) -> list[Builder]:
        return [Builder(b.name, b.public_key.raw) for b in self.builders]

    def builder_for_log(self, log_id: bytes) -> PolicyBuilder | None:
        for b in self.builders:
            if b.log_id == log_id:
                return b
        return None


def _error(what: str) -> ConfigError:
    return ConfigError(f"policy: {what}")


def _people(data: Any, what: str) -> tuple[PolicyBuilder, ...]:
    if data is None:
        return ()
    if not isinstance(data, list) or not all(isinstance(x, dict) for x in data):
        raise _error(f"[[{what}]] must be tables with name and public_key")
    if len(data) > MAX_BUILDERS:
        raise _error(f"at most {MAX_BUILDERS} {what}")
    out: list[PolicyBuilder] = []
    for i, item in enumerate(data, 1):
        allowed = {"name", "public_key", "pinned_checkpoint"}
        if what == "builders":
            allowed.add("follow_successor")
        unknown = set(item) - allowed
        if unknown:
            raise _error(f"{what} #{i}: unknown key {sorted(unknown)[0]!r}")
        name, key = item.get("name"), item.get("public_key")
        if not isinstance(name, str) or not 0 < len(name) <= 64:
            raise _error(f"{what} #{i}: name must be a string of 1 to 64 characters")
        if not isinstance(key, str):
            raise _error(f"{what} {name!r}: public_key must be a base64 Ed25519 key")
        try:
            public_key = PublicKey.from_base64(key)
        except DecodeError as exc:
            raise _error(f"{what} {name!r}: public_key is not a base64 Ed25519 key") from exc
        pinned = item.get("pinned_checkpoint")
        if pinned is not None and not isinstance(pinned, str):
            raise _error(f"{what} {name!r}: pinned_checkpoint must be a checkpoint note")
        if pinned is not None:
            try:
                verify_checkpoint(pinned.encode("utf-8"), public_key)
            except (DecodeError, VerificationError) as exc:
                raise _error(
                    f"{what} {name!r}: pinned_checkpoint is not a checkpoint its key signed: {exc}"
                ) from exc
        follow = item.get("follow_successor", False)
        if not isinstance(follow, bool):
            raise _error(f"{what} {name!r}: follow_successor must be true or false")
        out.append(PolicyBuilder(name, public_key, pinned, follow))
    keys = [b.public_key for b in out]
    for b in out:
        if keys.count(b.public_key) > 1:
            others = [x.name for x in out if x.public_key == b.public_key]
            raise _error(f"{what} {' and '.join(repr(n) for n in others)} name the same key")
    names = [b.name for b in out]
    if len(set(names)) != len(names):
        raise _error(f"two {what} share a name")
    return tuple(out)


def _strings(data: Any, what: str) -> tuple[str, ...]:
    if data is None:
        return ()
    if not isinstance(data, list) or not all(isinstance(x, str) for x in data):
        raise _error(f"{what} must be an array of strings")
    if len(data) > 64:
        raise _error(f"{what} may hold at most 64 items")
    return tuple(data)


def _path(value: Any, what: str, base: Path) -> Path:
    if not isinstance(value, str) or not value:
        raise _error(f"{what} must be a path")
    path = Path(os.path.expanduser(value))
    return path if path.is_absolute() else base / path


def policy_from_dict(data: dict[str, Any], base: Path, path: Path | None = None) -> Policy:
    unknown = sorted(set(data) - _KEYS)
    if unknown:
        raise _error(f"unknown key {unknown[0]!r}")
    builders = _people(data.get("builders"), "builders")
    if not builders:
        raise _error("no [[builders]]: a policy trusts a set of builders")
    witnesses = _people(data.get("witnesses"), "witnesses")
    threshold = data.get("threshold")
    if isinstance(threshold, bool) or not isinstance(threshold, int):
        raise _error("threshold must be an integer (M, a count of builders)")
    if not 1 <= threshold <= len(builders):
        raise _error(
            f"threshold must be between 1 and the {len(builders)} builders listed, not {threshold}"
        )
    k = data.get("witness_threshold", 0)
    if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k <= len(witnesses):
        raise _error(
            f"witness_threshold must be an integer between 0 and the {len(witnesses)} "
            f"witnesses listed, not {k!r}"
        )
    exclude = data.get("exclude_on_evidence", True)
    if not isinstance(exclude, bool):
        raise _error("exclude_on_evidence must be true or false")
    nodes = _strings(data.get("nodes"), "nodes")
    for address in nodes:
        try:
            parsed = parse_peer_address(address)
        except ConfigError as exc:
            raise _error(f"nodes: {exc}") from exc
        if parsed.key is None:
            raise _error(f"nodes: {address!r} must pin the node's key: <base64 key>@host:port")
    socket = data.get("node_socket")
    node_socket = None if socket is None else _path(socket, "node_socket", base)
    if not nodes and node_socket is None:
        raise _error("no node to ask: set nodes (Noise) or node_socket (a local node)")
    upstreams = _strings(data.get("upstreams"), "upstreams")
    for url in upstreams:
        if not url.startswith(("file://", "http://", "https://")):
            raise _error(f"upstreams: {url!r} is not a file://, http:// or https:// URL")
    timeout = data.get("timeout", 10.0)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout <= 600:
        raise _error("timeout must be a number of seconds between 0 and 600")
    state = _path(data.get("state_file", "client-state.json"), "state_file", base)
    return Policy(
        path,
        threshold,
        exclude,
        nodes,
        node_socket,
        state,
        upstreams,
        k,
        builders,
        witnesses,
        float(timeout),
    )


def load_policy(path: str | os.PathLike[str]) -> Policy:
    p = Path(path)
    data = read_toml(p, "policy")
    return policy_from_dict(data, p.resolve().parent, p)


def names(builders: Sequence[PolicyBuilder]) -> list[str]:
    return [b.name for b in builders]
