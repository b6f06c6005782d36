"""A generated post-build-hook program: the hook with its settings built in, quick to start.

Nix starts `post-build-hook` after every build, so the hook's start-up time is added to every
build, and on a slow machine Python's own start-up and imports dominate it.
`trustix-p2p nix-hook --write-wrapper FILE` writes FILE, a short Python program that
saves what can be saved once instead of on every build:

* The interpreter runs with `-I -S`: no site initialisation (no `.pth` files, no
  sitecustomize) and no environment variables, current directory or user site-packages on
  `sys.path`.  The wrapper puts back exactly the directories trustix-p2p and its dependencies
  were imported from when it was written.  That is also safer: nothing in the environment
  Nix passes to the hook can change which code runs as the hook.
* Nothing is collected or torn down that need not be: the cyclic garbage collector is off
  while modules load (a few thousand objects, none of them garbage), and the process ends
  with `os._exit` once its output is flushed, skipping the interpreter's teardown of every
  module (the hook holds no buffered files and registers no exit handlers).
* The node's control socket and spool directory are read from the config file once, when the
  wrapper is written, and built in together with the file's identity (device, inode, size,
  modification and change times).  On every build `run` compares that identity with the file
  as it is: if the file changed in any way, it is read again (and the hook says so), so a
  wrapper can be slow when stale but never wrong.  Parsing TOML is most of what this saves.

`run` is the wrapper's entry point and must stay as lean as `trustix_p2p.nix.hook`; writing a
wrapper happens once and may import anything.
"""

from __future__ import annotations

import os
import sys

# `exit_now` is re-exported: the programs written by `--write-wrapper` import it from here.
from trustix_p2p.program import exit_now, exit_status

__all__ = ["config_stamp", "exit_now", "run", "wrapper_text", "write_wrapper"]

_TEMPLATE = """\
#!{python} -IS
# The trustix-p2p post-build hook for Nix.  In nix.conf:  post-build-hook = {path}
# Written by `trustix-p2p nix-hook --write-wrapper` from {config}.  When that file
# changes the hook reads it again on every build (and says so): re-run the command after
# changing it, or after reinstalling trustix-p2p.
import gc
import sys

gc.disable()  # while modules load; `run` turns it back on
sys.path[:0] = {sys_path!r}
from trustix_p2p.nix.wrapper import exit_now, run

exit_now(run({config!r}, {stamp!r}, {socket!r}, {spool!r}, {timeout!r}))
"""


def config_stamp(config_file: str) -> tuple[int, ...] | None:
    """The identity of the config file as it is now; None if it cannot be examined.

    Any write changes the change time (which no user can set back), an editor's
    save-by-rename changes the inode, so equal stamps mean an unchanged file.
    """
    try:
        st = os.stat(config_file)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def run(
    config_file: str,
    stamp: tuple[int, ...],
    socket_path: str,
    spool_dir: str,
    timeout: float,
) -> int:
    """Run the hook with the built-in settings, or with the config file's if it has changed.

    Returns the exit status, with the contract of every trustix-p2p program: 0, or 2 and one
    line on stderr for a `TrustixError`.
    """
    import gc

    from trustix_p2p.nix.hook import run_configured_hook, run_hook

    gc.enable()  # everything is loaded; a large output's walk may create garbage cycles

    def hook() -> int:
        if config_stamp(config_file) == tuple(stamp):
            run_hook(socket_path, spool_dir, timeout)
            return 0
        print(
            f"trustix-p2p: {config_file} changed since this hook was written; reading it "
            "again (re-run 'trustix-p2p nix-hook --write-wrapper' to start faster)",
            file=sys.stderr,
        )
        run_configured_hook(config_file, timeout)
        return 0

    return exit_status(hook)


def wrapper_text(path: str, config_file: str, timeout: float) -> str:
    """The program `write_wrapper` writes (reads and checks the config file now)."""
    import attrs
    import msgpack

    import trustix_p2p
    from trustix_p2p import configfile
    from trustix_p2p.errors import ConfigError

    python = sys.executable
    if not python or any(c.isspace() for c in python) or len(python) > 120:
        # A "#!" line cannot quote, and kernels cut it at 127 (older) or 255 bytes.
        raise ConfigError(f"cannot name this Python ({python!r}) on a '#!' line")
    config_file = os.path.abspath(config_file)
    for name in (path, config_file):
        if any(c in name for c in "\n\r\0"):
            # Both appear in the program's comments, where a line break would end the comment.
            raise ConfigError(f"cannot write a hook program naming {name!r}")
    stamp = config_stamp(config_file)
    options = configfile.read_config(config_file)  # the ConfigError a user must see now
    if stamp is None:
        raise ConfigError(f"cannot examine configuration {config_file}")
    sys_path: list[str] = []
    for module in (trustix_p2p, msgpack, attrs):
        where = os.path.dirname(os.path.dirname(os.path.abspath(module.__file__ or "")))
        if where not in sys_path:
            sys_path.append(where)
    return _TEMPLATE.format(
        python=python,
        path=path,
        config=config_file,
        sys_path=sys_path,
        stamp=stamp,
        socket=configfile.socket_path(options),
        spool=configfile.spool_path(options),
        timeout=float(timeout),
    )


def write_wrapper(path: str | os.PathLike[str], config_file: str, timeout: float) -> None:
    """Write the wrapper program to `path` (mode 0755, replacing it atomically)."""
    import contextlib

    from trustix_p2p.errors import ConfigError

    target = os.path.abspath(path)
    text = wrapper_text(target, config_file, timeout)
    tmp = f"{target}.tmp{os.getpid()}"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o755)
        try:
            os.write(fd, text.encode())
            os.fchmod(fd, 0o755)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except OSError as exc:
        with contextlib.suppress(OSError):  # never created, or already renamed
            os.unlink(tmp)
        raise ConfigError(f"cannot write {target}: {exc.strerror or exc}") from exc
