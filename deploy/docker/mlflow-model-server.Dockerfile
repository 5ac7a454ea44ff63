# syntax=docker/dockerfile:1
# mlflow-model-server: the default model server of a ModelDeployment, MLflow's pyfunc scoring server.
# The operator runs it as
#   mlflow models serve --model-uri models:/<name>/<version> --host 127.0.0.1 --port 8080 --env-manager local
# with MLFLOW_TRACKING_URI pointing at the TrackingServer, HOME and TMPDIR on an emptyDir at /tmp, a
# read-only root filesystem and uid 65532. `--env-manager local` means the model's libraries must be
# in this image: scikit-learn, pandas and numpy are; add yours with EXTRA_PACKAGES, e.g.
#   docker build -f deploy/docker/mlflow-model-server.Dockerfile \
#     --build-arg EXTRA_PACKAGES="xgboost==2.1.4 lightgbm==4.6.0" -t registry.example.com/mlflow-model-server:custom .
# The sidecar checks the server's /ping before sending it traffic.

FROM python:3.11-slim-bookworm
ARG MLFLOW_VERSION=3.17.2
ARG EXTRA_PACKAGES=""
LABEL org.opencontainers.image.title="mlflow-model-server" \
      org.opencontainers.image.description="MLflow pyfunc scoring server for mlkube ModelDeployments" \
      org.opencontainers.image.source="https://github.com/mlkube/mlkube" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOME=/tmp \
    TMPDIR=/tmp \
    MLFLOW_ENV_MANAGER=local
# hadolint ignore=DL3013
RUN pip install "mlflow==${MLFLOW_VERSION}" scikit-learn pandas numpy ${EXTRA_PACKAGES} \
    && python -m compileall -q /usr/local/lib/python3.11 \
    && useradd --uid 65532 --gid 0 --home-dir /tmp --no-create-home --shell /usr/sbin/nologin mlflow
USER 65532:65532
WORKDIR /tmp
EXPOSE 8080
CMD ["mlflow", "models", "serve", "--help"]
