"""Soak: kill -9 a real node at random moments while it acknowledges submissions, many times.

Each trial starts `trustix-p2p node` on the same state directory, submits batches of 1..30
entries over the control socket, and SIGKILLs the node after a random 0..250 ms (checkpoints
every 20 ms, so kills land during appends, signing and checkpoint-file writes alike).  After
each kill the store is opened as the node would open it (checkpoint file included) and every
acknowledged entry must be at the index it was acknowledged with; at the end `verify`
recomputes the whole log.  Prints trials, entries acknowledged, entries lost (must be 0),
start-up refusals (must be 0) and the time taken.

    .venv/bin/python benchmarks/soak_kill9.py             # 1,000 trials, about 10 minutes
    .venv/bin/python benchmarks/soak_kill9.py --trials 50
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests import factories as f
from trustix_p2p.control.client import ControlClient, submit_leaves
from trustix_p2p.errors import NodeUnavailableError, TrustixError
from trustix_p2p.keyfile import write_key_file
from trustix_p2p.ownlog import OwnLog
from trustix_p2p.storage import Store

KEY = f.key("soak")


def wait_ready(sock: Path, proc: subprocess.Popen[bytes]) -> bool:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with ControlClient(sock, timeout=1) as c:
                c.status()
            return True
        except NodeUnavailableError:
            time.sleep(0.005)
    return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=20261201)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="trustix-soak-") as tmp_name:
        tmp = Path(tmp_name)
        write_key_file(tmp / "node.key", KEY)
        sock = tmp / "control.sock"
        config = tmp / "node.toml"
        config.write_text(
            'state_dir = "state"\nkey_file = "node.key"\ncontrol_socket = "control.sock"\n'
            "checkpoint_interval = 0.02\nspool_poll_interval = 0.05\n"
        )
        acked: dict[bytes, int] = {}
        next_leaf = 0
        lost = refusals = 0
        for trial in range(args.trials):
            proc = subprocess.Popen(
                [sys.executable, "-m", "trustix_p2p", "node", "--config", str(config)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            try:
                if not wait_ready(sock, proc):
                    refusals += 1
                    err = proc.stderr.read().decode() if proc.stderr else ""
                    print(f"trial {trial}: the node did not start: {err.strip()[-300:]}")
                    break
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
            try:
                with Store(tmp / "state" / "db") as store:
                    log = OwnLog.open(store, KEY, tmp / "state").log
                    lost += sum(1 for leaf, index in acked.items() if log.leaf(index) != leaf)
            except TrustixError as exc:
                refusals += 1
                print(f"trial {trial}: the store was refused: {exc}")
                break
            if (trial + 1) % 100 == 0:
                print(
                    f"  {trial + 1} trials, {len(acked)} entries acknowledged, {lost} lost, "
                    f"{time.monotonic() - started:.0f} s",
                    flush=True,
                )
        with Store(tmp / "state" / "db") as store:
            report = store.log(KEY.public_key.log_id()).verify()
    elapsed = time.monotonic() - started
    print(f"trials                  {trial + 1}")
    print(f"entries acknowledged    {len(acked)}")
    print(f"entries lost            {lost}")
    print(f"start-up refusals       {refusals}")
    print(f"final verify            {'ok' if report.ok else report.problems[:3]}")
    print(f"time                    {elapsed:.0f} s ({elapsed / (trial + 1) * 1000:.0f} ms/trial)")
    return 0 if lost == 0 and refusals == 0 and report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
