"""mDNS discovery: hostile records, deduplication, loopback and real LANs in namespaces.

The pure part (`found_from_service`, `ServiceTable`) is fed hand-made and generated hostile
input.  The loopback tests run real zeroconf instances on 127.0.0.1 in this process (Linux
loops multicast back on `lo` although the interface has no MULTICAST flag).  The namespace
tests (root) run `tests.mdns_probe` processes on a private bridge: two nodes find each
other, and a node bound to loopback does not hear the LAN even when another program in its
namespace joined the mDNS group there.

Every wait is bounded; keys are fresh per test, so concurrent runs on one host (whose
loopback services this process can hear) cannot be mistaken for the node under test.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

import attrs
import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st
from zeroconf import ServiceInfo, Zeroconf

from tests.mdns_probe import probe_key
from tests.netns import Namespace, bridge_namespaces, netns_available
from trustix_p2p.core.keys import PrivateKey, PublicKey
from trustix_p2p.discovery import SERVICE_TYPE, Found, MdnsDiscovery, ServiceTable
from trustix_p2p.discovery import found_from_service as found_from
from trustix_p2p.errors import ConfigError
from trustix_p2p.transport.address import parse_peer_address

ROOT = Path(__file__).resolve().parent.parent
OWN = PrivateKey(b"\x01" * 32).public_key
PEER = PrivateKey(b"\x02" * 32).public_key
NAME = "trustix-0123456789abcdef._trustix._tcp.local."
GOOD_TXT: dict[bytes, bytes | None] = {b"key": PEER.to_base64().encode(), b"v": b"1"}


def fresh_key() -> PublicKey:
    return PrivateKey(os.urandom(32)).public_key


# --------------------------------------------------------------------------------------
# found_from_service: what a resolved service means
# --------------------------------------------------------------------------------------


def test_a_well_formed_service_is_found_with_its_pinned_address() -> None:
    found = found_from(NAME, GOOD_TXT, ["10.0.0.7"], 7946, OWN)
    assert found == Found(PEER, "10.0.0.7", 7946)
    assert found.address == f"{PEER.to_base64()}@10.0.0.7:7946"
    parsed = parse_peer_address(found.address)
    assert (parsed.key, parsed.host, parsed.port) == (PEER, "10.0.0.7", 7946)


def test_an_ipv6_host_is_bracketed_in_the_address() -> None:
    found = found_from(NAME, GOOD_TXT, ["2001:db8::0:7"], 7946, OWN)
    assert found is not None
    assert found.host == "2001:db8::7"  # canonical form
    assert found.address == f"{PEER.to_base64()}@[2001:db8::7]:7946"


def test_our_own_service_is_not_found() -> None:
    txt = {b"key": OWN.to_base64().encode(), b"v": b"1"}
    assert found_from(NAME, txt, ["10.0.0.7"], 7946, OWN) is None


@pytest.mark.parametrize(
    "txt",
    [
        pytest.param({b"v": b"1"}, id="no key"),
        pytest.param({b"key": None, b"v": b"1"}, id="key without value"),
        pytest.param({b"key": b"", b"v": b"1"}, id="empty key"),
        pytest.param({b"key": b"not base64!", b"v": b"1"}, id="key not base64"),
        pytest.param({b"key": PEER.to_base64().encode()[:-4], b"v": b"1"}, id="key truncated"),
        pytest.param({b"key": b"A" * 43 + b"B", b"v": b"1"}, id="key non-canonical base64"),
        pytest.param({b"key": b"\xff" * 44, b"v": b"1"}, id="key not ASCII"),
        pytest.param({b"key": b"AAAA" * 100, b"v": b"1"}, id="key too long"),
        pytest.param({b"key": PEER.to_base64().encode()}, id="no version"),
        pytest.param({b"key": PEER.to_base64().encode(), b"v": b"2"}, id="unknown version"),
        pytest.param({b"key": PEER.to_base64().encode(), b"v": None}, id="version no value"),
        pytest.param({**GOOD_TXT, **{b"x%d" % i: b"" for i in range(20)}}, id="too many entries"),
        pytest.param({**GOOD_TXT, b"pad": b"x" * 1300}, id="TXT too large"),
        pytest.param({b"key": "text", b"v": b"1"}, id="value not bytes"),
        pytest.param({"key": PEER.to_base64().encode(), b"v": b"1"}, id="key name not bytes"),
        pytest.param(
            {b"key": b"garbage", b"KEY": PEER.to_base64().encode(), b"v": b"1"},
            id="first of duplicate keys is garbage",
        ),
    ],
)
def test_a_malformed_txt_record_is_ignored(txt: dict[bytes, bytes | None]) -> None:
    assert found_from(NAME, txt, ["10.0.0.7"], 7946, OWN) is None


def test_txt_keys_are_case_insensitive_and_the_first_occurrence_counts() -> None:
    # RFC 6763 §6.4.
    good = PEER.to_base64().encode()
    assert found_from(NAME, {b"KEY": good, b"V": b"1"}, ["10.0.0.7"], 1, OWN) is not None
    txt = {b"Key": good, b"key": b"garbage", b"v": b"1"}
    assert found_from(NAME, txt, ["10.0.0.7"], 1, OWN) == Found(PEER, "10.0.0.7", 1)


def test_unknown_txt_entries_are_tolerated() -> None:
    txt = {**GOOD_TXT, b"future": b"feature", b"flag": None}
    assert found_from(NAME, txt, ["10.0.0.7"], 7946, OWN) == Found(PEER, "10.0.0.7", 7946)


@pytest.mark.parametrize("port", [0, -1, 65536, 10**30])
def test_a_port_out_of_range_is_ignored(port: int) -> None:
    assert found_from(NAME, GOOD_TXT, ["10.0.0.7"], port, OWN) is None


def test_a_port_that_is_not_an_integer_is_ignored() -> None:
    for port in (True, None, "7946", 7946.0):
        assert found_from(NAME, GOOD_TXT, ["10.0.0.7"], port, OWN) is None  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "addresses",
    [
        [],
        ["not an address", "", "10.0.0.300", "1" * 1000],
        ["0.0.0.0", "::"],
        ["224.0.0.251", "ff02::fb"],
        ["255.255.255.255", "240.0.0.1"],
        ["fe80::1", "fe80::1%eth0"],
        [None, 7, b"10.0.0.7"],
    ],
)
def test_a_service_without_a_usable_address_is_ignored(addresses: list[str]) -> None:
    assert found_from(NAME, GOOD_TXT, addresses, 7946, OWN) is None


def test_the_first_usable_ipv4_address_is_preferred() -> None:
    addresses = ["garbage", "0.0.0.0", "2001:db8::1", "fe80::2", "192.0.2.9", "192.0.2.10"]
    assert found_from(NAME, GOOD_TXT, addresses, 1, OWN) == Found(PEER, "192.0.2.9", 1)


def test_only_the_first_addresses_are_looked_at() -> None:
    # A record flood: the usable address after the first sixteen is not looked for.
    assert found_from(NAME, GOOD_TXT, ["garbage"] * 16 + ["192.0.2.9"], 1, OWN) is None
    assert found_from(NAME, GOOD_TXT, ["garbage"] * 15 + ["192.0.2.9"], 1, OWN) is not None


@pytest.mark.parametrize(
    "name",
    [
        "x._other._tcp.local.",
        "_trustix._tcp.local.",  # no instance
        "x" * 250 + "._trustix._tcp.local.",
        "x._trustix._tcp.local",  # not fully qualified
    ],
)
def test_a_name_that_is_not_a_trustix_service_is_ignored(name: str) -> None:
    assert found_from(name, GOOD_TXT, ["10.0.0.7"], 7946, OWN) is None


def test_service_names_are_compared_case_insensitively() -> None:
    assert found_from(NAME.upper(), GOOD_TXT, ["10.0.0.7"], 1, OWN) is not None


_hostile_txt = st.dictionaries(
    st.sampled_from([b"key", b"KEY", b"v", b"V", b""]) | st.binary(max_size=12),
    st.none()
    | st.binary(max_size=80)
    | st.sampled_from([b"1", PEER.to_base64().encode(), OWN.to_base64().encode()]),
    max_size=24,
)
_hostile_addresses = st.lists(
    st.ip_addresses().map(str) | st.text(max_size=40) | st.sampled_from(["::1", "127.0.0.1"]),
    max_size=20,
)


@given(
    name=st.sampled_from([NAME, NAME.upper()]) | st.text(max_size=300),
    txt=_hostile_txt,
    addresses=_hostile_addresses,
    port=st.integers(-(2**70), 2**70) | st.integers(-2, 65538),
)
def test_hostile_services_never_raise_and_what_is_found_is_sound(
    name: str, txt: dict[bytes, bytes | None], addresses: list[str], port: int
) -> None:
    found = found_from(name, txt, addresses, port, OWN)
    if found is None:
        return
    assert found.public_key != OWN
    assert 1 <= found.port <= 65535
    assert found.host in {str(ipaddress.ip_address(a)) for a in addresses if _is_ip(a)}
    parsed = parse_peer_address(found.address)
    assert (parsed.key, parsed.host, parsed.port) == (found.public_key, found.host, found.port)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


# --------------------------------------------------------------------------------------
# ServiceTable: each (key, host, port) once until it changes
# --------------------------------------------------------------------------------------


def test_the_table_reports_a_service_once_until_it_changes() -> None:
    table = ServiceTable()
    first = Found(PEER, "10.0.0.7", 1)
    assert NAME not in table
    assert table.offer(NAME, first)
    assert NAME in table and NAME.upper() in table
    assert not table.offer(NAME, first)
    assert not table.offer(NAME.upper(), first)  # DNS names are case-insensitive
    assert table.offer(NAME, attrs.evolve(first, port=2))
    assert table.offer(NAME, attrs.evolve(first, port=1))  # back again is a change too
    assert len(table) == 1


def test_a_forgotten_service_is_reported_again() -> None:
    table = ServiceTable()
    found = Found(PEER, "10.0.0.7", 1)
    assert table.offer(NAME, found)
    table.forget(NAME.upper())
    assert len(table) == 0
    assert table.offer(NAME, found)
    table.forget("never.seen._trustix._tcp.local.")  # forgetting the unknown is fine


def test_the_table_refuses_new_names_when_full_but_updates_known_ones() -> None:
    table = ServiceTable(limit=2)
    found = Found(PEER, "10.0.0.7", 1)
    assert table.offer("a." + SERVICE_TYPE, found)
    assert table.offer("b." + SERVICE_TYPE, found)
    assert not table.offer("c." + SERVICE_TYPE, found)
    assert table.refused == 1
    assert table.offer("a." + SERVICE_TYPE, attrs.evolve(found, port=2))
    table.forget("b." + SERVICE_TYPE)
    assert table.offer("c." + SERVICE_TYPE, found)


# --------------------------------------------------------------------------------------
# MdnsDiscovery: configuration
# --------------------------------------------------------------------------------------


def test_defaults_come_from_the_key_and_the_first_interface() -> None:
    discovery = MdnsDiscovery(OWN, 7946, ["127.0.0.1", "::1", "127.0.0.1"])
    assert discovery.instance_name == f"trustix-{OWN.log_id_hex()[:16]}"
    assert discovery.service_name == f"trustix-{OWN.log_id_hex()[:16]}._trustix._tcp.local."
    assert discovery.advertise_host == "127.0.0.1"
    assert discovery.interfaces == ("127.0.0.1", "::1")


def test_instance_name_and_advertised_host_can_be_chosen() -> None:
    discovery = MdnsDiscovery(
        OWN, 7946, ["10.0.0.1"], instance_name="büro node", advertise_host="10.0.0.2"
    )
    assert discovery.service_name == "büro node._trustix._tcp.local."
    assert discovery.advertise_host == "10.0.0.2"


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"interfaces": []}, "at least one interface"),
        ({"interfaces": "127.0.0.1"}, "not one string"),
        ({"interfaces": ["localhost"]}, "not an IP address"),
        ({"interfaces": ["127.0.0.1/8"]}, "not an IP address"),
        ({"port": 0}, "out of range"),
        ({"port": 65536}, "out of range"),
        ({"instance_name": ""}, "1 to 63 bytes"),
        ({"instance_name": "x" * 64}, "1 to 63 bytes"),
        ({"instance_name": "a.b"}, "no dots"),
        ({"instance_name": "a\nb"}, "printable"),
        ({"advertise_host": "example.org"}, "not an IP address"),
    ],
)
def test_bad_configuration_is_a_config_error(kwargs: dict[str, object], fragment: str) -> None:
    arguments: dict[str, object] = {"port": 7946, "interfaces": ["127.0.0.1"], **kwargs}
    with pytest.raises(ConfigError, match=fragment):
        MdnsDiscovery(OWN, **arguments)  # type: ignore[arg-type]


async def test_an_interface_address_not_on_this_host_is_a_config_error() -> None:
    # 198.51.100.0/24 is TEST-NET-2 (RFC 5737): never a local address.
    discovery = MdnsDiscovery(OWN, 7946, ["198.51.100.7"])
    send, receive = trio.open_memory_channel[Found](1)
    with trio.fail_after(10), pytest.raises(ConfigError, match="not an address of this host"):
        await discovery.run(send)
    with pytest.raises(trio.EndOfChannel):
        receive.receive_nowait()  # run closed its channel on the way out


# --------------------------------------------------------------------------------------
# Loopback: real zeroconf in this process
# --------------------------------------------------------------------------------------


def _zeroconf_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if "zeroconf" in t.name or "_run_loop" in t.name}


async def _next_from(receive: trio.MemoryReceiveChannel[Found], key: PublicKey) -> Found:
    """The next Found for `key`; others (a concurrent run on this host) are skipped."""
    async for found in receive:
        if found.public_key == key:
            return found
    raise AssertionError("discovery ended")


async def _until(condition: Callable[[], bool]) -> None:
    while not condition():
        await trio.sleep(0.02)


async def test_two_nodes_on_loopback_find_each_other() -> None:
    before = _zeroconf_threads()
    key_a, key_b = fresh_key(), fresh_key()
    a = MdnsDiscovery(key_a, 40001, ["127.0.0.1"])
    b = MdnsDiscovery(key_b, 40002, ["127.0.0.1"])
    send_a, receive_a = trio.open_memory_channel[Found](16)
    send_b, receive_b = trio.open_memory_channel[Found](16)
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(a.run, send_a)
            nursery.start_soon(b.run, send_b)
            assert await _next_from(receive_a, key_b) == Found(key_b, "127.0.0.1", 40002)
            assert await _next_from(receive_b, key_a) == Found(key_a, "127.0.0.1", 40001)
            nursery.cancel_scope.cancel()
    # Cancelled runs withdrew their services and stopped every zeroconf thread.
    assert _zeroconf_threads() <= before
    assert a.stats.dropped_events == b.stats.dropped_events == 0


async def test_a_run_cancelled_while_starting_leaves_nothing_behind() -> None:
    before = _zeroconf_threads()
    discovery = MdnsDiscovery(fresh_key(), 40003, ["127.0.0.1"])
    send, _receive = trio.open_memory_channel[Found](1)
    with trio.fail_after(10):
        with trio.move_on_after(0.05):
            await discovery.run(send)
        # and once more, cancelled in the middle of registering
        send, _receive = trio.open_memory_channel[Found](1)
        with trio.move_on_after(0.6):
            await discovery.run(send)
    assert _zeroconf_threads() <= before


@attrs.define
class _FakeNode:
    """A raw zeroconf instance announcing whatever a test wants, as a hostile LAN would."""

    zc: Zeroconf

    @staticmethod
    def info(
        name: str,
        port: int,
        properties: dict[str, str] | bytes,
        address: str = "127.0.0.1",
    ) -> ServiceInfo:
        return ServiceInfo(
            SERVICE_TYPE,
            f"{name}.{SERVICE_TYPE}",
            port=port,
            properties=properties,
            server=f"{name}.local.",
            parsed_addresses=[address],
        )

    async def register(self, info: ServiceInfo) -> None:
        await trio.to_thread.run_sync(self.zc.register_service, info)

    async def update(self, info: ServiceInfo) -> None:
        await trio.to_thread.run_sync(self.zc.update_service, info)

    async def unregister(self, info: ServiceInfo) -> None:
        await trio.to_thread.run_sync(self.zc.unregister_service, info)


@contextlib.asynccontextmanager
async def _fake_node() -> AsyncIterator[_FakeNode]:
    zc = await trio.to_thread.run_sync(lambda: Zeroconf(interfaces=["127.0.0.1"]))
    try:
        yield _FakeNode(zc)
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(zc.close)


async def test_a_service_is_reported_when_new_or_changed_and_hostile_ones_are_ignored() -> None:
    peer = fresh_key()
    tag = os.urandom(4).hex()
    txt = {"key": peer.to_base64(), "v": "1"}
    good = _FakeNode.info(f"good-{tag}", 41001, txt)
    hostile = [
        _FakeNode.info(f"badkey-{tag}", 41002, {"key": "garbage", "v": "1"}),
        _FakeNode.info(f"port0-{tag}", 0, txt),
        _FakeNode.info(f"big-{tag}", 41003, {**txt, **{f"x{i}": "y" * 100 for i in range(20)}}),
        _FakeNode.info(f"raw-{tag}", 41004, b"\x05ab"),  # a TXT string of bad length
    ]
    discovery = MdnsDiscovery(fresh_key(), 40004, ["127.0.0.1"])
    send, receive = trio.open_memory_channel[Found](16)
    with trio.fail_after(40):
        async with _fake_node() as fake, trio.open_nursery() as nursery:
            nursery.start_soon(discovery.run, send)
            async with trio.open_nursery() as registering:
                for info in [good, *hostile]:
                    registering.start_soon(fake.register, info)
            assert await _next_from(receive, peer) == Found(peer, "127.0.0.1", 41001)
            assert good.name in discovery.services
            await _until(lambda: discovery.stats.ignored_services >= len(hostile))

            # A TXT change that leaves key, host and port alone is no news.  Once everything
            # announced so far is resolved (the good, the hostile and our own service), wait
            # until the change is too: the count moves only after anything found is sent.
            await _until(lambda: discovery.stats.resolutions >= 2 + len(hostile))
            seen = discovery.stats.resolutions
            await fake.update(_FakeNode.info(f"good-{tag}", 41001, {**txt, "extra": "1"}))
            await _until(lambda: discovery.stats.resolutions > seen)
            with pytest.raises(trio.WouldBlock):
                while True:
                    assert receive.receive_nowait().public_key != peer

            # A new port is news.
            moved = _FakeNode.info(f"good-{tag}", 41005, txt)
            await fake.update(moved)
            assert await _next_from(receive, peer) == Found(peer, "127.0.0.1", 41005)

            # Gone (goodbye packets) and back: reported again.
            await fake.unregister(moved)
            await _until(lambda: moved.name not in discovery.services)
            await fake.register(moved)
            assert await _next_from(receive, peer) == Found(peer, "127.0.0.1", 41005)
            nursery.cancel_scope.cancel()


# --------------------------------------------------------------------------------------
# Network namespaces: a real LAN (root)
# --------------------------------------------------------------------------------------


@attrs.define(eq=False)
class _Probe:
    process: trio.Process
    stderr: Path
    lines: list[str] = attrs.field(factory=list)

    async def collect(self) -> None:
        assert self.process.stdout is not None
        buffer = b""
        while chunk := await self.process.stdout.receive_some(4096):
            buffer += chunk
            *complete, buffer = buffer.split(b"\n")
            self.lines.extend(line.decode() for line in complete)

    async def finish(self) -> int:
        """Close its stdin (ends `--wait-stdin`) and wait for its exit status."""
        assert self.process.stdin is not None
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await self.process.stdin.aclose()
        with trio.fail_after(15):
            return await self.process.wait()

    def diagnostics(self) -> str:
        return f"stdout={self.lines!r} stderr={self.stderr.read_text()[-2000:]!r}"


@contextlib.asynccontextmanager
async def _probe(
    nursery: trio.Nursery,
    tmp_path: Path,
    namespace: Namespace,
    seed: int,
    port: int,
    interface: str,
    *,
    timeout: float,
    extra: Sequence[str] = ("--wait-stdin",),
) -> AsyncIterator[_Probe]:
    argv = [
        sys.executable,
        "-m",
        "tests.mdns_probe",
        *("--key-seed", str(seed), "--port", str(port), "--interface", interface),
        *("--expect-peers", "1", "--timeout", str(timeout), *extra),
    ]
    stderr = tmp_path / f"probe-{seed}.stderr"
    with stderr.open("wb") as err:
        process = await trio.lowlevel.open_process(
            namespace.command(argv),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=err,
            cwd=ROOT,
        )
    probe = _Probe(process, stderr)
    nursery.start_soon(probe.collect)
    try:
        yield probe
    finally:
        if process.returncode is None:
            process.kill()
        with trio.CancelScope(shield=True), trio.move_on_after(10):
            await process.wait()


def _require_netns() -> None:
    # Checked when the test runs, not at collection: the check creates a namespace.
    if not netns_available():
        pytest.skip("needs root, `ip` and permission to create namespaces and bridges")


async def _listening_on_mdns(namespace: Namespace) -> bool:
    """Whether some socket in `namespace` is bound to UDP port 5353 (0x14E9)."""
    proc = await trio.run_process(
        namespace.command(["cat", "/proc/net/udp"]), capture_stdout=True, check=True
    )
    return any(line.split()[1].endswith(":14E9") for line in proc.stdout.decode().splitlines()[1:])


async def test_two_nodes_on_a_lan_find_each_other(tmp_path: Path) -> None:
    _require_netns()
    with bridge_namespaces(2) as (ns_a, ns_b), trio.fail_after(60):
        async with (
            trio.open_nursery() as nursery,
            _probe(nursery, tmp_path, ns_a, 1, 7001, ns_a.address, timeout=20) as a,
            _probe(nursery, tmp_path, ns_b, 2, 7002, ns_b.address, timeout=20) as b,
        ):
            with trio.move_on_after(25):
                await _until(lambda: bool(a.lines and b.lines))
            # Each saw exactly the other: its key, its address on the bridge, its port.
            assert a.lines == [Found(probe_key(2), ns_b.address, 7002).address], a.diagnostics()
            assert b.lines == [Found(probe_key(1), ns_a.address, 7001).address], b.diagnostics()
            assert await a.finish() == 0, a.diagnostics()
            assert await b.finish() == 0, b.diagnostics()


async def test_a_node_bound_to_loopback_does_not_hear_the_lan(tmp_path: Path) -> None:
    _require_netns()
    # In namespace B, one node is bound to lo only and another to the LAN.  The LAN one joins
    # the mDNS group on the LAN interface, so the kernel delivers the LAN's mDNS traffic to
    # every wildcard-bound socket on port 5353 in B, the lo node's too, and that one would
    # answer A's queries by unicast over the LAN: unless its sockets are bound to `lo`.
    with bridge_namespaces(2) as (ns_a, ns_b), trio.fail_after(60):
        async with (
            trio.open_nursery() as nursery,
            _probe(nursery, tmp_path, ns_b, 3, 7003, "127.0.0.1", timeout=10, extra=()) as deaf,
        ):
            # Listening before anything is said on the LAN, so it could overhear it all.
            with trio.fail_after(15):
                while not await _listening_on_mdns(ns_b):
                    assert deaf.process.returncode is None, deaf.diagnostics()
                    await trio.sleep(0.05)
            async with (
                _probe(nursery, tmp_path, ns_a, 4, 7004, ns_a.address, timeout=20) as a,
                _probe(nursery, tmp_path, ns_b, 5, 7005, ns_b.address, timeout=20) as b,
            ):
                with trio.move_on_after(25):
                    await _until(lambda: bool(a.lines and b.lines))
                assert deaf.lines == [], deaf.diagnostics()  # heard nothing from the LAN
                assert a.lines == [Found(probe_key(5), ns_b.address, 7005).address], a.diagnostics()
                assert b.lines == [Found(probe_key(4), ns_a.address, 7004).address], b.diagnostics()
                # All that LAN talk happened while the deaf one was listening.
                assert deaf.process.returncode is None, deaf.diagnostics()
                # The LAN nodes stay up, announcing, until the deaf one gives up.
                with trio.fail_after(15):
                    status = await deaf.process.wait()
                # 1 is also what a crash exits with: the traceback check tells them apart.
                assert (status, deaf.lines) == (1, []), deaf.diagnostics()
                assert "Traceback" not in deaf.stderr.read_text(), deaf.diagnostics()
                assert await a.finish() == 0, a.diagnostics()
                assert await b.finish() == 0, b.diagnostics()
