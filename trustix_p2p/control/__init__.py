"""The local control socket: how the post-build hook, the CLI and local tools talk to a node."""
