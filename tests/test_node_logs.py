"""The node's log: quiet by default, `--verbose` for debug lines, one structured line per event
(`<date> <time> <LEVEL> <logger> <message> key=value...`, see trustix_p2p.logfmt) naming the
node, the peer and the log it is about, and never a secret."""

from __future__ import annotations

import base64
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

from tests import factories as f
from tests.logs import LINE, parse_line
from tests.nodeproc import builder_and_mirror, stop, wait_ready
from trustix_p2p.control.client import ControlClient, submit_leaves
from trustix_p2p.keyfile import load_key_file


def verbose_node(config: Path, out: IO[bytes]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "trustix_p2p", "node", "--config", str(config), "--verbose"],
        stderr=out,
    )


def secrets_of(key_file: Path) -> list[str]:
    key = load_key_file(key_file)
    seed = key.seed
    return [
        base64.b64encode(seed).decode(),
        seed.hex(),
        base64.b64encode(seed)[:16].decode(),  # any long piece of it
        key_file.read_text().strip(),
    ]


def test_a_verbose_run_of_two_syncing_nodes_logs_no_key_material(tmp_path: Path) -> None:
    quiet = 'log_level = "warning"\n'
    (a_config, a_sock), (b_config, b_sock) = builder_and_mirror(
        tmp_path, a_extra=quiet, b_extra=quiet
    )
    a_dir, b_dir = a_config.parent, b_config.parent
    a_out, b_out = (tmp_path / "a.log").open("wb"), (tmp_path / "b.log").open("wb")
    a = verbose_node(a_config, a_out)
    b = verbose_node(b_config, b_out)
    try:
        wait_ready(a_sock, a)
        wait_ready(b_sock, b)
        submit_leaves(a_sock, [f.leaf(i) for i in range(50)])
        deadline = time.monotonic() + 30
        while True:
            with ControlClient(b_sock, 10) as client:
                logs = client.status().follows
            if any(x.size >= 50 for x in logs):
                break
            assert time.monotonic() < deadline, logs
            time.sleep(0.2)
    finally:
        stop(a)
        stop(b)
        a_out.close()
        b_out.close()
    a_text, b_text = (tmp_path / "a.log").read_text(), (tmp_path / "b.log").read_text()
    text = a_text + b_text
    assert " DEBUG " in text  # --verbose wins over log_level = "warning"
    for secret in secrets_of(a_dir / "node.key") + secrets_of(b_dir / "node.key"):
        assert secret not in text

    a_pub, b_pub = (load_key_file(d / "node.key").public_key for d in (a_dir, b_dir))
    a_lines = node_lines(a_text, a_pub.to_base64()[:8])
    b_lines = node_lines(b_text, b_pub.to_base64()[:8])
    a_log = a_pub.log_id_hex()
    # Both ends of the connection name the other end's key; the address with it.
    assert ("connection accepted", b_pub.to_base64()) in {
        (m, fields.get("peer")) for _, _, m, fields in a_lines
    }
    b_connected = [x for _, _, m, x in b_lines if m == "peer connected"]
    assert b_connected and b_connected[0]["peer"] == a_pub.to_base64(), b_connected
    assert b_connected[0]["addr"].startswith("127.0.0.1:")
    # The checkpoint a signed and the head b took from it name a's log, in full.
    assert ("checkpoint signed", a_log, "50") in {
        (m, x.get("log"), x.get("size")) for _, _, m, x in a_lines
    }
    assert ("head accepted", a_log) in {(m, x.get("log")) for _, _, m, x in b_lines}
    assert ("node ready", a_log) in {(m, x.get("log")) for _, _, m, x in a_lines}
    # Quiet by default: nothing at info for each message (50 entries went across).
    for lines in (a_lines, b_lines):
        assert len([line for line in lines if line[0] == "INFO"]) <= 8, lines


#: Lines about a connection before its handshake finished: no peer key is known yet.
BEFORE_HANDSHAKE = {"handshake failed", "refusing connection"}
#: Loggers whose lines about peers and connections must name the peer (the control socket's
#: connections are local clients).
PEER_LOGGERS = {"trustix_p2p.transport.server", "trustix_p2p.peering", "trustix_p2p.discovery.mdns"}


def node_lines(text: str, node: str) -> list[tuple[str, str, str, dict[str, str]]]:
    """Every line a node process wrote is a log line; those of its own loggers parse as
    `<date> <time> <LEVEL> <logger> <message> key=value...`, carry node=, and peer= or log=
    when they are about a peer, a connection, a log or a checkpoint."""
    parsed = []
    for line in text.splitlines():
        m = LINE.fullmatch(line)
        assert m is not None, f"not a log line: {line!r}"
        if not m["logger"].startswith("trustix_p2p."):
            continue  # a library's own line (zeroconf, hypercorn's internals)
        fields = parse_line(line)
        assert fields is not None, line
        _, logger, message, kv = fields
        assert "=" not in message, line  # values are fields, not part of the message
        assert kv.get("node") == node, line
        words = message.lower()
        about_peer = "peer" in words or "connection" in words
        if about_peer and logger in PEER_LOGGERS and message not in BEFORE_HANDSHAKE:
            assert len(kv.get("peer", "")) == 44, line  # a base64 public key
        if "checkpoint" in words or "log" in words.split() or "head" in words:
            assert len(kv.get("log", "")) == 64, line  # a full hex log id
        parsed.append(fields)
    return parsed
