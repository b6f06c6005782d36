#!/bin/sh
# Prepare real Nix for the @pytest.mark.nix tests: Debian's nix-bin (Nix 2.8), single-user, root.
#
# Idempotent; run as root before pytest (the lead's .ci/run calls it).  What it does and why:
#   1. apt-get install nix-bin when nix-store is missing (Debian bookworm ships Nix 2.8.0).
#   2. Creates /nix/store and /nix/var/nix: the tests use the real /nix/store (store paths must
#      be /nix/store/... to be valid log entries) and Nix's own state directory.  As root with
#      `store = local`, Nix opens the SQLite database directly; no daemon, no nixbld users.
#   3. A smoke build with the exact settings the tests pass in NIX_CONFIG (tests/nix/__init__.py):
#        build-users-group =      root builds without the nixbld group (none in a container)
#        sandbox = false          containers cannot create Nix's sandbox namespaces
#        store = local            never try the daemon socket the Debian package sets up
#        substituters =           no network
#        experimental-features = nix-command   for `nix path-info --json`, `nix store sign`
#      Derivations use builder = "/bin/sh" and PATH=/usr/bin:/bin from the host, which works
#      because the sandbox is off; nothing needs nixpkgs.
# Nothing else is required: no `nix-store --init`, no channel, no /etc/nix/nix.conf change.
set -eu

if [ "$(id -u)" -ne 0 ]; then
    echo "setup-nix.sh: must run as root (single-user Nix owning /nix)" >&2
    exit 1
fi

if ! command -v nix-store >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends nix-bin
fi

mkdir -p /nix/store /nix/var/nix
chmod 0755 /nix /nix/store

NIX_CONFIG='build-users-group =
sandbox = false
store = local
substituters =
experimental-features = nix-command'
export NIX_CONFIG
unset NIX_REMOTE

# A smoke build whose output is unique per run, so it really builds.
out=$(nix-build --no-out-link -E "derivation {
    name = \"trustix-p2p-nix-smoke\";
    system = builtins.currentSystem;
    builder = \"/bin/sh\";
    args = [ \"-c\" \"echo ok > \$out\" ];
    nonce = \"$(date +%s%N)\";
}")
nix path-info --json "$out" >/dev/null
echo "setup-nix.sh: $(nix --version) ready; smoke build $out"
