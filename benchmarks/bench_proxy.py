"""The cache proxy (issue 10): cached narinfo answers per second, and NAR streaming beside the
same bytes served from the same upstream with no re-hashing, in the same run.

    .venv/bin/python benchmarks/bench_proxy.py [--nar-mib 256] [--requests 5000]

The proxy runs in this process on hypercorn (trio) over loopback with a decision that is
already cached (the light client's work is bench_client.py's); the upstream is a `file://`
cache holding one uncompressed NAR.  The baseline is a plain ASGI app on the same server
streaming the same file in the same chunks.  Clients: httpx, 32 requests at a time for the
narinfos, one stream at a time for the NARs.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from trustix_p2p.core import nix32
from trustix_p2p.core.decision import Decision
from trustix_p2p.core.entry import Entry
from trustix_p2p.core.narinfo import NarInfo, NixSigningKey, render_narinfo
from trustix_p2p.proxy.app import CacheProxy
from trustix_p2p.proxy.serve import serve_proxy

CHUNK = 1 << 16


def make_cache(root: Path, size: int) -> tuple[str, bytes, Path]:
    """A file:// cache with one path whose (uncompressed) NAR is `size` random bytes."""
    nar = os.urandom(size)
    (root / "nar").mkdir(parents=True)
    (root / "nix-cache-info").write_text("StoreDir: /nix/store\n")
    digest = hashlib.sha256(nar).digest()
    file = root / "nar" / f"{nix32.encode(digest)}.nar"
    file.write_bytes(nar)
    hash_part = nix32.encode(hashlib.sha256(b"bench path").digest()[:20])
    store_path = f"/nix/store/{hash_part}-bench"
    info = NarInfo(
        store_path=store_path,
        url=f"nar/{file.name}",
        compression="none",
        nar_hash=digest,
        nar_size=size,
        file_hash=digest,
        file_size=size,
    )
    (root / f"{hash_part}.narinfo").write_text(render_narinfo(info))
    return store_path, nar, file


LOADER = r"""
import socket, sys, threading, time
host, port, path, total = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
request = f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode()
per = total // 8
def run():
    s = socket.create_connection((host, port))
    buf = b""
    for _ in range(per):
        s.sendall(request)
        while b"\r\n\r\n" not in buf:
            buf += s.recv(65536)
        head, _, buf = buf.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), head[:60]
        length = int(next(l.split(b":")[1] for l in head.split(b"\r\n")
                          if l.lower().startswith(b"content-length")))
        while len(buf) < length:
            buf += s.recv(65536)
        buf = buf[length:]
    s.close()
threads = [threading.Thread(target=run) for _ in range(8)]
t0 = time.perf_counter()
for t in threads: t.start()
for t in threads: t.join()
print(per * 8 / (time.perf_counter() - t0))
"""


def load(url: str, path: str, requests: int) -> float:
    """Requests per second a separate process gets for `path` over 8 keep-alive connections
    (a load generator in this process would measure httpx's connection pool, not the proxy)."""
    import subprocess

    host, port = url.removeprefix("http://").rsplit(":", 1)
    out = subprocess.run(
        [sys.executable, "-c", LOADER, host, port, path, str(requests)],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(out.stdout)


def plain_file_app(file: Path) -> Any:
    """The baseline: stream the file as it is, no hashing, no checks."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        size = file.stat().st_size
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", str(size).encode())],
            }
        )
        async with await trio.open_file(file, "rb") as fh:
            while chunk := await fh.read(CHUNK):
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    return app


async def stream(client: httpx.AsyncClient, url: str) -> tuple[int, float]:
    t0 = time.perf_counter()
    got = 0
    async with client.stream("GET", url) as response:
        response.raise_for_status()
        async for chunk in response.aiter_raw():
            got += len(chunk)
    return got, time.perf_counter() - t0


async def run(nar_mib: int, requests: int) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-proxy-") as tmp:
        store_path, nar, file = make_cache(Path(tmp) / "cache", nar_mib << 20)
        entry = Entry(store_path, hashlib.sha256(nar).digest(), len(nar), (), "", "out", 0)
        decision = Decision(store_path, True, entry.nar_hash, entry, ("a", "b"), (), (), (), ())

        async def decide(path: str) -> Decision:
            return decision

        key = NixSigningKey.from_seed("bench-1", bytes(32))
        proxy = CacheProxy(decide, [f"file://{Path(tmp) / 'cache'}"], key, decision_ttl=3600)
        hash_part = store_path.split("/")[-1][:32]
        async with trio.open_nursery() as nursery:
            url = await nursery.start(serve_proxy, proxy, "127.0.0.1:0")
            base = await nursery.start(serve_proxy, plain_file_app(file), "127.0.0.1:0")
            limits = httpx.Limits(max_connections=32, max_keepalive_connections=32)
            async with httpx.AsyncClient(base_url=url, trust_env=False, limits=limits) as client:
                first = await client.get(f"/{hash_part}.narinfo")
                assert first.status_code == 200, first.text
                nar_url = next(
                    line.split(": ", 1)[1]
                    for line in first.text.splitlines()
                    if line.startswith("URL: ")
                )
                rate = await trio.to_thread.run_sync(load, url, f"/{hash_part}.narinfo", requests)
                print(
                    f"cached narinfo answers: {rate:,.0f}/s over {requests:,} requests "
                    f"(8 keep-alive connections from another process)"
                )
                results = {}
                async with httpx.AsyncClient(trust_env=False, timeout=300) as plain:
                    for label, target in (
                        ("baseline", f"{base}/x.nar"),
                        ("proxy", f"{url}/{nar_url}"),
                    ):
                        best = 0.0
                        for _ in range(3):
                            got, seconds = await stream(plain, target)
                            assert got == len(nar), (label, got)
                            best = max(best, got / seconds / 2**20)
                        results[label] = best
                print(
                    f"NAR stream of {nar_mib} MiB: proxy (decompress none, re-hash, verify) "
                    f"{results['proxy']:,.0f} MiB/s; the same file served plainly by the same "
                    f"server {results['baseline']:,.0f} MiB/s = "
                    f"{results['proxy'] / results['baseline']:.2f}x (target >= 0.5x)"
                )
            nursery.cancel_scope.cancel()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nar-mib", type=int, default=256)
    parser.add_argument("--requests", type=int, default=5000)
    args = parser.parse_args()
    trio.run(run, args.nar_mib, args.requests)
    return 0


if __name__ == "__main__":
    sys.exit(main())
