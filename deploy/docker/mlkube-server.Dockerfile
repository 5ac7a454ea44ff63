# syntax=docker/dockerfile:1
# mlkube-server: MLflow-compatible tracking server and model registry.
# Build from the repository root (the workspace is the build context):
#   docker build -f deploy/docker/mlkube-server.Dockerfile -t ghcr.io/mlkube/mlkube-server:v0.1.0 .
# Runtime: distroless/cc (glibc, libgcc, CA certificates, no shell), non-root uid 65532, nothing
# written to the root filesystem (pods run it read-only, with an emptyDir on /tmp).
# The image bundles MLflow's web UI: the prebuilt React app from the `mlflow` wheel on PyPI
# (Apache-2.0), pinned below; it is never part of this repository (docs/web-ui.md).

ARG RUST_VERSION=1.95
ARG MLFLOW_UI_VERSION=3.17.2

FROM python:3.11-slim-bookworm AS ui
ARG MLFLOW_UI_VERSION
# Only the wheel's UI build and its version file are kept; nothing of MLflow is installed.
RUN pip download --no-deps --only-binary=:all: --dest /wheel "mlflow==${MLFLOW_UI_VERSION}" \
    && python - <<'PY'
import glob, zipfile
wheel = glob.glob("/wheel/mlflow-*.whl")[0]
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        if name.startswith("mlflow/server/js/build/") and not name.endswith(".map") or name == "mlflow/version.py":
            z.extract(name, "/ui")
PY
RUN test -f /ui/mlflow/server/js/build/index.html
FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p mlkube-server --bin mlkube-server \
    && install -D -m 0755 target/release/mlkube-server /out/mlkube-server

FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="mlkube-server" \
      org.opencontainers.image.description="mlkube MLflow-compatible tracking server and model registry" \
      org.opencontainers.image.source="https://github.com/mlkube/mlkube" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/mlkube-server /usr/local/bin/mlkube-server
COPY --from=ui /ui/mlflow /usr/share/mlkube/mlflow
ENV MLKUBE_UI_DIR=/usr/share/mlkube/mlflow/server/js/build
USER 65532:65532
WORKDIR /tmp
EXPOSE 5000
ENTRYPOINT ["/usr/local/bin/mlkube-server"]
