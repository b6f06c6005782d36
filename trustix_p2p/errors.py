"""The one exception hierarchy of trustix_p2p.

Every error the package raises on purpose derives from `TrustixError`, so a caller at a
boundary (the CLI, a connection handler, the control socket) can catch exactly what the
package means to raise and let real bugs surface.  Following h11, protocol errors are split
by whose fault they are: `LocalProtocolError` (we were asked to do something illegal) and
`RemoteProtocolError` (a peer or input sent us something illegal).  Inside pure code raise
the local kind; at a receive boundary re-raise as the remote kind, always with `from`.

Verification failures are deliberately opaque: `VerificationError` says *that* a proof or
signature did not verify, never which internal check failed, so no caller can build an
oracle out of it.
"""

from __future__ import annotations


class TrustixError(Exception):
    """Base class of every error trustix_p2p raises on purpose."""


class ConfigError(TrustixError):
    """A configuration file, option or key file is unusable; the message says why in one line."""


class KeyFileError(ConfigError):
    """A key file is missing, malformed, of the wrong length, or readable by others."""


class ProtocolError(TrustixError):
    """Something violated a format or protocol of this project."""


class LocalProtocolError(ProtocolError):
    """We were asked to produce something the format forbids (a bug or bad local input)."""


class RemoteProtocolError(ProtocolError):
    """Input from outside (a peer, a file, a user) is malformed or violates a limit."""


class DecodeError(RemoteProtocolError):
    """Bytes could not be decoded into a valid value (entry, note, message, ...)."""


class VerificationError(TrustixError):
    """A signature, proof or checkpoint did not verify.  Deliberately says nothing more."""


class StoreError(TrustixError):
    """The on-disk store is unusable."""


class StoreCorruptError(StoreError):
    """The on-disk store disagrees with itself or with its signed checkpoint."""


class StoreWriteError(StoreError):
    """A durable write failed (disk full, file size limit, I/O error); nothing of it counts.

    Not a verdict on the store's contents: the node answers "unavailable" and retries later.
    """


class NixStoreError(StoreError):
    """A Nix store path, `.drv` file or the Nix store database cannot be read or queried."""


class LogRetiredError(StoreError):
    """The log was closed by its final checkpoint (`trustix-p2p log retire`): it takes no
    more entries and signs no more checkpoints; its successor key continues it."""


class NodeUnavailableError(TrustixError):
    """The local node's control socket is absent, refuses, or does not answer in time."""
