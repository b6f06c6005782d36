"""The node's log: quiet by default, `--verbose` for debug lines, and never a secret."""

from __future__ import annotations

import base64
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

from tests import factories as f
from tests.nodeproc import free_port, node_config, stop, wait_ready
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
    a_dir, b_dir = tmp_path / "a", tmp_path / "b"
    a_dir.mkdir()
    b_dir.mkdir()
    a_port, b_port = free_port(), free_port()
    a_config, a_sock = node_config(
        a_dir, extra=f'listen = ["127.0.0.1:{a_port}"]\nlog_level = "warning"\n'
    )
    a_key = load_key_file(a_dir / "node.key").public_key.to_base64()
    b_config, b_sock = node_config(
        b_dir,
        extra=(
            f'listen = ["127.0.0.1:{b_port}"]\n'
            f'seeds = ["{a_key}@127.0.0.1:{a_port}"]\n'
            'follow_unknown = "mirror"\nlog_level = "warning"\n'
        ),
    )
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
    text = (tmp_path / "a.log").read_text() + (tmp_path / "b.log").read_text()
    assert " DEBUG " in text  # --verbose wins over log_level = "warning"
    for secret in secrets_of(a_dir / "node.key") + secrets_of(b_dir / "node.key"):
        assert secret not in text
