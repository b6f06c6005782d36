#!/bin/sh
# The container's entrypoint: create the node key in the state volume on first start
# (mode 0600, never overwritten), then run the node in the foreground.
set -eu
config="${TRUSTIX_P2P_CONFIG:-/etc/trustix-p2p/node.toml}"
state="${TRUSTIX_P2P_STATE:-/var/lib/trustix-p2p}"
if [ ! -e "$state/node.key" ]; then
    trustix-p2p keygen "$state/node.key" >&2
fi
exec trustix-p2p node --config "$config"
