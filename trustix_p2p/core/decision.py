"""M-of-N decisions over verified entries (DESIGN §5).  Pure: values in, a `Decision` out.

Input: a store path, the trusted builders of a policy (by public key, in the policy's order,
each with a name), the threshold M, which builders are excluded and why, and for each builder
the entries its log holds for the path, every one of them already verified by the caller
(inclusion proof against a checkpoint the client verified).

The rules, exactly:

- votes are counted per distinct builder key, never per name or per entry: a key listed twice
  (a policy refuses that, but a decision does not rely on it) counts once, under its first name;
- an excluded builder (verified evidence against its log, say) casts no vote and is listed with
  its reason;
- a builder whose own log holds two different NAR hashes for the path casts no vote and is
  listed as `conflicting` (identical entries logged twice are one vote);
- a builder with no entry for the path is `missing`;
- the path is trusted iff one NAR hash has at least M votes and no other NAR hash also reaches
  M; M counts builders out of the policy's N, never out of those that answered;
- `agreed` are the builders that voted for the decided hash; `dissented` those that voted for
  another (with it).  When the path is not trusted, `agreed` holds the builders of the hash with
  the most votes (ties: the hash whose first voter comes first in the policy), so a report still
  says who agreed with whom.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import attrs

from trustix_p2p.core.entry import Entry
from trustix_p2p.core.nix32 import format_nar_hash

__all__ = ["Builder", "Decision", "decide"]


@attrs.frozen
class Builder:
    name: str
    public_key: bytes  # raw 32 bytes


@attrs.frozen
class Decision:
    store_path: str
    trusted: bool
    nar_hash: bytes | None  # raw 32 bytes, when trusted
    # The decided entry (the first agreeing builder's, in policy order), when trusted: its
    # size, references and deriver are what a narinfo says.
    entry: Entry | None
    agreed: tuple[str, ...]
    dissented: tuple[tuple[str, bytes], ...]
    missing: tuple[str, ...]
    excluded: tuple[tuple[str, str], ...]
    conflicting: tuple[str, ...]

    def to_json(self) -> dict[str, object]:
        """The object `trustix-p2p decide --json` prints, keys exactly as documented."""
        return {
            "store_path": self.store_path,
            "trusted": self.trusted,
            "nar_hash": None if self.nar_hash is None else format_nar_hash(self.nar_hash),
            "agreed": list(self.agreed),
            "dissented": [
                {"name": name, "nar_hash": format_nar_hash(h)} for name, h in self.dissented
            ],
            "missing": list(self.missing),
            "excluded": [{"name": name, "reason": reason} for name, reason in self.excluded],
            "conflicting": list(self.conflicting),
        }


def decide(
    store_path: str,
    builders: Sequence[Builder],
    threshold: int,
    entries: Mapping[bytes, Sequence[Entry]],
    excluded: Mapping[bytes, str] | None = None,
) -> Decision:
    """Decide `store_path` (see the module docstring).

    `entries` maps a builder's public key to the verified entries its log holds for the path
    (entries about other paths are ignored); `excluded` maps a key to why it casts no vote.
    """
    excluded = excluded or {}
    seen: set[bytes] = set()
    votes: dict[bytes, list[tuple[str, Entry]]] = {}
    missing: list[str] = []
    out_excluded: list[tuple[str, str]] = []
    conflicting: list[str] = []
    for builder in builders:
        if builder.public_key in seen:
            continue  # the same key under another name: one builder, one vote
        seen.add(builder.public_key)
        if builder.public_key in excluded:
            out_excluded.append((builder.name, excluded[builder.public_key]))
            continue
        own = [e for e in entries.get(builder.public_key, ()) if e.out_path == store_path]
        hashes = {e.nar_hash for e in own}
        if not hashes:
            missing.append(builder.name)
        elif len(hashes) > 1:
            conflicting.append(builder.name)
        else:
            votes.setdefault(own[0].nar_hash, []).append((builder.name, own[0]))
    # Hashes in order of votes, then of their first voter's place in the policy (dict order).
    ranked = sorted(votes.items(), key=lambda item: -len(item[1]))
    reaching = [h for h, voters in ranked if len(voters) >= threshold]
    trusted = len(reaching) == 1
    lead = ranked[0][0] if ranked else None
    agreed = tuple(name for name, _ in votes[lead]) if lead is not None else ()
    dissented = tuple((name, h) for h, voters in votes.items() if h != lead for name, _ in voters)
    return Decision(
        store_path,
        trusted,
        lead if trusted else None,
        votes[lead][0][1] if trusted and lead is not None else None,
        agreed,
        dissented,
        tuple(missing),
        tuple(out_excluded),
        tuple(conflicting),
    )
