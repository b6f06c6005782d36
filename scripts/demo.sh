#!/usr/bin/env bash
# The README's main command: install everything, then run the local demo network on loopback.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/trustix-p2p demo "$@"
