"""The Containerfile's own install and start steps, run in a clean venv (no container engine
runs on these machines).

The steps are read from the Containerfile, not copied here, so they cannot drift: the build
stage's COPY and RUN lines, the final stage's COPY and ENV lines, ENTRYPOINT and HEALTHCHECK.
Absolute paths of the image are mapped into a temporary directory, the listen address to a free
loopback port, and `python` to this interpreter. The one step left out is `useradd`: the test
runs as whoever runs it.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.nodeproc import terminate

ROOT = Path(__file__).resolve().parent.parent
CONTAINERFILE = ROOT / "Containerfile"


def instructions() -> list[tuple[int, str, str]]:
    """(stage, instruction, arguments) for each line, continuation lines joined."""
    out: list[tuple[int, str, str]] = []
    stage = -1
    pending = ""
    for raw in CONTAINERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        word, _, rest = line.partition(" ")
        word = word.upper()
        if word == "FROM":
            stage += 1
        out.append((stage, word, rest.strip()))
    return out


def test_the_image_is_multi_stage_non_root_with_a_volume_a_port_and_a_health_check() -> None:
    steps = instructions()
    stages = {s for s, word, _ in steps if word == "FROM"}
    assert len(stages) >= 2
    froms = [rest for _, word, rest in steps if word == "FROM"]
    assert all("python:3.11-slim" in f for f in froms)
    final = max(stages)
    words = {word: rest for s, word, rest in steps if s == final}
    assert words["USER"] not in ("root", "0")
    assert "/var/lib/trustix-p2p" in words["VOLUME"]
    assert words["EXPOSE"] == "7946"
    assert "status" in words["HEALTHCHECK"]


@pytest.fixture
def image_root(tmp_path: Path) -> Path:
    root = tmp_path / "image"
    root.mkdir()
    return root


def test_the_install_and_start_steps_give_a_node_that_answers_status(
    image_root: Path, tmp_path: Path
) -> None:
    steps = instructions()
    final = max(s for s, word, _ in steps if word == "FROM")
    mapping = {
        "/opt/trustix-p2p": image_root / "opt",
        "/src": image_root / "src",
        "/etc/trustix-p2p": image_root / "etc",
        "/var/lib/trustix-p2p": image_root / "state",
        "/usr/local/bin": image_root / "bin",
    }

    def mapped(text: str) -> str:
        for prefix, target in sorted(mapping.items(), key=lambda kv: -len(kv[0])):
            text = text.replace(prefix, str(target))
        return text

    for target in mapping.values():
        target.mkdir(parents=True, exist_ok=True)
    workdir = ROOT
    env = {"HOME": str(tmp_path), "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    for var in ("PIP_FIND_LINKS", "PIP_CERT", "PIP_INDEX_URL", "SSL_CERT_FILE", "LANG"):
        if var in os.environ:
            env[var] = os.environ[var]
    entrypoint: list[str] = []
    health: list[str] = []
    for stage, word, rest in steps:
        if word == "WORKDIR":
            workdir = Path(mapped(rest))
            workdir.mkdir(parents=True, exist_ok=True)
        elif word == "COPY":
            args = [a for a in rest.split() if not a.startswith("--from=")]
            if rest.startswith("--from="):
                continue  # from the build stage: already in place (same mapped path)
            *sources, dest = args
            for source in sources:
                src = ROOT / source
                dst = Path(mapped(dest)) if dest.startswith("/") else workdir / dest
                if dest.endswith("/") or dest in ("./", "."):
                    dst = dst / src.name
                dst.parent.mkdir(parents=True, exist_ok=True)
                if src.is_dir():
                    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
                else:
                    text = src.read_text()
                    if src.suffix == ".toml":
                        text = mapped(text).replace("0.0.0.0:7946", "127.0.0.1:0")
                    dst.write_text(text)
                    dst.chmod(src.stat().st_mode)
        elif word == "RUN":
            if "useradd" in rest:
                continue  # the test runs as whoever runs it
            command = mapped(rest)
            words = shlex.split(command)
            if words and words[0] == "python":
                command = shlex.quote(sys.executable) + command[len("python") :]
            done = subprocess.run(
                ["sh", "-c", command],
                cwd=workdir,
                env=env,
                capture_output=True,
                text=True,
                timeout=900,
                check=False,
            )
            assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
        elif word == "ENV" and stage == final:
            for pair in shlex.split(rest):
                name, _, value = pair.partition("=")
                env[name] = mapped(value)
        elif word == "ENTRYPOINT":
            entrypoint = [mapped(a) for a in json.loads(rest)]
        elif word == "HEALTHCHECK":
            cmd = rest[rest.index("CMD") + 3 :].strip()
            health = [mapped(a) for a in json.loads(cmd)]
    assert entrypoint and health
    node = subprocess.Popen(
        entrypoint, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 60
        answer = None
        while time.monotonic() < deadline:
            assert node.poll() is None, node.communicate()[1][-3000:]
            answer = subprocess.run(health, env=env, capture_output=True, text=True, check=False)
            if answer.returncode == 0:
                break
            time.sleep(0.5)
        assert answer is not None and answer.returncode == 0, answer and answer.stderr
        status = json.loads(answer.stdout)
        assert status["public_key"]
        key = mapping["/var/lib/trustix-p2p"] / "node.key"
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    finally:
        terminate(node)
    assert node.returncode == 0, node.stderr.read() if node.stderr else ""
