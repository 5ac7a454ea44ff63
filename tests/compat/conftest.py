"""Fixtures for the MLflow-client compatibility suite.

The server under test is already running; its URL comes from ``MLKUBE_TRACKING_URI``. Every test works
in its own uniquely named experiment, so the suite can run again and again against the same server.
"""

from __future__ import annotations

import os
import uuid

import pytest

# Fail fast instead of retrying a broken server for minutes, and keep the client off the network.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "60")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")
os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")

import mlflow  # noqa: E402
from mlflow import MlflowClient  # noqa: E402

import compat_auth  # noqa: E402

TRACKING_URI = os.environ.get("MLKUBE_TRACKING_URI", "").rstrip("/")
UPSTREAM = os.environ.get("MLKUBE_COMPAT_UPSTREAM", "0") == "1"
MLFLOW_MAJOR = int(mlflow.__version__.split(".")[0])


def pytest_report_header(config):
    target = "upstream mlflow server" if UPSTREAM else "mlkube-server"
    return f"mlflow client {mlflow.__version__}; tracking URI {TRACKING_URI or '(unset)'} ({target})"


def pytest_collection_modifyitems(config, items):
    compat_auth.select(config, items)
    if not UPSTREAM:
        return
    skip = pytest.mark.skip(reason="mlkube is deliberately stricter than upstream MLflow here")
    for item in items:
        if "mlkube_only" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tracking_uri() -> str:
    if not TRACKING_URI:
        pytest.exit("set MLKUBE_TRACKING_URI to the URL of a running tracking server", returncode=4)
    mlflow.set_tracking_uri(TRACKING_URI)
    return TRACKING_URI


@pytest.fixture(scope="session", autouse=True)
def basic_auth_user(tracking_uri):
    """With MLKUBE_COMPAT_AUTH=1, the whole session acts as a fresh non-admin user (compat_auth.py)."""
    return compat_auth.sign_in_session_user(tracking_uri)


@pytest.fixture
def client(tracking_uri) -> MlflowClient:
    return MlflowClient(tracking_uri=tracking_uri)


def unique_name(prefix: str = "compat") -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


@pytest.fixture
def experiment_id(client) -> str:
    """A fresh experiment for this test; also the fluent API's active experiment."""
    exp_id = client.create_experiment(unique_name())
    mlflow.set_experiment(experiment_id=exp_id)
    yield exp_id
    while mlflow.active_run() is not None:
        mlflow.end_run()


@pytest.fixture
def run_id(client, experiment_id) -> str:
    """A RUNNING run in the test's experiment (created with the low-level client)."""
    return client.create_run(experiment_id).info.run_id
