"""`trustix-p2p builders` and `trustix-p2p r13y`: reports over a local node's whole logs.

    trustix-p2p builders --policy FILE [--json]
    trustix-p2p r13y --config NODE_CONFIG [--json] [--html FILE]

Both read every entry of the logs they cover from a local node's control socket and believe
none of it until it is verified (`trustix_p2p.client.bulk`: the checkpoint's signature by the
log's key, and the root its leaves rebuild).  A log that cannot be read or fails verification
is one line on stderr and is left out (counts 0); the report itself still goes to stdout and
the exit status is 0, because a report about the logs that did verify is still true.

- `builders`: how each builder of a trust policy fares in that policy's own M-of-N decisions
  over every path any of them logged (`trustix_p2p.client.reports.standings`): entries
  agreed with the decision, outvoted, conflicting with itself, evidence against it.  The
  evidence counted is the node's (each document verified here) and the client state file's.
  With `--json`, one array of objects with the keys `name`, `public_key`, `log_size`,
  `checkpoint_age`, `agreed`, `outvoted`, `self_conflicts`, `evidence`, `excluded`.
- `r13y`: reproducibility across every log the node owns or mirrors: per out path, whether
  every builder that logged it got the same NAR hash.  With `--json`, one object
  `{"paths": {"reproduced", "not_reproduced", "built_once"}, "builders": [...],
  "disagreements": [{"out_path", "builders": [{"name", "nar_hash"}]}]}`; `--html FILE`
  writes a self-contained page with charts and sortable tables.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from trustix_p2p.client.bulk import NoCheckpoint, VerifiedLog, key_prefix, read_verified_log
from trustix_p2p.client.policy import Policy, load_policy
from trustix_p2p.client.reports import (
    BUILT_ONCE,
    NOT_REPRODUCED,
    REPRODUCED,
    BuilderR13y,
    BuilderStanding,
    PathReport,
    render_html,
    reproducibility,
    standings,
)
from trustix_p2p.client.state import ClientState
from trustix_p2p.commands.common import add_socket_args, socket_path
from trustix_p2p.control.client import ControlClient
from trustix_p2p.core import evidence as ev
from trustix_p2p.core.keys import PublicKey
from trustix_p2p.errors import ConfigError, DecodeError, TrustixError, VerificationError

__all__ = ["register"]

# How many disagreeing paths the plain-text summary lists (JSON and HTML list them all).
SHOWN_DISAGREEMENTS = 10
# At most this many evidence documents are fetched from a node (each is at most 1 MiB).
MAX_EVIDENCE = 10_000


def _printable(text: str) -> str:
    """Names come from other people's logs: no control characters reach the terminal."""
    return "".join(c if c.isprintable() else "?" for c in text)


def _problem(line: str) -> None:
    print(f"trustix-p2p: {_printable(line)}", file=sys.stderr)


def _read(
    socket: str | os.PathLike[str],
    timeout: float,
    log_id: bytes,
    public_key: PublicKey,
    name: str | None,
    mode: str,
) -> VerifiedLog:
    # A connection per log: a log that fails half-way (a timeout mid-reply) cannot leave
    # the next log reading the rest of its answer.
    with ControlClient(socket, timeout) as client:
        return read_verified_log(client, log_id, public_key, name=name, mode=mode)


def _table(heads: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A left-aligned text table, columns as wide as their widest cell."""
    cells = [[_printable(str(c)) for c in row] for row in [heads, *rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(heads))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    )


def _age(seconds: int | None) -> str:
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


# -- builders ---------------------------------------------------------------------------------


def _node_evidence(policy: Policy, socket: Path) -> list[ev.Evidence]:
    """The node's evidence against the policy's builders, each document verified here."""
    keys = {b.public_key.raw for b in policy.builders}
    found: list[ev.Evidence] = []
    with ControlClient(socket, policy.timeout) as client:
        rows = [r for r in client.evidence_list() if r.public_key in keys][:MAX_EVIDENCE]
        for row in rows:
            try:
                evidence = ev.from_json(client.evidence(row.id))
                ev.verify_evidence(evidence)
            except (DecodeError, VerificationError) as exc:
                _problem(f"the node's evidence {row.id[:16]} does not verify: {exc}")
                continue
            found.append(evidence)
    return found


def builder_standings(policy: Policy, now: float) -> list[BuilderStanding]:
    """Read and verify each policy builder's log from the policy's local node; standings."""
    if policy.node_socket is None:
        raise ConfigError(
            "policy: builders reports read a local node's mirrored logs via node_socket, "
            "and the policy sets none"
        )
    socket = policy.node_socket
    with ControlClient(socket, policy.timeout) as client:
        follows = {f.log_id: f for f in client.status().follows}
    logs: dict[bytes, VerifiedLog] = {}
    for b in policy.builders:
        followed = follows.get(b.log_id)
        if followed is None or followed.mode == "witness":
            how = "does not follow" if followed is None else "only witnesses (holds no entries of)"
            _problem(f"{b.name}: the node {how} this builder's log; its counts are 0")
            continue
        try:
            logs[b.log_id] = _read(
                socket, policy.timeout, b.log_id, b.public_key, b.name, followed.mode
            )
        except TrustixError as exc:
            _problem(f"{b.name}: {exc}; its counts are 0")
    evidence = _node_evidence(policy, socket) + ClientState.load(policy).evidence
    return standings(policy, logs, evidence, now)


def cmd_builders(args: argparse.Namespace) -> int:
    policy = load_policy(args.policy)
    rows = builder_standings(policy, time.time())
    if args.json:
        print(json.dumps([r.to_json() for r in rows]))
        return 0
    print(
        _table(
            ["builder", "log size", "age", "agreed", "outvoted", "self-conflicts", "evidence"],
            [
                [
                    r.name,
                    "-" if r.log_size is None else r.log_size,
                    _age(r.checkpoint_age),
                    r.agreed,
                    r.outvoted,
                    r.self_conflicts,
                    (f"{len(r.evidence)}, excluded" if r.excluded else len(r.evidence))
                    if r.evidence
                    else "-",
                ]
                for r in rows
            ],
        )
    )
    return 0


# -- r13y -------------------------------------------------------------------------------------


def node_logs(socket: Path, timeout: float) -> list[VerifiedLog]:
    """Every log the node owns or mirrors, read and verified (failures: a line on stderr)."""
    with ControlClient(socket, timeout) as client:
        follows = [f for f in client.status().follows if f.mode in ("own", "mirror")]
    logs: list[VerifiedLog] = []
    for f in follows:
        try:
            key = PublicKey(f.public_key)
        except DecodeError:
            _problem(f"log {f.log_id.hex()[:16]}: the node gives no valid key for it")
            continue
        label = f.name or key_prefix(f.public_key)
        try:
            logs.append(_read(socket, timeout, f.log_id, key, f.name, f.mode))
        except NoCheckpoint as exc:
            if f.size:  # an empty log without a checkpoint is no news
                _problem(f"{label}: {exc}; left out")
        except TrustixError as exc:
            _problem(f"{label}: {exc}; left out")
    return logs


def r13y_json(paths: Sequence[PathReport], builders: Sequence[BuilderR13y]) -> dict[str, object]:
    """The object `trustix-p2p r13y --json` prints, keys exactly as documented."""
    counts = {status: 0 for status in (REPRODUCED, NOT_REPRODUCED, BUILT_ONCE)}
    for p in paths:
        counts[p.status] += 1
    return {
        "paths": {
            "reproduced": counts[REPRODUCED],
            "not_reproduced": counts[NOT_REPRODUCED],
            "built_once": counts[BUILT_ONCE],
        },
        "builders": [b.to_json() for b in builders],
        "disagreements": [p.to_json() for p in paths if p.status == NOT_REPRODUCED],
    }


def _r13y_text(paths: Sequence[PathReport], builders: Sequence[BuilderR13y]) -> str:
    counts = r13y_json(paths, [])["paths"]
    assert isinstance(counts, dict)
    lines = [
        f"{len(paths)} out paths in {len(builders)} logs: {counts['reproduced']} reproduced, "
        f"{counts['not_reproduced']} not reproduced, {counts['built_once']} built once",
        "",
        _table(
            ["builder", "entries", "paths", "shared", "agreed", "disagreed", "agreement"],
            [
                [
                    b.name,
                    b.entries,
                    b.paths,
                    b.shared,
                    b.agreed,
                    b.disagreed,
                    "-" if b.agreement_rate is None else f"{100 * b.agreement_rate:.1f}%",
                ]
                for b in builders
            ],
        ),
    ]
    disagreements = [p for p in paths if p.status == NOT_REPRODUCED]
    if disagreements:
        shown = disagreements[:SHOWN_DISAGREEMENTS]
        more = f" (the first {len(shown)})" if len(shown) < len(disagreements) else ""
        lines += ["", f"paths where builders disagree{more}:"]
        for p in shown:
            lines.append(f"  {_printable(p.out_path)}")
            lines += [f"    {_printable(name)}  {h}" for name, h in p.builders]
    return "\n".join(lines)


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        raise ConfigError(f"cannot write the report {path}: {exc.strerror}") from exc


def cmd_r13y(args: argparse.Namespace) -> int:
    logs = node_logs(socket_path(args), args.timeout)
    paths, builders = reproducibility(logs)
    if args.html is not None:
        generated = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
        page = render_html(
            paths,
            builders,
            title="trustix-p2p reproducibility report",
            generated_at=generated,
        )
        _write(args.html, page)
    if args.json:
        print(json.dumps(r13y_json(paths, builders)))
    else:
        print(_r13y_text(paths, builders))
        if args.html is not None:
            print(f"\nwrote {args.html}")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "builders",
        help="how each builder of a trust policy fares in its decisions (a local node's logs)",
        description="Read every trusted builder's log from the policy's node_socket, verify "
        "it, and show per builder: log size, checkpoint age, paths agreed with the policy's "
        "M-of-N decision, outvoted, conflicting with itself, and evidence against it.",
    )
    p.add_argument("--policy", type=Path, required=True, help="trust policy (TOML)")
    p.add_argument("--json", action="store_true", help="one JSON array")
    p.set_defaults(func=cmd_builders)

    p = sub.add_parser(
        "r13y",
        help="reproducibility across every log a node owns or mirrors",
        description="Read and verify every log the node owns or mirrors, and report per out "
        "path whether the builders that logged it agree on its NAR hash.",
    )
    add_socket_args(p)
    p.add_argument("--json", action="store_true", help="one JSON object")
    p.add_argument("--html", type=Path, metavar="FILE", help="write a self-contained HTML report")
    p.set_defaults(func=cmd_r13y)
