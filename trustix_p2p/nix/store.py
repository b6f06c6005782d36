"""Ask the local Nix store what it registered for a path: references, deriver, outputs.

The post-build hook needs each output's references and deriver, which only the Nix store
knows.  Two ways to ask, behind one interface:

* `SqliteNixStore` reads Nix's own database (`$NIX_STATE_DIR/db/db.sqlite`, schema 10, the
  tables `ValidPaths`, `Refs`, `DerivationOutputs` of `src/libstore/schema.sql`) read-only.
  This costs about a millisecond, which keeps the hook's overhead small.  Nix runs the
  post-build hook only after it has committed the outputs' registration, and the database is
  in WAL mode, so a reader sees them and never blocks Nix.
* `CliNixStore` runs `nix-store --dump-db PATH...` (one process for all outputs) and
  `nix-store --query --outputs`.  It works wherever the database is not readable or has a
  schema this module does not know (for instance a non-root user talking to a daemon).

`open_nix_store` picks the first that works.  This module never writes to the Nix store or
its database, and never trusts the NAR hash Nix registered as a substitute for hashing:
`PathInfo.nar_hash` is there only so callers can cross-check.
"""

from __future__ import annotations

import os
import sqlite3

from trustix_p2p.core.lean.storepath import DEFAULT_STORE_DIR, is_valid_store_path, why_invalid
from trustix_p2p.errors import NixStoreError

__all__ = [
    "CliNixStore",
    "PathInfo",
    "SqliteNixStore",
    "nix_store_dir",
    "open_nix_store",
]

_SCHEMA_VERSION = "10"  # Nix's local store schema since Nix 2.0
_DEFAULT_STATE_DIR = "/nix/var/nix"


# A NamedTuple and plain classes rather than attrs, and no `typing` at run time: the
# post-build hook queries the store on every build, and those imports would add milliseconds
# to every build's start.  `PathInfo` is the lean layer's NamedTuple (`typing.NamedTuple` for
# type checkers, which treat `TYPE_CHECKING` as true); `NixStore` is a protocol only type
# checkers need.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import NamedTuple, Protocol

    class NixStore(Protocol):
        store_dir: str

        def path_infos(self, paths: Sequence[str]) -> list[PathInfo]:
            """Registration info for each path, in order; `NixStoreError` if one is invalid."""
            ...

        def derivation_outputs(self, drv_path: str) -> dict[str, str]:
            """Output name to store path for a derivation's known outputs."""
            ...

else:
    from trustix_p2p.core.lean import NamedTuple


class PathInfo(NamedTuple):
    """What the Nix store registered for one valid path."""

    path: str
    deriver: str  # full .drv path, "" when Nix does not know it
    references: tuple[str, ...]  # sorted, unique base names
    nar_hash: bytes  # as registered by Nix; for cross-checks only
    nar_size: int


def nix_store_dir() -> str:
    """The store directory Nix itself uses: `$NIX_STORE_DIR`, else /nix/store."""
    return os.environ.get("NIX_STORE_DIR") or DEFAULT_STORE_DIR


def _basenames(paths: Sequence[str], store_dir: str) -> tuple[str, ...]:
    for p in paths:
        if not is_valid_store_path(p, store_dir):
            raise NixStoreError(
                f"the Nix store returned an invalid reference: {why_invalid(p, store_dir)}"
            )
    return tuple(sorted({p[len(store_dir) + 1 :] for p in paths}))


def _parse_store_path_name(path: str, store_dir: str) -> str:
    """The name part of a store path (after `<hash>-`); `NixStoreError` if it is invalid."""
    if not is_valid_store_path(path, store_dir):
        raise NixStoreError(
            f"nix-store returned an invalid output path: {why_invalid(path, store_dir)}"
        )
    return path[len(store_dir) + 34 :]


def _hash(text: str, path: str) -> bytes:
    # The database holds "sha256:<hex>", --dump-db prints bare hex.
    body = text.removeprefix("sha256:")
    try:
        raw = bytes.fromhex(body)
    except ValueError as exc:
        raise NixStoreError(f"the Nix store has a malformed hash for {path}") from exc
    if len(raw) != 32:
        raise NixStoreError(f"the Nix store has a non-SHA-256 hash for {path}")
    return raw


class SqliteNixStore:
    """Read-only access to a local Nix store's SQLite database."""

    def __init__(self, db_path: str | os.PathLike[str], store_dir: str = DEFAULT_STORE_DIR) -> None:
        self.db_path = db_path
        self.store_dir = store_dir
        self._conn: sqlite3.Connection | None = None

    @classmethod
    def open(
        cls, state_dir: str | os.PathLike[str], store_dir: str = DEFAULT_STORE_DIR
    ) -> SqliteNixStore:
        """Open `state_dir/db/db.sqlite` read-only; `NixStoreError` if it is not usable."""
        db = os.path.join(state_dir, "db", "db.sqlite")
        try:
            with open(os.path.join(state_dir, "db", "schema"), encoding="utf-8") as f:
                schema = f.read().strip()
        except OSError as exc:
            raise NixStoreError(f"no readable Nix database under {state_dir}") from exc
        if schema != _SCHEMA_VERSION:
            raise NixStoreError(f"Nix database schema {schema!r} is not {_SCHEMA_VERSION}")
        store = cls(db, store_dir)
        # SQLite URI: only '%', '?' and '#' are special in the path part.
        quoted = os.fspath(db).replace("%", "%25").replace("?", "%3F").replace("#", "%23")
        uri = f"file:{quoted}?mode=ro"
        try:
            # A short busy timeout: WAL readers are not blocked by Nix's writer, and a
            # checkpoint holds the lock only briefly.
            conn = sqlite3.connect(uri, uri=True, timeout=5.0)
            conn.execute("SELECT 1 FROM ValidPaths LIMIT 1").fetchall()
        except sqlite3.Error as exc:
            raise NixStoreError(f"cannot read the Nix database {db}: {exc}") from exc
        store._conn = conn
        return store

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise NixStoreError("the Nix database is closed")
        return self._conn

    def path_infos(self, paths: Sequence[str]) -> list[PathInfo]:
        db = self._db()
        out: list[PathInfo] = []
        try:
            for path in paths:
                row = db.execute(
                    "SELECT id, hash, deriver, narSize FROM ValidPaths WHERE path = ?", (path,)
                ).fetchone()
                if row is None:
                    raise NixStoreError(f"{path} is not a valid path in the Nix store")
                ident, hash_text, deriver, nar_size = row
                refs = [
                    r[0]
                    for r in db.execute(
                        "SELECT v.path FROM Refs r JOIN ValidPaths v ON v.id = r.reference"
                        " WHERE r.referrer = ?",
                        (ident,),
                    )
                ]
                out.append(
                    PathInfo(
                        path=path,
                        deriver=deriver or "",
                        references=_basenames(refs, self.store_dir),
                        nar_hash=_hash(hash_text, path),
                        nar_size=int(nar_size or 0),
                    )
                )
        except sqlite3.Error as exc:
            raise NixStoreError(f"querying the Nix database failed: {exc}") from exc
        return out

    def derivation_outputs(self, drv_path: str) -> dict[str, str]:
        try:
            rows = self._db().execute(
                "SELECT o.id, o.path FROM DerivationOutputs o"
                " JOIN ValidPaths v ON v.id = o.drv WHERE v.path = ?",
                (drv_path,),
            )
            return {name: path for name, path in rows}
        except sqlite3.Error as exc:
            raise NixStoreError(f"querying the Nix database failed: {exc}") from exc


class CliNixStore:
    """Queries through the `nix-store` command (works with a daemon and any schema)."""

    def __init__(
        self,
        store_dir: str = DEFAULT_STORE_DIR,
        nix_store: str = "nix-store",
        timeout: float = 60.0,
    ) -> None:
        self.store_dir = store_dir
        self.nix_store = nix_store
        self.timeout = timeout

    def _run(self, args: Sequence[str]) -> str:
        import subprocess  # only on this fallback path: the hook's start-up time counts

        try:
            proc = subprocess.run(
                [self.nix_store, *args],
                capture_output=True,
                text=True,
                timeout=self.timeout,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise NixStoreError(f"cannot run {self.nix_store}: {exc}") from exc
        if proc.returncode != 0:
            lines = proc.stderr.strip().splitlines()
            detail = lines[-1] if lines else f"exit status {proc.returncode}"
            raise NixStoreError(f"{self.nix_store} {args[0]} failed: {detail}")
        return proc.stdout

    def path_infos(self, paths: Sequence[str]) -> list[PathInfo]:
        if not paths:
            return []
        # --dump-db prints, per path: path, hex hash, NAR size, deriver, reference count,
        # then the references, one per line (Nix `makeValidityRegistration`).
        lines = self._run(["--dump-db", *paths]).split("\n")
        by_path: dict[str, PathInfo] = {}
        i = 0
        try:
            while i + 4 < len(lines) and lines[i]:
                path, hash_hex, size, deriver, count = lines[i : i + 5]
                n = int(count)
                refs = lines[i + 5 : i + 5 + n]
                if len(refs) != n:
                    raise ValueError("truncated reference list")
                by_path[path] = PathInfo(
                    path,
                    deriver,
                    _basenames(refs, self.store_dir),
                    _hash(hash_hex, path),
                    int(size),
                )
                i += 5 + n
        except ValueError as exc:
            raise NixStoreError(f"cannot parse nix-store --dump-db output: {exc}") from exc
        missing = [p for p in paths if p not in by_path]
        if missing:
            raise NixStoreError(f"nix-store did not report {missing[0]}")
        return [by_path[p] for p in paths]

    def derivation_outputs(self, drv_path: str) -> dict[str, str]:
        # `--query --outputs` gives paths without names.  An output's path name is the
        # derivation name, plus "-<output>" unless the output is "out" (Nix's
        # `outputPathName`); that recovers the names.
        outputs: dict[str, str] = {}
        drv_name = _parse_store_path_name(drv_path, self.store_dir).removesuffix(".drv")
        for path in self._run(["--query", "--outputs", drv_path]).split():
            name = _parse_store_path_name(path, self.store_dir)
            output = "out" if name == drv_name else name.removeprefix(drv_name + "-")
            outputs[output] = path
        return outputs


def open_nix_store(
    state_dir: str | os.PathLike[str] | None = None, store_dir: str | None = None
) -> NixStore:
    """The fastest way to query the local Nix store that works here.

    `state_dir` defaults to `$NIX_STATE_DIR` or /nix/var/nix, `store_dir` to `nix_store_dir()`.
    """
    store_dir = store_dir or nix_store_dir()
    state = state_dir or os.environ.get("NIX_STATE_DIR") or _DEFAULT_STATE_DIR
    try:
        return SqliteNixStore.open(state, store_dir)
    except NixStoreError:
        return CliNixStore(store_dir)
