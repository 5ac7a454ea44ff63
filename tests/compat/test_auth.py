"""Basic auth (``--app-name basic-auth``) through the real MLflow client.

Users and permissions are managed with the client's own ``mlflow.server.get_app_client("basic-auth")``
(``AuthServiceClient``); the tracking and registry calls go through ``MlflowClient`` with
``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD``. MLflow 3's ``AuthServiceClient`` no longer
has the experiment / registered-model permission methods (roles replaced them), so with that client
the same endpoints are called over HTTP with the 2.x client's JSON.

Runs only against a server started with basic auth (``MLKUBE_COMPAT_AUTH=1``; see compat_auth.py).
"""

from __future__ import annotations

import os

import pytest
import requests
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException, RestException

from compat_auth import ADMIN, AUTH, new_user, signed_in
from conftest import UPSTREAM, unique_name

pytestmark = pytest.mark.skipif(
    not AUTH, reason="needs a server with basic auth: MLKUBE_COMPAT_AUTH=1 (scripts/test-all runs one)"
)


def app_client(tracking_uri):
    from mlflow.server import get_app_client

    return get_app_client("basic-auth", tracking_uri=tracking_uri)


def expect_code(code: str, fn, *args, **kwargs):
    with pytest.raises(MlflowException) as info:
        fn(*args, **kwargs)
    assert info.value.error_code == code, f"expected {code}, got {info.value.error_code}: {info.value}"


def expect_denied(fn, *args, **kwargs):
    expect_code("PERMISSION_DENIED", fn, *args, **kwargs)


def permission(tracking_uri, kind: str, op: str, key: str, username: str, level: str | None = None):
    """Experiment / registered-model permission endpoints, as the signed-in user.

    ``kind`` is ``experiment`` or ``registered_model``; ``op`` is create, get, update or delete.
    """
    app = app_client(tracking_uri)
    method = getattr(app, f"{op}_{kind}_permission", None)
    args = [key, username] + ([level] if level else [])
    if method is not None:
        return method(*args)
    # MLflow 3's client: the same endpoint and JSON over HTTP.
    field = "experiment_id" if kind == "experiment" else "name"
    route = "experiments" if kind == "experiment" else "registered-models"
    payload = {field: key, "username": username}
    if level:
        payload["permission"] = level
    http_method = {"create": "POST", "get": "GET", "update": "PATCH", "delete": "DELETE"}[op]
    resp = requests.request(
        http_method,
        f"{tracking_uri}/api/2.0/mlflow/{route}/permissions/{op}",
        params=payload if http_method == "GET" else None,
        json=None if http_method == "GET" else payload,
        auth=(os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"]),
        timeout=60,
    )
    if resp.status_code != 200:
        raise RestException(resp.json())
    return resp.json()


def test_requests_without_valid_credentials_get_401(tracking_uri):
    url = f"{tracking_uri}/api/2.0/mlflow/experiments/search"
    for auth in (None, (ADMIN[0], "not-the-password"), ("nobody-at-all", "some-password-1")):
        resp = requests.get(url, auth=auth, timeout=60)
        assert resp.status_code == 401, resp.text
        assert resp.headers.get("WWW-Authenticate") == 'Basic realm="mlflow"'
    assert requests.get(f"{tracking_uri}/health", timeout=60).status_code == 200
    # The artifact proxy and the ajax API are behind the same door.
    for path in ("/api/2.0/mlflow-artifacts/artifacts/0/x.txt", "/ajax-api/2.0/mlflow/experiments/search"):
        assert requests.get(f"{tracking_uri}{path}", timeout=60).status_code == 401, path
    with signed_in(ADMIN[0], "not-the-password"):
        with pytest.raises(MlflowException) as info:
            MlflowClient(tracking_uri=tracking_uri).search_experiments()
        if not UPSTREAM:
            assert info.value.error_code == "UNAUTHENTICATED"


def test_app_client_manages_users(tracking_uri):
    name = unique_name("user")
    with signed_in(*ADMIN):
        app = app_client(tracking_uri)
        user = app.create_user(name, "first-password-1")
        assert user.username == name
        assert not user.is_admin
        assert app.get_user(name).id == user.id
        expect_code("RESOURCE_ALREADY_EXISTS", app.create_user, name, "first-password-1")
        app.update_user_password(name, "second-password-2")
    with signed_in(name, "second-password-2"):
        MlflowClient(tracking_uri=tracking_uri).search_experiments()
        # A user sees themself, not others, and may not create users (CVE-2023-6014).
        assert app_client(tracking_uri).get_user(name).username == name
        expect_denied(app_client(tracking_uri).get_user, ADMIN[0])
        expect_denied(app_client(tracking_uri).create_user, unique_name("eve"), "eve-password-123")
        expect_denied(app_client(tracking_uri).update_user_admin, name, True)
    with signed_in(name, "first-password-1"):
        with pytest.raises(MlflowException):
            MlflowClient(tracking_uri=tracking_uri).search_experiments()
    with signed_in(*ADMIN):
        app = app_client(tracking_uri)
        app.update_user_admin(name, True)
        assert app.get_user(name).is_admin
        app.update_user_admin(name, False)
        app.delete_user(name)
        expect_code("RESOURCE_DOES_NOT_EXIST", app.get_user, name)


def test_experiment_permissions_gate_the_tracking_client(tracking_uri, tmp_path):
    owner, other = new_user(tracking_uri, "owner"), new_user(tracking_uri, "other")
    with signed_in(*owner):
        client = MlflowClient(tracking_uri=tracking_uri)
        exp_id = client.create_experiment(unique_name("private"))
        run_id = client.create_run(exp_id).info.run_id
        client.log_metric(run_id, "m", 1.0)
        client.log_text(run_id, "hello", "notes/a.txt")
        # The creator manages the experiment.
        perm = permission(tracking_uri, "experiment", "get", exp_id, owner[0])
        level = perm.permission if hasattr(perm, "permission") else perm["experiment_permission"]["permission"]
        assert level == "MANAGE"

    with signed_in(*other):
        client = MlflowClient(tracking_uri=tracking_uri)
        # default_permission = READ: reads pass, writes and deletes do not.
        assert client.get_run(run_id).data.metrics == {"m": 1.0}
        assert [f.path for f in client.list_artifacts(run_id, "notes")] == ["notes/a.txt"]
        expect_denied(client.log_metric, run_id, "m", 2.0)
        expect_denied(client.set_tag, run_id, "k", "v")
        expect_denied(client.delete_run, run_id)
        expect_denied(client.rename_experiment, exp_id, unique_name("renamed"))
        expect_denied(permission, tracking_uri, "experiment", "create", exp_id, other[0], "MANAGE")
        src = tmp_path / "b.txt"
        src.write_text("b")
        with pytest.raises(Exception):
            client.log_artifact(run_id, str(src))

    with signed_in(*owner):
        permission(tracking_uri, "experiment", "create", exp_id, other[0], "EDIT")
    with signed_in(*other):
        client = MlflowClient(tracking_uri=tracking_uri)
        client.log_metric(run_id, "m", 2.0)
        client.log_artifact(run_id, str(src))
        expect_denied(client.delete_run, run_id)

    with signed_in(*owner):
        permission(tracking_uri, "experiment", "update", exp_id, other[0], "MANAGE")
    with signed_in(*other):
        MlflowClient(tracking_uri=tracking_uri).delete_run(run_id)
        MlflowClient(tracking_uri=tracking_uri).restore_run(run_id)

    with signed_in(*owner):
        permission(tracking_uri, "experiment", "update", exp_id, other[0], "NO_PERMISSIONS")
    with signed_in(*other):
        client = MlflowClient(tracking_uri=tracking_uri)
        expect_denied(client.get_run, run_id)
        expect_denied(client.get_experiment, exp_id)
        with pytest.raises(Exception):
            client.download_artifacts(run_id, "notes/a.txt", str(tmp_path))
        # Searches leave out what the user may not read.
        visible = {e.experiment_id for e in client.search_experiments(max_results=1000)}
        assert exp_id not in visible
        if not UPSTREAM:
            expect_denied(client.search_runs, [exp_id])


def test_registered_model_permissions_gate_the_registry_client(tracking_uri):
    owner, other = new_user(tracking_uri, "owner"), new_user(tracking_uri, "other")
    name = unique_name("model")
    with signed_in(*owner):
        MlflowClient(tracking_uri=tracking_uri).create_registered_model(name)
    with signed_in(*other):
        client = MlflowClient(tracking_uri=tracking_uri)
        assert client.get_registered_model(name).name == name
        expect_denied(client.set_registered_model_tag, name, "k", "v")
        expect_denied(client.delete_registered_model, name)
    with signed_in(*owner):
        permission(tracking_uri, "registered_model", "create", name, other[0], "EDIT")
    with signed_in(*other):
        client = MlflowClient(tracking_uri=tracking_uri)
        client.set_registered_model_tag(name, "k", "v")
        client.update_registered_model(name, description="edited by a permitted user")
        expect_denied(client.delete_registered_model, name)
    with signed_in(*owner):
        permission(tracking_uri, "registered_model", "update", name, other[0], "NO_PERMISSIONS")
    with signed_in(*other):
        client = MlflowClient(tracking_uri=tracking_uri)
        expect_denied(client.get_registered_model, name)
        assert name not in {m.name for m in client.search_registered_models(max_results=1000)}
    with signed_in(*owner):
        MlflowClient(tracking_uri=tracking_uri).delete_registered_model(name)
    with signed_in(*ADMIN):
        # Deleting the model dropped its permission rows; a new model of that name starts clean.
        expect_code(
            "RESOURCE_DOES_NOT_EXIST", permission, tracking_uri, "registered_model", "get", name, owner[0]
        )


def test_admin_bypasses_permissions(tracking_uri):
    owner = new_user(tracking_uri, "owner")
    with signed_in(*owner):
        client = MlflowClient(tracking_uri=tracking_uri)
        exp_id = client.create_experiment(unique_name("owned"))
        run_id = client.create_run(exp_id).info.run_id
    with signed_in(*ADMIN):
        client = MlflowClient(tracking_uri=tracking_uri)
        client.log_metric(run_id, "admin", 1.0)
        client.delete_run(run_id)
        client.delete_experiment(exp_id)
