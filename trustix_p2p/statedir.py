"""The node's directories: created private, and refused when another local user could write them.

A spool directory that others may write lets any local user drop a spool file and have the
builder sign a forged entry; a socket directory that others may write lets them replace the
control socket and swallow the post-build hook's submissions.  So every directory the node
reads or serves from must belong to its user (or root) and not be writable by group or others
(the socket's directory may be a sticky one, like /tmp, where nobody can replace another's
file).  A directory the node creates is made mode 0700.  Errors name the option at fault.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from trustix_p2p.config import NodeConfig
from trustix_p2p.errors import ConfigError

__all__ = ["check_private_dir", "make_private_dir", "prepare_directories"]


def check_private_dir(option: str, path: Path, *, sticky_ok: bool = False) -> None:
    """Refuse a directory that another local user could write (or that is not ours)."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise ConfigError(f"{option}: cannot use {path}: {exc.strerror}") from exc
    if not stat.S_ISDIR(st.st_mode):
        raise ConfigError(f"{option}: {path} is not a directory")
    mode = stat.S_IMODE(st.st_mode)
    if st.st_uid not in (os.geteuid(), 0):
        raise ConfigError(
            f"{option}: {path} belongs to uid {st.st_uid}, not to this node's user "
            f"(uid {os.geteuid()}); its owner could forge what the node reads there"
        )
    if mode & 0o022 and not (sticky_ok and mode & stat.S_ISVTX):
        raise ConfigError(
            f"{option}: {path} is writable by group or others (mode {mode:04o}); any local "
            f"user could drop spool files or replace the control socket. Run: chmod go-w {path}"
        )


def make_private_dir(option: str, path: Path) -> None:
    """Create `path` (mode 0700) if missing, then check it is private."""
    if not os.path.lexists(path):
        try:
            path.mkdir(mode=0o700, parents=True)
            os.chmod(path, 0o700)  # whatever the umask left
        except FileExistsError:
            pass  # created meanwhile by someone else: the check below judges it like any other
        except OSError as exc:
            raise ConfigError(f"{option}: cannot create {path}: {exc.strerror}") from exc
    check_private_dir(option, path)


def prepare_directories(config: NodeConfig) -> None:
    """Create and check the state, spool and control-socket directories (see the module)."""
    make_private_dir("state_dir", config.state_dir)
    if not os.access(config.state_dir, os.W_OK | os.X_OK):
        raise ConfigError(f"state_dir: {config.state_dir} is not writable by this user")
    make_private_dir("spool_dir", config.spool_path)
    socket_dir = config.socket_path.parent
    if not socket_dir.exists():
        make_private_dir("control_socket", socket_dir)
    else:
        check_private_dir("control_socket", socket_dir, sticky_ok=True)
