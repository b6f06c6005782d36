"""A real node process under connection floods: its memory, and whether honest peers get in.

    .venv/bin/python benchmarks/bench_floods.py          # about 75 s

For each flood in `FLOODS` this starts a fresh node (`trustix-p2p node --config FILE`, with
a new key from `trustix-p2p keygen` and a state directory in a temporary directory, listening
on 127.0.0.1:0), measures its idle RSS, then runs the flood for `FLOOD_SECONDS` while a
separate process pings the node honestly from 127.0.0.1 (connect, handshake, Ping/Pong,
close, over and over) and a thread samples the node's VmRSS every 20 ms.  It prints one row
per flood: idle RSS, peak RSS, and honest pings that succeeded out of those attempted.

Floods come from other loopback addresses (127.0.0.2 and up; Linux routes all of 127/8 to
the loopback interface), so the per-source limit treats them as the strangers they are.
Every flood is bounded in time and in count, and targets only 127.0.0.0/8.  A node whose RSS
passes `--rss-cap-mb` is killed (the row says so) rather than allowed to exhaust the machine.

To add a flood (a control-socket flood, say), write a function `(NodeTarget, deadline) ->
str` that floods until `deadline` (a `time.monotonic()` value) and returns a short note, and
append it to `FLOODS`.  Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import ipaddress
import json
import os
import resource
import select
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from functools import partial
from pathlib import Path

import attrs
import trio

from trustix_p2p.core import wire
from trustix_p2p.core.keys import PrivateKey
from trustix_p2p.core.noise import LocalIdentity
from trustix_p2p.transport import (
    CONNECTION_ERRORS,
    Connection,
    NoiseStream,
    PeerUnreachableError,
    TransportLimits,
    connect,
    ping,
)

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
FLOOD_SECONDS = 10.0
SAMPLE_INTERVAL = 0.02
# The honest client starts this long after the flood, so it meets the flood at full strength.
HONEST_DELAY = 1.0
HONEST_ATTEMPT_TIMEOUT = 5.0
MAX_HONEST_ATTEMPTS = 100_000
STARTUP_TIMEOUT = 30.0
# Flood connections come from these addresses in turn (never from the honest 127.0.0.1).
FLOOD_SOURCES = [f"127.0.0.{n}" for n in range(2, 12)]
MANY_SOURCES = [f"127.0.0.{n}" for n in range(2, 41)]


@attrs.frozen
class NodeTarget:
    """What a flood may aim at: the running node's addresses and paths."""

    pid: int
    host: str
    port: int
    control_socket: Path
    state_dir: Path
    config: Path


Flood = Callable[[NodeTarget, float], str]


def _check_loopback(host: str) -> None:
    if not ipaddress.ip_address(host).is_loopback:
        raise SystemExit(f"refusing to flood {host}: only 127.0.0.0/8 is allowed")


# ---- the node process --------------------------------------------------------------------------


def _cli() -> list[str]:
    script = Path(PYTHON).parent / "trustix-p2p"
    return [str(script)] if script.exists() else [PYTHON, "-m", "trustix_p2p"]


@contextlib.contextmanager
def running_node(workdir: Path) -> Iterator[tuple[subprocess.Popen[bytes], NodeTarget]]:
    workdir.mkdir()
    key = workdir / "node.key"
    subprocess.run([*_cli(), "keygen", str(key)], check=True, capture_output=True, timeout=30)
    config = workdir / "node.toml"
    state = workdir / "state"
    config.write_text(
        f'state_dir = "{state}"\nkey_file = "{key}"\nlisten = ["127.0.0.1:0"]\nlog_level = "info"\n'
    )
    log = (workdir / "node.log").open("wb")
    proc = subprocess.Popen(
        [PYTHON, "-m", "trustix_p2p", "node", "--config", str(config)],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
        cwd=ROOT,
    )
    try:
        status = _wait_for_status(proc, config)
        host, _, port = status["listen"][0].rpartition(":")
        _check_loopback(host)
        yield (
            proc,
            NodeTarget(proc.pid, host, int(port), state / "control.sock", state, config),
        )
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        log.close()


def _wait_for_status(proc: subprocess.Popen[bytes], config: Path) -> dict[str, list[str]]:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the node exited with status {proc.returncode} at startup")
        result = subprocess.run(
            [PYTHON, "-m", "trustix_p2p", "status", "--config", str(config), "--timeout", "2"],
            capture_output=True,
            timeout=30,
            cwd=ROOT,
        )
        if result.returncode == 0:
            status: dict[str, list[str]] = json.loads(result.stdout)
            if status.get("listen"):
                return status
        time.sleep(0.1)
    raise SystemExit("the node did not answer `status` in time")


def _proc_status_kb(pid: int, field: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class RssSampler(threading.Thread):
    """Samples VmRSS every 20 ms; kills the node if it passes `cap_kb`."""

    def __init__(self, pid: int, cap_kb: int, max_seconds: float) -> None:
        super().__init__(name="rss-sampler", daemon=True)
        self.pid = pid
        self.cap_kb = cap_kb
        self.max_seconds = max_seconds
        self.stop = threading.Event()
        self.peak_kb = 0
        self.killed = False

    def run(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        while not self.stop.is_set() and time.monotonic() < deadline:
            rss = _proc_status_kb(self.pid, "VmRSS")
            if rss is None:
                return
            self.peak_kb = max(self.peak_kb, rss)
            if rss > self.cap_kb:
                os.kill(self.pid, signal.SIGKILL)
                self.killed = True
                return
            time.sleep(SAMPLE_INTERVAL)


# ---- the honest client (a process of its own) -------------------------------------------------


async def _honest(address: str, start_at: float, stop_at: float) -> dict[str, object]:
    await trio.sleep(max(0.0, start_at - time.monotonic()))
    key = PrivateKey.from_seed(os.urandom(32))
    ok = attempts = 0
    failures: dict[str, int] = {}
    slowest = 0.0
    while time.monotonic() < stop_at and attempts < MAX_HONEST_ATTEMPTS:
        attempts += 1
        reason = "timeout"
        began = time.monotonic()
        with trio.move_on_after(HONEST_ATTEMPT_TIMEOUT):
            try:
                connection = await connect(address, key)
                async with connection:
                    await ping(connection, attempts)
                ok += 1
                slowest = max(slowest, time.monotonic() - began)
                continue
            except (PeerUnreachableError, *CONNECTION_ERRORS) as exc:
                reason = f"{type(exc).__name__}: {exc}"
        failures[reason] = failures.get(reason, 0) + 1
    return {"ok": ok, "attempts": attempts, "failures": failures, "slowest": slowest}


def honest_main(address: str, start_at: float, stop_at: float) -> None:
    print(json.dumps(trio.run(_honest, address, start_at, stop_at)))


# ---- floods --------------------------------------------------------------------------------------


def no_flood(target: NodeTarget, deadline: float) -> str:
    """The control row: honest pings alone."""
    time.sleep(max(0.0, deadline - time.monotonic()))
    return "baseline"


def silent_flood(
    target: NodeTarget,
    deadline: float,
    *,
    sources: list[str],
    count: int = 300,
    max_opens: int = 200_000,
    round_seconds: float = 0.01,
) -> str:
    """`count` TCP connections that never send a byte, reopened whenever the node closes one."""
    _check_loopback(target.host)
    held: dict[int, socket.socket] = {}  # slot -> socket
    slot_of: dict[int, int] = {}  # fd -> slot
    poller = select.poll()
    opened = closed = errors = most = 0
    try:
        while time.monotonic() < deadline:
            started = time.monotonic()
            for slot in range(count):
                if slot in held or opened >= max_opens:
                    continue
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                try:
                    sock.setblocking(False)
                    sock.bind((sources[slot % len(sources)], 0))
                    status = sock.connect_ex((target.host, target.port))
                except OSError:
                    status = -1
                if status not in (0, errno.EINPROGRESS):
                    sock.close()
                    errors += 1
                    continue
                opened += 1
                held[slot] = sock
                slot_of[sock.fileno()] = slot
                poller.register(sock, select.POLLIN | select.POLLERR | select.POLLHUP)
            most = max(most, len(held))
            # Any event on a socket that never sends means the node closed or reset it.
            for fd, _events in poller.poll(round_seconds * 1000):
                poller.unregister(fd)
                held.pop(slot_of.pop(fd)).close()
                closed += 1
            time.sleep(max(0.0, round_seconds - (time.monotonic() - started)))
    finally:
        for sock in held.values():
            sock.close()
    return f"{opened} opened ({most} at once), {closed} closed by the node, {errors} failed"


async def _connect_from(source: str, target: NodeTarget, identity: LocalIdentity) -> Connection:
    sock = trio.socket.socket()
    try:
        await sock.bind((source, 0))
        await sock.connect((target.host, target.port))
    except BaseException:
        sock.close()
        raise
    # No send timeout of our own: a flooder just waits when the node stops reading.
    stream = NoiseStream.initiator(trio.SocketStream(sock), identity, handshake_timeout=10)
    try:
        peer = await stream.do_handshake()
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    return Connection(stream, peer, f"{target.host}:{target.port}", TransportLimits())


def _run_connections(
    target: NodeTarget,
    deadline: float,
    connections: int,
    work: Callable[[Connection, dict[str, int]], Awaitable[None]],
) -> dict[str, int]:
    """Open `connections` from FLOOD_SOURCES at once and run `work` on each until `deadline`."""
    _check_loopback(target.host)
    counts: dict[str, int] = {"handshakes": 0, "refused": 0}

    async def one(n: int) -> None:
        identity = LocalIdentity.from_private_key(PrivateKey.from_seed(os.urandom(32)))
        source = FLOOD_SOURCES[n % len(FLOOD_SOURCES)]
        try:
            connection = await _connect_from(source, target, identity)
        except (OSError, *CONNECTION_ERRORS):
            counts["refused"] += 1
            return
        counts["handshakes"] += 1
        try:
            await work(connection, counts)
        except CONNECTION_ERRORS:
            counts["dropped by the node"] = counts.get("dropped by the node", 0) + 1
        finally:
            await trio.aclose_forcefully(connection.stream)

    async def main() -> None:
        with trio.move_on_after(max(0.0, deadline - time.monotonic())):
            async with trio.open_nursery() as nursery:
                for n in range(connections):
                    nursery.start_soon(one, n)

    trio.run(main)
    return counts


def nested_array_flood(target: NodeTarget, deadline: float, *, connections: int = 20) -> str:
    """Each connection handshakes, then sends one 4 MiB message: an array32 of 0x90 (empty
    arrays), the largest message the default limit lets in; then reads until closed."""
    size = TransportLimits().max_message_size
    body = b"\xdd" + (size - 5).to_bytes(4, "big") + b"\x90" * (size - 5)
    frame = len(body).to_bytes(4, "big") + body

    async def work(connection: Connection, counts: dict[str, int]) -> None:
        await connection.stream.send_all(frame)
        counts["sent"] = counts.get("sent", 0) + 1
        for _ in range(1000):
            if not await connection.stream.receive_some():
                counts["closed by the node"] = counts.get("closed by the node", 0) + 1
                return

    counts = _run_connections(target, deadline, connections, work)
    return ", ".join(f"{value} {name}" for name, value in counts.items())


def ping_flood(target: NodeTarget, deadline: float, *, connections: int = 20) -> str:
    """Each connection handshakes, then sends Pings as fast as the node takes them and never
    reads a Pong."""
    batch = b"".join(wire.encode_message(wire.Ping(n)) for n in range(1000))
    sent = [0]

    async def work(connection: Connection, counts: dict[str, int]) -> None:
        for _ in range(10_000_000):
            await connection.stream.send_all(batch)
            sent[0] += 1000

    counts = _run_connections(target, deadline, connections, work)
    notes = ", ".join(f"{value} {name}" for name, value in counts.items())
    return f"{notes}, {sent[0]} Pings sent"


# ---- control-socket floods (the owner-only socket, from the node's own user) --------------------


def control_nested_frames(target: NodeTarget, deadline: float) -> str:
    """Frames of 16 MiB of nested empty arrays, one after another, four at a time."""
    inner = (16 << 20) - 64
    body = b"\x92\xa6submit\xdd" + struct.pack(">I", inner) + b"\x90" * inner
    frame = struct.pack(">I", len(body)) + body
    sent = 0

    def one() -> None:
        nonlocal sent
        while time.monotonic() < deadline and sent < 200:
            s = socket.socket(socket.AF_UNIX)
            s.settimeout(30)
            try:
                s.connect(str(target.control_socket))
                s.sendall(frame)
                s.recv(4096)
                sent += 1
            except OSError:
                pass
            finally:
                s.close()

    threads = [threading.Thread(target=one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return f"{sent} frames of 16 MiB sent and refused"


def control_idle_and_unread(target: NodeTarget, deadline: float) -> str:
    """500 idle clients plus 64 that pipeline lookups and never read a reply."""
    idle = []
    for _ in range(500):
        s = socket.socket(socket.AF_UNIX)
        s.connect(str(target.control_socket))
        idle.append(s)
    request = struct.pack(">I", 8) + b"\x91\xa6status"
    flooders = []
    for _ in range(64):
        s = socket.socket(socket.AF_UNIX)
        s.connect(str(target.control_socket))
        s.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            for _ in range(100_000):
                s.send(request)
        flooders.append(s)
    worst = 0.0
    answered = 0
    while time.monotonic() < deadline:
        t0 = time.monotonic()
        probe = socket.socket(socket.AF_UNIX)
        probe.settimeout(10)
        try:
            probe.connect(str(target.control_socket))
            probe.sendall(request)
            if probe.recv(4):
                answered += 1
        except OSError:
            pass
        finally:
            probe.close()
        worst = max(worst, time.monotonic() - t0)
        time.sleep(0.2)
    for s in idle + flooders:
        s.close()
    return f"status answered {answered} times, slowest {worst * 1000:.0f} ms"


FLOODS: list[tuple[str, Flood]] = [
    ("none (baseline)", no_flood),
    ("300 silent TCP, 1 source", partial(silent_flood, sources=["127.0.0.2"])),
    ("300 silent TCP, 39 sources", partial(silent_flood, sources=MANY_SOURCES)),
    ("20 x 4 MiB nested arrays", nested_array_flood),
    ("20 Ping flooders, no reads", ping_flood),
    ("control: 16 MiB nested-array frames", control_nested_frames),
    ("control: 500 idle + 64 unread", control_idle_and_unread),
]


# ---- running it all -----------------------------------------------------------------------------


@attrs.frozen
class Row:
    flood: str
    idle_mb: float
    peak_mb: float
    honest: str
    notes: str


def run_flood(name: str, flood: Flood, workdir: Path, cap_mb: int) -> Row:
    with running_node(workdir) as (proc, target):
        time.sleep(1.0)
        idle_kb = max(_proc_status_kb(target.pid, "VmRSS") or 0 for _ in range(3))
        sampler = RssSampler(target.pid, cap_mb * 1024, FLOOD_SECONDS + 30)
        sampler.start()
        start = time.monotonic()
        deadline = start + FLOOD_SECONDS
        honest = subprocess.Popen(
            [
                PYTHON,
                __file__,
                "--honest",
                f"{target.host}:{target.port}",
                str(start + HONEST_DELAY),
                str(deadline),
            ],
            stdout=subprocess.PIPE,
            cwd=ROOT,
        )
        try:
            notes = flood(target, deadline)
            out, _ = honest.communicate(timeout=FLOOD_SECONDS + 30)
        finally:
            if honest.poll() is None:
                honest.kill()
                honest.wait()
            sampler.stop.set()
            sampler.join(5)
        result = json.loads(out) if honest.returncode == 0 else {"ok": 0, "attempts": 0}
        if result.get("attempts"):
            notes += f"; slowest honest ping {result['slowest'] * 1000:.0f} ms"
        for reason, times in result.get("failures", {}).items():
            notes += f"; honest failed {times}x: {reason}"
        if sampler.killed:
            notes += f"; NODE KILLED: RSS above {cap_mb} MB"
        elif proc.poll() is not None:
            notes += f"; node exited with status {proc.returncode}"
    log_lines = (workdir / "node.log").read_bytes().count(b"\n")
    return Row(
        name,
        idle_kb / 1024,
        max(sampler.peak_kb, idle_kb) / 1024,
        f"{result['ok']}/{result['attempts']}",
        f"{notes}; node log {log_lines} lines",
    )


def main() -> None:
    # The control-socket floods hold several hundred sockets at once.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 8192)), hard))
    parser = argparse.ArgumentParser(description="A real node process under connection floods.")
    parser.add_argument("--rss-cap-mb", type=int, default=2048, help="kill the node above this")
    parser.add_argument("--only", metavar="TEXT", help="run only the floods whose name has TEXT")
    parser.add_argument("--honest", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.honest:
        honest_main(args.honest[0], float(args.honest[1]), float(args.honest[2]))
        return
    started = time.monotonic()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-floods-") as tmp:
        for n, (name, flood) in enumerate(FLOODS):
            if args.only and args.only not in name:
                continue
            rows.append(run_flood(name, flood, Path(tmp) / f"node-{n}", args.rss_cap_mb))
            print(f"  done: {name}", file=sys.stderr, flush=True)
    print(f"{'flood':<28} {'idle RSS MB':>11} {'peak RSS MB':>11} {'honest pings ok/total':>22}")
    for row in rows:
        print(f"{row.flood:<28} {row.idle_mb:>11.1f} {row.peak_mb:>11.1f} {row.honest:>22}")
    print()
    for row in rows:
        print(f"{row.flood}: {row.notes}")
    print(f"\n{FLOOD_SECONDS:g} s per flood; total {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
