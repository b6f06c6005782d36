"""Crash safety: kill -9 a real node process at random moments during acknowledged submissions."""

from __future__ import annotations

import random
import subprocess
import sys
import threading
from pathlib import Path

from tests import factories as f
from tests.nodeproc import wait_ready
from trustix_p2p.control.client import submit_leaves
from trustix_p2p.errors import NodeUnavailableError
from trustix_p2p.keyfile import write_key_file
from trustix_p2p.storage import Store

KEY = f.key("crashy")
TRIALS = 50


def test_acknowledged_entries_survive_kill_9_at_random_moments(tmp_path: Path) -> None:
    rng = random.Random(20261125)
    write_key_file(tmp_path / "node.key", KEY)
    sock = tmp_path / "control.sock"
    config = tmp_path / "node.toml"
    config.write_text(
        'state_dir = "state"\nkey_file = "node.key"\ncontrol_socket = "control.sock"\n'
        "checkpoint_interval = 0.02\nspool_poll_interval = 0.05\n"
    )
    acked: dict[bytes, int] = {}
    next_leaf = 0
    checkpoints_seen = 0
    for _trial in range(TRIALS):
        proc = subprocess.Popen(
            [sys.executable, "-m", "trustix_p2p", "node", "--config", str(config)],
            stderr=subprocess.PIPE,
        )
        try:
            wait_ready(sock, proc)
            killer = threading.Timer(rng.uniform(0.0, 0.25), proc.kill)
            killer.start()
            while proc.poll() is None:
                batch = [f.leaf(next_leaf + i) for i in range(rng.randint(1, 30))]
                next_leaf += len(batch)
                try:
                    indices = submit_leaves(sock, batch, timeout=5)
                except NodeUnavailableError:
                    break
                acked.update(zip(batch, indices, strict=True))
            killer.join()
        finally:
            proc.kill()
            proc.wait()
            if proc.stderr:
                proc.stderr.close()
        with Store(tmp_path / "state" / "db") as store:
            log = store.open_log(KEY.public_key, own=True)  # checks the last checkpoint
            for leaf, index in acked.items():
                assert log.leaf(index) == leaf
            report = log.verify()
            assert report.ok, report.problems
            cp = log.checkpoint()
            if cp is not None:
                assert cp.checkpoint.size <= log.size
                checkpoints_seen += 1
    assert len(acked) > TRIALS  # the trials really submitted under fire
    assert checkpoints_seen > 0
