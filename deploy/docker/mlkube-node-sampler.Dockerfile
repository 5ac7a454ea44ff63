# syntax=docker/dockerfile:1
# mlkube-node-sampler: node and GPU metrics (DaemonSet).
# Build from the repository root (the workspace is the build context):
#   docker build -f deploy/docker/mlkube-node-sampler.Dockerfile -t ghcr.io/mlkube/mlkube-node-sampler:v0.1.0 .
# Runtime: distroless/cc (glibc, libgcc, CA certificates, no shell), non-root uid 65532, nothing
# written to the root filesystem (pods run it read-only, with an emptyDir on /tmp).
# The node sampler loads libnvidia-ml.so at run time (dlopen): the NVIDIA container runtime mounts
# it, and it needs the glibc loader that distroless/cc has (a static musl binary could not load it).
# The DaemonSet runs it as uid 0 (the kubelet pod-resources socket is root-only) with every
# capability dropped; the image default stays non-root.

ARG RUST_VERSION=1.95
FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p mlkube-node-sampler --bin mlkube-node-sampler \
    && install -D -m 0755 target/release/mlkube-node-sampler /out/mlkube-node-sampler

FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="mlkube-node-sampler" \
      org.opencontainers.image.description="mlkube node and GPU metrics (DaemonSet)" \
      org.opencontainers.image.source="https://github.com/mlkube/mlkube" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/mlkube-node-sampler /usr/local/bin/mlkube-node-sampler
USER 65532:65532
WORKDIR /tmp
EXPOSE 9400
ENTRYPOINT ["/usr/local/bin/mlkube-node-sampler"]
