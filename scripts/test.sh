#!/usr/bin/env bash
# The test command from the README (after scripts/bootstrap.sh): the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/pytest -q -p no:cacheprovider "$@"
