#!/usr/bin/env bash
# Baton's whole test suite, on a fresh Debian machine or a developer's: installs what the tests
# need (real servers, not mocks), builds every binary the end-to-end tests start, runs everything.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the tests start for real: Prosody (XMPP), BIND9 (DNS), dig and PostgreSQL.
packages=()
command -v prosody >/dev/null 2>&1 || packages+=(prosody)
command -v named >/dev/null 2>&1 || [ -x /usr/sbin/named ] || packages+=(bind9)
command -v dig >/dev/null 2>&1 || packages+=(bind9-dnsutils)
command -v python3 >/dev/null 2>&1 || packages+=(python3)
# Microsoft's Adaptive Card renderer in headless Chromium, for the Teams card tests.
command -v node >/dev/null 2>&1 || packages+=(nodejs)
command -v npm >/dev/null 2>&1 || packages+=(npm)
[ -x /usr/bin/chromium ] || packages+=(chromium)
# PostgreSQL (the replicas' shared store): the tests run initdb and postgres from
# /usr/lib/postgresql/<version>/bin as the `postgres` user the package creates.
compgen -G "/usr/lib/postgresql/*/bin/postgres" >/dev/null || packages+=(postgresql)
# The Windows build of baton-agent (Edge servers run Windows): the MinGW linker.
command -v x86_64-w64-mingw32-gcc >/dev/null 2>&1 || packages+=(gcc-mingw-w64-x86-64)
# --- Operations (tests/tests/operations.rs, scripts/test-image.sh) ---
# Prometheus and promtool (scrape test, alert rules), systemd-analyze (unit files), and for the
# image check: buildah, podman with runc, debootstrap (the local builder base), musl-gcc.
command -v prometheus >/dev/null 2>&1 || packages+=(prometheus)
command -v systemd-analyze >/dev/null 2>&1 || packages+=(systemd)
command -v buildah >/dev/null 2>&1 || packages+=(buildah)
command -v podman >/dev/null 2>&1 || packages+=(podman)
command -v runc >/dev/null 2>&1 || [ -x /usr/sbin/runc ] || packages+=(runc)
command -v debootstrap >/dev/null 2>&1 || [ -x /usr/sbin/debootstrap ] || packages+=(debootstrap)
command -v musl-gcc >/dev/null 2>&1 || packages+=(musl-tools)
# --- end of operations packages ---
if [ ${#packages[@]} -gt 0 ]; then
    echo "test.sh: installing ${packages[*]}" >&2
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${packages[@]}"
fi

# The card renderer's npm modules (tests/cards/package-lock.json).
[ -d tests/cards/node_modules ] || npm ci --prefix tests/cards --no-audit --no-fund

# The code stays formatted (rustfmt.toml).
cargo fmt --all -- --check

# The end-to-end tests run the real binaries: build them first.
cargo build --workspace --bins --locked
cargo test --workspace --locked "$@"

# baton-agent ships as a Windows service binary: it must keep cross-building.
rustup target list --installed | grep -qx x86_64-pc-windows-gnu || rustup target add x86_64-pc-windows-gnu
cargo build -p baton-agent --bin baton-agent --target x86_64-pc-windows-gnu --locked
echo "test.sh: built $(ls target/x86_64-pc-windows-gnu/debug/baton-agent.exe)" >&2
