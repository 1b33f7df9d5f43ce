#!/usr/bin/env bash
# Baton's whole test suite, on a fresh Debian machine or a developer's: installs what the tests
# need (real servers, not mocks), builds every binary the end-to-end tests start, runs everything.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the tests start for real: Prosody (XMPP), BIND9 (DNS) and dig.
packages=()
command -v prosody >/dev/null 2>&1 || packages+=(prosody)
command -v named >/dev/null 2>&1 || [ -x /usr/sbin/named ] || packages+=(bind9)
command -v dig >/dev/null 2>&1 || packages+=(bind9-dnsutils)
if [ ${#packages[@]} -gt 0 ]; then
    echo "test.sh: installing ${packages[*]}" >&2
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${packages[@]}"
fi

# The end-to-end tests run the real binaries: build them first.
cargo build --workspace --bins --locked
cargo test --workspace --locked "$@"
