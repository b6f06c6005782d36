"""Prometheus metrics: the node's (`[metrics]` in its config) and the cache proxy's
(`--metrics-listen`), each in a registry of its own (a process may run several nodes).

Counters move where things happen (the peering shell, the signer, the proxy). Gauges (log
sizes, checkpoint ages, peers, evidence) are read from the node at each scrape, through the
node's executor like every other look at its store and engine. docs/metrics.md lists every
metric; `tests/test_metrics.py` keeps that page and this module in step.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

__all__ = ["METRIC_NAMES", "NodeMetrics", "ProxyMetrics", "metrics_app"]

# Every metric either registry exposes (docs/metrics.md has a row for each).
METRIC_NAMES = (
    "trustix_log_size_entries",
    "trustix_log_checkpoint_size",
    "trustix_log_checkpoint_age_seconds",
    "trustix_checkpoints_signed_total",
    "trustix_checkpoints_received_total",
    "trustix_entries_synced_total",
    "trustix_peers",
    "trustix_peer_messages_total",
    "trustix_peer_bytes_total",
    "trustix_evidence_held",
    "trustix_proxy_requests_total",
    "trustix_proxy_request_seconds",
    "trustix_proxy_decisions_total",
)


class NodeMetrics:
    """A node's metrics. `refresh` sets the gauges from a snapshot taken by the node."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.log_size = Gauge(
            "trustix_log_size_entries", "Entries stored of a log", ["log", "mode"], registry=r
        )
        self.checkpoint_size = Gauge(
            "trustix_log_checkpoint_size",
            "Size of the log's latest accepted checkpoint",
            ["log"],
            registry=r,
        )
        self.checkpoint_age = Gauge(
            "trustix_log_checkpoint_age_seconds",
            "Seconds since the log's latest accepted checkpoint was signed",
            ["log"],
            registry=r,
        )
        self.signed = Counter(
            "trustix_checkpoints_signed",
            "Checkpoints this node signed of its own log",
            registry=r,
        )
        self.received = Counter(
            "trustix_checkpoints_received",
            "Checkpoints of other logs accepted from peers as a new head",
            ["log"],
            registry=r,
        )
        self.synced = Counter(
            "trustix_entries_synced",
            "Entries of mirrored logs verified and stored",
            ["log"],
            registry=r,
        )
        self.peers = Gauge(
            "trustix_peers",
            "Peers by state (connected in, connected out, dialing, backing off)",
            ["state"],
            registry=r,
        )
        self.messages = Counter(
            "trustix_peer_messages",
            "Peer messages by direction and type",
            ["direction", "type"],
            registry=r,
        )
        self.bytes = Counter(
            "trustix_peer_bytes",
            "Peer message bytes (framed) by direction and type",
            ["direction", "type"],
            registry=r,
        )
        self.evidence = Gauge(
            "trustix_evidence_held", "Pieces of verified evidence this node holds", registry=r
        )

    def message(self, direction: str, message: object, size: int) -> None:
        kind = type(message).__name__
        self.messages.labels(direction, kind).inc()
        self.bytes.labels(direction, kind).inc(size)

    def refresh(self, snapshot: dict[str, Any]) -> None:
        """Set the gauges from `snapshot` (see `trustix_p2p.node.Node.metrics_snapshot`)."""
        for gauge in (self.log_size, self.checkpoint_size, self.checkpoint_age):
            gauge.clear()
        for log, mode, size, head_size, age in snapshot["logs"]:
            self.log_size.labels(log, mode).set(size)
            if head_size is not None:
                self.checkpoint_size.labels(log).set(head_size)
                self.checkpoint_age.labels(log).set(age)
        self.peers.clear()
        for state, count in snapshot["peers"].items():
            self.peers.labels(state).set(count)
        self.evidence.set(snapshot["evidence"])


class ProxyMetrics:
    """The cache proxy's metrics: requests by status with latency, decisions by outcome."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter(
            "trustix_proxy_requests",
            "Requests answered, by kind and HTTP status",
            ["kind", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "trustix_proxy_request_seconds",
            "Time to answer a request (NARs: to the last byte)",
            ["kind"],
            registry=r,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.decisions = Counter(
            "trustix_proxy_decisions",
            "M-of-N decisions made, by outcome",
            ["outcome"],
            registry=r,
        )


def _kind(path: str) -> str:
    if path.endswith(".narinfo"):
        return "narinfo"
    if path.startswith("/nar/"):
        return "nar"
    if path == "/nix-cache-info":
        return "cache-info"
    return "other"


class InstrumentedApp:
    """An ASGI app with `ProxyMetrics` kept of its HTTP requests: status and time to finish."""

    def __init__(self, app: Any, metrics: ProxyMetrics, clock: Callable[[], float]) -> None:
        self.app = app
        self.metrics = metrics
        self.clock = clock

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        kind = _kind(scope.get("path", ""))
        status = [0]

        async def watch(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status[0] = int(message["status"])
            await send(message)

        started = self.clock()
        try:
            await self.app(scope, receive, watch)
        finally:
            self.metrics.requests.labels(kind, str(status[0] or 500)).inc()
            self.metrics.latency.labels(kind).observe(self.clock() - started)

    async def aclose(self) -> None:
        close = getattr(self.app, "aclose", None)
        if close is not None:
            await close()


def metrics_app(
    registry: CollectorRegistry, before: Callable[[], Awaitable[None]] | None = None
) -> Callable[..., Awaitable[None]]:
    """A minimal ASGI app serving `GET /metrics` (`before` runs first: a gauge refresh)."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                event = await receive()
                if event["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif event["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        if scope["path"] != "/metrics" or scope["method"] not in ("GET", "HEAD"):
            body, status, kind = b"not found: ask GET /metrics\n", 404, "text/plain"
        else:
            if before is not None:
                await before()
            body, status, kind = generate_latest(registry), 200, CONTENT_TYPE_LATEST
        headers = [(b"content-type", kind.encode()), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send(
            {"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body}
        )

    return app
