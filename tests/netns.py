"""Network namespaces on a private bridge, for tests that need a real LAN (mDNS, multicast).

`bridge_namespaces(n)` builds, as root, one Linux bridge and `n` network namespaces, each
joined to the bridge by a veth pair with an address `10.<x>.0.<i+2>/24` on its namespace
side, and removes all of it afterwards, also when the test fails.  Nothing is configured
on the host's own interfaces: the bridge has no address, so the namespaces see each other
and nothing else, and whatever runs in them (`Namespace.command`) cannot disturb the host
or another test.

Names are derived from the process id and a per-process counter, so parallel test
processes never share a name; they stay within the kernel's 15-character limit for
interface names.  Addresses exist only inside the namespaces, so the subnet cannot clash
with the host's routes; it is still varied per call to keep captures readable.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import os
import shutil
import subprocess
from collections.abc import Iterator, Sequence

import attrs

_IFNAMSIZ = 15  # Linux interface names: at most 15 characters (IFNAMSIZ - 1)
_COMMAND_TIMEOUT = 20.0
_calls = itertools.count()


@attrs.frozen
class Namespace:
    name: str
    address: str  # the IPv4 address of `interface`, without the prefix length
    interface: str  # the veth end inside the namespace

    def command(self, argv: Sequence[str]) -> list[str]:
        """`argv` to run inside this namespace."""
        return ["ip", "netns", "exec", self.name, *argv]


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        ["ip", *args], capture_output=True, text=True, timeout=_COMMAND_TIMEOUT, check=False
    )
    if check and proc.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc


def _base36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        n, d = divmod(n, 36)
        out = digits[d] + out
        if n == 0:
            return out


@attrs.frozen
class _Names:
    tag: str
    count: int

    @property
    def bridge(self) -> str:
        return f"{self.tag}b"

    def namespace(self, i: int) -> str:
        return f"{self.tag}s{i}"

    def host_veth(self, i: int) -> str:
        return f"{self.tag}h{i}"

    def ns_veth(self, i: int) -> str:
        return f"{self.tag}n{i}"


def _remove(names: _Names) -> None:
    """Delete whatever exists under these names; missing pieces are fine.

    Deleting a namespace destroys the veth end inside it, which destroys its peer too; the
    host ends are deleted explicitly anyway in case a namespace was never created.
    """
    for i in range(names.count):
        _ip("netns", "del", names.namespace(i), check=False)
        _ip("link", "del", names.host_veth(i), check=False)
    _ip("link", "del", names.bridge, check=False)


@contextlib.contextmanager
def bridge_namespaces(count: int, prefix: str = "tx") -> Iterator[list[Namespace]]:
    """`count` namespaces on one fresh bridge; everything is removed on exit."""
    if not 1 <= count <= 250:
        raise ValueError("count must be between 1 and 250")
    call = next(_calls)
    tag = f"{prefix}{_base36(os.getpid())}{_base36(call)}"
    names = _Names(tag, count)
    longest = max([names.bridge, names.host_veth(count - 1), names.ns_veth(count - 1)], key=len)
    if len(longest) > _IFNAMSIZ:
        raise ValueError(f"interface name {longest!r} is longer than {_IFNAMSIZ} characters")
    subnet = 100 + (os.getpid() * 7 + call) % 150  # 10.100.0.0/24 .. 10.249.0.0/24
    _remove(names)  # leftovers of an earlier process that had our pid
    try:
        _ip("link", "add", names.bridge, "type", "bridge")
        # Snooping only matters for groups joined by IGMP; 224.0.0.251 is link-local and
        # always flooded, but without snooping there is nothing to go wrong at all.
        _ip("link", "set", names.bridge, "type", "bridge", "mcast_snooping", "0")
        _ip("link", "set", names.bridge, "multicast", "on", "up")
        namespaces = []
        for i in range(count):
            ns, host, inner = names.namespace(i), names.host_veth(i), names.ns_veth(i)
            address = f"10.{subnet}.0.{i + 2}"
            _ip("netns", "add", ns)
            _ip("link", "add", host, "type", "veth", "peer", "name", inner)
            _ip("link", "set", host, "master", names.bridge, "multicast", "on", "up")
            _ip("link", "set", inner, "netns", ns)
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", ns, "addr", "add", f"{address}/24", "dev", inner)
            _ip("-n", ns, "link", "set", inner, "multicast", "on", "up")
            # Multicast leaves by the LAN interface even for a program that does not pick
            # one (IP_MULTICAST_IF), as there is no default route in the namespace.
            _ip("-n", ns, "route", "add", "224.0.0.0/4", "dev", inner)
            namespaces.append(Namespace(ns, address, inner))
        yield namespaces
    finally:
        _remove(names)


@functools.cache
def netns_available() -> bool:
    """Root, `ip`, and the kernel lets us create a namespace and a bridge (a container may not)."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        return False
    try:
        with bridge_namespaces(1, prefix="txp"):
            return True
    except (RuntimeError, OSError, subprocess.SubprocessError):
        return False
