"""Reports over whole verified logs: how reproducible the builds are, and how builders stand.

Pure: `VerifiedLog` values (`trustix_p2p.client.bulk`, every entry checked against a signed
root) in, report values and one HTML page out.  No clock (`now` and `generated_at` are passed
in), no I/O.

- `reproducibility(logs)`: per out path, across every log given, whether the builders that
  logged it agree on its NAR hash; per builder, how often it agrees with the others.
- `standings(policy, logs, evidence, now)`: per builder a trust policy names, how it fares in
  the policy's own M-of-N decisions (`trustix_p2p.core.decision.decide`) over every path any
  of them logged: agreed with the decision, outvoted by it, conflicting with itself, excluded
  by verified evidence.
- `render_html(...)`: one self-contained HTML file (inline CSS, inline SVG charts, a few lines
  of inline JavaScript to sort tables; nothing is fetched), so it can be mailed, archived or
  opened offline.  Store paths, names and hashes come from other people's logs, so every
  piece of text is escaped, and a Content-Security-Policy forbids loading anything at all.

Builders are told apart by log (public key), never by name: two logs may carry the same
name, and then both are shown with the start of their key.  A retired log and the successor
its final checkpoint names (`trustix-p2p log retire`), when both are given, are one builder:
its key signed that the successor continues it, so a path it built in both is not two
builders reproducing it.
"""

from __future__ import annotations

import base64
import hashlib
import html
from collections.abc import Mapping, Sequence

import attrs

from trustix_p2p.client.bulk import VerifiedLog, key_prefix
from trustix_p2p.client.policy import MAX_SUCCESSORS, Policy
from trustix_p2p.core.decision import decide
from trustix_p2p.core.entry import Entry
from trustix_p2p.core.evidence import Evidence, evidence_id, verify_evidence
from trustix_p2p.core.nix32 import format_nar_hash
from trustix_p2p.errors import DecodeError, VerificationError

__all__ = [
    "BUILT_ONCE",
    "NOT_REPRODUCED",
    "REPRODUCED",
    "STATUSES",
    "BuilderR13y",
    "BuilderStanding",
    "PathReport",
    "render_html",
    "reproducibility",
    "standings",
]

REPRODUCED = "reproduced"
NOT_REPRODUCED = "not-reproduced"
BUILT_ONCE = "built-once"
STATUSES = (REPRODUCED, NOT_REPRODUCED, BUILT_ONCE)

# What the HTML page shows at most: a browser copes with a few thousand rows, not millions.
MAX_HTML_ROWS = 5000
MAX_CHART_BARS = 200


@attrs.frozen
class PathReport:
    """One out path across builders.  `builders` holds (builder, "sha256:<nix32>") once per
    distinct hash a builder logged for the path, so a builder with two hashes appears twice."""

    out_path: str
    status: str  # one of STATUSES
    builders: tuple[tuple[str, str], ...]

    def to_json(self) -> dict[str, object]:
        return {
            "out_path": self.out_path,
            "builders": [{"name": name, "nar_hash": h} for name, h in self.builders],
        }


@attrs.frozen
class BuilderR13y:
    """One builder's reproducibility: of the paths it built that others built too (`shared`),
    how many every builder logged with the same NAR hash (`agreed`) and how many not."""

    name: str
    log_id: str  # hex
    entries: int
    paths: int
    shared: int
    agreed: int
    disagreed: int
    agreement_rate: float | None  # agreed / shared; None when it shares no path

    def to_json(self) -> dict[str, object]:
        return attrs.asdict(self)


@attrs.frozen
class BuilderStanding:
    """How a policy's builder fares in the policy's decisions (see `standings`)."""

    name: str
    public_key: str  # base64
    log_size: int | None  # its verified checkpoint's size; None if its log was not read
    checkpoint_age: int | None  # seconds between that checkpoint's time and `now`
    agreed: int
    outvoted: int
    self_conflicts: int
    evidence: tuple[str, ...]  # "<kind> <evidence id>" per verified piece of evidence
    excluded: bool
    reason: str | None  # why it is excluded

    def to_json(self) -> dict[str, object]:
        """The object `trustix-p2p builders --json` prints, keys exactly as documented."""
        return {
            "name": self.name,
            "public_key": self.public_key,
            "log_size": self.log_size,
            "checkpoint_age": self.checkpoint_age,
            "agreed": self.agreed,
            "outvoted": self.outvoted,
            "self_conflicts": self.self_conflicts,
            "evidence": list(self.evidence),
            "excluded": self.excluded,
        }


# -- reproducibility ------------------------------------------------------------------------


def _distinct_logs(logs: Sequence[VerifiedLog]) -> list[VerifiedLog]:
    """Each log once (by id, the first given wins): a log listed twice is one builder."""
    seen: set[bytes] = set()
    out: list[VerifiedLog] = []
    for log in logs:
        if log.log_id not in seen:
            seen.add(log.log_id)
            out.append(log)
    return out


def _builder_groups(logs: Sequence[VerifiedLog]) -> list[list[VerifiedLog]]:
    """The distinct logs, grouped by builder: each log first, then (when given) the successor
    its final checkpoint names, that one's successor, and so on.  A log is in one group."""
    distinct = _distinct_logs(logs)
    by_key = {log.public_key: log for log in distinct}
    named = {
        by_key[s].log_id
        for log in distinct
        if (s := log.checkpoint.checkpoint.successor) is not None and s in by_key
    }
    used: set[bytes] = set()
    groups: list[list[VerifiedLog]] = []
    # Logs no other given log names come first (they start their chains); then any left,
    # which only a loop of successors leaves.
    for log in [x for x in distinct if x.log_id not in named] + distinct:
        if log.log_id in used:
            continue
        group = [log]
        used.add(log.log_id)
        while (s := group[-1].checkpoint.checkpoint.successor) is not None and s in by_key:
            nxt = by_key[s]
            if nxt.log_id in used:
                break
            group.append(nxt)
            used.add(nxt.log_id)
        groups.append(group)
    order = {log.log_id: i for i, log in enumerate(distinct)}
    groups.sort(key=lambda g: order[g[0].log_id])
    return groups


def _labels(logs: Sequence[VerifiedLog]) -> list[str]:
    """A label per log, unique: its name, with the start of its key if another log shares it."""
    plain = [log.label for log in logs]
    return [
        label if plain.count(label) == 1 else f"{label} [{key_prefix(log.public_key)}]"
        for label, log in zip(plain, logs, strict=True)
    ]


def _hashes_by_path(entries: Sequence[Entry]) -> dict[str, list[bytes]]:
    """Out path -> the distinct NAR hashes one log holds for it, in log order."""
    out: dict[str, list[bytes]] = {}
    for e in entries:
        hashes = out.setdefault(e.out_path, [])
        if e.nar_hash not in hashes:
            hashes.append(e.nar_hash)
    return out


def reproducibility(logs: Sequence[VerifiedLog]) -> tuple[list[PathReport], list[BuilderR13y]]:
    """Per out path (sorted) and per builder (in the order given), across `logs`.

    A path is `reproduced` when at least two builders logged it and every entry about it has
    the same NAR hash; `not-reproduced` when two builders' hashes differ or one builder logged
    two different hashes for it (it did not even reproduce itself, so even a path only that
    builder built counts here); `built-once` when one builder logged it, with one hash.
    """
    groups = _builder_groups(logs)
    labels = _labels([g[0] for g in groups])
    per_path: dict[str, dict[int, list[bytes]]] = {}
    for i, group in enumerate(groups):
        entries = [e for log in group for e in log.entries]
        for path, hashes in _hashes_by_path(entries).items():
            per_path.setdefault(path, {})[i] = hashes
    counts = [[0, 0, 0] for _ in groups]  # paths, shared, agreed
    reports: list[PathReport] = []
    for path in sorted(per_path):
        by_builder = per_path[path]
        every = {h for hashes in by_builder.values() for h in hashes}
        if len(every) > 1:
            status = NOT_REPRODUCED
        elif len(by_builder) == 1:
            status = BUILT_ONCE
        else:
            status = REPRODUCED
        for i in by_builder:
            counts[i][0] += 1
            if len(by_builder) > 1:
                counts[i][1] += 1
                counts[i][2] += status == REPRODUCED
        reports.append(
            PathReport(
                path,
                status,
                tuple(
                    (labels[i], format_nar_hash(h))
                    for i, hashes in sorted(by_builder.items())
                    for h in hashes
                ),
            )
        )
    builders = [
        BuilderR13y(
            labels[i],
            group[0].log_id.hex(),
            sum(len(log.entries) for log in group),
            paths,
            shared,
            agreed,
            shared - agreed,
            agreed / shared if shared else None,
        )
        for i, (group, (paths, shared, agreed)) in enumerate(zip(groups, counts, strict=True))
    ]
    return reports, builders


# -- standings under a policy ---------------------------------------------------------------


def _verified_evidence(evidence: Sequence[Evidence]) -> dict[bytes, list[tuple[str, str]]]:
    """Raw key -> (kind, id) of each distinct piece of evidence that verifies.

    Verified again here although callers verify what they pass: the report must not depend
    on the caller for the one thing that excludes a builder, and it costs two signatures.
    """
    out: dict[bytes, list[tuple[str, str]]] = {}
    seen: set[str] = set()
    for ev in evidence:
        try:
            verify_evidence(ev)
            ident = evidence_id(ev)
        except (DecodeError, VerificationError):
            continue
        if ident in seen:
            continue
        seen.add(ident)
        out.setdefault(ev.public_key.raw, []).append((ev.kind, ident))
    return out


def _successor_chain(log: VerifiedLog, logs: Mapping[bytes, VerifiedLog]) -> list[VerifiedLog]:
    """`log`, then the successor its final checkpoint names, and so on, as far as `logs` holds
    them (as the light client follows them for a builder with `follow_successor`)."""
    chain = [log]
    while len(chain) <= MAX_SUCCESSORS:
        successor = chain[-1].checkpoint.checkpoint.successor
        nxt = None if successor is None else logs.get(hashlib.sha256(successor).digest())
        if nxt is None or nxt.public_key != successor or any(c.log_id == nxt.log_id for c in chain):
            break
        chain.append(nxt)
    return chain


def standings(
    policy: Policy,
    logs: Mapping[bytes, VerifiedLog],
    evidence: Sequence[Evidence],
    now: float,
) -> list[BuilderStanding]:
    """Per builder of `policy` (in its order), over every out path any of them logged.

    `logs` maps log id to the verified log; logs of builders the policy does not name are
    ignored, and a policy builder absent from it has `log_size` None and counts 0 (it is
    `missing` from every decision, which is what the light client would see too).  Each path
    is decided by `decide` with the policy's builders and threshold, and, when the policy
    says `exclude_on_evidence`, without the builders that verified evidence accuses.  A
    builder `agreed` when the path is trusted and it voted for the decided hash, and was
    `outvoted` when the path is trusted and it voted for another; `self_conflicts` counts the
    paths its own log holds with two different hashes (it casts no vote for those).
    """
    accused = _verified_evidence(evidence)
    excluded: dict[bytes, str] = {}
    if policy.exclude_on_evidence:
        for b in policy.builders:
            found = accused.get(b.public_key.raw)
            if found:
                excluded[b.public_key.raw] = f"evidence: {found[0][0]}"
    # Out path -> raw key -> that builder's entries for it, only for logs that are the
    # policy's builders' (a log under the wrong id is not theirs).
    per_path: dict[str, dict[bytes, list[Entry]]] = {}
    held: dict[bytes, VerifiedLog] = {}
    conflicts: dict[bytes, int] = {}
    for b in policy.builders:
        raw = b.public_key.raw
        log = logs.get(b.log_id)
        if log is None or log.public_key != raw or raw in held:
            continue
        chain = _successor_chain(log, logs) if b.follow_successor else [log]
        held[raw] = chain[-1]  # the builder's current log
        entries = [e for one in chain for e in one.entries]
        conflicts[raw] = sum(len(h) > 1 for h in _hashes_by_path(entries).values())
        for e in entries:
            per_path.setdefault(e.out_path, {}).setdefault(raw, []).append(e)
    agreed = {b.name: 0 for b in policy.builders}
    outvoted = dict(agreed)
    builders = policy.decision_builders()
    for path in sorted(per_path):
        decision = decide(path, builders, policy.threshold, per_path[path], excluded)
        if not decision.trusted:
            continue
        for name in decision.agreed:
            agreed[name] += 1
        for name, _ in decision.dissented:
            outvoted[name] += 1
    out: list[BuilderStanding] = []
    for b in policy.builders:
        raw = b.public_key.raw
        log = held.get(raw)
        found = accused.get(raw, [])
        out.append(
            BuilderStanding(
                name=b.name,
                public_key=base64.b64encode(raw).decode(),
                log_size=None if log is None else log.checkpoint.checkpoint.size,
                checkpoint_age=None
                if log is None
                else max(0, int(now) - log.checkpoint.checkpoint.time),
                agreed=agreed[b.name],
                outvoted=outvoted[b.name],
                self_conflicts=conflicts.get(raw, 0),
                evidence=tuple(f"{kind} {ident}" for kind, ident in found),
                excluded=raw in excluded,
                reason=excluded.get(raw),
            )
        )
    return out


# -- the HTML page --------------------------------------------------------------------------

_COLOURS = {REPRODUCED: "#2e7d32", NOT_REPRODUCED: "#c62828", BUILT_ONCE: "#9e9e9e"}

_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:80em}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:2em}
table{border-collapse:collapse;margin:.5em 0}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#f0f0f0;cursor:pointer;user-select:none;white-space:nowrap}
th[aria-sort=ascending]::after{content:" \\25B2"}th[aria-sort=descending]::after{content:" \\25BC"}
td.num{text-align:right;font-variant-numeric:tabular-nums}
td.path,td.hash{font-family:monospace;word-break:break-all}
.note{color:#666;font-style:italic}
.reproduced{color:#2e7d32}.not-reproduced{color:#c62828}.built-once{color:#666}
ul.summary li{margin:.2em 0}
"""

# Click a header to sort by that column; click again to reverse.  Cells sort by their
# data-v attribute when present (numbers), else by their text.
_JS = """
(function () {
  function key(cell) {
    var v = cell.getAttribute("data-v");
    if (v === null) { v = cell.textContent; }
    var n = Number(v);
    return v !== "" && !isNaN(n) ? n : v.toLowerCase();
  }
  document.querySelectorAll("table.sortable").forEach(function (table) {
    var heads = table.tHead.rows[0].cells;
    Array.prototype.forEach.call(heads, function (th, i) {
      th.addEventListener("click", function () {
        var asc = th.getAttribute("aria-sort") !== "ascending";
        Array.prototype.forEach.call(heads, function (h) { h.removeAttribute("aria-sort"); });
        th.setAttribute("aria-sort", asc ? "ascending" : "descending");
        var body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows);
        rows.sort(function (a, b) {
          var x = key(a.cells[i]), y = key(b.cells[i]);
          var r = typeof x === "number" && typeof y === "number" ? x - y
            : String(x) < String(y) ? -1 : String(x) > String(y) ? 1 : 0;
          return asc ? r : -r;
        });
        rows.forEach(function (r) { body.appendChild(r); });
      });
    });
  });
})();
"""

# No network, ever: inline style and script only, images only as data: URLs.
_CSP = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:"


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _td(value: object, cls: str = "", sort: object = None) -> str:
    attrs_ = f' class="{cls}"' if cls else ""
    if sort is not None:
        attrs_ += f' data-v="{_e(sort)}"'
    return f"<td{attrs_}>{_e(value)}</td>"


def _table(heads: Sequence[str], rows: Sequence[str]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in heads)
    return (
        f'<table class="sortable"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def _short(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "\u2026"


def _percent(rate: float | None) -> str:
    return "n/a" if rate is None else f"{100 * rate:.1f}%"


def _status_chart(counts: Mapping[str, int]) -> str:
    """A stacked bar of the status split, with a legend (inline SVG)."""
    total = sum(counts.values())
    width, height = 600, 28
    parts: list[str] = []
    x = 0.0
    for status in STATUSES:
        n = counts[status]
        if total and n:
            w = width * n / total
            parts.append(
                f'<rect x="{x:.2f}" y="0" width="{w:.2f}" height="{height}" '
                f'fill="{_COLOURS[status]}"><title>{_e(status)}: {n}</title></rect>'
            )
            x += w
    if not total:
        parts.append(f'<rect x="0" y="0" width="{width}" height="{height}" fill="#eee"/>')
    for i, status in enumerate(STATUSES):
        n = counts[status]
        share = f" ({100 * n / total:.1f}%)" if total else ""
        y = height + 22 + 20 * i
        parts.append(
            f'<rect x="0" y="{y - 11}" width="12" height="12" fill="{_COLOURS[status]}"/>'
            f'<text x="18" y="{y}" font-size="13">{_e(status)}: {n}{share}</text>'
        )
    total_height = height + 22 + 20 * len(STATUSES)
    return (
        f'<svg role="img" aria-label="status split" width="{width}" height="{total_height}" '
        f'viewBox="0 0 {width} {total_height}">{"".join(parts)}</svg>'
    )


def _agreement_chart(builders: Sequence[BuilderR13y]) -> str:
    """Horizontal bars of each builder's agreement rate (inline SVG)."""
    shown = list(builders[:MAX_CHART_BARS])
    label_w, bar_w, row_h = 200, 400, 22
    parts: list[str] = []
    for i, b in enumerate(shown):
        y = i * row_h
        parts.append(
            f'<text x="{label_w - 8}" y="{y + 15}" font-size="13" text-anchor="end">'
            f"<title>{_e(b.name)}</title>{_e(_short(b.name, 28))}</text>"
        )
        parts.append(
            f'<rect x="{label_w}" y="{y + 3}" width="{bar_w}" height="{row_h - 6}" fill="#eee"/>'
        )
        if b.agreement_rate is not None:
            w = bar_w * b.agreement_rate
            parts.append(
                f'<rect x="{label_w}" y="{y + 3}" width="{w:.2f}" height="{row_h - 6}" '
                f'fill="{_COLOURS[REPRODUCED]}"><title>{_e(b.name)}: {b.agreed} of '
                f"{b.shared} shared paths agreed</title></rect>"
            )
        text = _percent(b.agreement_rate) if b.shared else "no shared paths"
        parts.append(
            f'<text x="{label_w + bar_w + 8}" y="{y + 15}" font-size="13">{_e(text)}</text>'
        )
    width, height = label_w + bar_w + 130, max(row_h, row_h * len(shown))
    svg = (
        f'<svg role="img" aria-label="agreement rate per builder" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}">{"".join(parts)}</svg>'
    )
    if len(builders) > len(shown):
        svg += f'<p class="note">The chart shows the first {len(shown)} of {len(builders)}.</p>'
    return svg


def _capped(what: str, shown: int, total: int) -> str:
    if shown >= total:
        return ""
    return f'<p class="note">Showing the first {shown} of {total} {_e(what)}.</p>'


def render_html(
    paths: Sequence[PathReport],
    builders: Sequence[BuilderR13y],
    *,
    title: str,
    generated_at: str,
    max_rows: int = MAX_HTML_ROWS,
) -> str:
    """One self-contained HTML page of a reproducibility report (see the module docstring).

    Tables hold at most `max_rows` rows each, with a note saying how many were left out.
    """
    counts = {status: 0 for status in STATUSES}
    for p in paths:
        counts[p.status] += 1
    summary = "".join(
        f'<li class="{status}">{_e(status)}: <b>{counts[status]}</b></li>' for status in STATUSES
    )
    builder_rows = [
        "<tr>"
        + _td(b.name)
        + _td(_short(b.log_id, 16), "hash", b.log_id)
        + _td(b.entries, "num")
        + _td(b.paths, "num")
        + _td(b.shared, "num")
        + _td(b.agreed, "num")
        + _td(b.disagreed, "num")
        + _td(
            _percent(b.agreement_rate), "num", -1 if b.agreement_rate is None else b.agreement_rate
        )
        + "</tr>"
        for b in builders[:max_rows]
    ]
    disagreements = [p for p in paths if p.status == NOT_REPRODUCED]
    disagreement_rows = []
    for p in disagreements[:max_rows]:
        detail = "<br>".join(f"{_e(name)}: {_e(h)}" for name, h in p.builders)
        disagreement_rows.append(
            "<tr>"
            + _td(p.out_path, "path")
            + _td(len({name for name, _ in p.builders}), "num")
            + _td(len({h for _, h in p.builders}), "num")
            + f'<td class="hash">{detail}</td></tr>'
        )
    path_rows = [
        "<tr>"
        + _td(p.out_path, "path")
        + _td(p.status, p.status)
        + _td(len({name for name, _ in p.builders}), "num")
        + _td(", ".join(dict.fromkeys(name for name, _ in p.builders)))
        + "</tr>"
        for p in paths[:max_rows]
    ]
    body = [
        f"<h1>{_e(title)}</h1>",
        f'<p class="note">Generated {_e(generated_at)}. Every entry counted here was checked '
        "against a checkpoint signed by its builder.</p>",
        f'<h2>Summary</h2><ul class="summary"><li>out paths: <b>{len(paths)}</b></li>'
        f"{summary}<li>builders: <b>{len(builders)}</b></li></ul>",
        _status_chart(counts),
        "<h2>Agreement rate per builder</h2>",
        '<p class="note">Of the paths a builder built that another builder built too, the '
        "share every builder logged with the same NAR hash.</p>",
        _agreement_chart(builders),
        "<h2>Builders</h2>",
        _table(
            ["builder", "log", "entries", "paths", "shared", "agreed", "disagreed", "agreement"],
            builder_rows,
        ),
        _capped("builders", len(builder_rows), len(builders)),
        "<h2>Paths where builders disagree</h2>",
        _table(
            ["out path", "builders", "distinct hashes", "NAR hash per builder"], disagreement_rows
        )
        if disagreements
        else '<p class="note">None.</p>',
        _capped("disagreements", len(disagreement_rows), len(disagreements)),
        "<h2>All paths</h2>",
        _table(["out path", "status", "builders", "built by"], path_rows),
        _capped("paths", len(path_rows), len(paths)),
    ]
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head>\n<body>\n"
        + "\n".join(part for part in body if part)
        + f"\n<script>{_JS}</script>\n</body></html>\n"
    )
