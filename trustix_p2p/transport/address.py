"""Peer and listen addresses: `[<base64 Ed25519 public key>@]host:port` (DESIGN §2).

The host is a DNS name, an IPv4 address or a bracketed IPv6 address (`[::1]:7946`).  A key in
front pins the peer: the handshake then fails unless the peer proves it holds that key.  This
module only parses and formats strings; it never resolves names or opens sockets.
"""

from __future__ import annotations

import ipaddress

import attrs

from trustix_p2p.core.keys import PublicKey
from trustix_p2p.errors import ConfigError, DecodeError

__all__ = ["PeerAddress", "format_host_port", "parse_listen_address", "parse_peer_address"]

_MAX_HOST_LEN = 253  # RFC 1035 §2.3.4: a full domain name is at most 253 characters


@attrs.frozen
class PeerAddress:
    host: str
    port: int
    key: PublicKey | None = None

    def host_port(self) -> str:
        return format_host_port(self.host, self.port)

    def __str__(self) -> str:
        prefix = f"{self.key.to_base64()}@" if self.key is not None else ""
        return prefix + self.host_port()


def format_host_port(host: str, port: int) -> str:
    """`host:port`, bracketing IPv6 literals as RFC 3986 §3.2.2 does."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _split_host_port(text: str, *, allow_port_zero: bool) -> tuple[str, int]:
    if text.startswith("["):
        close = text.find("]")
        if close < 0 or text[close + 1 : close + 2] != ":":
            raise ConfigError(f"address {text!r}: expected [IPv6]:port")
        host, port_text = text[1:close], text[close + 2 :]
        try:
            ipaddress.IPv6Address(host)
        except ValueError as exc:
            raise ConfigError(f"address {text!r}: {host!r} is not an IPv6 address") from exc
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            raise ConfigError(f"address {text!r}: expected host:port")
        if ":" in host:
            raise ConfigError(f"address {text!r}: write IPv6 addresses in brackets, [::1]:port")
    if not host or len(host) > _MAX_HOST_LEN or any(c.isspace() for c in host):
        raise ConfigError(f"address {text!r}: invalid host")
    if not port_text.isascii() or not port_text.isdigit() or len(port_text) > 5:
        raise ConfigError(f"address {text!r}: invalid port {port_text!r}")
    port = int(port_text)
    if not (0 if allow_port_zero else 1) <= port <= 65535:
        raise ConfigError(f"address {text!r}: port {port} out of range")
    return host, port


def parse_peer_address(text: str) -> PeerAddress:
    """Parse `[<base64 pubkey>@]host:port`; `ConfigError` says what is wrong."""
    key_text, at, rest = text.rpartition("@")
    key: PublicKey | None = None
    if at:
        try:
            key = PublicKey.from_base64(key_text)
        except DecodeError as exc:
            raise ConfigError(f"address {text!r}: the pinned key is not a base64 key") from exc
    host, port = _split_host_port(rest, allow_port_zero=False)
    return PeerAddress(host, port, key)


def parse_listen_address(text: str) -> tuple[str, int]:
    """Parse a listen address `host:port` (port 0 picks a free port); no key allowed."""
    if "@" in text:
        raise ConfigError(f"listen address {text!r} must not carry a key")
    return _split_host_port(text, allow_port_zero=True)
