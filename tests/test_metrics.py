"""The node's Prometheus endpoint: off by default, on loopback when enabled, and its counters
move while a node syncs from a builder (two real node processes)."""

from __future__ import annotations

import re
import time
import urllib.request
from pathlib import Path
from typing import Any

from tests import factories as f
from tests.nodeproc import builder_and_mirror, cli, free_port, running
from trustix_p2p.config import NodeConfig
from trustix_p2p.control.client import submit_leaves
from trustix_p2p.metrics import METRIC_NAMES, InstrumentedApp, ProxyMetrics, metrics_app


def scrape(url: str) -> dict[str, float]:
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def total(samples: dict[str, float], metric: str) -> float:
    return sum(v for k, v in samples.items() if re.match(rf"{metric}(\{{|$)", k))


def test_metrics_are_off_by_default_and_on_loopback_when_enabled() -> None:
    default = NodeConfig(state_dir=Path("/nonexistent"))
    assert default.metrics.enabled is False
    assert default.metrics.listen == "127.0.0.1:9464"


def test_metrics_move_while_a_node_syncs(tmp_path: Path) -> None:
    metrics_port = free_port()
    (a_config, a_sock), (b_config, b_sock) = builder_and_mirror(
        tmp_path, b_extra=f'[metrics]\nenabled = true\nlisten = "127.0.0.1:{metrics_port}"\n'
    )
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    with running(a_config, a_sock), running(b_config, b_sock):
        deadline = time.monotonic() + 30
        while True:
            try:
                first = scrape(url)
                break
            except OSError:
                assert time.monotonic() < deadline, "the metrics endpoint never answered"
                time.sleep(0.2)
        submit_leaves(a_sock, [f.leaf(i) for i in range(300)])
        deadline = time.monotonic() + 60
        while True:
            now = scrape(url)
            if total(now, "trustix_entries_synced_total") >= 300:
                break
            assert time.monotonic() < deadline, now
            time.sleep(0.2)
        assert total(now, "trustix_checkpoints_received_total") > total(
            first, "trustix_checkpoints_received_total"
        )
        assert total(now, "trustix_peer_messages_total") > total(
            first, "trustix_peer_messages_total"
        )
        assert total(now, "trustix_peer_bytes_total") > total(first, "trustix_peer_bytes_total")
        assert 'trustix_peer_messages_total{direction="in",type="Entries"}' in now
        assert now['trustix_peers{state="connected_out"}'] == 1
        assert total(now, "trustix_log_size_entries") >= 300
        assert total(now, "trustix_evidence_held") == 0
        assert any(k.startswith("trustix_log_checkpoint_age_seconds{") for k in now)


def test_docs_metrics_lists_every_metric() -> None:
    page = (Path(__file__).resolve().parent.parent / "docs" / "metrics.md").read_text()
    for name in METRIC_NAMES:
        assert f"`{name}`" in page, name


async def test_the_proxy_instrumentation_counts_requests_by_kind_and_status() -> None:
    metrics = ProxyMetrics()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        status = 200 if scope["path"] == "/nix-cache-info" else 404
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request"}

    ticks = iter([0.0, 0.004, 1.0, 1.5])
    wrapped = InstrumentedApp(app, metrics, lambda: next(ticks))
    for path in ("/nix-cache-info", "/0123.narinfo"):
        await wrapped({"type": "http", "path": path, "method": "GET"}, receive, send)
    metrics.decisions.labels("trusted").inc()
    served: list[dict[str, Any]] = []

    async def collect(message: dict[str, Any]) -> None:
        served.append(message)

    await metrics_app(metrics.registry)(
        {"type": "http", "path": "/metrics", "method": "GET"}, receive, collect
    )
    assert served[0]["status"] == 200
    text = served[1]["body"].decode()
    assert 'trustix_proxy_requests_total{kind="cache-info",status="200"} 1.0' in text
    assert 'trustix_proxy_requests_total{kind="narinfo",status="404"} 1.0' in text
    assert 'trustix_proxy_request_seconds_count{kind="narinfo"} 1.0' in text
    assert 'trustix_proxy_decisions_total{outcome="trusted"} 1.0' in text
    other: list[dict[str, Any]] = []

    async def collect_other(message: dict[str, Any]) -> None:
        other.append(message)

    await metrics_app(metrics.registry)(
        {"type": "http", "path": "/", "method": "GET"}, receive, collect_other
    )
    assert other[0]["status"] == 404


def test_the_cache_proxy_command_takes_metrics_listen() -> None:
    done = cli("cache-proxy", "--help")
    assert "--metrics-listen ADDRESS" in done.stdout
