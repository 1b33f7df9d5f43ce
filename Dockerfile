# syntax=docker/dockerfile:1
# Baton's images: `baton` (the bot; the default target) and `baton-agent` (the agent for Linux
# hosts: `--target baton-agent`). Both are static musl binaries on `scratch`, run as a numeric
# non-root user, and carry nothing else but CA certificates and a writable /tmp.
#
#   docker build -t baton .
#   docker build --target baton-agent -t baton-agent .
#   docker run -i --rm baton demo < examples/story.chat
#   docker run -d -v /srv/baton/etc:/etc/baton:ro -v baton-data:/data -p 127.0.0.1:9464:9464 baton
#
# scripts/test-image.sh builds this very file with buildah, from a builder image it makes
# locally (this machine reaches no image registry), and runs the demo and the health check in
# the result with podman.

# The builder: the official Rust image, pinned. Any Debian-based image with rustup works.
ARG RUST_IMAGE=docker.io/library/rust:1.95-slim-bookworm

# The skeleton: every manifest and build script, and a stub for each crate root and each target
# a manifest may declare (binaries, benches, examples), so that the dependency layer below is
# rebuilt only when a manifest or the lock file changes. Integration tests are left out: cargo
# finds them by itself, and adding one must not rebuild the dependencies.
FROM ${RUST_IMAGE} AS skeleton
WORKDIR /src
COPY . .
RUN set -eu; \
    mkdir /skeleton; \
    find . -path ./target -prune -o \( -name Cargo.toml -o -name Cargo.lock -o -name build.rs \
        -o -name rust-toolchain.toml -o -path ./.cargo/config.toml \) -type f -print \
        | tar -cf - -T - | tar -xf - -C /skeleton; \
    find . -path ./target -prune -o -type f -name '*.rs' \( -path '*/src/lib.rs' -o -path '*/src/main.rs' \
        -o -path '*/src/bin/*' -o -path '*/benches/*' -o -path '*/examples/*' \) -print \
        | while read -r f; do \
            mkdir -p "/skeleton/$(dirname "$f")"; \
            case "$f" in */src/lib.rs) : > "/skeleton/$f" ;; *) echo 'fn main() {}' > "/skeleton/$f" ;; esac; \
        done

FROM ${RUST_IMAGE} AS builder
ARG TARGET=x86_64-unknown-linux-musl
# musl-gcc compiles the C inside the dependencies (SQLite, ring) for the static target.
RUN set -eu; \
    if ! command -v musl-gcc >/dev/null; then \
        apt-get update && apt-get install -y --no-install-recommends musl-tools && rm -rf /var/lib/apt/lists/*; \
    fi; \
    rustup target add "$TARGET"
# `true` builds from a cargo registry mounted at $CARGO_HOME/registry, without the network
# (scripts/test-image.sh mounts the machine's own).
ARG CARGO_NET_OFFLINE=false
ENV CARGO_PROFILE_RELEASE_STRIP=symbols \
    CARGO_TERM_COLOR=never
WORKDIR /src
# The dependencies, in their own layer.
COPY --from=skeleton /skeleton/ ./
RUN cargo build --release --locked --target "$TARGET" --bin baton --bin baton-agent
# Then Baton itself. The sources are touched so that cargo rebuilds the stubbed crates whatever
# the files' times in the build context.
COPY . .
ARG BATON_GIT_COMMIT=unknown
RUN set -eu; \
    find . -path ./target -prune -o -name '*.rs' -type f -exec touch {} +; \
    BATON_GIT_COMMIT="$BATON_GIT_COMMIT" cargo build --release --locked --target "$TARGET" --bin baton --bin baton-agent; \
    mkdir -p /out/usr/local/bin /out/etc/baton /out/etc/ssl/certs /out/tmp /data; \
    cp "target/$TARGET/release/baton" "target/$TARGET/release/baton-agent" /out/usr/local/bin/; \
    cp /etc/ssl/certs/ca-certificates.crt /out/etc/ssl/certs/; \
    chmod 1777 /out/tmp; \
    /out/usr/local/bin/baton --version; \
    /out/usr/local/bin/baton-agent --version
# One root per image, each copied whole so that /tmp keeps its mode (1777): COPY gives the
# destination folder itself default permissions, but keeps those of what it holds.
RUN set -eu; \
    for image in bot agent; do \
        mkdir -p "/image-$image/usr/local/bin"; \
        cp -a /out/etc /out/tmp "/image-$image/"; \
    done; \
    cp /out/usr/local/bin/baton /image-bot/usr/local/bin/; \
    cp /out/usr/local/bin/baton-agent /image-agent/usr/local/bin/

# The agent for Linux hosts: `docker build --target baton-agent .`
FROM scratch AS baton-agent
ARG BATON_VERSION=0.1.0
ARG BATON_GIT_COMMIT=unknown
COPY --from=builder /image-agent/ /
COPY --from=builder --chown=10001:10001 /data/ /data/
USER 10001:10001
ENV TMPDIR=/tmp
VOLUME ["/data"]
EXPOSE 4443
LABEL org.opencontainers.image.title="baton-agent" \
      org.opencontainers.image.description="Carries out Baton's allow-listed actions on a Linux host, over mutual TLS" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${BATON_VERSION}" \
      org.opencontainers.image.revision="${BATON_GIT_COMMIT}"
ENTRYPOINT ["/usr/local/bin/baton-agent"]
CMD ["run", "--config", "/etc/baton/agent.toml"]

# The bot (the default target).
FROM scratch AS baton
ARG BATON_VERSION=0.1.0
ARG BATON_GIT_COMMIT=unknown
COPY --from=builder /image-bot/ /
COPY --from=builder --chown=10001:10001 /data/ /data/
USER 10001:10001
ENV TMPDIR=/tmp
VOLUME ["/data"]
# Health (/healthz, /readyz) and metrics (/metrics) when `[server] listen` is set.
EXPOSE 9464
LABEL org.opencontainers.image.title="baton" \
      org.opencontainers.image.description="Chat-ops bot that fails XMPP federation over to another Lync/Skype for Business Edge pool, with a second person's approval" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${BATON_VERSION}" \
      org.opencontainers.image.revision="${BATON_GIT_COMMIT}"
# No shell in the image: the check is a subcommand. It reads `[server] listen` from the config.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["/usr/local/bin/baton", "healthcheck", "--config", "/etc/baton/baton.toml"]
ENTRYPOINT ["/usr/local/bin/baton"]
CMD ["run", "--config", "/etc/baton/baton.toml"]
