"""Helpers for tests that run real `trustix-p2p` processes."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from trustix_p2p.control.client import ControlClient
from trustix_p2p.errors import NodeUnavailableError


def cli(*args: str, timeout: float = 60, **kw: object) -> subprocess.CompletedProcess[str]:
    """Run `python -m trustix_p2p ARGS...` to completion."""
    return subprocess.run(
        [sys.executable, "-m", "trustix_p2p", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        **kw,  # type: ignore[arg-type]
    )


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *fragments: str) -> str:
    """Exit status 2, no traceback, and a last stderr line `trustix-p2p: error: ...`
    holding every fragment; returns that line."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines, "no error message"
    line = lines[-1]
    assert line.startswith("trustix-p2p: error: "), proc.stderr
    for fragment in fragments:
        assert fragment in line, (fragment, line)
    return line


def start_node(config: Path, **kw: object) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "trustix_p2p", "node", "--config", str(config)],
        stderr=subprocess.PIPE,
        **kw,  # type: ignore[call-overload]
    )


def wait_ready(sock: Path, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """Wait until the node answers status on `sock` (fails if the process exits first)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read().decode() if proc.stderr else ""
            raise AssertionError(f"node exited with {proc.returncode}: {err}")
        try:
            with ControlClient(sock, timeout=2) as c:
                c.status()
            return
        except NodeUnavailableError:
            time.sleep(0.02)
    raise AssertionError("node did not come up")


def free_port() -> int:
    """A loopback TCP port free at the moment of asking."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def terminate(proc: subprocess.Popen[Any], timeout: float = 30) -> int:
    """SIGTERM, wait (SIGKILL after `timeout`); the exit status."""
    if proc.poll() is None:
        proc.terminate()
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


def stop(proc: subprocess.Popen[bytes], timeout: float = 20) -> str:
    """SIGTERM, wait, and return what the node wrote to stderr."""
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    err = proc.stderr.read().decode() if proc.stderr else ""
    if proc.stderr:
        proc.stderr.close()
    return err


@contextlib.contextmanager
def running(config: Path, sock: Path, **kw: object) -> Iterator[subprocess.Popen[bytes]]:
    proc = start_node(config, **kw)
    try:
        wait_ready(sock, proc)
        yield proc
    finally:
        stop(proc)


def node_config(
    directory: Path,
    *,
    key: bool = True,
    extra: str = "",
    state: str = "state",
    checkpoint_interval: float = 0.05,
) -> tuple[Path, Path]:
    """Write `node.toml` (and a key) in `directory`; returns (config path, socket path)."""
    if key and not (directory / "node.key").exists():
        from trustix_p2p.keyfile import generate_key_file

        generate_key_file(directory / "node.key")
    lines = [f'state_dir = "{state}"', 'control_socket = "control.sock"']
    if key:
        lines.append('key_file = "node.key"')
    lines.append(f"checkpoint_interval = {checkpoint_interval}")
    lines.append("spool_poll_interval = 0.05")
    config = directory / "node.toml"
    config.write_text("\n".join(lines) + "\n" + extra)
    return config, directory / "control.sock"


def builder_and_mirror(
    tmp_path: Path, *, a_extra: str = "", b_extra: str = ""
) -> tuple[tuple[Path, Path], tuple[Path, Path]]:
    """Two node configs on loopback: "a" a builder, and "b" seeded with a (pinned to its key)
    mirroring what it hears of.  Returns ((config, socket) of a, (config, socket) of b)."""
    a_dir, b_dir = tmp_path / "a", tmp_path / "b"
    a_dir.mkdir()
    b_dir.mkdir()
    a_port, b_port = free_port(), free_port()
    a = node_config(a_dir, extra=f'listen = ["127.0.0.1:{a_port}"]\n' + a_extra)
    from trustix_p2p.keyfile import load_key_file

    a_key = load_key_file(a_dir / "node.key").public_key.to_base64()
    b = node_config(
        b_dir,
        extra=(
            f'listen = ["127.0.0.1:{b_port}"]\n'
            f'seeds = ["{a_key}@127.0.0.1:{a_port}"]\n'
            'follow_unknown = "mirror"\n' + b_extra
        ),
    )
    return a, b


def mount_tmpfs(path: Path, options: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", os.fspath(path)], check=True)


def umount(path: Path) -> None:
    subprocess.run(["umount", "-l", os.fspath(path)], check=False)
