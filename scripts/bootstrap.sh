#!/usr/bin/env bash
# Installs everything trustix_p2p needs on a fresh Debian machine: system packages (as root),
# a virtualenv in .venv and the package with its test extras.  Idempotent; safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v nix-store >/dev/null 2>&1 || need_apt+=(nix-bin)
command -v ip >/dev/null 2>&1 || need_apt+=(iproute2)
# The docs' commands use these (tests/test_docs_commands.py runs every one).
command -v jq >/dev/null 2>&1 || need_apt+=(jq)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
command -v useradd >/dev/null 2>&1 || need_apt+=(passwd)
if ((${#need_apt[@]})); then
    if [ "$(id -u)" -eq 0 ]; then
        echo "bootstrap: installing ${need_apt[*]}" >&2
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
    else
        echo "bootstrap: not root, cannot install ${need_apt[*]}; Nix tests will fail" >&2
    fi
fi
if [ -x tests/nix/setup-nix.sh ] || [ -f tests/nix/setup-nix.sh ]; then
    bash tests/nix/setup-nix.sh
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
.venv/bin/pip install -q --disable-pip-version-check --upgrade pip 2>&1 | grep -v '^WARNING: Location' || true
.venv/bin/pip install -q --disable-pip-version-check -e '.[test]' 2>&1 | grep -v '^WARNING: Location' || true
# Byte-compile now: with PYTHONDONTWRITEBYTECODE set (as on these machines) nothing is ever
# cached at run time, and the post-build hook would recompile the editable package on every
# build.  pip already compiles what it installs; this also covers anything it missed.
.venv/bin/python -m compileall -q trustix_p2p
.venv/bin/python -m compileall -q .venv/lib/python*/site-packages >/dev/null
.venv/bin/python -c 'import trustix_p2p, plyvel, nacl, trio, zeroconf' 
