"""The Nix binary cache proxy: routes, trust, signatures, NAR streaming and abort-on-mismatch.

Most tests run the real app under hypercorn on 127.0.0.1:0 and talk to it with httpx, with a
fake `decide` (a dict from store path to `Decision`) and upstream caches laid out exactly as
`nix copy --to file://DIR` writes them (notes/nix-cache-protocol.md §5.7), served from disk
(`file://`) or over HTTP by a small static ASGI app.  The last test substitutes through the
proxy with the real `nix` client.
"""

from __future__ import annotations

import bz2
import hashlib
import json
import lzma
import os
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import trio
import trio.testing
import zstandard

from tests.nix import nix_env, require_nix
from tests.nodeproc import assert_one_line_error, cli
from trustix_p2p.commands.proxy import load_nix_key_file, write_nix_key_file
from trustix_p2p.core import nix32
from trustix_p2p.core.decision import Decision
from trustix_p2p.core.entry import Entry
from trustix_p2p.core.nar import NarRegular, serialise_tree
from trustix_p2p.core.narinfo import (
    NarInfo,
    NixPublicKey,
    NixSigningKey,
    fingerprint,
    parse_narinfo,
    render_narinfo,
)
from trustix_p2p.core.nix32 import parse_nar_hash
from trustix_p2p.errors import ConfigError, KeyFileError
from trustix_p2p.proxy import CacheProxy, nar_url, serve_proxy
from trustix_p2p.proxy.app import CHUNK_SIZE, HOLD_BACK_BYTES, SingleFlightCache, _decoder
from trustix_p2p.proxy.serve import parse_listen

KEY = NixSigningKey.from_seed("test-proxy-1", bytes(range(32)))
HASH_A = "a" * 31 + "0"
HASH_B = "b" * 31 + "1"
HASH_C = "c" * 31 + "2"
DEP = f"/nix/store/{'d' * 32}-dep"
DRV = f"/nix/store/{'9' * 32}-thing.drv"


def nar_of(contents: bytes) -> bytes:
    return b"".join(serialise_tree(NarRegular(contents)))


def path_of(hash_part: str, name: str = "thing") -> str:
    return f"/nix/store/{hash_part}-{name}"


def entry_for(store_path: str, nar: bytes, refs: Sequence[str] = (), deriver: str = "") -> Entry:
    return Entry(
        out_path=store_path,
        nar_hash=hashlib.sha256(nar).digest(),
        nar_size=len(nar),
        references=tuple(sorted(os.path.basename(r) for r in refs)),
        deriver=deriver,
        output_name="out",
        built_at=1_700_000_000,
    )


def trusted(entry: Entry) -> Decision:
    return Decision(entry.out_path, True, entry.nar_hash, entry, ("b1", "b2"), (), (), (), ())


def untrusted(store_path: str) -> Decision:
    return Decision(store_path, False, None, None, ("b1",), (), ("b2",), (), ())


COMPRESSORS: dict[str, tuple[str, Callable[[bytes], bytes]]] = {
    "none": (".nar", lambda data: data),
    "xz": (".nar.xz", lambda data: lzma.compress(data, lzma.FORMAT_XZ)),
    "bzip2": (".nar.bz2", bz2.compress),
    "zstd": (".nar.zst", lambda data: zstandard.ZstdCompressor().compress(data)),
}


def publish(
    cache: Path,
    store_path: str,
    nar: bytes,
    *,
    compression: str = "xz",
    served: bytes | None = None,
    narinfo_text: str | None = None,
) -> Path:
    """Lay out `store_path` in a cache as `nix copy` does; `served` replaces the NAR's bytes
    (before compression) while the narinfo keeps describing `nar`.  Returns the NAR file."""
    (cache / "nar").mkdir(parents=True, exist_ok=True)
    (cache / "nix-cache-info").write_text("StoreDir: /nix/store\n")
    suffix, compress = COMPRESSORS[compression]
    data = compress(nar if served is None else served)
    file = cache / "nar" / f"{nix32.encode(hashlib.sha256(data).digest())}{suffix}"
    file.write_bytes(data)
    info = NarInfo(
        store_path=store_path,
        url=f"nar/{file.name}",
        compression=compression,
        nar_hash=hashlib.sha256(nar).digest(),
        nar_size=len(nar),
        file_hash=hashlib.sha256(data).digest(),
        file_size=len(data),
    )
    hash_part = os.path.basename(store_path)[:32]
    text = render_narinfo(info) if narinfo_text is None else narinfo_text
    (cache / f"{hash_part}.narinfo").write_text(text)
    return file


class FakeDecide:
    """`decide` from a dict; counts its calls and can be made slow or failing."""

    def __init__(self, decisions: Mapping[str, Decision], delay: float = 0.0) -> None:
        self.decisions = dict(decisions)
        self.delay = delay
        self.calls: list[str] = []
        self.fail = False

    async def __call__(self, store_path: str) -> Decision:
        self.calls.append(store_path)
        await trio.sleep(self.delay)
        if self.fail:
            raise RuntimeError("node unavailable")
        return self.decisions.get(store_path, untrusted(store_path))


@asynccontextmanager
async def running(app: Any) -> AsyncIterator[str]:
    """Serve an ASGI app on 127.0.0.1:0 for the duration; yields its base URL."""
    async with trio.open_nursery() as nursery:
        url: str = await nursery.start(serve_proxy, app, "127.0.0.1:0")
        try:
            yield url
        finally:
            nursery.cancel_scope.cancel()


@asynccontextmanager
async def proxy_for(
    decide: FakeDecide, upstreams: Sequence[str], **kw: Any
) -> AsyncIterator[tuple[CacheProxy, httpx.AsyncClient]]:
    proxy = CacheProxy(decide, upstreams, KEY, **kw)
    async with running(proxy) as url, httpx.AsyncClient(base_url=url, trust_env=False) as client:
        yield proxy, client


async def lifespan(receive: Any, send: Any) -> None:
    """The ASGI lifespan protocol for the test apps (hypercorn needs an answer)."""
    while True:
        message = await receive()
        await send({"type": message["type"] + ".complete"})
        if message["type"] == "lifespan.shutdown":
            return


@attrs.define(eq=False)
class StaticCache:
    """An ASGI app serving a directory like a static HTTP binary cache; records requests."""

    root: Path
    requests: list[str] = attrs.Factory(list)
    status: int | None = None  # answer every request with this status instead

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
            return
        self.requests.append(scope["path"])
        file = self.root / scope["path"].lstrip("/")
        if self.status is not None or ".." in scope["path"] or not file.is_file():
            status, body = self.status or 404, b"no\n"
        else:
            status, body = 200, file.read_bytes()
        headers = [(b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


async def fetch_nar(client: httpx.AsyncClient, url: str) -> tuple[bytes, BaseException | None]:
    """GET a NAR, returning what arrived and the error that ended the transfer, if any."""
    received = bytearray()
    try:
        async with client.stream("GET", url) as response:
            assert response.status_code == 200
            async for chunk in response.aiter_raw():
                received += chunk
    except httpx.HTTPError as exc:
        return bytes(received), exc
    return bytes(received), None


# --- nix-cache-info and routing ----------------------------------------------------------


async def test_nix_cache_info_is_always_200_and_the_server_is_read_only(tmp_path: Path) -> None:
    async with proxy_for(FakeDecide({}), ["http://127.0.0.1:9"], priority=30) as (proxy, client):
        response = await client.get("/nix-cache-info")
        assert response.status_code == 200
        assert response.text == "StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 30\n"
        head = await client.head("/nix-cache-info")
        assert head.status_code == 200 and head.content == b""
        assert head.headers["content-length"] == str(len(response.content))
        put = await client.put("/nix-cache-info", content=b"StoreDir: /nix/store\n")
        assert put.status_code == 405 and put.headers["allow"] == "GET, HEAD"
        assert (await client.put(f"/{HASH_A}.narinfo", content=b"x")).status_code == 405
        assert (await client.post("/nar/x.nar")).status_code == 405
    assert proxy.stats.requests[("nix-cache-info", 200)] == 2
    assert proxy.stats.requests[("nix-cache-info", 405)] == 1


async def test_bad_hash_parts_and_unknown_or_long_paths_are_404_before_any_work(
    tmp_path: Path,
) -> None:
    decide = FakeDecide({})
    static = StaticCache(tmp_path)
    async with running(static) as upstream, proxy_for(decide, [upstream]) as (proxy, client):
        for path in [
            "/" + "e" * 32 + ".narinfo",  # 'e' is not a nix32 digit
            "/" + "a" * 31 + ".narinfo",
            "/" + "a" * 33 + ".narinfo",
            f"/{HASH_A}.narinfo/",
            f"/nar/{HASH_A}-{'z' * 52}.nar",  # sets bits beyond 32 bytes
            f"/nar/{HASH_A}.nar",
            "/" + "a" * 600,
            "/nar/%2e%2e/nix-cache-info",
            "/",
        ]:
            assert (await client.get(path)).status_code == 404, path
    assert static.requests == [] and decide.calls == []
    assert proxy.stats.requests[("other", 404)] >= 7


# --- narinfo -----------------------------------------------------------------------------


async def test_narinfo_is_404_unless_trusted_and_built_from_the_decided_entry(
    tmp_path: Path,
) -> None:
    nar_a, nar_b = nar_of(b"a" * 100), nar_of(b"b")
    path_a, path_b = path_of(HASH_A), path_of(HASH_B)
    entry = entry_for(path_a, nar_a, refs=[DEP, path_a], deriver=DRV)
    publish(tmp_path, path_a, nar_a)
    publish(tmp_path, path_b, nar_b)
    decide = FakeDecide({path_a: trusted(entry)})
    async with proxy_for(decide, [tmp_path.as_uri()]) as (proxy, client):
        assert (await client.get(f"/{HASH_B}.narinfo")).status_code == 404
        assert (await client.head(f"/{HASH_B}.narinfo")).status_code == 404
        assert (await client.get(f"/{HASH_C}.narinfo")).status_code == 404  # unknown upstream
        response = await client.get(f"/{HASH_A}.narinfo")
        head = await client.head(f"/{HASH_A}.narinfo")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/x-nix-narinfo"
    lines = response.text.split("\n")
    assert lines[-1] == "" and lines[-2].startswith("Sig: test-proxy-1:")
    sig = lines[-2].removeprefix("Sig: ")
    nar_hash = nix32.encode(entry.nar_hash)
    assert lines[:-2] == [
        f"StorePath: {path_a}",
        f"URL: nar/{HASH_A}-{nar_hash}.nar",
        "Compression: none",
        f"NarHash: sha256:{nar_hash}",
        f"NarSize: {len(nar_a)}",
        f"References: {os.path.basename(path_a)} {os.path.basename(DEP)}",
        f"Deriver: {os.path.basename(DRV)}",
    ]
    # Nix's fingerprint: full reference paths, sorted, comma-joined (notes §5.6).
    refs = ",".join(sorted([path_a, DEP]))
    message = f"1;{path_a};sha256:{nar_hash};{len(nar_a)};{refs}".encode()
    assert message == fingerprint(path_a, entry.nar_hash, entry.nar_size, entry.references)
    NixPublicKey.parse(str(KEY.public)).verify(message, sig)
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == str(len(response.content))
    assert decide.calls.count(path_a) == 1  # the HEAD was answered from the cached decision
    assert decide.calls.count(path_b) == 1 and path_of(HASH_C) not in decide.calls
    assert proxy.stats.requests[("narinfo", 404)] == 3


async def test_a_path_without_references_or_deriver_keeps_nix_empty_references_line(
    tmp_path: Path,
) -> None:
    nar = nar_of(b"x")
    entry = entry_for(path_of(HASH_A), nar)
    publish(tmp_path, entry.out_path, nar)
    async with proxy_for(FakeDecide({entry.out_path: trusted(entry)}), [tmp_path.as_uri()]) as (
        _,
        client,
    ):
        text = (await client.get(f"/{HASH_A}.narinfo")).text
    assert "\nReferences: \n" in text and "Deriver" not in text
    info = parse_narinfo(text)
    KEY.public.verify(info.fingerprint(), info.sigs[0])


async def test_the_narinfo_never_repeats_the_upstreams_fields(tmp_path: Path) -> None:
    # The upstream claims other references, deriver and size; only the entry counts.  And an
    # upstream that offers a different NAR hash than the decided one offers nothing.
    nar = nar_of(b"real")
    path = path_of(HASH_A)
    entry = entry_for(path, nar, refs=[DEP])
    lying = render_narinfo(
        NarInfo(
            path,
            "nar/x.nar",
            "none",
            entry.nar_hash,
            len(nar),
            ("0" * 32 + "-evil",),
            "1" * 32 + "-evil.drv",
        )
    )
    publish(tmp_path / "u1", path, nar, narinfo_text=lying)
    other = entry._replace(nar_hash=hashlib.sha256(b"other").digest())
    async with proxy_for(FakeDecide({path: trusted(entry)}), [(tmp_path / "u1").as_uri()]) as (
        _,
        client,
    ):
        info = parse_narinfo((await client.get(f"/{HASH_A}.narinfo")).text)
    assert info.references == (os.path.basename(DEP),) and info.deriver == ""
    async with proxy_for(FakeDecide({path: trusted(other)}), [(tmp_path / "u1").as_uri()]) as (
        _,
        client,
    ):
        assert (await client.get(f"/{HASH_A}.narinfo")).status_code == 404


async def _silent_server(task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
    """Accepts connections and never answers: an upstream that times out."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    task_status.started(listeners[0].socket.getsockname()[1])

    async def hang(stream: trio.SocketStream) -> None:
        await trio.sleep_forever()

    await trio.serve_listeners(hang, listeners)


async def test_broken_upstreams_give_404_never_5xx(tmp_path: Path) -> None:
    nar = nar_of(b"x")
    path = path_of(HASH_A)
    entry = entry_for(path, nar)
    garbage = tmp_path / "garbage"
    publish(garbage, path, nar, narinfo_text="this is not a narinfo\n")
    huge = tmp_path / "huge"
    padded = render_narinfo(NarInfo(path, "nar/x.nar", "none", entry.nar_hash, len(nar)))
    publish(huge, path, nar, narinfo_text=padded + "X: " + "y" * 70_000 + "\n")
    wrong = tmp_path / "wrong"  # names another path than the one asked for
    publish(wrong, path_of(HASH_B), nar)
    (wrong / f"{HASH_B}.narinfo").rename(wrong / f"{HASH_A}.narinfo")
    climbing = tmp_path / "climbing"
    publish(
        climbing,
        path,
        nar,
        narinfo_text=render_narinfo(
            NarInfo(path, "../../etc/passwd", "none", entry.nar_hash, len(nar))
        ),
    )
    decide = FakeDecide({path: trusted(entry)})
    status_500 = StaticCache(tmp_path, status=500)
    async with trio.open_nursery() as nursery:
        silent = await nursery.start(_silent_server)
        async with running(status_500) as url_500:
            for upstream in [
                "http://127.0.0.1:9",  # refused
                f"http://127.0.0.1:{silent}",  # times out
                url_500,
                garbage.as_uri(),
                huge.as_uri(),
                wrong.as_uri(),
                climbing.as_uri(),
                (tmp_path / "absent").as_uri(),
            ]:
                async with proxy_for(decide, [upstream], upstream_timeout=0.5) as (_, client):
                    response = await client.get(f"/{HASH_A}.narinfo")
                    assert response.status_code == 404, upstream
                    nar_path = f"/{nar_url(HASH_A, entry.nar_hash)}"
                    assert (await client.get(nar_path)).status_code == 404, upstream
        nursery.cancel_scope.cancel()
    assert decide.calls == []  # no upstream ever named the path


async def test_a_failing_decide_is_404_and_not_cached(tmp_path: Path) -> None:
    nar = nar_of(b"x")
    entry = entry_for(path_of(HASH_A), nar)
    publish(tmp_path, entry.out_path, nar)
    decide = FakeDecide({entry.out_path: trusted(entry)})
    decide.fail = True
    async with proxy_for(decide, [tmp_path.as_uri()]) as (proxy, client):
        assert (await client.get(f"/{HASH_A}.narinfo")).status_code == 404
        decide.fail = False
        assert (await client.get(f"/{HASH_A}.narinfo")).status_code == 200
    assert proxy.stats.decide_errors == 1 and len(decide.calls) == 2


async def test_concurrent_narinfo_requests_decide_and_look_up_once(tmp_path: Path) -> None:
    nar = nar_of(b"x")
    entry = entry_for(path_of(HASH_A), nar)
    publish(tmp_path, entry.out_path, nar)
    static = StaticCache(tmp_path)
    decide = FakeDecide({entry.out_path: trusted(entry)}, delay=0.2)
    statuses: list[int] = []
    async with running(static) as upstream, proxy_for(decide, [upstream]) as (_, client):

        async def one() -> None:
            statuses.append((await client.get(f"/{HASH_A}.narinfo")).status_code)

        async with trio.open_nursery() as nursery:
            for _ in range(20):
                nursery.start_soon(one)
    assert statuses == [200] * 20
    assert decide.calls == [entry.out_path]
    assert static.requests == [f"/{HASH_A}.narinfo"]


async def test_decisions_expire_after_the_ttl(tmp_path: Path) -> None:
    nar = nar_of(b"x")
    entry = entry_for(path_of(HASH_A), nar)
    publish(tmp_path, entry.out_path, nar)
    decide = FakeDecide({entry.out_path: trusted(entry)})
    now = [0.0]
    async with proxy_for(decide, [tmp_path.as_uri()], clock=lambda: now[0]) as (_, client):
        assert (await client.get(f"/{HASH_A}.narinfo")).status_code == 200
        now[0] = 9.9
        assert (await client.get(f"/{HASH_A}.narinfo")).status_code == 200
        assert len(decide.calls) == 1
        decide.decisions = {}  # the builders changed their minds
        now[0] = 10.1
        assert (await client.get(f"/{HASH_A}.narinfo")).status_code == 404
    assert len(decide.calls) == 2


async def test_single_flight_cache_hands_over_when_the_computing_task_is_cancelled() -> None:
    cache: SingleFlightCache[str, int] = SingleFlightCache(10.0, trio.current_time)
    calls: list[str] = []

    async def slow() -> int:
        calls.append("slow")
        await trio.sleep_forever()
        raise AssertionError

    async def fast() -> int:
        calls.append("fast")
        return 7

    results: list[int] = []
    async with trio.open_nursery() as nursery:
        leader = trio.CancelScope()

        async def lead() -> None:
            with leader:
                await cache.get("k", slow)

        async def wait() -> None:
            results.append(await cache.get("k", fast))

        nursery.start_soon(lead)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(wait)
        await trio.testing.wait_all_tasks_blocked()
        leader.cancel()
    assert results == [7] and calls == ["slow", "fast"]
    assert await cache.get("k", slow) == 7  # cached now


# --- NAR streaming -----------------------------------------------------------------------


@pytest.mark.parametrize("compression", ["none", "xz", "bzip2", "zstd"])
@pytest.mark.parametrize("transport", ["file", "http"])
async def test_nars_are_served_uncompressed_with_the_exact_bytes(
    tmp_path: Path, compression: str, transport: str
) -> None:
    # Larger than several chunks, and partly compressible, so decoders emit many pieces.
    nar = nar_of(os.urandom(150_000) + b"\0" * 300_000)
    entry = entry_for(path_of(HASH_A), nar)
    publish(tmp_path, entry.out_path, nar, compression=compression)
    decide = FakeDecide({entry.out_path: trusted(entry)})
    async with running(StaticCache(tmp_path)) as static:
        upstream = tmp_path.as_uri() if transport == "file" else static
        async with proxy_for(decide, [upstream]) as (proxy, client):
            info = parse_narinfo((await client.get(f"/{HASH_A}.narinfo")).text)
            assert info.url == nar_url(HASH_A, entry.nar_hash)
            response = await client.get(f"/{info.url}")
            head = await client.head(f"/{info.url}")
    assert response.status_code == 200 and response.content == nar
    assert response.headers["content-length"] == str(len(nar))
    assert response.headers["content-type"] == "application/x-nix-nar"
    assert head.status_code == 200 and head.headers["content-length"] == str(len(nar))
    assert proxy.stats.nars_served == 1 and proxy.stats.nar_bytes_served == len(nar)
    assert proxy.stats.nars_aborted == 0


async def test_a_nar_is_404_unless_trusted_with_the_hash_in_its_url(tmp_path: Path) -> None:
    nar_a, nar_b = nar_of(b"a"), nar_of(b"b")
    entry_a = entry_for(path_of(HASH_A), nar_a)
    entry_b = entry_for(path_of(HASH_B), nar_b)
    publish(tmp_path, entry_a.out_path, nar_a)
    publish(tmp_path, entry_b.out_path, nar_b)
    decide = FakeDecide({entry_a.out_path: trusted(entry_a)})
    async with proxy_for(decide, [tmp_path.as_uri()]) as (proxy, client):
        assert (await client.get(f"/{nar_url(HASH_A, entry_a.nar_hash)}")).content == nar_a
        assert (await client.get(f"/{nar_url(HASH_B, entry_b.nar_hash)}")).status_code == 404
        # The path is trusted, but with another NAR hash than the URL names.
        assert (await client.get(f"/{nar_url(HASH_A, entry_b.nar_hash)}")).status_code == 404
    assert proxy.stats.requests[("nar", 404)] == 2


def tampered(nar: bytes, how: str) -> bytes:
    if how == "flipped":
        middle = len(nar) // 2
        return nar[:middle] + bytes([nar[middle] ^ 1]) + nar[middle + 1 :]
    if how == "truncated":
        return nar[:-10]
    assert how == "longer"
    return nar + b"\0" * 8


@pytest.mark.parametrize(
    ("how", "reason"),
    [("flipped", "hash-mismatch"), ("truncated", "too-short"), ("longer", "too-long")],
)
@pytest.mark.parametrize("compression", ["none", "xz"])
async def test_a_tampered_nar_is_cut_off_before_its_last_chunk(
    tmp_path: Path, how: str, reason: str, compression: str
) -> None:
    # hold_back=0: only the newest chunk is held, so even this NAR streams before it is checked.
    nar = nar_of(os.urandom(300_000))
    entry = entry_for(path_of(HASH_A), nar)
    publish(tmp_path, entry.out_path, nar, compression=compression, served=tampered(nar, how))
    decide = FakeDecide({entry.out_path: trusted(entry)})
    async with proxy_for(decide, [tmp_path.as_uri()], hold_back=0) as (proxy, client):
        received, error = await fetch_nar(client, f"/{nar_url(HASH_A, entry.nar_hash)}")
        # The proxy stays healthy for the next request.
        assert (await client.get("/nix-cache-info")).status_code == 200
    assert isinstance(error, httpx.RemoteProtocolError), error
    assert len(received) < len(nar) and nar.startswith(received[: len(nar) // 2])
    assert len(received) >= len(nar) - 2 * CHUNK_SIZE  # streamed, not buffered
    assert proxy.stats.nars_aborted == 1 and proxy.stats.aborts == {reason: 1}
    assert proxy.stats.nar_bytes_served == len(received)
    assert proxy.stats.nars_served == 0 and proxy.stats.requests == {
        ("nar", 200): 1,
        ("nix-cache-info", 200): 1,
    }


async def test_the_default_hold_back_keeps_the_last_mebibyte_until_verified(
    tmp_path: Path,
) -> None:
    nar = nar_of(os.urandom(3 * HOLD_BACK_BYTES))
    entry = entry_for(path_of(HASH_A), nar)
    publish(tmp_path, entry.out_path, nar, compression="none", served=tampered(nar, "flipped"))
    decide = FakeDecide({entry.out_path: trusted(entry)})
    async with proxy_for(decide, [tmp_path.as_uri()]) as (proxy, client):
        received, error = await fetch_nar(client, f"/{nar_url(HASH_A, entry.nar_hash)}")
    assert isinstance(error, httpx.RemoteProtocolError), error
    held_back = len(nar) - len(received)
    assert HOLD_BACK_BYTES - CHUNK_SIZE < held_back <= HOLD_BACK_BYTES
    assert proxy.stats.aborts == {"hash-mismatch": 1}


async def test_a_small_tampered_nar_is_404_and_the_next_upstream_serves_it(
    tmp_path: Path,
) -> None:
    # A NAR within one chunk is checked whole before anything is sent: no abort is needed.
    nar = nar_of(b"small")
    entry = entry_for(path_of(HASH_A), nar)
    publish(tmp_path / "bad", entry.out_path, nar, served=tampered(nar, "flipped"))
    publish(tmp_path / "good", entry.out_path, nar, compression="zstd")
    decide = FakeDecide({entry.out_path: trusted(entry)})
    url = f"/{nar_url(HASH_A, entry.nar_hash)}"
    async with proxy_for(decide, [(tmp_path / "bad").as_uri()]) as (proxy, client):
        assert (await client.get(url)).status_code == 404
    assert proxy.stats.nars_aborted == 0
    assert proxy.stats.upstream_nar_failures == {"hash-mismatch": 1}
    upstreams = [(tmp_path / "bad").as_uri(), (tmp_path / "good").as_uri()]
    async with proxy_for(decide, upstreams) as (proxy, client):
        assert (await client.get(url)).content == nar
        assert (await client.get(url)).content == nar  # the bad upstream is now tried last
    assert proxy.stats.upstream_nar_failures == {"hash-mismatch": 1}
    assert proxy.stats.nars_served == 2


async def test_an_upstream_dying_mid_stream_aborts_the_transfer(tmp_path: Path) -> None:
    nar = nar_of(os.urandom(400_000))
    entry = entry_for(path_of(HASH_A), nar)

    async def dying(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
            return
        if scope["path"].endswith(".narinfo"):
            info = NarInfo(entry.out_path, "nar/x.nar", "none", entry.nar_hash, len(nar))
            body = render_narinfo(info).encode()
            headers = [(b"content-length", str(len(body)).encode())]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        headers = [(b"content-length", str(len(nar)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": nar[:200_000], "more_body": True})
        # ... and returns: hypercorn cuts the connection short.

    decide = FakeDecide({entry.out_path: trusted(entry)})
    async with (
        running(dying) as upstream,
        proxy_for(decide, [upstream], hold_back=0) as (
            proxy,
            client,
        ),
    ):
        received, error = await fetch_nar(client, f"/{nar_url(HASH_A, entry.nar_hash)}")
    assert isinstance(error, httpx.RemoteProtocolError)
    assert 0 < len(received) < 200_000
    assert proxy.stats.aborts == {"upstream-failed": 1}


async def test_the_compression_field_decides_and_unsupported_ones_fall_through(
    tmp_path: Path,
) -> None:
    nar = nar_of(os.urandom(1000))
    entry = entry_for(path_of(HASH_A), nar)
    # gzip (no suffix, notes §5.7) is not supported: that upstream is passed over, although
    # its file (really uncompressed, named .nar) would have passed had the suffix decided.
    publish(tmp_path / "gzip", entry.out_path, nar, compression="none")
    text = (tmp_path / "gzip" / f"{HASH_A}.narinfo").read_text()
    (tmp_path / "gzip" / f"{HASH_A}.narinfo").write_text(
        text.replace("Compression: none", "Compression: gzip")
    )
    # No Compression line at all: Nix's suffixes say xz (not the documented bzip2 default).
    publish(tmp_path / "bare", entry.out_path, nar, compression="xz")
    text = (tmp_path / "bare" / f"{HASH_A}.narinfo").read_text()
    (tmp_path / "bare" / f"{HASH_A}.narinfo").write_text(text.replace("Compression: xz\n", ""))
    decide = FakeDecide({entry.out_path: trusted(entry)})
    gzip_cache = StaticCache(tmp_path / "gzip")
    async with running(gzip_cache) as gzip_url:
        upstreams = [gzip_url, (tmp_path / "bare").as_uri()]
        async with proxy_for(decide, upstreams) as (proxy, client):
            info = parse_narinfo((await client.get(f"/{HASH_A}.narinfo")).text)
            assert (await client.get(f"/{info.url}")).content == nar
    assert gzip_cache.requests == [f"/{HASH_A}.narinfo"]
    assert proxy.stats.upstream_nar_failures == {}


async def test_a_client_that_goes_away_stops_the_upstream_transfer(tmp_path: Path) -> None:
    nar = nar_of(os.urandom(3 * HOLD_BACK_BYTES))
    entry = entry_for(path_of(HASH_A), nar)
    publish(tmp_path, entry.out_path, nar, compression="none")
    decide = FakeDecide({entry.out_path: trusted(entry)})
    async with proxy_for(decide, [tmp_path.as_uri()], hold_back=0) as (proxy, client):
        # A raw client that reads the start of the body, then hangs up.
        host, port = str(client.base_url.host), client.base_url.port
        assert port is not None
        stream = await trio.open_tcp_stream(host, port)
        request = f"GET /{nar_url(HASH_A, entry.nar_hash)} HTTP/1.1\r\nHost: x\r\n\r\n"
        await stream.send_all(request.encode())
        assert b"200" in await stream.receive_some(65536)
        await stream.aclose()
        with trio.fail_after(10):
            while proxy.stats.nars_interrupted == 0:
                await trio.sleep(0.01)
    assert proxy.stats.nars_served == 0 and proxy.stats.nars_aborted == 0
    assert proxy.stats.nar_bytes_served < len(nar)


def test_listen_addresses() -> None:
    assert parse_listen("127.0.0.1:0") == ("127.0.0.1", 0)
    assert parse_listen("[::1]:8080") == ("::1", 8080)
    for bad in ["127.0.0.1", ":80", "host:x", "host:70000"]:
        with pytest.raises(ConfigError, match="host:port"):
            parse_listen(bad)


def test_upstream_urls_are_checked_when_the_proxy_is_made() -> None:
    for bad in ["ftp://x/", "file://host/dir", "file:///dir?compression=none", "cache"]:
        with pytest.raises(ConfigError, match="upstream cache"):
            CacheProxy(FakeDecide({}), [bad], KEY)
    with pytest.raises(ConfigError, match="at least one"):
        CacheProxy(FakeDecide({}), [], KEY)


# --- Decoders ----------------------------------------------------------------------------


@pytest.mark.parametrize("compression", ["xz", "bzip2", "zstd"])
def test_decoders_bound_every_piece_whatever_the_ratio(compression: str) -> None:
    data = os.urandom(1000) + b"\0" * (20 * 1024 * 1024) + os.urandom(1000)
    compressed = COMPRESSORS[compression][1](data)
    assert len(compressed) < 200_000
    decoder = _decoder(compression)
    digest, size, biggest = hashlib.sha256(), 0, 0
    for start in range(0, len(compressed), 1000):
        for piece in decoder.feed(compressed[start : start + 1000]):
            digest.update(piece)
            size += len(piece)
            biggest = max(biggest, len(piece))
    for piece in decoder.finish():
        digest.update(piece)
        size += len(piece)
    assert size == len(data) and digest.digest() == hashlib.sha256(data).digest()
    assert biggest == CHUNK_SIZE


@pytest.mark.parametrize("compression", ["xz", "bzip2"])
def test_a_truncated_or_padded_compressed_stream_is_corrupt(compression: str) -> None:
    compressed = COMPRESSORS[compression][1](b"hello" * 1000)
    decoder = _decoder(compression)
    list(decoder.feed(compressed[:-5]))
    with pytest.raises(Exception, match="ends early"):
        list(decoder.finish())
    decoder = _decoder(compression)
    with pytest.raises(Exception, match="after the end"):
        list(decoder.feed(compressed + b"junk"))


# --- nix-keygen --------------------------------------------------------------------------


def test_nix_keygen_writes_a_private_nix_key_and_prints_its_public_half(tmp_path: Path) -> None:
    key_file = tmp_path / "proxy.key"
    proc = cli("nix-keygen", "my-proxy-1", str(key_file))
    assert proc.returncode == 0, proc.stderr
    public = NixPublicKey.parse(proc.stdout.strip())
    assert public.name == "my-proxy-1"
    assert key_file.stat().st_mode & 0o777 == 0o600
    text = key_file.read_text()
    assert not text.endswith("\n")  # as nix-store --generate-binary-cache-key writes it
    key = load_nix_key_file(key_file)
    assert key.public == public
    public.verify(b"m", key.sign(b"m"))
    again = cli("nix-keygen", "my-proxy-1", str(key_file))
    assert_one_line_error(again, "already exists")
    assert key_file.read_text() == text
    assert_one_line_error(cli("nix-keygen", "bad name", str(tmp_path / "k2")), "key name")
    key_file.chmod(0o644)
    with pytest.raises(KeyFileError, match="chmod 600"):
        load_nix_key_file(key_file)
    with pytest.raises(KeyFileError, match="already exists"):
        write_nix_key_file(key_file, KEY)


# --- Real Nix ----------------------------------------------------------------------------


async def run_nix(*args: str, env: dict[str, str]) -> trio.CompletedProcess[bytes]:
    """Run a Nix command without blocking the trio thread (the proxy serves it meanwhile)."""
    with trio.fail_after(60):
        return await trio.run_process(
            list(args), capture_stdout=True, capture_stderr=True, check=False, env=env
        )


def derivations(nonce: str) -> str:
    common = (
        f'system = builtins.currentSystem; builder = "/bin/sh"; PATH = "/usr/bin:/bin";'
        f' nonce = "{nonce}";'
    )
    return (
        "let\n"
        f'  dep = derivation {{ name = "proxy-dep"; {common} args = ["-c" "echo dep > $out"]; }};\n'
        f'  a = derivation {{ name = "proxy-a"; {common}'
        f' args = ["-c" "echo ${{dep}} > $out"]; }};\n'
        f'  b = derivation {{ name = "proxy-b"; {common} args = ["-c" "echo b > $out"]; }};\n'
        f'  big = derivation {{ name = "proxy-big"; {common}'
        ' args = ["-c" "head -c 3000000 /dev/urandom > $out"]; };\n'
        f'  small = derivation {{ name = "proxy-small"; {common}'
        ' args = ["-c" "echo small > $out"]; };\n'
        "in [ dep a b big small ]\n"
    )


def flip_middle_byte(file: Path) -> None:
    data = bytearray(file.read_bytes())
    data[len(data) // 2] ^= 0x01
    file.write_bytes(bytes(data))


@pytest.mark.nix
async def test_real_nix_substitutes_only_trusted_paths_and_rejects_tampered_nars(
    tmp_path: Path,
) -> None:
    require_nix()
    env = nix_env() | {"XDG_CACHE_HOME": str(tmp_path / "xdg-cache")}
    nonce = uuid.uuid4().hex
    built = await run_nix("nix-build", "--no-out-link", "-E", derivations(nonce), env=env)
    assert built.returncode == 0, built.stderr.decode()
    dep, a, b, big, small = built.stdout.decode().split()
    assert a.endswith("-proxy-a") and big.endswith("-proxy-big")
    xz_cache, raw_cache = tmp_path / "xz-cache", tmp_path / "raw-cache"
    for cache, paths in [(xz_cache, [dep, a, b]), (f"{raw_cache}?compression=none", [big, small])]:
        copied = await run_nix(
            "nix",
            "copy",
            "--to",
            f"file://{cache}",
            "--option",
            "substituters",
            "",
            *paths,
            env=env,
        )
        assert copied.returncode == 0, copied.stderr.decode()
    assert list((xz_cache / "nar").glob("*.nar.xz"))
    raw_nars = sorted((raw_cache / "nar").glob("*.nar"))
    assert len(raw_nars) == 2
    for nar_file in raw_nars:
        flip_middle_byte(nar_file)  # both big's and small's NARs are now wrong

    info = await run_nix("nix", "path-info", "--json", dep, a, b, big, small, env=env)
    assert info.returncode == 0, info.stderr.decode()
    decisions = {}
    for obj in json.loads(info.stdout):
        entry = Entry(
            out_path=obj["path"],
            nar_hash=parse_nar_hash(obj["narHash"]),
            nar_size=obj["narSize"],
            references=tuple(sorted(os.path.basename(r) for r in obj.get("references", []))),
            deriver=obj.get("deriver", ""),
            output_name="out",
            built_at=0,
        )
        decisions[entry.out_path] = trusted(entry)
    assert decisions[a].entry is not None
    assert decisions[a].entry.references == (os.path.basename(dep),)
    del decisions[b]  # b is not trusted
    decide = FakeDecide(decisions)

    key_file = tmp_path / "proxy.key"
    keygen = cli("nix-keygen", "trustix-proxy-test", str(key_file))
    assert keygen.returncode == 0, keygen.stderr
    late_cache = tmp_path / "late-cache"  # gets a good copy of big later
    late_cache.mkdir()
    upstreams = [xz_cache.as_uri(), raw_cache.as_uri(), late_cache.as_uri()]
    proxy = CacheProxy(decide, upstreams, load_nix_key_file(key_file), decision_ttl=0)
    fresh = tmp_path / "fresh"
    async with running(proxy) as url:
        options = [
            "--option",
            "substituters",
            url,
            "--option",
            "trusted-public-keys",
            keygen.stdout.strip(),
            "--option",
            "require-sigs",
            "true",
            "--option",
            "narinfo-cache-negative-ttl",
            "0",
        ]

        async def realise(path: str) -> trio.CompletedProcess[bytes]:
            return await run_nix("nix-store", "--store", str(fresh), "-r", path, *options, env=env)

        ok = await realise(a)
        assert ok.returncode == 0, ok.stderr.decode()
        refused = await realise(b)
        tampered_big = await realise(big)
        tampered_small = await realise(small)
        invalid = await run_nix(
            "nix-store", "--store", str(fresh), "--check-validity", "--print-invalid", big, small,
            env=env,
        )  # fmt: skip
        assert invalid.stdout.decode().split() == [big, small], invalid.stderr.decode()
        # Once an upstream has the right bytes, the proxy serves them (the upstream that
        # failed is tried last) and Nix replaces what the failed attempt left.
        copied = await run_nix(
            "nix", "copy", "--to", f"file://{late_cache}", "--option", "substituters", "", big,
            env=env,
        )  # fmt: skip
        assert copied.returncode == 0, copied.stderr.decode()
        repaired = await realise(big)
        assert repaired.returncode == 0, repaired.stderr.decode()

    valid = await run_nix(
        "nix-store", "--store", str(fresh), "--check-validity", "--print-invalid",
        dep, a, b, big, small, env=env,
    )  # fmt: skip
    assert valid.returncode == 0, valid.stderr.decode()
    assert valid.stdout.decode().split() == [b, small]
    assert (fresh / a.lstrip("/")).read_text() == f"{dep}\n"
    assert (fresh / big.lstrip("/")).read_bytes() == Path(big).read_bytes()
    assert refused.returncode != 0
    assert "don't know how to build" in refused.stderr.decode()
    # big's NAR was cut off mid-transfer (after its first 2 MiB), which curl reports.  Nix 2.8
    # writes a NAR into its final location as it arrives and leaves what it got when a
    # transfer fails: an unregistered partial file (as after any failed substitution), which
    # it deleted before the next attempt above.
    assert tampered_big.returncode != 0
    assert "Transferred a partial file" in tampered_big.stderr.decode()
    # small's NAR was checked whole before a byte went out: a 404, and nothing was written.
    assert tampered_small.returncode != 0
    assert "does not exist in binary cache" in tampered_small.stderr.decode()
    assert not (fresh / small.lstrip("/")).exists()
    assert proxy.stats.nars_aborted == 1 and proxy.stats.aborts == {"hash-mismatch": 1}
    assert proxy.stats.upstream_nar_failures == {"hash-mismatch": 2}
    # b: asked (more than once: the negative TTL is 0 here), decided, refused.
    assert proxy.stats.requests[("narinfo", 404)] >= 1 and b in decide.calls
    assert proxy.stats.nars_served == 3  # dep, a, and big from the late cache
