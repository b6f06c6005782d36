"""The light client's state file: the last verified checkpoint of each trusted log, and the
evidence it found or verified.  Written atomically (a temporary file, fsync, rename, fsync of
the directory), so a crash leaves the old state or the new one, never a mix.

```json
{"version": 1,
 "checkpoints": {"<hex log id>": "<checkpoint note, as signed>"},
 "evidence": [<evidence documents, DESIGN §4>]}
```

Everything read back is verified again (signatures, proofs): a state file edited by hand can
make the client forget, never believe something false.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import attrs

from trustix_p2p.client.policy import MAX_SUCCESSORS, Policy, PolicyBuilder, successor_of
from trustix_p2p.core import evidence as ev
from trustix_p2p.core.checkpoint import SignedCheckpoint, verify_checkpoint
from trustix_p2p.errors import ConfigError, DecodeError, VerificationError

__all__ = ["ClientState"]

MAX_STATE_BYTES = 64 << 20


@attrs.define
class ClientState:
    path: Path
    checkpoints: dict[bytes, SignedCheckpoint] = attrs.field(factory=dict)
    evidence: list[ev.Evidence] = attrs.field(factory=list)
    dirty: bool = False

    @classmethod
    def load(cls, policy: Policy) -> ClientState:
        path = policy.state_file
        state = cls(path)
        try:
            with open(path, "rb") as fh:
                raw = fh.read(MAX_STATE_BYTES + 1)
        except FileNotFoundError:
            return state
        except OSError as exc:
            raise ConfigError(f"cannot read the client state {path}: {exc.strerror}") from exc
        try:
            data = json.loads(raw)
            checkpoints = data["checkpoints"]
            documents = data["evidence"]
            if data.get("version") != 1 or not isinstance(checkpoints, dict):
                raise ValueError("unknown layout")
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(
                f"the client state {path} is damaged ({exc}); move it away to start afresh "
                "(the client then trusts the next checkpoints it sees of each log)"
            ) from exc
        for builder in policy.builders:
            # The builder's log, then (where the policy follows them) its successors' logs.
            view = builder
            for _ in range(MAX_SUCCESSORS + 1):
                note = checkpoints.get(view.log_id.hex())
                if not isinstance(note, str):
                    break
                try:
                    signed = verify_checkpoint(note.encode(), view.public_key)
                except (DecodeError, VerificationError):
                    break  # forgotten, never believed
                state.checkpoints[view.log_id] = signed
                successor = signed.checkpoint.successor
                if successor is None or not builder.follow_successor:
                    break
                view = successor_of(builder, successor)
        for document in documents if isinstance(documents, list) else []:
            try:
                evidence = ev.from_document(document)
                ev.verify_evidence(evidence)
            except (DecodeError, VerificationError):
                continue
            state.evidence.append(evidence)
        return state

    def checkpoint(self, builder: PolicyBuilder) -> SignedCheckpoint | None:
        return self.checkpoints.get(builder.log_id)

    def remember(self, builder: PolicyBuilder, signed: SignedCheckpoint) -> None:
        current = self.checkpoints.get(builder.log_id)
        if (
            current is None
            or signed.checkpoint.size > current.checkpoint.size
            or (  # the log's final checkpoint over the same tree: the log is closed
                signed.checkpoint.size == current.checkpoint.size
                and signed.checkpoint.successor is not None
                and current.checkpoint.successor is None
            )
        ):
            self.checkpoints[builder.log_id] = signed
            self.dirty = True

    def add_evidence(self, evidence: ev.Evidence) -> None:
        ident = ev.evidence_id(evidence)
        if all(ev.evidence_id(e) != ident for e in self.evidence):
            self.evidence.append(evidence)
            self.dirty = True

    def save(self) -> None:
        if not self.dirty:
            return
        data = {
            "version": 1,
            "checkpoints": {
                log_id.hex(): signed.note.decode() for log_id, signed in self.checkpoints.items()
            },
            "evidence": [ev.to_document(e) for e in self.evidence],
        }
        text = json.dumps(data, indent=1, sort_keys=True) + "\n"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, text.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        dfd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        self.dirty = False
