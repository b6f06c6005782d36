"""The simulation harness: many real trustix-p2p nodes in one process (see README.md)."""
