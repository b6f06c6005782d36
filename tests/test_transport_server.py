"""serve_noise over real loopback TCP, connect(), addresses, and the `ping` command."""

from __future__ import annotations

import hashlib
import json
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from trustix_p2p import cli
from trustix_p2p.core import wire
from trustix_p2p.core.keys import PrivateKey
from trustix_p2p.errors import ConfigError, DecodeError, RemoteProtocolError
from trustix_p2p.keyfile import generate_key_file
from trustix_p2p.transport import (
    Connection,
    PeerAddress,
    PeerUnreachableError,
    TransportLimits,
    connect,
    open_connection,
    parse_listen_address,
    parse_peer_address,
    ping,
    serve_noise,
)
from trustix_p2p.transport.server import answer_pings


def key(name: str) -> PrivateKey:
    return PrivateKey.from_seed(hashlib.sha256(b"server test " + name.encode()).digest())


SERVER, CLIENT, OTHER = key("server"), key("client"), key("other")


@asynccontextmanager
async def running_server(
    handler: Callable[[Connection], Awaitable[None]] = answer_pings,
    limits: TransportLimits | None = None,
    listen: tuple[str, ...] = ("127.0.0.1:0",),
) -> AsyncIterator[list[str]]:
    async with trio.open_nursery() as nursery:
        bound = await nursery.start(
            lambda task_status: serve_noise(
                list(listen), SERVER, handler, limits=limits, task_status=task_status
            )
        )
        yield bound
        nursery.cancel_scope.cancel()


def pinned(address: str, who: PrivateKey = SERVER) -> str:
    return f"{who.public_key.to_base64()}@{address}"


async def raw_connect(address: str) -> trio.SocketStream:
    host, port = parse_listen_address(address)
    return await trio.open_tcp_stream(host, port)


async def wait_closed(stream: trio.SocketStream) -> bytes:
    """Read until the server closes the connection; returns what it sent."""
    got = bytearray()
    with trio.fail_after(10):
        while True:
            try:
                data = await stream.receive_some()
            except trio.BrokenResourceError:
                break
            if not data:
                break
            got += data
    return bytes(got)


# ---- the happy path ---------------------------------------------------------------------------


async def test_ping_over_tcp_with_pinned_key() -> None:
    async with running_server() as bound:
        connection = await connect(pinned(bound[0]), CLIENT)
        async with connection:
            assert connection.peer_key == SERVER.public_key
            assert await ping(connection, 7) >= 0
            assert await ping(connection, 8) >= 0


async def test_ping_over_ipv6_loopback() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        probe = socket.socket(socket.AF_INET6)
        probe.bind(("::1", 0))
        probe.close()
    except OSError:
        pytest.skip("no IPv6 loopback")
    async with running_server(listen=("[::1]:0",)) as bound:
        assert bound[0].startswith("[::1]:")
        async with open_connection(pinned(bound[0]), CLIENT) as connection:
            assert await ping(connection, 1) >= 0


async def test_unpinned_connect_learns_the_key() -> None:
    async with running_server() as bound, open_connection(bound[0], CLIENT) as connection:
        assert connection.peer_key == SERVER.public_key


async def test_default_handler_answers_other_messages_with_error() -> None:
    async with running_server() as bound, open_connection(bound[0], CLIENT) as connection:
        await connection.send_message(wire.Pong(1))
        assert await connection.receive_message() == wire.Error("unexpected Pong")
        assert await ping(connection, 2) >= 0


# ---- refusals ---------------------------------------------------------------------------------


async def test_wrong_pinned_key_is_refused() -> None:
    async with running_server() as bound:
        with pytest.raises(RemoteProtocolError, match="expected pinned key"):
            await connect(pinned(bound[0], OTHER), CLIENT)


async def test_unreachable_peer_is_a_clear_error() -> None:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens there now
    with pytest.raises(PeerUnreachableError, match="cannot connect"):
        await connect(f"127.0.0.1:{port}", CLIENT)


async def test_garbage_closes_that_connection_and_others_keep_working() -> None:
    async with running_server() as bound, open_connection(bound[0], CLIENT) as good:
        assert await ping(good, 1) >= 0
        bad = await raw_connect(bound[0])
        await bad.send_all(b"\x00\x20" + bytes(32))  # low-order ephemeral key
        assert await wait_closed(bad) == b""
        junk = await raw_connect(bound[0])
        await junk.send_all(b"\x00\x03abc")
        assert await wait_closed(junk) == b""
        assert await ping(good, 2) >= 0


async def test_silent_client_is_dropped_after_the_handshake_timeout() -> None:
    limits = TransportLimits(handshake_timeout=0.2)
    async with running_server(limits=limits) as bound:
        # Taken before connecting: the server's timer starts at accept, which may come well
        # before connect() returns on a loaded machine.
        start = trio.current_time()
        silent = await raw_connect(bound[0])
        assert await wait_closed(silent) == b""
        assert trio.current_time() - start >= 0.2


async def test_idle_connection_is_closed_after_the_idle_timeout() -> None:
    limits = TransportLimits(idle_timeout=0.3)
    async with running_server(limits=limits) as bound:
        connection = await connect(bound[0], CLIENT)
        start = trio.current_time()
        with trio.fail_after(10):
            reply = await connection.receive_message()
        assert trio.current_time() - start >= 0.3
        assert reply == wire.Error("peer sent nothing for 0.3 s")
        assert await connection.receive_message() is None
        await connection.aclose()


async def test_malformed_message_gets_an_error_and_a_close() -> None:
    async with running_server() as bound:
        connection = await connect(bound[0], CLIENT)
        await connection.stream.send_all(b"\x00\x00\x00\x02\x91\x63")  # [99]
        assert await connection.receive_message() == wire.Error("unknown message type 99")
        assert await connection.receive_message() is None
        await connection.aclose()


async def test_oversized_message_is_refused_before_it_is_read() -> None:
    limits = TransportLimits(max_message_size=1000)
    async with running_server(limits=limits) as bound:
        connection = await connect(bound[0], CLIENT)
        await connection.stream.send_all(b"\x7f\xff\xff\xff")
        reply = await connection.receive_message()
        assert reply == wire.Error("message of 2147483647 bytes is above the 1000-byte limit")
        await connection.aclose()


async def test_connection_limit_refuses_excess_connections() -> None:
    limits = TransportLimits(max_connections=1)
    async with running_server(limits=limits) as bound:
        async with open_connection(bound[0], CLIENT) as first:
            with pytest.raises(PeerUnreachableError, match="during the handshake"):
                await connect(bound[0], OTHER)
            assert await ping(first, 1) >= 0
        # Once the first is gone, a new one is accepted again.
        with trio.fail_after(10):
            while True:
                try:
                    async with open_connection(bound[0], OTHER) as second:
                        assert await ping(second, 2) >= 0
                    break
                except PeerUnreachableError:
                    await trio.sleep(0.01)  # the server has not yet seen the first close


async def test_handler_bug_is_logged_and_the_server_keeps_serving(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def buggy(connection: Connection) -> None:
        message = await connection.receive_message()
        if isinstance(message, wire.Ping) and message.nonce == 13:
            raise ZeroDivisionError("handler bug")
        await answer_pings(connection)

    with caplog.at_level(logging.ERROR, logger="trustix_p2p.transport.server"):
        async with running_server(buggy) as bound:
            victim = await connect(bound[0], CLIENT)
            await victim.send_message(wire.Ping(13))
            with trio.fail_after(10):
                assert await victim.receive_message() is None
            await victim.aclose()
            async with open_connection(bound[0], CLIENT) as fine:
                await fine.send_message(wire.Ping(0))  # consumed by the first receive
                assert await ping(fine, 1) >= 0
    assert "handler failed" in caplog.text
    assert "ZeroDivisionError: handler bug" in caplog.text


async def test_decode_error_from_a_handler_reaches_the_peer() -> None:
    async def strict(connection: Connection) -> None:
        await connection.receive_message()
        raise DecodeError("entry 3 is not canonical")

    async with running_server(strict) as bound:
        connection = await connect(bound[0], CLIENT)
        await connection.send_message(wire.Ping(1))
        assert await connection.receive_message() == wire.Error("entry 3 is not canonical")
        await connection.aclose()


async def test_bad_listen_address_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        await serve_noise(["nonsense"], SERVER)
    with pytest.raises(ConfigError):
        await serve_noise([], SERVER)


# ---- addresses --------------------------------------------------------------------------------

KEY_B64 = SERVER.public_key.to_base64()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:7946", PeerAddress("127.0.0.1", 7946)),
        ("node.example:1", PeerAddress("node.example", 1)),
        ("[::1]:7946", PeerAddress("::1", 7946)),
        ("[fe80::1]:65535", PeerAddress("fe80::1", 65535)),
        (f"{KEY_B64}@10.0.0.1:7946", PeerAddress("10.0.0.1", 7946, SERVER.public_key)),
        (f"{KEY_B64}@[::1]:9", PeerAddress("::1", 9, SERVER.public_key)),
    ],
)
def test_peer_addresses_parse_and_format_back(text: str, expected: PeerAddress) -> None:
    assert parse_peer_address(text) == expected
    assert str(expected) == text


@pytest.mark.parametrize(
    "text",
    [
        "127.0.0.1",
        "127.0.0.1:",
        "127.0.0.1:0",
        "127.0.0.1:65536",
        "127.0.0.1:+80",
        "127.0.0.1:８０",
        ":80",
        "::1:80",
        "[::1]80",
        "[::1:80",
        "[not-ipv6]:80",
        "not base64@127.0.0.1:80",
        f"{KEY_B64[:-2]}@127.0.0.1:80",
        "bad host:80",
    ],
)
def test_bad_peer_addresses_are_config_errors(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_peer_address(text)


def test_listen_addresses() -> None:
    assert parse_listen_address("0.0.0.0:0") == ("0.0.0.0", 0)
    assert parse_listen_address("[::]:7946") == ("::", 7946)
    with pytest.raises(ConfigError, match="must not carry a key"):
        parse_listen_address(f"{KEY_B64}@127.0.0.1:1")


# ---- the ping command -------------------------------------------------------------------------


async def test_ping_command_prints_peer_key_and_rtt(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    generate_key_file(tmp_path / "client.key")
    async with running_server() as bound:
        status = await trio.to_thread.run_sync(
            cli.main,
            ["ping", pinned(bound[0]), "--count", "3", "--key", str(tmp_path / "client.key")],
        )
    assert status == 0
    report = json.loads(capsys.readouterr().out)
    assert report["peer_key"] == SERVER.public_key.to_base64()
    assert report["log_id"] == SERVER.public_key.log_id_hex()
    assert len(report["rtt_ms"]) == 3
    assert report["rtt_ms_min"] <= report["rtt_ms_avg"]
    assert report["address"] == pinned(bound[0])


async def test_ping_command_reports_a_wrong_key_as_an_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    async with running_server() as bound:
        status = await trio.to_thread.run_sync(cli.main, ["ping", pinned(bound[0], OTHER)])
    assert status == 2
    assert "expected pinned key" in capsys.readouterr().err


async def test_invalid_message_from_our_handler_is_logged_as_a_bug(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def sends_garbage(connection: Connection) -> None:
        await connection.receive_message()
        await connection.send_message(wire.Pong(-1))  # violates Integer(0, 2**64 - 1)

    with caplog.at_level(logging.ERROR, logger="trustix_p2p.transport.server"):
        async with running_server(sends_garbage) as bound:
            connection = await connect(bound[0], CLIENT)
            await connection.send_message(wire.Ping(1))
            with trio.fail_after(10):
                assert await connection.receive_message() is None
            await connection.aclose()
    assert "local protocol error" in caplog.text
    assert "Pong.nonce: integer -1 outside" in caplog.text
