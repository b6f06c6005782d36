"""The systemd units: hardened as promised, and the node's ExecStart line starts a node that
answers status (the line is read from the unit, with its paths mapped into a temporary
directory and the installed `trustix-p2p` for `/usr/bin/trustix-p2p`)."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.nodeproc import terminate

UNITS = Path(__file__).resolve().parent.parent / "deploy" / "systemd"
NODE_UNIT = UNITS / "trustix-p2p.service"
PROXY_UNIT = UNITS / "trustix-p2p-cache-proxy.service"


def service(unit: Path) -> dict[str, str]:
    """The [Service] section's settings (the last of a repeated key wins, as in systemd)."""
    out: dict[str, str] = {}
    section = ""
    for raw in unit.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line
            continue
        if section == "[Service]":
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


@pytest.mark.parametrize("unit", [NODE_UNIT, PROXY_UNIT], ids=lambda p: p.name)
def test_the_units_are_hardened(unit: Path) -> None:
    s = service(unit)
    assert s["User"] and s["User"] != "root"
    assert s["ProtectSystem"] == "strict"
    assert s["NoNewPrivileges"] == "yes"
    assert s["StateDirectory"]
    assert s["CapabilityBoundingSet"] == "" and s["AmbientCapabilities"] == ""
    assert s["ProtectHome"] == "yes" and s["PrivateTmp"] == "yes"
    assert s["ExecStart"].startswith("/usr/bin/trustix-p2p ")


def test_the_node_units_execstart_starts_a_node_that_answers_status(tmp_path: Path) -> None:
    exe = shutil.which("trustix-p2p") or str(Path(sys.executable).parent / "trustix-p2p")
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    config = tmp_path / "node.toml"
    config.write_text(
        f'state_dir = "{state}"\nkey_file = "{state}/node.key"\nlisten = ["127.0.0.1:0"]\n'
    )
    subprocess.run([exe, "keygen", str(state / "node.key")], check=True, capture_output=True)
    line = service(NODE_UNIT)["ExecStart"]
    line = line.replace("/etc/trustix-p2p/node.toml", str(config))
    argv = shlex.split(line)
    assert argv[0] == "/usr/bin/trustix-p2p"
    argv[0] = exe
    node = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        answer = None
        while time.monotonic() < deadline:
            assert node.poll() is None, node.communicate()[1][-3000:]
            answer = subprocess.run(
                [exe, "status", "--config", str(config)], capture_output=True, text=True
            )
            if answer.returncode == 0:
                break
            time.sleep(0.3)
        assert answer is not None and answer.returncode == 0, answer and answer.stderr
        assert json.loads(answer.stdout)["public_key"]
    finally:
        terminate(node)
    assert node.returncode == 0
