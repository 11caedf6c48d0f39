# syntax=docker/dockerfile:1
# The projectsync operator image.
#
#   docker build -t projectsync/projectsync:0.1.0 .
#
# Base image trade-off: the git source runs the git CLI (fetch, ls-tree,
# cat-file) and, for ssh remotes, ssh; the askpass helper is a /bin/sh
# script. Distroless and scratch have neither git nor a shell, so the runtime
# is debian-slim with git, openssh-client and ca-certificates only (about
# 100 MB), running as a non-root user with no setuid binaries that matter
# under the chart's securityContext (no privilege escalation, all
# capabilities dropped, read-only root filesystem).

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

# --- build -------------------------------------------------------------------
FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS build
WORKDIR /src
# sqlx checks its queries against the committed .sqlx/ data: no database here.
ENV SQLX_OFFLINE=true CARGO_TERM_COLOR=never
COPY . .
# The registry and target caches persist between builds (BuildKit).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin projectsync \
 && install -D -m 0755 target/release/projectsync /out/projectsync

# --- run ---------------------------------------------------------------------
FROM debian:${DEBIAN_RELEASE}-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends git openssh-client ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 65532 projectsync \
 && useradd --system --uid 65532 --gid 65532 --home-dir /var/cache/projectsync \
      --shell /usr/sbin/nologin projectsync \
 && install -d -o 65532 -g 65532 /var/cache/projectsync
COPY --from=build /out/projectsync /usr/local/bin/projectsync
USER 65532:65532
ENV PROJECTSYNC_CACHE_DIR=/var/cache/projectsync \
    PROJECTSYNC_HTTP_ADDR=0.0.0.0:8080 \
    PROJECTSYNC_LOG_FORMAT=json
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/projectsync"]
CMD ["run"]
