# syntax=docker/dockerfile:1
# mlkube-sidecar: metrics sidecar in front of a model server.
# Build from the repository root (the workspace is the build context):
#   docker build -f deploy/docker/mlkube-sidecar.Dockerfile -t ghcr.io/mlkube/mlkube-sidecar:v0.1.0 .
# Runtime: distroless/cc (glibc, libgcc, CA certificates, no shell), non-root uid 65532, nothing
# written to the root filesystem (pods run it read-only, with an emptyDir on /tmp).

ARG RUST_VERSION=1.95
FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p mlkube-sidecar --bin mlkube-sidecar \
    && install -D -m 0755 target/release/mlkube-sidecar /out/mlkube-sidecar

FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="mlkube-sidecar" \
      org.opencontainers.image.description="mlkube metrics sidecar in front of a model server" \
      org.opencontainers.image.source="https://github.com/mlkube/mlkube" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/mlkube-sidecar /usr/local/bin/mlkube-sidecar
USER 65532:65532
WORKDIR /tmp
EXPOSE 8000 8001
ENTRYPOINT ["/usr/local/bin/mlkube-sidecar"]
