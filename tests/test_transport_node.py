"""A real `trustix-p2p node` process accepts Noise connections; `trustix-p2p ping` reaches it."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

from trustix_p2p.control.client import ControlClient
from trustix_p2p.core.keys import PrivateKey
from trustix_p2p.errors import NodeUnavailableError
from trustix_p2p.keyfile import write_key_file

KEY = PrivateKey.from_seed(hashlib.sha256(b"node transport test").digest())


def wait_for_listen_address(sock: Path, proc: subprocess.Popen[bytes]) -> str:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        try:
            with ControlClient(sock, timeout=1) as client:
                status = client.status()
            assert len(status.listen) == 1
            return str(status.listen[0])
        except NodeUnavailableError:
            time.sleep(0.02)
    raise AssertionError("node did not come up")


def ping(address: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "trustix_p2p", "ping", address, *extra],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_node_process_answers_ping_over_tcp(tmp_path: Path) -> None:
    write_key_file(tmp_path / "node.key", KEY)
    config = tmp_path / "node.toml"
    config.write_text(
        'state_dir = "state"\nkey_file = "node.key"\ncontrol_socket = "control.sock"\n'
        'listen = ["127.0.0.1:0"]\n'
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "trustix_p2p", "node", "--config", str(config)],
        stderr=subprocess.PIPE,
    )
    try:
        address = wait_for_listen_address(tmp_path / "control.sock", proc)
        assert address.startswith("127.0.0.1:") and not address.endswith(":0")
        pinned = f"{KEY.public_key.to_base64()}@{address}"
        result = ping(pinned, "--count", "2")
        assert result.returncode == 0, result.stderr
        report = json.loads(result.stdout)
        assert report["peer_key"] == KEY.public_key.to_base64()
        assert len(report["rtt_ms"]) == 2
        # A wrong pinned key is refused with a one-line error, not a traceback.
        wrong = PrivateKey.from_seed(bytes(32)).public_key.to_base64()
        refused = ping(f"{wrong}@{address}")
        assert refused.returncode == 2
        assert "expected pinned key" in refused.stderr
        assert "Traceback" not in refused.stderr
        # The node is still serving afterwards.
        assert ping(pinned).returncode == 0
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        if proc.stderr:
            proc.stderr.close()
