"""Basic-auth mode of the compatibility suite (``MLKUBE_COMPAT_AUTH=1``).

The harness (scripts/lib/server.sh) then starts the server with ``--app-name basic-auth`` and an INI
file of its own (``default_permission = READ``) and tells us the admin's credentials in
``MLKUBE_COMPAT_ADMIN_USERNAME`` / ``MLKUBE_COMPAT_ADMIN_PASSWORD``. The run is ``test_auth.py`` plus a
smoke subset of the other modules (tests that only talk through the MLflow client), all signed in as a
fresh non-admin user through ``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD``: what they
create, they own (creator gets MANAGE), so they pass exactly as without auth.
"""

from __future__ import annotations

import contextlib
import os
import uuid

import requests

AUTH = os.environ.get("MLKUBE_COMPAT_AUTH", "0") == "1"
ADMIN = (
    os.environ.get("MLKUBE_COMPAT_ADMIN_USERNAME", "admin"),
    os.environ.get("MLKUBE_COMPAT_ADMIN_PASSWORD", ""),
)

# What runs besides test_auth.py with auth on (node-id prefixes).
SMOKE = (
    "test_auth.py",
    "test_artifacts.py",
    "test_runs.py::test_fluent_run_lifecycle",
    "test_runs.py::test_log_batch_1000_metrics_and_100_params",
    "test_runs.py::test_delete_and_restore_run",
    "test_search.py",
    "test_models.py::test_sklearn_log_model_and_pyfunc_load",
    "test_registry.py::test_registry_load_by_version_alias_and_stage",
    "test_registry.py::test_registry_aliases",
)


def select(config, items) -> None:
    """With auth on, deselect everything outside the smoke subset."""
    if not AUTH:
        return
    keep, drop = [], []
    for item in items:
        node = item.nodeid.split("/")[-1]
        (keep if node.startswith(SMOKE) else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@contextlib.contextmanager
def signed_in(username: str, password: str):
    """Make the MLflow client (which reads these variables on every request) act as this user."""
    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")}
    os.environ["MLFLOW_TRACKING_USERNAME"] = username
    os.environ["MLFLOW_TRACKING_PASSWORD"] = password
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def new_user(tracking_uri: str, prefix: str = "compat") -> tuple[str, str]:
    """Create a non-admin user (as the admin, over plain HTTP) and return its credentials."""
    username = f"{prefix}-{uuid.uuid4().hex[:12]}"
    password = f"pw-{uuid.uuid4().hex}"
    resp = requests.post(
        f"{tracking_uri}/api/2.0/mlflow/users/create",
        json={"username": username, "password": password},
        auth=ADMIN,
        timeout=60,
    )
    resp.raise_for_status()
    return username, password


def sign_in_session_user(tracking_uri: str) -> tuple[str, str] | None:
    """For the whole session, act as a fresh non-admin user (with auth on)."""
    if not AUTH:
        return None
    user = new_user(tracking_uri, "session")
    os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"] = user
    return user
