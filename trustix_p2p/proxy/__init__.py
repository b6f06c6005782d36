"""The local Nix binary cache proxy (DESIGN §8): substitute only what the M-of-N decision trusts.

`CacheProxy` (`trustix_p2p.proxy.app`) is the ASGI app; `serve_proxy`
(`trustix_p2p.proxy.serve`) runs it under hypercorn's trio worker.
"""

from __future__ import annotations

from trustix_p2p.proxy.app import CacheProxy, Decide, ProxyStats, nar_url
from trustix_p2p.proxy.serve import serve_proxy

__all__ = ["CacheProxy", "Decide", "ProxyStats", "nar_url", "serve_proxy"]
