"""The local Nix binary cache proxy: an ASGI app that answers only for trusted store paths.

Nix asks a binary cache three things (notes/nix-cache-protocol.md §5.2): `GET /nix-cache-info`,
`GET|HEAD /<hash part>.narinfo` and `GET /<narinfo URL>`.  This proxy answers them so that
Nix substitutes a path only when the light client's M-of-N decision trusts it, and only with
the bytes the builders agreed on:

- `/nix-cache-info` is always 200.  A 404 there makes Nix PUT one and, refused, silently drop
  the cache (§5.3), so nothing may ever make it fail.
- `/<hash part>.narinfo`: a hash part names no path by itself, so the proxy asks the upstream
  caches (in order) for their narinfo and takes its `StorePath`, then calls `decide(path)`.
  Unless the decision is trusted the answer is 404: fast, and cached an hour by Nix (§5.4);
  "not trusted", "unknown", "upstream down" and "upstream timed out" are all 404, never 5xx,
  because a 5xx makes Nix retry for seconds and then fail the whole build.  When trusted, the
  narinfo is rendered from the *decided entry* (never from an upstream's fields) and signed
  with the proxy's own Nix key, which the user lists in `trusted-public-keys`.  It is served
  only if some upstream offers a NAR with the decided hash: a narinfo is a promise that the
  NAR can be fetched, and a broken promise fails the build instead of letting Nix build or
  try another substituter.
- `/nar/<hash part>-<nix32 NAR hash>.nar` (the URL scheme this proxy writes into its
  narinfos; always `Compression: none`): the path is decided again (cached) and the NAR is
  streamed from an upstream that offers the decided hash, decompressed (none, xz, bzip2,
  zstd: the upstream's `Compression` field decides, not the URL's extension, §5.8), hashed
  and counted on the fly, and served uncompressed with `Content-Length: <decided size>`.

Abort on mismatch.  The decided hash covers the whole NAR, so the proxy can only know the
bytes are right once it has seen all of them, and by then the client must not hold them all
yet: the proxy always holds back the newest bytes (at least the last chunk, up to
`hold_back`, 1 MiB by default).  Held bytes are released only as newer ones arrive while the
running size is still within the decided size; the last ones only once size and SHA-256 both
match.  The moment the bytes cannot match (more bytes than decided, a short stream, a
different digest, an upstream failing mid-way) the app stops sending and returns without
finishing the body; hypercorn then closes the connection short of the `Content-Length` it
promised, which every HTTP client (curl inside Nix included) reports as a failed transfer, so
Nix registers nothing.  Headers go out with the first released bytes; until then nothing is
committed, so an upstream that fails early (refused connection, 404 for the NAR, a corrupt
compressed stream, a whole NAR up to `hold_back` that does not match) is simply skipped for
the next one, and when none is left the answer is a clean 404.  Nothing of a NAR is ever
stored.  (Nix 2.8 writes a NAR into its final store location as it arrives and does not
remove it when the transfer fails: a cut-off NAR leaves an *invalid*, unregistered partial
copy that Nix deletes before its next attempt and the garbage collector removes.  Only NARs
verified whole before sending, i.e. up to `hold_back`, leave nothing at all.)

Bounds: the request path is at most 512 bytes and every hash part is validated before any
work; an upstream narinfo is at most 64 KiB; every upstream answer and every read of a NAR
stream is bounded by `upstream_timeout` (and so is `decide`); decompression yields at most
64 KiB per step whatever the ratio (an xz or zstd bomb cannot make the proxy buffer more);
the decision and narinfo caches are bounded in entries.  Decompression and hashing run on
the trio thread, but in steps of at most 64 KiB each followed by a send (a checkpoint), so one
large NAR does not hold up other requests for long.  Decisions and upstream narinfo
lookups are cached for `decision_ttl` seconds and computed once for concurrent requests
(single flight), so a burst of Nix requests costs one decision.

Never: answer 5xx on purpose, trust an upstream's narinfo for anything but the path's name
and where its NAR lives, block the trio thread on file I/O, or follow a narinfo URL that is
absolute or climbs out of the cache (`..`).
"""

from __future__ import annotations

import bz2
import collections
import hashlib
import io
import logging
import lzma
import os
import posixpath
import re
import stat
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator, Mapping, Sequence
from typing import IO, Any, Generic, Protocol, TypeVar, cast
from urllib.parse import unquote, urlsplit

import attrs
import httpx
import trio
import zstandard

from trustix_p2p.core import nix32
from trustix_p2p.core.decision import Decision
from trustix_p2p.core.entry import Entry
from trustix_p2p.core.narinfo import NarInfo, NixSigningKey, parse_narinfo, render_narinfo
from trustix_p2p.core.storepath import DEFAULT_STORE_DIR, validate_store_dir
from trustix_p2p.errors import ConfigError, DecodeError, TrustixError
from trustix_p2p.logfmt import kv

__all__ = [
    "HOLD_BACK_BYTES",
    "MAX_REQUEST_PATH",
    "MAX_UPSTREAM_NARINFO",
    "CacheProxy",
    "Decide",
    "ProxyStats",
    "nar_url",
]

log = logging.getLogger("trustix_p2p.proxy")

Decide = Callable[[str], Awaitable[Decision]]
# ASGI 3 callables, typed loosely: the server hands us dicts whose shape the spec fixes.
Scope = Mapping[str, Any]
Receive = Callable[[], Awaitable[Mapping[str, Any]]]
Send = Callable[[Any], Awaitable[None]]

MAX_REQUEST_PATH = 512
MAX_UPSTREAM_NARINFO = 64 * 1024
# The largest piece of NAR handled at once: an upstream read, a decompression step, a body
# message.
CHUNK_SIZE = 64 * 1024
MAX_CACHE_ENTRIES = 4096
# How long an upstream whose NAR of a path just failed is tried last for that path.  It is
# never skipped (it may be the only one, and the failure a passing one), only put last, so a
# long memory costs nothing and spares Nix's retry the same bad bytes.
FAILED_UPSTREAM_MEMORY = 600.0
# NAR bytes held back from the client until more arrive (at least the newest chunk): a NAR up
# to this size is verified whole before its headers go out, so a bad one is a clean 404 (and
# the next upstream is tried) instead of a cut-off transfer.  Costs this much memory per NAR
# being served, and this much latency at the start of a large NAR.
HOLD_BACK_BYTES = 1024 * 1024

# The compressions an upstream may use; anything else (gzip, br, ...) is skipped for the next
# upstream.  `none` NARs are passed through.
SUPPORTED_COMPRESSIONS = frozenset({"none", "xz", "bzip2", "zstd"})

_NIX32_CHAR = f"[{nix32.ALPHABET}]"
_NARINFO_ROUTE = re.compile(rf"/({_NIX32_CHAR}{{32}})\.narinfo")
_NAR_ROUTE = re.compile(rf"/nar/({_NIX32_CHAR}{{32}})-({_NIX32_CHAR}{{52}})\.nar")
# A narinfo URL we follow: relative, segments that cannot be `.` or `..`, no query.
_UPSTREAM_NAR_URL = re.compile(
    r"[A-Za-z0-9_+=-][A-Za-z0-9._+=-]*(?:/[A-Za-z0-9_+=-][A-Za-z0-9._+=-]*)*"
)
# Nix's own suffixes, used only when a narinfo has no `Compression` line (notes §5.5).
_SUFFIX_COMPRESSION = (
    (".nar", "none"),
    (".nar.xz", "xz"),
    (".nar.bz2", "bzip2"),
    (".nar.zst", "zstd"),
)

_ALLOW = (b"allow", b"GET, HEAD")
_CONTENT_TYPES = {
    "nix-cache-info": b"text/x-nix-cache-info",
    "narinfo": b"text/x-nix-narinfo",
    "nar": b"application/x-nix-nar",
}


def nar_url(hash_part: str, nar_hash: bytes) -> str:
    """The URL this proxy writes into a narinfo: `nar/<hash part>-<nix32 NAR hash>.nar`.

    Both halves are in the URL so that the NAR route can check, before any upstream work, that
    the request is for the path *and* the NAR hash decided now (a narinfo Nix cached from an
    earlier decision names a hash that may no longer be the trusted one).
    """
    return f"nar/{hash_part}-{nix32.encode(nar_hash)}.nar"


@attrs.define(eq=False)
class ProxyStats:
    """Counters for metrics, updated in place by the proxy (read them, do not write them).

    `requests` counts answers by (route, status); a NAR that was aborted after its headers went
    out counts as 200 there and in `nars_aborted` (by reason in `aborts`: `too-long`,
    `too-short`, `hash-mismatch`, `upstream-failed`).  `upstream_nar_failures` counts, by the
    same reasons, every upstream NAR that failed, including those caught before anything was
    sent (the proxy then tried the next upstream, or answered 404).  `nars_interrupted` are
    NARs whose client went away before the end.
    """

    requests: dict[tuple[str, int], int] = attrs.Factory(dict)
    nar_bytes_served: int = 0
    nars_served: int = 0
    nars_aborted: int = 0
    aborts: dict[str, int] = attrs.Factory(dict)
    upstream_nar_failures: dict[str, int] = attrs.Factory(dict)
    nars_interrupted: int = 0
    decide_errors: int = 0
    upstream_errors: int = 0

    def count(self, route: str, status: int) -> None:
        key = (route, status)
        self.requests[key] = self.requests.get(key, 0) + 1

    def abort(self, reason: str) -> None:
        self.nars_aborted += 1
        self.aborts[reason] = self.aborts.get(reason, 0) + 1


# --- Single-flight TTL cache -------------------------------------------------------------

K = TypeVar("K")
V = TypeVar("V")


class _FlightFailed(TrustixError):
    """The task computing a shared value failed; every task that waited for it gets this."""


@attrs.define(eq=False)
class _Flight(Generic[V]):
    done: trio.Event = attrs.Factory(trio.Event)
    result: tuple[V] | None = None  # boxed, since V itself may be None
    failed: bool = False


class SingleFlightCache(Generic[K, V]):
    """Values by key, kept `ttl` seconds of `clock`, each computed by one task at a time.

    Concurrent `get`s of a key that is not cached wait for the one task computing it.  If
    that task fails, the waiters fail too (`_FlightFailed`) and nothing is cached; if it is
    cancelled (its client went away), a waiter takes over.  At most `max_entries` values are
    kept: the expired ones go first, then the oldest.
    """

    def __init__(
        self, ttl: float, clock: Callable[[], float], max_entries: int = MAX_CACHE_ENTRIES
    ) -> None:
        self._ttl = ttl
        self._clock = clock
        self._max_entries = max_entries
        self._values: dict[K, tuple[float, V]] = {}
        self._flights: dict[K, _Flight[V]] = {}

    async def get(self, key: K, compute: Callable[[], Awaitable[V]]) -> V:
        while True:
            cached = self._values.get(key)
            if cached is not None:
                if cached[0] > self._clock():
                    return cached[1]
                del self._values[key]
            flight = self._flights.get(key)
            if flight is None:
                break
            await flight.done.wait()
            if flight.result is not None:
                return flight.result[0]
            if flight.failed:
                raise _FlightFailed("the shared lookup failed")
            # The computing task was cancelled: loop, and compute it here if nobody else does.
        flight = _Flight[V]()
        self._flights[key] = flight
        try:
            value = await compute()
            flight.result = (value,)
            self._store(key, value)
        except Exception:
            flight.failed = True
            raise
        finally:
            del self._flights[key]
            flight.done.set()
        return value

    def _store(self, key: K, value: V) -> None:
        if self._ttl <= 0:
            return
        now = self._clock()
        if len(self._values) >= self._max_entries:
            for old in [k for k, (expiry, _) in self._values.items() if expiry <= now]:
                del self._values[old]
        while len(self._values) >= self._max_entries:
            del self._values[next(iter(self._values))]
        self._values.pop(key, None)  # re-inserted last: dict order is age order
        self._values[key] = (now + self._ttl, value)


# --- Upstream caches ---------------------------------------------------------------------


class _UpstreamError(TrustixError):
    """An upstream answered something unusable (status, encoding, size, non-file)."""


class _Corrupt(TrustixError):
    """An upstream's compressed stream does not decompress."""


class _Mismatch(TrustixError):
    """The NAR bytes cannot be the decided ones; `reason` names how."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# What an upstream may fail with; anything else is a bug and must surface.
_UPSTREAM_FAILURES = (
    httpx.HTTPError,
    httpx.InvalidURL,
    httpx.StreamError,
    OSError,
    UnicodeDecodeError,
    trio.TooSlowError,
    TrustixError,
)


@attrs.frozen
class _Upstream:
    """One configured cache: an http(s) base URL, or a directory for `file://`."""

    url: str  # as configured, for messages
    base: str  # http(s) URL without the trailing slash, or the directory's path
    is_file: bool

    @classmethod
    def parse(cls, url: str) -> _Upstream:
        parts = urlsplit(url)
        if parts.query or parts.fragment:
            raise ConfigError(f"upstream cache {url!r}: no query or fragment allowed")
        if parts.scheme == "file":
            path = unquote(parts.path)
            if parts.netloc not in ("", "localhost") or not path.startswith("/"):
                raise ConfigError(f"upstream cache {url!r}: use file:///absolute/path")
            return cls(url, path.rstrip("/") or "/", True)
        if parts.scheme in ("http", "https") and parts.netloc:
            return cls(url, url.rstrip("/"), False)
        raise ConfigError(f"upstream cache {url!r} must be an http://, https:// or file:/// URL")


@attrs.frozen
class _Offer:
    """What one upstream's narinfo says about a path: its name and where its NAR lives."""

    upstream: int  # index into the proxy's upstreams
    info: NarInfo
    compression: str  # from the Compression field, or Nix's suffixes when it is absent


def _compression_of(text: str, info: NarInfo) -> str:
    # parse_narinfo reports Nix's documented default (bzip2) for a missing field, but Nix 2.8
    # itself took such a file by its contents; the URL's suffix is the better guess here.
    if any(line.startswith("Compression:") for line in text.split("\n")):
        return info.compression
    for suffix, compression in _SUFFIX_COMPRESSION:
        if info.url.endswith(suffix):
            return compression
    return info.compression


class _Source(Protocol):
    """An upstream NAR file being read: `read` returns b"" at the end."""

    async def read(self) -> bytes: ...

    async def aclose(self) -> None: ...


@attrs.define(eq=False)
class _FileSource:
    """A file of a `file://` cache, read in a worker thread (never on the trio thread)."""

    file: io.FileIO

    async def read(self) -> bytes:
        return await trio.to_thread.run_sync(self.file.read, CHUNK_SIZE) or b""

    async def aclose(self) -> None:
        # Shielded, as trio's own async files do: a cancelled request still closes its file.
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(self.file.close)


@attrs.define(eq=False)
class _HttpSource:
    """An upstream HTTP response body, read in chunks of at most CHUNK_SIZE."""

    response: httpx.Response
    chunks: AsyncGenerator[bytes, None]

    @classmethod
    def of(cls, response: httpx.Response, chunk_size: int | None = CHUNK_SIZE) -> _HttpSource:
        # httpx's iterator is an async generator; typed as one here so it can be closed.
        return cls(response, cast(AsyncGenerator[bytes, None], response.aiter_raw(chunk_size)))

    async def read(self) -> bytes:
        return await anext(self.chunks, b"")

    async def aclose(self) -> None:
        # Shielded but bounded: a cancelled request still releases its connection.
        with trio.move_on_after(5, shield=True):
            await self.chunks.aclose()
            await self.response.aclose()


def _open_regular(path: str) -> io.FileIO:
    """Open `path` for reading, refusing anything but a regular file (a FIFO would hang)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise _UpstreamError(f"{path} is not a regular file")
        os.set_blocking(fd, True)
        return io.FileIO(fd, "rb", closefd=True)
    except BaseException:
        os.close(fd)
        raise


async def _open_file(path: str) -> _FileSource:
    return _FileSource(await trio.to_thread.run_sync(_open_regular, path))


# --- Decompression -----------------------------------------------------------------------


class _Decoder(Protocol):
    """Push compressed bytes in, get NAR bytes out, never more than CHUNK_SIZE per piece."""

    def feed(self, data: bytes) -> Iterator[bytes]: ...

    def finish(self) -> Iterator[bytes]: ...


class _Identity:
    def feed(self, data: bytes) -> Iterator[bytes]:
        for start in range(0, len(data), CHUNK_SIZE):
            yield data[start : start + CHUNK_SIZE]

    def finish(self) -> Iterator[bytes]:
        return iter(())


class _MaxLengthDecompressor(Protocol):
    @property
    def eof(self) -> bool: ...

    @property
    def needs_input(self) -> bool: ...

    @property
    def unused_data(self) -> bytes: ...

    def decompress(self, data: bytes, max_length: int = -1) -> bytes: ...


class _StdlibDecoder:
    """xz (`lzma`) and bzip2 (`bz2`): both decompress incrementally with a `max_length`."""

    def __init__(self, decompressor: _MaxLengthDecompressor) -> None:
        self._d = decompressor

    def feed(self, data: bytes) -> Iterator[bytes]:
        try:
            if self._d.eof:
                raise _Corrupt("data after the end of the compressed stream")
            out = self._d.decompress(data, CHUNK_SIZE)
            while True:
                if out:
                    yield out
                if self._d.eof or self._d.needs_input:
                    break
                out = self._d.decompress(b"", CHUNK_SIZE)
            if self._d.eof and self._d.unused_data:
                raise _Corrupt("data after the end of the compressed stream")
        except (lzma.LZMAError, OSError, EOFError) as exc:
            raise _Corrupt(f"corrupt compressed stream: {exc}") from exc

    def finish(self) -> Iterator[bytes]:
        if not self._d.eof:
            raise _Corrupt("compressed stream ends early")
        return iter(())


class _NeedInput(Exception):  # a signal between the two halves of one decoder
    """Raised by `_PushSource.read` when it has nothing buffered: the reader must wait."""


class _PushSource:
    """The file-like `zstandard`'s stream reader pulls from, fed by `_ZstdDecoder.feed`.

    python-zstandard's push API (`decompressobj`) returns everything a piece of input
    decompresses to, and 4 bytes of zstd can be 128 KiB of output; its pull API
    (`stream_reader`) bounds each read.  The reader asks this object for input; with none
    buffered it raises `_NeedInput`, which leaves the reader's state as it was (it asks for
    input only when it has produced nothing yet in that call) and tells `feed` to return.
    tests/test_proxy.py checks that this holds for the installed backend.
    """

    def __init__(self) -> None:
        self.pending: bytes | None = None
        self.at_end = False

    def read(self, size: int = -1) -> bytes:
        if self.pending is not None:
            data, self.pending = self.pending, None
            return data
        if self.at_end:
            return b""
        raise _NeedInput


class _ZstdDecoder:
    def __init__(self) -> None:
        self._source = _PushSource()
        # The default window limit (2**27 bytes) bounds the decoder's memory.
        self._reader = zstandard.ZstdDecompressor().stream_reader(
            cast(IO[bytes], self._source),
            read_size=CHUNK_SIZE,
            read_across_frames=True,
            closefd=False,
        )

    def _drain(self) -> Iterator[bytes]:
        try:
            while True:
                try:
                    out = self._reader.read1(CHUNK_SIZE)
                except _NeedInput:
                    return
                if not out:
                    return
                yield out
        except zstandard.ZstdError as exc:
            raise _Corrupt(f"corrupt zstd stream: {exc}") from exc

    def feed(self, data: bytes) -> Iterator[bytes]:
        self._source.pending = data
        return self._drain()

    def finish(self) -> Iterator[bytes]:
        # A truncated frame is not detected here: the NAR's size and hash check catch it.
        self._source.at_end = True
        return self._drain()


def _decoder(compression: str) -> _Decoder:
    if compression == "none":
        return _Identity()
    if compression == "xz":
        return _StdlibDecoder(lzma.LZMADecompressor(lzma.FORMAT_XZ))
    if compression == "bzip2":
        return _StdlibDecoder(bz2.BZ2Decompressor())
    if compression == "zstd":
        return _ZstdDecoder()
    raise _UpstreamError(f"unsupported compression {compression!r}")


class _NarCheck:
    """Running size and SHA-256 of the NAR bytes against the decided ones."""

    def __init__(self, nar_hash: bytes, nar_size: int) -> None:
        self._expected_hash = nar_hash
        self._expected_size = nar_size
        self._hash = hashlib.sha256()
        self.size = 0

    def update(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self._expected_size:
            raise _Mismatch("too-long")
        self._hash.update(data)

    def finish(self) -> None:
        if self.size != self._expected_size:
            raise _Mismatch("too-short")
        if self._hash.digest() != self._expected_hash:
            raise _Mismatch("hash-mismatch")


def _trusted_entry(decision: Decision, store_path: str) -> Entry | None:
    """The decided entry if `decision` trusts `store_path` and is coherent, else None."""
    entry = decision.entry
    if not decision.trusted or entry is None or decision.nar_hash is None:
        return None
    if entry.out_path != store_path or entry.nar_hash != decision.nar_hash:
        log.warning("trusted decision is inconsistent; answering 404", extra=kv(path=store_path))
        return None
    if entry.nar_size <= 0:
        return None
    return entry


def _nar_headers(entry: Entry) -> list[tuple[bytes, bytes]]:
    return [
        (b"content-type", _CONTENT_TYPES["nar"]),
        (b"content-length", str(entry.nar_size).encode("ascii")),
    ]


class _Transfer:
    """One NAR response: sends verified-so-far bytes, always holding the newest ones back.

    At least the newest piece, and up to `hold_back` bytes, stay here until more arrive, so
    the client never has the whole NAR before it is verified; a NAR no larger than
    `hold_back` is verified whole before its headers go out.  Headers are sent with the first
    released bytes (`committed`); before that, the transfer can `restart` from another
    upstream as if nothing had happened.
    """

    def __init__(self, send: Send, entry: Entry, hold_back: int) -> None:
        self.send = send
        self.entry = entry
        self.hold_back = hold_back
        self.committed = False
        self.sent = 0
        self.outcome: str | None = None
        self._held: collections.deque[bytes] = collections.deque()
        self._held_size = 0

    def restart(self) -> None:
        assert not self.committed
        self._held.clear()
        self._held_size = 0

    async def push(self, piece: bytes) -> None:
        if not piece:
            return
        self._held.append(piece)
        self._held_size += len(piece)
        while len(self._held) > 1 and self._held_size > self.hold_back:
            oldest = self._held.popleft()
            self._held_size -= len(oldest)
            await self._send(oldest, more=True)

    async def finish(self) -> None:
        """Release the held bytes and end the body (only once they are verified)."""
        while len(self._held) > 1:
            await self._send(self._held.popleft(), more=True)
        await self._send(self._held.popleft() if self._held else b"", more=False)

    async def _send(self, data: bytes, *, more: bool) -> None:
        if not self.committed:
            headers = _nar_headers(self.entry)
            await self.send({"type": "http.response.start", "status": 200, "headers": headers})
            self.committed = True
        await self.send({"type": "http.response.body", "body": data, "more_body": more})
        self.sent += len(data)


# --- The app -----------------------------------------------------------------------------


class CacheProxy:
    """A plain ASGI 3 app serving a Nix binary cache of trusted paths (module docstring).

    `decide` maps a full store path to a `Decision` (the caller verifies everything behind
    it); `upstreams` are binary cache URLs (`http://`, `https://`, `file:///dir`) tried in
    order; `signing_key` signs every narinfo.  `http` is the client for http(s) upstreams
    (one is made, and closed at lifespan shutdown or `aclose`, when none is given).
    """

    def __init__(
        self,
        decide: Decide,
        upstreams: Sequence[str],
        signing_key: NixSigningKey,
        *,
        priority: int = 40,
        decision_ttl: float = 10.0,
        store_dir: str = DEFAULT_STORE_DIR,
        http: httpx.AsyncClient | None = None,
        upstream_timeout: float = 30.0,
        clock: Callable[[], float] = trio.current_time,
        hold_back: int = HOLD_BACK_BYTES,
    ) -> None:
        if not upstreams:
            raise ConfigError("the cache proxy needs at least one upstream cache")
        try:
            validate_store_dir(store_dir)
        except DecodeError as exc:
            raise ConfigError(f"store dir {store_dir!r}: {exc}") from exc
        if upstream_timeout <= 0:
            raise ConfigError("upstream timeout must be positive")
        if hold_back < 0:
            raise ConfigError("hold-back must not be negative")
        self._hold_back = hold_back
        self._decide = decide
        self._upstreams = tuple(_Upstream.parse(url) for url in upstreams)
        self._key = signing_key
        self._store_dir = store_dir
        self._timeout = upstream_timeout
        self._clock = clock
        self._ttl = decision_ttl
        self._own_http = http is None and any(not u.is_file for u in self._upstreams)
        self._http = (
            httpx.AsyncClient(timeout=httpx.Timeout(upstream_timeout), follow_redirects=True)
            if self._own_http
            else http
        )
        self._cache_info = (
            f"StoreDir: {store_dir}\nWantMassQuery: 1\nPriority: {priority}\n".encode()
        )
        self._decisions: SingleFlightCache[str, Decision] = SingleFlightCache(decision_ttl, clock)
        self._offers: SingleFlightCache[tuple[int, str], _Offer | None] = SingleFlightCache(
            decision_ttl, clock
        )
        # (upstream, hash part) -> until when: upstreams whose NAR just failed are tried last.
        self._failed: dict[tuple[int, str], float] = {}
        self.stats = ProxyStats()
        # Signed narinfo bodies by decided entry (an entry names path, hash, size, references).
        self._rendered: dict[Entry, bytes] = {}

    async def aclose(self) -> None:
        """Close the HTTP client if this proxy made it."""
        if self._own_http and self._http is not None:
            await self._http.aclose()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            await self._http_request(scope, receive, send)
        # Anything else (websocket) is refused by returning without accepting it.

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    # -- routing ------------------------------------------------------------------------

    async def _http_request(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw_path = scope.get("raw_path") or scope["path"].encode("utf-8")
        route, match = "other", None
        if len(raw_path) <= MAX_REQUEST_PATH and raw_path.isascii():
            path = raw_path.decode("ascii")
            if path == "/nix-cache-info":
                route = "nix-cache-info"
            elif match := _NARINFO_ROUTE.fullmatch(path):
                route = "narinfo"
            elif match := _NAR_ROUTE.fullmatch(path):
                route = "nar"
        method = scope["method"]
        head = method == "HEAD"
        if method not in ("GET", "HEAD"):
            # Read-only: Nix PUTs only when nix-cache-info fails, and that never fails here.
            await self._respond(send, route, 405, b"method not allowed\n", extra=(_ALLOW,))
        elif route == "nix-cache-info":
            await self._respond(send, route, 200, self._cache_info, head=head)
        elif route == "narinfo":
            assert match is not None
            await self._narinfo(send, match.group(1), head)
        elif route == "nar":
            assert match is not None
            try:
                url_hash = nix32.decode(match.group(2))
            except DecodeError:
                await self._not_found(send, route, head)
            else:
                await self._nar(receive, send, match.group(1), url_hash, head)
        else:
            await self._not_found(send, route, head)

    async def _respond(
        self,
        send: Send,
        route: str,
        status: int,
        body: bytes,
        *,
        head: bool = False,
        extra: Sequence[tuple[bytes, bytes]] = (),
    ) -> None:
        content_type = _CONTENT_TYPES.get(route, b"text/plain") if status == 200 else b"text/plain"
        headers = [
            (b"content-type", content_type),
            (b"content-length", str(len(body)).encode("ascii")),
            *extra,
        ]
        # Counted first: once the body is out the client may move on (and stop the server).
        self.stats.count(route, status)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if head else body})

    async def _not_found(self, send: Send, route: str, head: bool) -> None:
        await self._respond(send, route, 404, b"not found\n", head=head)

    # -- narinfo ------------------------------------------------------------------------

    async def _narinfo(self, send: Send, hash_part: str, head: bool) -> None:
        entry = await self._resolve(hash_part)
        if entry is None:
            await self._not_found(send, "narinfo", head)
            return
        body = self._rendered.get(entry)
        if body is None:
            body = self._render(hash_part, entry)
            if len(self._rendered) >= MAX_CACHE_ENTRIES:
                self._rendered.clear()
            self._rendered[entry] = body
        await self._respond(send, "narinfo", 200, body, head=head)

    def _render(self, hash_part: str, entry: Entry) -> bytes:
        """The signed narinfo of a decided entry (kept per entry: signing is the costly part)."""
        info = NarInfo(
            store_path=entry.out_path,
            url=nar_url(hash_part, entry.nar_hash),
            compression="none",
            nar_hash=entry.nar_hash,
            nar_size=entry.nar_size,
            references=entry.references,
            deriver=posixpath.basename(entry.deriver) if entry.deriver else "",
        ).signed(self._key, self._store_dir)
        return render_narinfo(info).encode("ascii")

    async def _resolve(self, hash_part: str) -> Entry | None:
        """The decided entry for the path `hash_part` names, if trusted and fetchable."""
        store_path = await self._store_path(hash_part)
        if store_path is None:
            return None
        entry = await self._decision(store_path)
        if entry is None:
            return None
        if not await self._usable_offers(hash_part, entry, first_only=True):
            log.info("trusted, but no upstream offers its agreed NAR", extra=kv(path=store_path))
            return None
        return entry

    async def _store_path(self, hash_part: str) -> str | None:
        """The full store path of `hash_part`: the first upstream that knows it names it."""
        for index in range(len(self._upstreams)):
            offer = await self._offer(index, hash_part)
            if offer is not None:
                return offer.info.store_path
        return None

    async def _decision(self, store_path: str) -> Entry | None:
        try:
            decision = await self._decisions.get(store_path, lambda: self._run_decide(store_path))
        except Exception as exc:
            # Whatever went wrong behind `decide` (node down, a bug there), Nix gets a 404,
            # never a 5xx that would fail its build after five retries.
            self.stats.decide_errors += 1
            unexpected = not isinstance(exc, TrustixError | trio.TooSlowError)
            log.warning(
                "deciding failed", extra=kv(path=store_path, reason=exc), exc_info=unexpected
            )
            return None
        return _trusted_entry(decision, store_path)

    async def _run_decide(self, store_path: str) -> Decision:
        with trio.fail_after(self._timeout):
            return await self._decide(store_path)

    async def _usable_offers(
        self, hash_part: str, entry: Entry, *, first_only: bool = False
    ) -> list[_Offer]:
        """Upstreams offering exactly the decided NAR, in order, recently failed ones last.

        `first_only`: stop at the first (a narinfo only needs to know that one exists).
        """
        offers: list[_Offer] = []
        for index in range(len(self._upstreams)):
            if first_only and offers:
                break
            offer = await self._offer(index, hash_part)
            if (
                offer is not None
                and offer.info.store_path == entry.out_path
                and offer.info.nar_hash == entry.nar_hash
                and offer.info.nar_size == entry.nar_size
                and offer.compression in SUPPORTED_COMPRESSIONS
            ):
                offers.append(offer)
        now = self._clock()
        return sorted(offers, key=lambda o: self._failed.get((o.upstream, hash_part), 0) > now)

    async def _offer(self, index: int, hash_part: str) -> _Offer | None:
        return await self._offers.get(
            (index, hash_part), lambda: self._fetch_offer(index, hash_part)
        )

    async def _fetch_offer(self, index: int, hash_part: str) -> _Offer | None:
        """Upstream `index`'s narinfo for `hash_part`, or None (absent, broken, too slow)."""
        upstream = self._upstreams[index]
        try:
            with trio.fail_after(self._timeout):
                data = await self._fetch_narinfo(upstream, hash_part)
            if data is None:
                return None
            text = data.decode("utf-8")
            info = parse_narinfo(text, self._store_dir)
            if posixpath.basename(info.store_path)[:32] != hash_part:
                raise _UpstreamError(f"narinfo for {hash_part} names {info.store_path}")
            if not _UPSTREAM_NAR_URL.fullmatch(info.url) or len(info.url) > MAX_REQUEST_PATH:
                raise _UpstreamError(f"narinfo URL {info.url[:100]!r} is not a relative path")
            return _Offer(index, info, _compression_of(text, info))
        except _UPSTREAM_FAILURES as exc:
            self.stats.upstream_errors += 1
            log.info(
                "upstream narinfo unusable",
                extra=kv(upstream=upstream.url, hash=hash_part, reason=exc),
            )
            return None

    async def _fetch_narinfo(self, upstream: _Upstream, hash_part: str) -> bytes | None:
        name = f"{hash_part}.narinfo"
        if upstream.is_file:
            try:
                file = await _open_file(os.path.join(upstream.base, name))
            except FileNotFoundError:
                return None
            data = b""
            try:
                while len(data) <= MAX_UPSTREAM_NARINFO and (chunk := await file.read()):
                    data += chunk
            finally:
                await file.aclose()
        else:
            source = _HttpSource.of(await self._get(f"{upstream.base}/{name}"), None)
            try:
                if source.response.status_code in (403, 404, 410):  # Nix's "absent"
                    return None
                self._check_response(source.response)
                data = b""
                while len(data) <= MAX_UPSTREAM_NARINFO and (chunk := await source.read()):
                    data += chunk
            finally:
                await source.aclose()
        if len(data) > MAX_UPSTREAM_NARINFO:
            raise _UpstreamError(f"narinfo is over {MAX_UPSTREAM_NARINFO} bytes")
        return data

    async def _get(self, url: str) -> httpx.Response:
        assert self._http is not None  # made in __init__ whenever an upstream is http(s)
        # identity: the body must be the cache's file itself, bounded by our own decoders,
        # never a Content-Encoding that httpx would inflate without a limit.
        request = self._http.build_request(
            "GET", url, headers={"accept-encoding": "identity", "user-agent": "trustix-p2p"}
        )
        return await self._http.send(request, stream=True, follow_redirects=True)

    @staticmethod
    def _check_response(response: httpx.Response) -> None:
        if response.status_code != 200:
            raise _UpstreamError(f"HTTP {response.status_code}")
        encoding = response.headers.get("content-encoding", "identity").strip().lower()
        if encoding != "identity":
            raise _UpstreamError(f"unrequested Content-Encoding {encoding!r}")

    # -- NAR ----------------------------------------------------------------------------

    async def _nar(
        self, receive: Receive, send: Send, hash_part: str, url_hash: bytes, head: bool
    ) -> None:
        store_path = await self._store_path(hash_part)
        entry = None if store_path is None else await self._decision(store_path)
        if entry is None or entry.nar_hash != url_hash:
            await self._not_found(send, "nar", head)
            return
        offers = await self._usable_offers(hash_part, entry)
        if not offers:
            await self._not_found(send, "nar", head)
            return
        if head:
            await self._respond_nar_head(send, entry)
            return
        transfer = _Transfer(send, entry, self._hold_back)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._watch_disconnect, receive, nursery.cancel_scope)
            await self._stream_nar(transfer, hash_part, offers)
            nursery.cancel_scope.cancel()
        # Finished outside the watcher's scope: the end of our own response also reaches the
        # app as `http.disconnect`, and must not cancel the sends that complete it.
        if transfer.outcome is None:
            self.stats.nars_interrupted += 1
            self.stats.nar_bytes_served += transfer.sent
        elif transfer.outcome == "unavailable":
            await self._not_found(send, "nar", head)
        elif transfer.outcome == "served":
            self.stats.nars_served += 1
            self.stats.count("nar", 200)
            self.stats.nar_bytes_served += entry.nar_size
            await transfer.finish()
        else:
            # The body is left unfinished: the server closes the connection short of
            # Content-Length, and the client sees a failed transfer.
            self.stats.abort(transfer.outcome)
            self.stats.count("nar", 200)
            self.stats.nar_bytes_served += transfer.sent
            log.warning("aborted a NAR", extra=kv(path=entry.out_path, reason=transfer.outcome))

    async def _respond_nar_head(self, send: Send, entry: Entry) -> None:
        self.stats.count("nar", 200)
        await send({"type": "http.response.start", "status": 200, "headers": _nar_headers(entry)})
        await send({"type": "http.response.body", "body": b""})

    @staticmethod
    async def _watch_disconnect(receive: Receive, scope: trio.CancelScope) -> None:
        message = await receive()
        while message["type"] != "http.disconnect":  # a GET has no body to wait for
            message = await receive()
        scope.cancel()

    async def _stream_nar(
        self, transfer: _Transfer, hash_part: str, offers: Sequence[_Offer]
    ) -> None:
        """Stream the NAR from the first offer that works; set `transfer.outcome`.

        "served" (all bytes but the held-back ones sent, and they are verified), "unavailable"
        (every offer failed before a byte went out: nothing was sent), or the reason for an
        abort after the headers went out.  Left None if cancelled (the client went away).
        """
        entry = transfer.entry
        for offer in offers:
            upstream = self._upstreams[offer.upstream]
            check = _NarCheck(entry.nar_hash, entry.nar_size)
            transfer.restart()
            try:
                source = await self._open_nar(upstream, offer)
                try:
                    decoder = _decoder(offer.compression)
                    while True:
                        with trio.fail_after(self._timeout):
                            data = await source.read()
                        for piece in decoder.feed(data) if data else decoder.finish():
                            check.update(piece)
                            await transfer.push(piece)
                        if not data:
                            break
                finally:
                    await source.aclose()
                check.finish()
            except _UPSTREAM_FAILURES as exc:  # _Mismatch and _Corrupt among them
                reason = exc.reason if isinstance(exc, _Mismatch) else "upstream-failed"
                self._failed_upstream(offer.upstream, hash_part, reason)
                log.info(
                    "upstream NAR failed",
                    extra=kv(upstream=upstream.url, path=entry.out_path, reason=reason, error=exc),
                )
                if transfer.committed:
                    transfer.outcome = reason
                    return
                continue  # nothing went out yet: the next upstream may have the right bytes
            transfer.outcome = "served"
            return
        transfer.outcome = "unavailable"

    async def _open_nar(self, upstream: _Upstream, offer: _Offer) -> _Source:
        with trio.fail_after(self._timeout):
            if upstream.is_file:
                return await _open_file(os.path.join(upstream.base, offer.info.url))
            response = await self._get(f"{upstream.base}/{offer.info.url}")
            try:
                self._check_response(response)
            except BaseException:
                await response.aclose()
                raise
            return _HttpSource.of(response)

    def _failed_upstream(self, index: int, hash_part: str, reason: str) -> None:
        failures = self.stats.upstream_nar_failures
        failures[reason] = failures.get(reason, 0) + 1
        now = self._clock()
        if len(self._failed) >= MAX_CACHE_ENTRIES:
            for key in [k for k, until in self._failed.items() if until <= now]:
                del self._failed[key]
        while len(self._failed) >= MAX_CACHE_ENTRIES:
            del self._failed[next(iter(self._failed))]
        self._failed[(index, hash_part)] = now + FAILED_UPSTREAM_MEMORY
