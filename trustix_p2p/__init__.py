"""trustix_p2p: peer-to-peer transparency logs for Nix build results.

Builders log the NAR hash of everything they build in a signed, append-only Merkle log;
nodes gossip and cross-check those logs; a light client trusts a store path only when
M of its N chosen builders logged the same NAR hash for it.
"""

__version__ = "0.1.0"
