"""mDNS discovery of trustix nodes with python-zeroconf, bridged into trio (DESIGN §6).

Every node advertises one DNS-SD service of type `_trustix._tcp.local.` (RFC 6763): the SRV
record carries its listen port, the A/AAAA record the address it advertises, and the TXT
record `key=<base64 Ed25519 public key>` and `v=1`.  Every node also browses that type and
reports each *other* node it resolves as a `Found`, whose `address` is the pinned-peer form
`<key>@host:port`.  Discovery is only a hint: the Noise handshake pins the advertised key, so
a node that lies on the LAN wins nothing but a failed connection attempt.

Threads.  zeroconf runs its own asyncio loop in a thread of its own (it receives, answers and
caches there) and calls browser handlers from a second thread.  None of that may block trio,
and trio must never make those threads wait:

- opening and closing zeroconf (creating sockets, joining threads, sending goodbyes) go
  through `trio.to_thread.run_sync`; closing is shielded, so it also happens on cancellation;
- registering our service and resolving a peer's are coroutines submitted to zeroconf's own
  loop with `asyncio.run_coroutine_threadsafe`; trio waits for the resulting future on a
  `trio.Event` that the future's done-callback sets through `TrioToken.run_sync_soon`, and
  cancelling the trio task cancels the future;
- the browser handler only posts the event onto trio with `run_sync_soon`, and there it goes
  into a bounded queue with `send_nowait`: when the queue is full the event is dropped and
  counted, never waited for.

Untrusted input.  Anyone on the LAN can announce anything.  The conversion of a resolved
service into a `Found` is the pure `found_from_service`: a missing or malformed key, an
unknown version, a port out of range, no usable address or an oversized TXT record makes
it ignore that service (logged at debug level, counted in `MdnsStats`).  Memory stays
bounded under a flood of names: the event queue, the number of resolutions in flight and
the table of reported services all have limits.

Interfaces.  zeroconf joins the mDNS group only on the interfaces named, and its sending
sockets are bound to those addresses, but it receives on a socket bound to `0.0.0.0:5353`.
On Linux that socket also gets the mDNS traffic of every other interface on which any other
program (avahi, another node) joined the group, and it sends its unicast answers to whoever
asked, by whatever route: a node told to use only `lo` would hear the LAN and answer it.
When the named addresses all belong to one network device, `_bind_to_device` binds zeroconf's
sockets to it (SO_BINDTODEVICE, socket(7)), which closes both directions.  With addresses
on several devices only zeroconf's own behaviour applies.

This module keeps no module-level state; everything lives in an `MdnsDiscovery`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import enum
import ipaddress
import logging
import socket
import sys
from asyncio.trsock import TransportSocket
from collections.abc import Callable, Mapping, Sequence
from typing import Final, TypeVar

import attrs
import ifaddr  # getifaddrs(3); installed as a dependency of zeroconf, which uses it the same way
import trio
from zeroconf import Error as ZeroconfError
from zeroconf import ServiceBrowser, ServiceInfo, ServiceStateChange, Zeroconf

from trustix_p2p.core.keys import PublicKey
from trustix_p2p.errors import ConfigError, DecodeError
from trustix_p2p.logfmt import ContextLogger, kv
from trustix_p2p.transport.address import format_host_port

__all__ = [
    "SERVICE_TYPE",
    "TXT_VERSION",
    "Found",
    "MdnsDiscovery",
    "MdnsStats",
    "ServiceTable",
    "found_from_service",
]

_log = logging.getLogger(__name__)

SERVICE_TYPE: Final = "_trustix._tcp.local."
# The TXT record format version; a node ignores services of a version it does not know.
TXT_VERSION: Final = "1"

# RFC 6763 §6.2: a TXT record over 1300 bytes may not fit in one packet; ours is ~55 bytes.
_MAX_TXT_BYTES: Final = 1300
_MAX_TXT_ENTRIES: Final = 16
# RFC 1035 §2.3.4: a domain name is at most 255 octets.
_MAX_NAME_OCTETS: Final = 255
# RFC 6763 §4.1.1: an instance name is at most 63 octets of UTF-8.
_MAX_INSTANCE_OCTETS: Final = 63
# Only the first few advertised addresses are looked at: more is a flood, not a host.
_MAX_ADDRESSES: Final = 16
# Bounds that keep a flood of announcements from growing our memory.
_EVENT_QUEUE: Final = 256
_MAX_RESOLVING: Final = 32
_MAX_TRACKED: Final = 1024
# How long one resolution (SRV, TXT and address records) may take, in milliseconds as
# zeroconf counts.  Usually the answers are already cached from the announcement.
_RESOLVE_TIMEOUT_MS: Final = 3000

_T = TypeVar("_T")


@attrs.frozen
class Found:
    """Another node seen on the LAN: the key it claims and where it says it listens."""

    public_key: PublicKey
    host: str  # a canonical IPv4 or IPv6 address string
    port: int

    @property
    def address(self) -> str:
        """`<base64 key>@host:port` (IPv6 bracketed): the pinned-peer address format."""
        return f"{self.public_key.to_base64()}@{format_host_port(self.host, self.port)}"


# --------------------------------------------------------------------------------------
# Pure part: what a resolved service means, and what was reported already.
# --------------------------------------------------------------------------------------

# The reason `_check_service` gives for our own service; not counted as hostile.
_OWN_SERVICE: Final = "our own service"


def found_from_service(
    name: str,
    properties: Mapping[bytes, bytes | None],
    addresses: Sequence[str],
    port: int,
    own_key: PublicKey,
) -> Found | None:
    """The `Found` a resolved service stands for, or None to ignore it.

    `properties` is the TXT record as zeroconf parses it, `addresses` the advertised
    addresses as strings.  None for our own key, and for anything malformed: every argument
    comes from whoever is on the LAN.
    """
    result = _check_service(name, properties, addresses, port, own_key)
    return result if isinstance(result, Found) else None


def _check_name(name: object) -> str | None:
    """Why a service name is unusable, or None."""
    if not isinstance(name, str):
        return "service name is not text"
    if len(name.encode("utf-8", "surrogatepass")) > _MAX_NAME_OCTETS:
        return "service name too long"
    if not name.lower().endswith("." + SERVICE_TYPE):
        return "not a trustix service name"
    return None


def _txt_entries(properties: object) -> dict[bytes, bytes | None] | str:
    """The TXT record with lowercased keys, or why it is unusable.

    RFC 6763 §6.4: keys are case-insensitive and only the first occurrence of a key counts
    (dict order is wire order in zeroconf's parse).
    """
    if not isinstance(properties, Mapping):
        return "TXT record is not a mapping"
    if len(properties) > _MAX_TXT_ENTRIES:
        return "too many TXT entries"
    entries: dict[bytes, bytes | None] = {}
    size = 0
    for key, value in properties.items():
        if not isinstance(key, bytes) or not (value is None or isinstance(value, bytes)):
            return "TXT entry is not bytes"
        # One length octet, the key, and `=value` if there is a value (RFC 6763 §6.1).
        size += 1 + len(key) + (0 if value is None else 1 + len(value))
        entries.setdefault(key.lower(), value)
    if size > _MAX_TXT_BYTES:
        return "TXT record too large"
    return entries


def _pick_host(addresses: object) -> str | None:
    """The first usable IPv4 address, else the first usable IPv6 one.

    IPv4 first because it needs no scope; IPv6 link-local addresses are skipped, as an
    address without its interface scope cannot be connected to.  Unspecified, multicast and
    reserved (such as broadcast) addresses are no host at all.
    """
    if not isinstance(addresses, Sequence) or isinstance(addresses, str | bytes):
        return None
    first_v6: str | None = None
    for text in addresses[:_MAX_ADDRESSES]:
        if not isinstance(text, str) or len(text) > 64:
            continue
        try:
            ip = ipaddress.ip_address(text)
        except ValueError:
            continue
        if ip.is_unspecified or ip.is_multicast:
            continue
        if isinstance(ip, ipaddress.IPv4Address):
            if not ip.is_reserved:
                return str(ip)
        elif not ip.is_link_local and ip.scope_id is None and first_v6 is None:
            first_v6 = str(ip)
    return first_v6


def _check_service(
    name: object,
    properties: object,
    addresses: object,
    port: object,
    own_key: PublicKey,
) -> Found | str:
    """The `Found`, or the reason (one short phrase) to ignore this service."""
    reason = _check_name(name)
    if reason is not None:
        return reason
    entries = _txt_entries(properties)
    if isinstance(entries, str):
        return entries
    version = entries.get(b"v")
    if version != TXT_VERSION.encode("ascii"):
        return f"unsupported TXT version {version!r}"
    key_text = entries.get(b"key")
    if key_text is None:
        return "TXT record has no key"
    try:
        key = PublicKey.from_base64(key_text.decode("ascii"))
    except (UnicodeDecodeError, DecodeError):
        return "TXT key is not a base64 Ed25519 public key"
    if key == own_key:
        return _OWN_SERVICE
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        return f"port {port!r} out of range"
    host = _pick_host(addresses)
    if host is None:
        return "no usable address"
    return Found(key, host, port)


@attrs.define
class ServiceTable:
    """What was last reported for each service name, so each (key, host, port) is reported
    once until it changes.

    Names are compared case-insensitively, as DNS does.  Forgetting a name (the service said
    goodbye, or turned invalid) means it is reported again when it comes back.  At `limit`
    names, new ones are refused (and counted): a flood of names must not grow memory.
    """

    limit: int = _MAX_TRACKED
    refused: int = 0
    _last: dict[str, Found] = attrs.field(factory=dict, init=False)

    def offer(self, name: str, found: Found) -> bool:
        """Record `found` for `name`; True if it is news to report."""
        key = name.lower()
        previous = self._last.get(key)
        if previous == found:
            return False
        if previous is None and len(self._last) >= self.limit:
            self.refused += 1
            return False
        self._last[key] = found
        return True

    def forget(self, name: str) -> None:
        self._last.pop(name.lower(), None)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._last

    def __len__(self) -> int:
        return len(self._last)


# --------------------------------------------------------------------------------------
# The zeroconf shell.
# --------------------------------------------------------------------------------------


@attrs.define
class MdnsStats:
    """Counters for a node's status: what discovery dropped or refused, and why."""

    dropped_events: int = 0  # browser events lost to a full queue or too many resolutions
    ignored_services: int = 0  # resolved services that were malformed
    unresolved_services: int = 0  # services whose records did not arrive in time
    resolutions: int = 0  # completed resolutions, whatever they turned out to be


class _Meanwhile(enum.Enum):
    """What happened to a service name while it was being resolved."""

    NOTHING = enum.auto()
    CHANGED = enum.auto()  # announced again: resolve once more
    GONE = enum.auto()  # said goodbye: drop what the resolution brings


@attrs.frozen
class _Event:
    name: str
    removed: bool


@attrs.define
class _Handles:
    """The zeroconf objects of one `run`, closed in a worker thread when it ends."""

    zeroconf: Zeroconf | None = None
    browser: ServiceBrowser | None = None

    def close(self) -> None:
        """Stop the browser thread, send goodbyes for our service and stop zeroconf's loop
        thread.  Blocks (zeroconf joins its threads), so run it in a worker thread."""
        try:
            if self.browser is not None:
                self.browser.cancel()
        finally:
            self.browser = None
            if self.zeroconf is not None:
                self.zeroconf.close()
            self.zeroconf = None


def _parse_ip(text: object, what: str) -> str:
    if not isinstance(text, str):
        raise ConfigError(f"{what} {text!r} is not an IP address")
    try:
        return str(ipaddress.ip_address(text))
    except ValueError as exc:
        raise ConfigError(f"{what} {text!r} is not an IP address") from exc


def _check_instance_name(name: str) -> str:
    if not name or len(name.encode("utf-8")) > _MAX_INSTANCE_OCTETS:
        raise ConfigError(f"mDNS instance name {name!r} must be 1 to 63 bytes of UTF-8")
    if "." in name or not name.isprintable():
        raise ConfigError(f"mDNS instance name {name!r} must be printable and have no dots")
    return name


def _check_local_address(address: str) -> None:
    """Fail early if `address` is not an address of this host.

    zeroconf itself only logs and skips an interface it cannot join, and would then run,
    silently deaf, on none at all.
    """
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((address, 0))
        except OSError as exc:
            raise ConfigError(
                f"mDNS interface {address}: not an address of this host ({exc.strerror})"
            ) from exc


def _devices_of(addresses: Sequence[str]) -> set[str]:
    """The names of the network devices that hold `addresses` (per getifaddrs(3))."""
    wanted = {ipaddress.ip_address(a) for a in addresses}
    devices = set()
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            text = ip.ip if isinstance(ip.ip, str) else ip.ip[0]
            with contextlib.suppress(ValueError):
                if ipaddress.ip_address(text.partition("%")[0]) in wanted:
                    devices.add(adapter.name)
    return devices


def _bind_to_device(zc: Zeroconf, addresses: Sequence[str], log: ContextLogger) -> None:
    """Bind every socket zeroconf reads from to the one device holding `addresses`.

    Why: see the module docstring.  Not IP_MULTICAST_ALL=0, the obvious alternative: zeroconf
    sets SO_REUSEPORT, and in a reuseport group that option makes Linux hand *other*
    programs' mDNS datagrams to our socket instead of theirs (seen on Linux 6.18).

    zeroconf opens its sockets in its constructor and offers no hook before that, so this
    runs just after it, on the sockets it lists in `engine.readers` (a few milliseconds in
    which a datagram from elsewhere can still arrive).  The lookup is defensive: if a zeroconf
    release renames these attributes we warn and work as zeroconf alone would; the isolation
    test in tests/test_mdns.py then fails, so the change does not go unseen.
    """
    if not sys.platform.startswith("linux"):
        return
    devices = _devices_of(addresses)
    if len(devices) != 1:
        log.info(
            "mDNS: the interfaces are not on one network device; others may overhear",
            extra=kv(interfaces=",".join(addresses), devices=len(devices)),
        )
        return
    (device,) = devices
    readers = getattr(getattr(zc, "engine", None), "readers", None)
    sockets = [
        sock
        for reader in (readers if isinstance(readers, list) else [])
        # asyncio hands out its sockets wrapped, as TransportSocket (setsockopt still works).
        if isinstance(sock := getattr(reader, "sock", None), socket.socket | TransportSocket)
    ]
    if not sockets:
        log.warning("mDNS: cannot bind zeroconf's sockets to the device", extra=kv(device=device))
    for sock in sockets:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, device.encode())
        except OSError as exc:  # EPERM before Linux 5.7 without CAP_NET_RAW
            log.warning(
                "mDNS: cannot bind zeroconf's sockets to the device",
                extra=kv(device=device, reason=exc.strerror),
            )
            return


async def _wait_future(future: concurrent.futures.Future[_T]) -> _T:
    """Wait in trio for a future completed by another thread; cancel it if we are cancelled.

    The done-callback runs in zeroconf's loop thread and only schedules `Event.set` onto
    trio, so that thread never waits for us.
    """
    token = trio.lowlevel.current_trio_token()
    done = trio.Event()

    def wake(_: concurrent.futures.Future[_T]) -> None:
        with contextlib.suppress(trio.RunFinishedError):
            token.run_sync_soon(done.set)

    future.add_done_callback(wake)
    try:
        await done.wait()
    finally:
        future.cancel()  # a no-op once it is done
    return future.result()


async def _register(zc: Zeroconf, info: ServiceInfo) -> None:
    """Probe for name conflicts, then announce (RFC 6762 §8).  Runs on zeroconf's own loop.

    `allow_name_change`: if someone else already holds our instance name (a squatter, or a
    log id prefix collision), zeroconf picks `name-2` rather than failing, and the TXT key
    still says who we are.
    """
    announced = await zc.async_register_service(info, allow_name_change=True)
    await announced


class MdnsDiscovery:
    """Advertise this node and report the other trustix nodes on the named interfaces.

    `interfaces` are IP addresses of this host; zeroconf joins the mDNS group and sends only
    there, and its sockets are bound to their device when there is one (see the module
    docstring).  `port` is the node's listen port as others should dial it.  The advertised
    address defaults to the first interface address, the instance name to
    `trustix-<first 16 hex digits of the log id>`.  `log` is where it logs (a node passes
    its own, so the lines name it).
    """

    def __init__(
        self,
        public_key: PublicKey,
        port: int,
        interfaces: Sequence[str],
        *,
        instance_name: str | None = None,
        advertise_host: str | None = None,
        log: ContextLogger | None = None,
    ) -> None:
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            raise ConfigError(f"mDNS: port {port!r} out of range")
        if isinstance(interfaces, str):
            raise ConfigError("mDNS interfaces must be a list of addresses, not one string")
        addresses = list(dict.fromkeys(_parse_ip(a, "mDNS interface") for a in interfaces))
        if not addresses:
            raise ConfigError("mDNS needs at least one interface address")
        self.public_key: Final = public_key
        self.port: Final = port
        self.interfaces: Final = tuple(addresses)
        self.advertise_host: Final = (
            _parse_ip(advertise_host, "mDNS advertised address")
            if advertise_host is not None
            else addresses[0]
        )
        self.instance_name: Final = _check_instance_name(
            instance_name
            if instance_name is not None
            else f"trustix-{public_key.log_id_hex()[:16]}"
        )
        self.stats: Final = MdnsStats()
        # What was reported, by service name: read it (status), never change it.
        self.services: Final = ServiceTable()
        # Lines name the node that runs this discovery when it passes its logger.
        self.log: Final = log if log is not None else ContextLogger(_log)

    @property
    def service_name(self) -> str:
        """Our service's full name, unless a conflict made zeroconf rename it."""
        return f"{self.instance_name}.{SERVICE_TYPE}"

    async def run(self, found: trio.MemorySendChannel[Found]) -> None:
        """Advertise and browse until cancelled, sending each new or changed peer to `found`.

        One run at a time per instance.  Closes `found` when it ends (pass a clone to keep
        yours open).  On the way out it
        withdraws our service (goodbye packets) and closes zeroconf; that part is shielded
        and takes a fraction of a second.  Raises `ConfigError` if an interface address is
        not one of this host's or zeroconf cannot open its sockets there.
        """
        async with found:
            token = trio.lowlevel.current_trio_token()
            events_send, events_recv = trio.open_memory_channel[_Event](_EVENT_QUEUE)

            # Called by zeroconf's browser thread, with these keyword names.
            def on_change(
                zeroconf: Zeroconf,
                service_type: str,
                name: str,
                state_change: ServiceStateChange,
            ) -> None:
                if service_type != SERVICE_TYPE or not isinstance(name, str):
                    return
                event = _Event(name, state_change is ServiceStateChange.Removed)
                with contextlib.suppress(trio.RunFinishedError):
                    token.run_sync_soon(self._enqueue, events_send, event)

            handles = _Handles()
            try:
                await trio.to_thread.run_sync(self._open, handles, on_change)
                zc = handles.zeroconf
                assert zc is not None
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._advertise, zc)
                    await self._dispatch(zc, events_recv, found, nursery)
            finally:
                with trio.CancelScope(shield=True):
                    await trio.to_thread.run_sync(handles.close)
                events_send.close()
                events_recv.close()

    # -- worker-thread side ---------------------------------------------------------------

    def _open(self, handles: _Handles, on_change: Callable[..., None]) -> None:
        """Create zeroconf and the browser (in a worker thread: this makes sockets and
        starts zeroconf's threads), filling `handles` as it goes so `run` can close what
        was opened even if it is cancelled meanwhile."""
        for address in self.interfaces:
            _check_local_address(address)
        try:
            # A list, not a tuple: zeroconf only recognises a list of addresses.
            zc = Zeroconf(interfaces=list(self.interfaces))
        except (OSError, RuntimeError) as exc:
            raise ConfigError(
                f"mDNS: cannot listen on {', '.join(self.interfaces)}: {exc}"
            ) from exc
        handles.zeroconf = zc
        _bind_to_device(zc, self.interfaces, self.log)
        handles.browser = ServiceBrowser(zc, SERVICE_TYPE, handlers=[on_change])

    # -- trio side --------------------------------------------------------------------------

    def _enqueue(self, events: trio.MemorySendChannel[_Event], event: _Event) -> None:
        """Runs in trio's thread, outside any task (`run_sync_soon`): must never raise."""
        try:
            events.send_nowait(event)
        except trio.WouldBlock:
            self.stats.dropped_events += 1
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass  # `run` is over; nobody wants the event any more

    async def _advertise(self, zc: Zeroconf) -> None:
        info = ServiceInfo(
            SERVICE_TYPE,
            self.service_name,
            port=self.port,
            properties={"key": self.public_key.to_base64(), "v": TXT_VERSION},
            server=f"{self.instance_name}.local.",
            parsed_addresses=[self.advertise_host],
        )
        loop = zc.loop
        assert loop is not None, "zeroconf starts its loop in its constructor"
        await _wait_future(asyncio.run_coroutine_threadsafe(_register(zc, info), loop))
        self.log.info(
            "mDNS: advertising",
            extra=kv(
                service=info.name,
                addr=format_host_port(self.advertise_host, self.port),
                interfaces=",".join(self.interfaces),
            ),
        )

    async def _dispatch(
        self,
        zc: Zeroconf,
        events: trio.MemoryReceiveChannel[_Event],
        found: trio.MemorySendChannel[Found],
        nursery: trio.Nursery,
    ) -> None:
        """Start one resolution per service name; coalesce events for a name in flight."""
        # name (lowercased) -> what happened to it while it was being resolved
        resolving: dict[str, _Meanwhile] = {}
        async for event in events:
            key = event.name.lower()
            if event.removed:
                self.services.forget(event.name)
                if key in resolving:
                    resolving[key] = _Meanwhile.GONE
            elif key in resolving:
                resolving[key] = _Meanwhile.CHANGED
            elif len(resolving) >= _MAX_RESOLVING:
                self.stats.dropped_events += 1
            else:
                resolving[key] = _Meanwhile.NOTHING
                nursery.start_soon(self._resolve, zc, event.name, resolving, found)

    async def _resolve(
        self,
        zc: Zeroconf,
        name: str,
        resolving: dict[str, _Meanwhile],
        found: trio.MemorySendChannel[Found],
    ) -> None:
        """Resolve `name` until no event for it came in meanwhile; report what is news."""
        key = name.lower()
        try:
            while True:
                resolving[key] = _Meanwhile.NOTHING
                result = await self._resolve_once(zc, name)
                meanwhile = resolving[key]
                if meanwhile is _Meanwhile.GONE:
                    return  # it said goodbye while we asked: what we got is stale
                if isinstance(result, Found):
                    if self.services.offer(name, result):
                        self.log.debug(
                            "mDNS: found a peer",
                            extra=kv(
                                peer=result.public_key.to_base64(),
                                addr=format_host_port(result.host, result.port),
                                service=name[:100],
                            ),
                        )
                        await found.send(result)
                elif result is not None:
                    # No longer valid: forget it, so it is reported again once it is valid.
                    self.services.forget(name)
                if result is not None:
                    # Counted last, so whoever sees the count move also sees what was sent.
                    self.stats.resolutions += 1
                if meanwhile is _Meanwhile.NOTHING:
                    return
        finally:
            del resolving[key]

    async def _resolve_once(self, zc: Zeroconf, name: str) -> Found | str | None:
        """Ask zeroconf for `name`'s records: a `Found`, the reason it is unusable, or None
        if its records did not all arrive in time."""
        reason = _check_name(name)
        if reason is not None:
            self._ignore(name, reason)
            return reason
        loop = zc.loop
        if loop is None:
            return None
        try:
            info = ServiceInfo(SERVICE_TYPE, name)
            complete = await _wait_future(
                asyncio.run_coroutine_threadsafe(info.async_request(zc, _RESOLVE_TIMEOUT_MS), loop)
            )
        except (ZeroconfError, concurrent.futures.CancelledError) as exc:
            complete = False
            self.log.debug("mDNS: resolving failed", extra=kv(service=name[:100], reason=repr(exc)))
        if not complete:
            self.stats.unresolved_services += 1
            self.log.debug("mDNS: no complete answer", extra=kv(service=name[:100]))
            return None
        try:
            properties, addresses, port = info.properties, info.parsed_addresses(), info.port
        except (ValueError, TypeError, OSError) as exc:  # zeroconf decoding hostile records
            reason = f"unreadable records ({exc!r})"
            self._ignore(name, reason)
            return reason
        result = _check_service(name, properties, addresses, port, self.public_key)
        if isinstance(result, str) and result != _OWN_SERVICE:
            self._ignore(name, result)
        return result

    def _ignore(self, name: str, reason: str) -> None:
        self.stats.ignored_services += 1
        self.log.debug("mDNS: ignoring a service", extra=kv(service=name[:100], reason=reason))
