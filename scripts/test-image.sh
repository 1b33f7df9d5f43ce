#!/usr/bin/env bash
# Builds Baton's images from the real Dockerfile and checks them, on a machine with no image
# registry: makes the builder base image locally (a Debian root from debootstrap plus the Rust
# toolchain installed here), builds with buildah (chroot isolation), runs the demo and the health
# check in the image with podman (runc, explicit ulimits), checks that the process is not root,
# and prints the images' sizes.
#
#   scripts/test-image.sh            # the whole check; a second run reuses the base and layers
#   BATON_IMAGE_KEEP=1 scripts/test-image.sh   # keep the test containers' folders for a look
#   BATON_IMAGE_REUSE=1 scripts/test-image.sh  # check the images built last time, without building
#                                              # (they may be of an older commit: it is printed)
#
# Needs root (buildah and podman keep their images in /var/lib/containers) and the Debian
# packages buildah, podman, runc, debootstrap; scripts/test.sh installs them.
set -euo pipefail
cd "$(dirname "$0")/.."

started=$(date +%s)
say() { echo "test-image.sh: $*" >&2; }
fail() {
    say "FAILED: $*"
    exit 1
}
elapsed() { echo "$(($(date +%s) - started))s"; }

for tool in buildah podman runc debootstrap rustc rustup git; do
    command -v "$tool" >/dev/null 2>&1 || [ -x "/usr/sbin/$tool" ] || fail "$tool is missing (scripts/test.sh installs it)"
done
[ "$(id -u)" -eq 0 ] || fail "run as root: buildah and podman keep their images in /var/lib/containers"

# podman as this machine allows it: runc (crun fails on this kernel's hybrid cgroups), and limits
# set explicitly rather than inherited.
PODMAN_RUN=(podman run --runtime runc --ulimit nofile=4096:4096 --ulimit nproc=1024:1024 --network none)

# 1. The builder base image: what `rust:<version>-slim-bookworm` provides, made from Debian's
#    packages and this machine's toolchain.
rust_version=$(rustc --version | awk '{print $2}')
base="localhost/baton-rust-builder:${rust_version}"
target=x86_64-unknown-linux-musl
if podman image exists "$base"; then
    say "builder base $base exists; reused"
else
    say "making the builder base $base"
    rustup target list --installed | grep -qx "$target" || rustup target add "$target"
    sysroot=$(rustc --print sysroot)
    # The Debian mirror this machine's apt uses.
    mirror=$(
        { grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}'
          grep -hs '^deb ' /etc/apt/sources.list | awk '{print $2}'; } | grep -m1 '/debian/\?$' || true
    )
    [ -n "$mirror" ] || fail "no Debian mirror found in /etc/apt/sources.list(.d)"
    root=$(mktemp -d /var/tmp/baton-builder-root.XXXXXX)
    trap 'rm -rf "$root"' EXIT
    debootstrap --variant=minbase --include=ca-certificates,gcc,libc6-dev,musl-tools \
        bookworm "$root" "$mirror" >"$root.log" 2>&1 || { tail -20 "$root.log" >&2; fail "debootstrap"; }
    rm -f "$root.log"
    # The toolchain as the official image lays it out: rustup in /usr/local/cargo/bin with its
    # proxies, toolchains in /usr/local/rustup. Documentation is left out.
    toolchain="${rust_version}-x86_64-unknown-linux-gnu"
    mkdir -p "$root/usr/local/cargo/bin" "$root/usr/local/rustup/toolchains/$toolchain"
    tar -C "$sysroot" --exclude=./share/doc --exclude=./share/man -cf - . | tar -C "$root/usr/local/rustup/toolchains/$toolchain" -xf -
    cp "$(command -v rustup)" "$root/usr/local/cargo/bin/rustup"
    for proxy in cargo rustc rustdoc rust-gdb rust-lldb rustfmt cargo-fmt cargo-clippy clippy-driver; do
        ln -f "$root/usr/local/cargo/bin/rustup" "$root/usr/local/cargo/bin/$proxy"
    done
    printf 'version = "12"\ndefault_toolchain = "%s"\nprofile = "minimal"\nauto_self_update = "disable"\n\n[overrides]\n' \
        "$toolchain" >"$root/usr/local/rustup/settings.toml"
    rm -rf "$root/var/cache/apt/archives/"*.deb "$root/var/lib/apt/lists/"*
    tar -C "$root" -cf - . | podman import \
        --change 'ENV RUSTUP_HOME=/usr/local/rustup' \
        --change 'ENV CARGO_HOME=/usr/local/cargo' \
        --change 'ENV PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'WORKDIR /' \
        --message "Debian bookworm (debootstrap) with Rust $rust_version, for scripts/test-image.sh" \
        - "$base" >/dev/null
    rm -rf "$root"
    trap - EXIT
    say "builder base made ($(elapsed))"
fi

# 2. The real Dockerfile, built by buildah. The machine's cargo registry is mounted where the
#    builder's cargo keeps its own and the build runs offline: crates are fetched once, here,
#    with this machine's own cargo settings, and never again inside the build.
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
registry="${CARGO_HOME:-$HOME/.cargo}/registry"
cargo fetch --locked >/dev/null 2>&1 || { cargo fetch --locked; fail "cargo fetch"; }
build=(buildah build --isolation chroot --format docker --layers --pull=never
    --volume "$registry:/usr/local/cargo/registry" --build-arg CARGO_NET_OFFLINE=true
    --build-arg "RUST_IMAGE=$base" --build-arg "BATON_GIT_COMMIT=$commit" --build-arg "BATON_VERSION=$version")
# Both images are built from one snapshot of the tree (uncommitted changes included), so that
# the second build reuses every layer of the first.
context=$(mktemp -d /var/tmp/baton-context.XXXXXX)
trap 'rm -rf "$context"' EXIT
log=target/test-image-build.log
if [ -n "${BATON_IMAGE_REUSE:-}" ] && podman image exists localhost/baton:test && podman image exists localhost/baton-agent:test; then
    commit=$(podman image inspect --format '{{index .Config.Labels "org.opencontainers.image.revision"}}' localhost/baton:test)
    say "BATON_IMAGE_REUSE: checking the images built last time, of commit $commit (HEAD is $(git rev-parse --short HEAD 2>/dev/null || echo unknown))"
else
    tar -C . --exclude=./target --exclude=./.git -cf - . | tar -C "$context" -xf -
    say "building localhost/baton:test from Dockerfile (log: $log)"
    "${build[@]}" --target baton -t localhost/baton:test "$context" >"$log" 2>&1 ||
        { tail -40 "$log" >&2; fail "buildah build (log: $log)"; }
    say "building localhost/baton-agent:test"
    "${build[@]}" --target baton-agent -t localhost/baton-agent:test "$context" >>"$log" 2>&1 ||
        { tail -40 "$log" >&2; fail "buildah build --target baton-agent (log: $log)"; }
    say "images built ($(elapsed))"
fi
rm -rf "$context"
trap - EXIT

# 3. The image's metadata: a numeric non-root user, the volume, the port, the health check.
inspect() { podman image inspect --format "$1" localhost/baton:test; }
[ "$(inspect '{{.Config.User}}')" = "10001:10001" ] || fail "the image's user is '$(inspect '{{.Config.User}}')', not 10001:10001"
inspect '{{json .Config.Volumes}}' | grep -q '"/data"' || fail "no /data volume"
inspect '{{json .Config.ExposedPorts}}' | grep -q '9464/tcp' || fail "port 9464 is not exposed"
inspect '{{json .Config.Healthcheck}}' | grep -q '"healthcheck"' || fail "no HEALTHCHECK with the baton subcommand"
inspect '{{index .Config.Labels "org.opencontainers.image.revision"}}' | grep -qx "$commit" || fail "the revision label is not $commit"
podman image inspect --format '{{.Config.User}}' localhost/baton-agent:test | grep -qx 10001:10001 || fail "the agent image runs as root"

# 4. The demo inside the image: the bot starts its agents (itself, as `agent-process`), the
#    store lives in the image's /tmp.
say "running the demo in the image"
out=$(mktemp)
if ! "${PODMAN_RUN[@]}" --rm -i localhost/baton:test demo <examples/story.chat >"$out" 2>"$out.err"; then
    cat "$out" "$out.err" >&2
    fail "the demo failed in the image"
fi
for line in \
    "Plan (sha256 " \
    "Refused (!approve 1): you requested this; another person must approve it." \
    "Refused (!approve 1): mallory may not approve: only members of edge-admins may." \
    "#1 approved by bob (2 people: alice and bob). Running." \
    "#1 [2/8] services: edge2a ok" \
    "#1 [8/8] verify:" \
    "#1 succeeded in"; do
    grep -qF -- "$line" "$out" || { cat "$out" "$out.err" >&2; fail "the demo's output lacks: $line"; }
done
grep -qF "agents on 127.0.0.1 over mutual TLS" "$out.err" || { cat "$out.err" >&2; fail "the demo did not start its agents"; }
say "demo ok: $(grep -F '#1 succeeded in' "$out" | cut -c1-60)…"

# 5. `baton run` in the image with the health server, checked by the image's own HEALTHCHECK;
#    the process's user seen from the host.
conf=$(mktemp -d)
# The example's console, trusted here: `baton run` needs a chat platform it reads commands from,
# and this container's stdin is nobody's.
sed -e 's|^store = .*|store = "/data/baton.sqlite"|' -e 's|^trusted = false|trusted = true|' \
    examples/contoso.toml >"$conf/baton.toml"
printf '\n[server]\nlisten = "127.0.0.1:9464"\n' >>"$conf/baton.toml"
chmod -R a+rX "$conf"
name="baton-image-test-$$"
cleanup() {
    podman rm -f "$name" >/dev/null 2>&1 || true
    [ -n "${BATON_IMAGE_KEEP:-}" ] || rm -rf "$conf" "$out" "$out.err"
}
trap cleanup EXIT
"${PODMAN_RUN[@]}" -d -i --name "$name" -v "$conf:/etc/baton:ro" localhost/baton:test >/dev/null
healthy=""
for _ in $(seq 1 50); do
    if podman healthcheck run "$name" >/dev/null 2>&1; then
        healthy=yes
        break
    fi
    sleep 0.2
done
[ -n "$healthy" ] || { podman logs "$name" >&2; fail "the HEALTHCHECK never passed"; }
podman exec "$name" /usr/local/bin/baton healthcheck --url http://127.0.0.1:9464/readyz >/dev/null ||
    { podman logs "$name" >&2; fail "/readyz is not ready"; }
if podman exec "$name" /usr/local/bin/baton healthcheck --url http://127.0.0.1:9/healthz >/dev/null 2>&1; then
    fail "the health check passed against a closed port"
fi
pid=$(podman inspect --format '{{.State.Pid}}' "$name")
uid=$(awk '/^Uid:/ {print $2}' "/proc/$pid/status")
[ "$uid" = 10001 ] || fail "the bot runs as uid $uid, not 10001"
podman exec "$name" /usr/local/bin/baton --version | grep -qF "$commit" || fail "baton --version does not name $commit"
say "health check ok, process uid $uid"

# 6. Sizes.
size() { podman image inspect --format '{{.Size}}' "$1" | awk '{printf "%.1f MB", $1 / 1000000}'; }
say "sizes: baton $(size localhost/baton:test), baton-agent $(size localhost/baton-agent:test), builder base $(size "$base")"
bot_bytes=$(podman image inspect --format '{{.Size}}' localhost/baton:test)
[ "$bot_bytes" -lt 30000000 ] || say "warning: the bot image is over 30 MB"
say "ok in $(elapsed)"
