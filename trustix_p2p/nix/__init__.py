"""The Nix side of a builder: NAR hashing of store paths, the Nix store, .drv files, the hook.

Everything here runs on the builder next to Nix and talks to the filesystem or to Nix itself;
the formats it relies on (NAR framing, nix-base32, store paths, entries) live in the pure
`trustix_p2p.core`.  Nothing in this package may ever make a Nix build fail because the node
is down: the hook spools instead (see `trustix_p2p.nix.hook`).
"""
