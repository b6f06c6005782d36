"""`trustix-p2p decide` and `trustix-p2p cache-proxy`: the workstation's commands.  (DESIGN §5, §8)

    trustix-p2p cache-proxy --policy FILE --listen 127.0.0.1:PORT --nix-key FILE

serves the real `nix` a binary cache (`substituters = http://127.0.0.1:PORT`) that answers only
for store paths the policy trusts, decided by the light client (`trustix_p2p.proxy.app`); the
NARs come from the policy's `upstreams`, re-hashed as they stream.

    trustix-p2p decide --policy FILE STORE_PATH... [--json]

A store path may be written in full, as its 32-character hash part, or as a `.drv` file (read
from the local store) standing for its outputs.  With `--json`, one JSON object a line:

    {"store_path", "trusted", "nar_hash", "agreed", "dissented", "missing", "excluded",
     "conflicting"}

Exit status: 0 if every path is trusted, 1 if any is not, 2 on a usage or policy error.
Problems met on the way (a node that lied, evidence found) go to stderr, one line each.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import signal
import sys
from pathlib import Path
from typing import Any

import attrs
import trio

from trustix_p2p.client.light import LightClient, sources_for
from trustix_p2p.client.policy import Policy, load_policy
from trustix_p2p.client.state import ClientState
from trustix_p2p.core.decision import Decision
from trustix_p2p.core.nix32 import format_nar_hash
from trustix_p2p.core.storepath import DEFAULT_STORE_DIR
from trustix_p2p.errors import ConfigError, DecodeError
from trustix_p2p.logfmt import configure_logging, kv

__all__ = ["register", "resolve_paths"]

log = logging.getLogger("trustix_p2p.proxy")

_NIX32 = set("0123456789abcdfghijklmnpqrsvwxyz")


def resolve_paths(args: list[str], store_dir: str = DEFAULT_STORE_DIR) -> list[str]:
    """Full store paths (or `<store>/<hash part>` for a bare hash) for each argument."""
    out: list[str] = []
    for arg in args:
        if len(arg) == 32 and set(arg) <= _NIX32:
            out.append(f"{store_dir}/{arg}")
            continue
        if not arg.startswith(store_dir + "/"):
            raise ConfigError(f"{arg!r} is neither a store path under {store_dir} nor a hash part")
        if arg.endswith(".drv"):
            from trustix_p2p.nix.drv import read_derivation

            try:
                drv = read_derivation(arg)
            except (OSError, DecodeError) as exc:
                raise ConfigError(f"cannot read the derivation {arg}: {exc}") from exc
            paths = list(drv.output_paths().values())
            if not paths:
                raise ConfigError(f"the derivation {arg} has no fixed output paths")
            out += paths
            continue
        out.append(arg)
    return out


def _table(decisions: list[Decision]) -> str:
    lines = []
    for d in decisions:
        verdict = "trusted" if d.trusted else "NOT trusted"
        lines.append(f"{d.store_path}: {verdict}")
        if d.nar_hash is not None:
            lines.append(f"  nar hash    {format_nar_hash(d.nar_hash)}")
        lines.append(f"  agreed      {', '.join(d.agreed) or '-'}")
        for name, h in d.dissented:
            lines.append(f"  dissented   {name} ({format_nar_hash(h)})")
        if d.missing:
            lines.append(f"  missing     {', '.join(d.missing)}")
        for name, reason in d.excluded:
            lines.append(f"  excluded    {name} ({reason})")
        if d.conflicting:
            lines.append(f"  conflicting {', '.join(d.conflicting)}")
    return "\n".join(lines)


def _load(policy_path: Path, state_file: Path | None) -> Policy:
    """The policy, with `--state-file` (if given) in place of its `state_file`: a service
    whose policy is read-only (in the Nix store, say) keeps its state in its state directory."""
    policy = load_policy(policy_path)
    if state_file is not None:
        policy = attrs.evolve(policy, state_file=state_file.absolute())
    return policy


async def _decide_all(
    policy_path: Path, paths: list[str], state_file: Path | None = None
) -> tuple[list[Decision], list[str]]:
    policy = _load(policy_path, state_file)
    client = LightClient(policy, sources_for(policy), ClientState.load(policy))
    try:
        await client.load_node_evidence()
        decisions = await client.decide_many(paths)
    finally:
        await client.aclose()
        client.state.save()
    return decisions, client.problems


def cmd_decide(args: argparse.Namespace) -> int:
    paths = resolve_paths(args.store_paths)
    decisions, problems = trio.run(_decide_all, args.policy, paths, args.state_file)
    for line in problems:
        print(f"trustix-p2p: {line}", file=sys.stderr)
    if args.json:
        for d in decisions:
            print(json.dumps(d.to_json()))
    else:
        print(_table(decisions))
    return 0 if all(d.trusted for d in decisions) else 1


async def _serve_cache_proxy(
    policy_path: Path,
    listen: str,
    key_file: Path,
    metrics_listen: str | None = None,
    state_file: Path | None = None,
) -> None:
    from trustix_p2p.commands.proxy import load_nix_key_file
    from trustix_p2p.metrics import InstrumentedApp, ProxyMetrics, metrics_app
    from trustix_p2p.proxy.app import CacheProxy
    from trustix_p2p.proxy.serve import serve_proxy

    policy = _load(policy_path, state_file)
    if not policy.upstreams:
        raise ConfigError("policy: the cache proxy needs upstreams to fetch NARs from")
    key = load_nix_key_file(key_file)
    client = LightClient(policy, sources_for(policy), ClientState.load(policy))
    lock = trio.Lock()  # one decision at a time: the client's state is not shared safely
    metrics = ProxyMetrics() if metrics_listen is not None else None

    async def decide(store_path: str) -> Decision:
        async with lock:
            decision = await client.decide(store_path)
            for line in client.problems:
                log.warning("decision problem", extra=kv(path=store_path, problem=line))
            client.problems.clear()
            if metrics is not None:
                metrics.decisions.labels("trusted" if decision.trusted else "untrusted").inc()
            return decision

    await client.load_node_evidence()
    proxy = CacheProxy(decide, policy.upstreams, key)
    app: Any = proxy
    if metrics is not None:
        app = InstrumentedApp(proxy, metrics, trio.current_time)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_stop_on_signal, nursery.cancel_scope)
            url = await nursery.start(serve_proxy, app, listen)
            log.info(
                "cache proxy ready; nix.conf's substituters may point at it", extra=kv(url=url)
            )
            if metrics is not None and metrics_listen is not None:
                murl = await nursery.start(
                    serve_proxy, metrics_app(metrics.registry), metrics_listen
                )
                log.info("serving cache proxy metrics", extra=kv(url=f"{murl}/metrics"))
    finally:
        await client.aclose()
        client.state.save()


async def _stop_on_signal(scope: trio.CancelScope) -> None:
    """SIGTERM (systemd, a container engine) or SIGINT: stop serving, save the state, exit 0."""
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            log.info("shutting down on a signal", extra=kv(signal=signal.Signals(signum).name))
            scope.cancel()
            return


def cmd_cache_proxy(args: argparse.Namespace) -> int:
    configure_logging(logging.INFO)
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C: a normal way to stop it
        trio.run(
            _serve_cache_proxy,
            args.policy,
            args.listen,
            args.nix_key,
            args.metrics_listen,
            args.state_file,
        )
    return 0


_STATE_FILE_HELP = "where the client keeps what it verified (default: the policy's state_file)"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "decide",
        help="decide whether store paths are trusted (M of N builders agree)",
        description="Ask the policy's nodes, verify every proof, and decide each path: exit 0 "
        "if all are trusted, 1 if any is not, 2 on a usage or policy error.",
    )
    p.add_argument("--policy", type=Path, required=True, help="trust policy (TOML)")
    p.add_argument("--json", action="store_true", help="one JSON object a line")
    p.add_argument("--state-file", type=Path, help=_STATE_FILE_HELP)
    p.add_argument("store_paths", nargs="+", metavar="STORE_PATH", help="path, hash part or .drv")
    p.set_defaults(func=cmd_decide)

    p = sub.add_parser(
        "cache-proxy",
        help="serve nix a binary cache that answers only for trusted store paths",
    )
    p.add_argument("--policy", type=Path, required=True, help="trust policy (TOML)")
    p.add_argument("--listen", required=True, help="host:port, e.g. 127.0.0.1:8080")
    p.add_argument("--nix-key", type=Path, required=True, help="Nix signing key (nix-keygen)")
    p.add_argument(
        "--metrics-listen",
        metavar="ADDRESS",
        help="serve Prometheus metrics on host:port (off by default; docs/metrics.md)",
    )
    p.add_argument("--state-file", type=Path, help=_STATE_FILE_HELP)
    p.set_defaults(func=cmd_cache_proxy)
