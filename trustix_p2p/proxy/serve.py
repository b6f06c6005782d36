"""Run the cache proxy's ASGI app under hypercorn's trio worker (`hypercorn.trio.serve`).

Hypercorn speaks HTTP/1.1 to Nix (Nix 2.8 never uses HTTP/2 over plain http, notes §5.2) and,
when the app returns without finishing a body, closes the connection short of its
`Content-Length`: that is how the proxy cuts off a NAR whose bytes do not match.

Only this module knows about hypercorn; it logs through the `trustix_p2p.proxy.server` logger
and keeps access logs off unless asked (Nix makes a request per path, which would drown the
log of a workstation).
"""

from __future__ import annotations

import logging
from functools import partial

import hypercorn.trio
import trio
from hypercorn.config import Config
from hypercorn.logging import Logger
from hypercorn.typing import ASGIFramework

from trustix_p2p.errors import ConfigError
from trustix_p2p.logfmt import ContextLogger
from trustix_p2p.proxy.app import CacheProxy

__all__ = ["hypercorn_config", "parse_listen", "serve_proxy"]


def parse_listen(listen: str) -> tuple[str, int]:
    """`host:port` or `[v6 address]:port` (port 0: any free port) as (host, port)."""
    host, sep, port_text = listen.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port_text.isdigit() or int(port_text) > 65535:
        raise ConfigError(f"listen address {listen!r} must look like host:port")
    return host, int(port_text)


def _bound_logger_class(log: ContextLogger) -> type[Logger]:
    """A hypercorn logger class whose server lines go through `log` (with its fields)."""

    class BoundLogger(Logger):
        def __init__(self, config: Config) -> None:
            super().__init__(config)
            if self.error_logger is not None:
                # hypercorn only calls its logging methods, which an adapter has too.
                self.error_logger = log.on(self.error_logger)  # type: ignore[assignment]

    return BoundLogger


def hypercorn_config(
    listen: str, *, access_log: bool = False, log: ContextLogger | None = None
) -> Config:
    """hypercorn's configuration for `listen`; with `log`, its server lines carry that
    logger's fields (a node passes its own, so they name it)."""
    host, port = parse_listen(listen)
    config = Config()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.errorlog = logging.getLogger("trustix_p2p.proxy.server")
    config.accesslog = logging.getLogger("trustix_p2p.proxy.access") if access_log else None
    config.include_server_header = False
    if log is not None:
        config.logger_class = _bound_logger_class(log)
    return config


async def serve_proxy(
    app: ASGIFramework,
    listen: str,
    *,
    access_log: bool = False,
    log: ContextLogger | None = None,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve `app` (a `CacheProxy`, or any ASGI 3 app) on `listen` until cancelled.

    `task_status.started` gets the base URL actually bound (`http://127.0.0.1:40123`), the
    value for nix.conf `substituters`, so port 0 can be used.  The bind happens before
    `started`, so a busy port fails the `nursery.start` call itself.
    """
    config = hypercorn_config(listen, access_log=access_log, log=log)
    try:
        async with trio.open_nursery() as nursery:
            binds: list[str] = await nursery.start(partial(hypercorn.trio.serve, app, config))
            task_status.started(binds[0])
    finally:
        # Cancellation (how trio programs stop) skips the ASGI lifespan shutdown, so the
        # proxy's upstream connections are closed here; shielded, and bounded.
        close = getattr(app, "aclose", None)
        if isinstance(app, CacheProxy) or close is not None:
            with trio.move_on_after(5, shield=True):
                await close()  # type: ignore[misc]
