"""Model registry: registered models, versions, stages, tags, aliases, search, and loading `models:/` URIs.

Every test registers its own uniquely named models, so the module can run again against the same server.
Two tiny, deliberately different sklearn models are logged once per module as plain run artifacts (which
works the same with the 2.x and 3.x clients); the registry tests register versions from those runs, and
the load tests check that `models:/name/1`, `models:/name@alias` and `models:/name/Production` resolve to
the right version by comparing predictions.
"""

from __future__ import annotations

import json
import os

import numpy as np
import mlflow
import mlflow.pyfunc
import mlflow.sklearn
import pytest
import requests
from mlflow import MlflowClient

from compat_helpers import api_url, expect_mlflow_error
from conftest import MLFLOW_MAJOR, UPSTREAM, unique_name

# An unknown alias of an existing model: 400 INVALID_PARAMETER_VALUE "Registered model alias … not found.",
# as MLflow's SQL and file stores answer (not 404 like other unknown registry entities).
UNKNOWN_ALIAS = "INVALID_PARAMETER_VALUE"

# Features of the small array every prediction is checked on.
X = np.random.default_rng(7).normal(size=(40, 3))


@pytest.fixture(scope="module")
def sk_models():
    """Two logistic regressions with opposite labels: their predictions differ on every row."""
    from sklearn.linear_model import LogisticRegression

    y = (X[:, 0] + 0.5 * X[:, 1] - X[:, 2] > 0).astype(int)
    first = LogisticRegression().fit(X, y)
    second = LogisticRegression().fit(X, 1 - y)
    assert (first.predict(X) != second.predict(X)).all()
    return first, second


@pytest.fixture(scope="module")
def model_runs(tracking_uri, sk_models, tmp_path_factory):
    """One finished run per model, the model saved under the run's artifacts at `model/`.

    Returns a list of (run_id, source) where source is `<run artifact_uri>/model`.
    """
    client = MlflowClient(tracking_uri=tracking_uri)
    exp_id = client.create_experiment(unique_name("registry"))
    runs = []
    for i, model in enumerate(sk_models):
        local = tmp_path_factory.mktemp(f"model{i}") / "model"
        mlflow.sklearn.save_model(model, str(local), pip_requirements=["scikit-learn"])
        run = client.create_run(exp_id)
        client.log_artifacts(run.info.run_id, str(local), "model")
        client.set_terminated(run.info.run_id)
        runs.append((run.info.run_id, f"{run.info.artifact_uri.rstrip('/')}/model"))
    return runs


def new_model(client, prefix: str = "reg", **kwargs) -> str:
    name = unique_name(prefix)
    client.create_registered_model(name, **kwargs)
    return name


def add_versions(client, name: str, model_runs, n: int, run_index: int = 0, **kwargs):
    run_id, source = model_runs[run_index]
    return [client.create_model_version(name, source, run_id=run_id, **kwargs) for _ in range(n)]


def log_sklearn_model(model, name: str, **kwargs):
    kwargs.setdefault("pip_requirements", ["scikit-learn"])
    if MLFLOW_MAJOR >= 3:
        return mlflow.sklearn.log_model(model, name=name, **kwargs)
    return mlflow.sklearn.log_model(model, artifact_path=name, **kwargs)


def assert_predicts_like(model_uri: str, sk_model):
    loaded = mlflow.pyfunc.load_model(model_uri)
    got = np.asarray(loaded.predict(X))
    expected = sk_model.predict(X)
    assert got.shape == expected.shape, model_uri
    assert (got == expected).all(), model_uri
    return loaded


def registered_versions_of(logged_model) -> set[tuple[str, str]]:
    """(name, version) pairs in a 3.x LoggedModel's mlflow.modelVersions tag (server and client both add one)."""
    return {(d["name"], str(d["version"])) for d in json.loads(logged_model.tags["mlflow.modelVersions"])}


def stages_of(versions) -> dict[str, str]:
    return {v.version: v.current_stage for v in versions}


# --- registered models -----------------------------------------------------------------------------------


def test_registry_create_get_update_delete_model(client):
    name = unique_name("reg")
    created = client.create_registered_model(name, tags={"team": "vision"}, description="first")
    assert created.name == name
    assert created.description == "first"
    assert created.tags == {"team": "vision"}
    assert created.creation_timestamp > 0
    assert created.last_updated_timestamp >= created.creation_timestamp

    got = client.get_registered_model(name)
    assert got.name == name
    assert got.description == "first"
    assert got.tags == {"team": "vision"}
    assert got.latest_versions == []
    assert got.aliases == {}

    with expect_mlflow_error("RESOURCE_ALREADY_EXISTS"):
        client.create_registered_model(name)

    updated = client.update_registered_model(name, description="second")
    assert updated.description == "second"
    assert client.get_registered_model(name).description == "second"

    client.delete_registered_model(name)
    with expect_mlflow_error("RESOURCE_DOES_NOT_EXIST"):
        client.get_registered_model(name)
    # The name is free again.
    assert client.create_registered_model(name).name == name


def test_registry_duplicate_model_is_400_over_http(tracking_uri):
    name = unique_name("reg")
    assert requests.post(api_url("/mlflow/registered-models/create"), json={"name": name}, timeout=10).ok
    resp = requests.post(api_url("/mlflow/registered-models/create"), json={"name": name}, timeout=10)
    assert resp.status_code == 400, resp.text
    assert resp.json()["error_code"] == "RESOURCE_ALREADY_EXISTS"
    resp = requests.get(api_url("/mlflow/registered-models/get"), params={"name": unique_name("absent")}, timeout=10)
    assert resp.status_code == 404, resp.text
    assert resp.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"


def test_registry_rename_model_keeps_versions(client, model_runs):
    name = new_model(client)
    add_versions(client, name, model_runs, 2)
    taken = new_model(client)
    with expect_mlflow_error("RESOURCE_ALREADY_EXISTS"):
        client.rename_registered_model(name, taken)

    new_name = unique_name("renamed")
    client.rename_registered_model(name, new_name)  # returns the model with 2.x, None with 3.x
    assert client.get_registered_model(new_name).name == new_name
    with expect_mlflow_error("RESOURCE_DOES_NOT_EXIST"):
        client.get_registered_model(name)
    mv = client.get_model_version(new_name, "2")
    assert mv.name == new_name
    assert mv.run_id == model_runs[0][0]
    assert sorted(v.version for v in client.search_model_versions(f"name='{new_name}'")) == ["1", "2"]
    assert client.search_model_versions(f"name='{name}'") == []


def test_registry_model_tags(client):
    name = new_model(client, tags={"a": "1"})
    client.set_registered_model_tag(name, "b", "2")
    client.set_registered_model_tag(name, "a", "overwritten")
    assert client.get_registered_model(name).tags == {"a": "overwritten", "b": "2"}
    client.delete_registered_model_tag(name, "b")
    assert client.get_registered_model(name).tags == {"a": "overwritten"}
    # Deleting a tag that is not there is a no-op, as in MLflow's SQL store.
    client.delete_registered_model_tag(name, "b")
    assert client.get_registered_model(name).tags == {"a": "overwritten"}
    with expect_mlflow_error("RESOURCE_DOES_NOT_EXIST"):
        client.set_registered_model_tag(unique_name("absent"), "k", "v")


def test_registry_delete_model_deletes_its_versions(client, model_runs):
    name = new_model(client)
    add_versions(client, name, model_runs, 2)
    client.delete_registered_model(name)
    with expect_mlflow_error("RESOURCE_DOES_NOT_EXIST"):
        client.get_model_version(name, "1")
    assert client.search_model_versions(f"name='{name}'") == []


# --- model versions --------------------------------------------------------------------------------------


def test_registry_create_versions_numbering_and_fields(client, model_runs):
    run_id, source = model_runs[0]
    name = new_model(client)
    versions = [
        client.create_model_version(name, source, run_id=run_id, tags={"n": str(i)}, description=f"d{i}")
        for i in range(3)
    ]
    assert [v.version for v in versions] == ["1", "2", "3"]
    for i, v in enumerate(versions):
        assert v.name == name
        assert v.source == source
        assert v.run_id == run_id
        assert v.status == "READY"
        assert v.current_stage == "None"
        assert v.description == f"d{i}"
        assert v.tags == {"n": str(i)}
        assert v.creation_timestamp > 0

    got = client.get_model_version(name, "2")
    assert (got.version, got.source, got.run_id, got.tags) == ("2", source, run_id, {"n": "1"})
    assert client.get_model_version_download_uri(name, "2") == source

    updated = client.update_model_version(name, "2", description="better")
    assert updated.description == "better"
    assert client.get_model_version(name, "2").description == "better"

    # The registered model now lists its latest version in stage None.
    latest = client.get_registered_model(name).latest_versions
    assert [(v.version, v.current_stage) for v in latest] == [("3", "None")]

    with expect_mlflow_error("RESOURCE_DOES_NOT_EXIST"):
        client.get_model_version(name, "4")
    with expect_mlflow_error("RESOURCE_DOES_NOT_EXIST"):
        client.create_model_version(unique_name("absent"), source, run_id=run_id)


def test_registry_model_version_tags(client, model_runs):
    name = new_model(client)
    add_versions(client, name, model_runs, 2)
    client.set_model_version_tag(name, "1", "validated", "yes")
    client.set_model_version_tag(name, "1", "owner", "ana")
    client.set_model_version_tag(name, "1", "validated", "no")
    assert client.get_model_version(name, "1").tags == {"validated": "no", "owner": "ana"}
    assert client.get_model_version(name, "2").tags == {}
    client.delete_model_version_tag(name, "1", "owner")
    assert client.get_model_version(name, "1").tags == {"validated": "no"}
    # Deleting an absent tag is a no-op, as in MLflow's SQL store.
    client.delete_model_version_tag(name, "1", "owner")
    with expect_mlflow_error("RESOURCE_DOES_NOT_EXIST"):
        client.set_model_version_tag(name, "9", "k", "v")

    found = client.search_model_versions(f"name='{name}' AND tags.validated = 'no'")
    assert [v.version for v in found] == ["1"]


def test_registry_delete_version_never_reuses_its_number(client, model_runs):
    name = new_model(client)
    add_versions(client, name, model_runs, 3)
    client.delete_model_version(name, "3")
    with expect_mlflow_error("RESOURCE_DOES_NOT_EXIST"):
        client.get_model_version(name, "3")
    with expect_mlflow_error("RESOURCE_DOES_NOT_EXIST"):
        client.delete_model_version(name, "3")
    assert sorted(v.version for v in client.search_model_versions(f"name='{name}'")) == ["1", "2"]

    (nxt,) = add_versions(client, name, model_runs, 1)
    assert nxt.version == "4"
    client.delete_model_version(name, "2")
    assert sorted(v.version for v in client.search_model_versions(f"name='{name}'")) == ["1", "4"]
    latest = client.get_registered_model(name).latest_versions
    assert [(v.version, v.current_stage) for v in latest] == [("4", "None")]


def test_registry_copy_model_version(client, model_runs, sk_models):
    """copy_model_version registers a version whose source is `models:/<src name>/<src version>`."""
    src = new_model(client)
    add_versions(client, src, model_runs, 1, run_index=0)
    add_versions(client, src, model_runs, 1, run_index=1, tags={"validated": "yes"}, description="second")
    dst = unique_name("copy")
    mv = client.copy_model_version(f"models:/{src}/2", dst)
    assert (mv.name, mv.version) == (dst, "1")
    assert mv.source == f"models:/{src}/2"
    assert mv.run_id == model_runs[1][0]
    assert mv.tags == {"validated": "yes"}
    assert mv.description == "second"
    # The copy's files are the source version's.
    assert client.get_model_version_download_uri(dst, "1") == model_runs[1][1]
    assert_predicts_like(f"models:/{dst}/1", sk_models[1])


# --- stages ----------------------------------------------------------------------------------------------


def test_registry_transition_stages_and_latest_versions(client, model_runs):
    name = new_model(client)
    add_versions(client, name, model_runs, 3)

    mv = client.transition_model_version_stage(name, "1", "Staging")
    assert mv.current_stage == "Staging"
    mv = client.transition_model_version_stage(name, "2", "production")  # stage names are case-insensitive
    assert mv.current_stage == "Production"
    assert stages_of(client.search_model_versions(f"name='{name}'")) == {
        "1": "Staging",
        "2": "Production",
        "3": "None",
    }

    def latest(stages=None):
        return [(v.version, v.current_stage) for v in client.get_latest_versions(name, stages=stages)]

    assert latest(["Production"]) == [("2", "Production")]
    assert latest(["Staging"]) == [("1", "Staging")]
    assert latest(["Archived"]) == []
    assert sorted(latest(["Staging", "Production"])) == [("1", "Staging"), ("2", "Production")]
    # No stages: the latest version of every stage, "None" included.
    assert sorted(latest()) == [("1", "Staging"), ("2", "Production"), ("3", "None")]

    # Promoting version 3 with archive_existing_versions archives the previous Production version only.
    mv = client.transition_model_version_stage(name, "3", "Production", archive_existing_versions=True)
    assert mv.current_stage == "Production"
    assert stages_of(client.search_model_versions(f"name='{name}'")) == {
        "1": "Staging",
        "2": "Archived",
        "3": "Production",
    }
    assert latest(["Production"]) == [("3", "Production")]
    assert latest(["Archived"]) == [("2", "Archived")]
    got = client.get_registered_model(name).latest_versions
    assert sorted((v.version, v.current_stage) for v in got) == [
        ("1", "Staging"),
        ("2", "Archived"),
        ("3", "Production"),
    ]

    with expect_mlflow_error("INVALID_PARAMETER_VALUE"):
        client.transition_model_version_stage(name, "1", "Live")
    with expect_mlflow_error("RESOURCE_DOES_NOT_EXIST"):
        client.transition_model_version_stage(name, "7", "Staging")


def test_registry_latest_versions_over_http(tracking_uri, client, model_runs):
    """GET and POST forms of get-latest-versions (the 3.x client deprecates the method, not the route)."""
    name = new_model(client)
    add_versions(client, name, model_runs, 2)
    client.transition_model_version_stage(name, "1", "Production")
    url = api_url("/mlflow/registered-models/get-latest-versions")
    resp = requests.post(url, json={"name": name, "stages": ["Production"]}, timeout=10)
    assert resp.status_code == 200, resp.text
    assert [(v["version"], v["current_stage"]) for v in resp.json()["model_versions"]] == [("1", "Production")]
    resp = requests.get(url, params={"name": name, "stages": ["None"]}, timeout=10)
    assert resp.status_code == 200, resp.text
    assert [(v["version"], v["current_stage"]) for v in resp.json()["model_versions"]] == [("2", "None")]


# --- aliases ---------------------------------------------------------------------------------------------


def test_registry_aliases(client, model_runs):
    name = new_model(client)
    add_versions(client, name, model_runs, 3)
    client.set_registered_model_alias(name, "champion", "1")
    client.set_registered_model_alias(name, "challenger", "2")

    mv = client.get_model_version_by_alias(name, "champion")
    assert (mv.name, mv.version) == (name, "1")
    assert mv.aliases == ["champion"]
    assert client.get_registered_model(name).aliases == {"champion": "1", "challenger": "2"}

    # Setting an existing alias moves it.
    client.set_registered_model_alias(name, "champion", "3")
    assert client.get_model_version_by_alias(name, "champion").version == "3"
    assert client.get_model_version(name, "1").aliases == []
    assert client.get_model_version(name, "3").aliases == ["champion"]
    assert client.get_registered_model(name).aliases == {"champion": "3", "challenger": "2"}

    for bad in ["latest", "LATEST", "v1", "V42"]:
        with expect_mlflow_error("INVALID_PARAMETER_VALUE"):
            client.set_registered_model_alias(name, bad, "1")
    with expect_mlflow_error("RESOURCE_DOES_NOT_EXIST"):
        client.set_registered_model_alias(name, "nope", "9")

    client.delete_registered_model_alias(name, "challenger")
    with expect_mlflow_error(UNKNOWN_ALIAS):
        client.get_model_version_by_alias(name, "challenger")
    # The wire answer itself: status, code and message (the operator's registry client reads them).
    # (Signed in as the session's user when the server runs basic auth: compat_auth.py.)
    user = os.environ.get("MLFLOW_TRACKING_USERNAME")
    resp = requests.get(
        api_url("/mlflow/registered-models/alias"),
        params={"name": name, "alias": "challenger"},
        auth=(user, os.environ.get("MLFLOW_TRACKING_PASSWORD", "")) if user else None,
        timeout=10,
    )
    assert resp.status_code == 400, resp.text
    body = resp.json()
    assert (body["error_code"], body["message"]) == (
        "INVALID_PARAMETER_VALUE",
        "Registered model alias challenger not found.",
    ), body
    assert client.get_registered_model(name).aliases == {"champion": "3"}
    # Deleting an absent alias is a no-op, as in MLflow's SQL store.
    client.delete_registered_model_alias(name, "challenger")

    # Deleting a version drops the aliases that point at it.
    client.delete_model_version(name, "3")
    if UPSTREAM and MLFLOW_MAJOR < 3:
        # The 2.17 server compares the alias's int version with the request's string, so it keeps the
        # alias, and answers for the deleted version instead.
        with expect_mlflow_error("RESOURCE_DOES_NOT_EXIST"):
            client.get_model_version_by_alias(name, "champion")
    else:
        with expect_mlflow_error(UNKNOWN_ALIAS):
            client.get_model_version_by_alias(name, "champion")
        assert client.get_registered_model(name).aliases == {}


# --- search ----------------------------------------------------------------------------------------------


def test_registry_search_registered_models(client):
    prefix = unique_name("regsearch")
    names = [f"{prefix}-{suffix}" for suffix in ["a", "b", "c", "d", "e"]]
    for i, name in enumerate(names):
        client.create_registered_model(name, tags={"parity": "even" if i % 2 == 0 else "odd"})
    other = new_model(client)

    found = client.search_registered_models(filter_string=f"name LIKE '{prefix}%'")
    assert sorted(m.name for m in found) == names
    assert other not in {m.name for m in found}

    found = client.search_registered_models(filter_string=f"name LIKE '{prefix}%'", order_by=["name DESC"])
    assert [m.name for m in found] == names[::-1]
    found = client.search_registered_models(filter_string=f"name ILIKE '{prefix.upper()}%'", order_by=["name"])
    assert [m.name for m in found] == names
    found = client.search_registered_models(filter_string=f"name = '{names[2]}'")
    assert [m.name for m in found] == [names[2]]
    found = client.search_registered_models(
        filter_string=f"name LIKE '{prefix}%' AND tags.parity = 'odd'", order_by=["name ASC"]
    )
    assert [m.name for m in found] == [names[1], names[3]]

    # Paging: 2 + 2 + 1, with a token on every page but the last.
    pages, token = [], None
    while True:
        page = client.search_registered_models(
            filter_string=f"name LIKE '{prefix}%'", order_by=["name ASC"], max_results=2, page_token=token
        )
        pages.append([m.name for m in page])
        token = page.token
        if not token:
            break
        assert len(pages) < 10, "paging does not end"
    assert pages == [names[0:2], names[2:4], names[4:5]]

    # The fluent API pages through everything itself.
    fluent = mlflow.search_registered_models(filter_string=f"name LIKE '{prefix}%'", order_by=["name DESC"])
    assert [m.name for m in fluent] == names[::-1]

    with expect_mlflow_error("INVALID_PARAMETER_VALUE"):
        client.search_registered_models(filter_string="nme = 'x'")
    with expect_mlflow_error("INVALID_PARAMETER_VALUE"):
        client.search_registered_models(order_by=["bogus DESC"])


def test_registry_search_hides_prompts(client, model_runs):
    """MLflow 3 keeps prompts in the registry (tag mlflow.prompt.is_prompt=true) and its store hides them
    from model searches unless the filter asks for them; 3.x clients append
    ``tag.`mlflow.prompt.is_prompt` != 'true'`` to every registered-model search, which must still match
    models that have no such tag."""
    if UPSTREAM and MLFLOW_MAJOR < 3:
        pytest.skip("the MLflow 2.17 server has no prompts")
    prefix = unique_name("prompted")
    model, prompt = f"{prefix}-model", f"{prefix}-prompt"
    client.create_registered_model(model)
    add_versions(client, model, model_runs, 1)
    # The clients refuse to register prompts as models, so set the prompt up over HTTP.
    run_id, source = model_runs[0]
    is_prompt = [{"key": "mlflow.prompt.is_prompt", "value": "true"}]
    for path, body in [
        ("/mlflow/registered-models/create", {"name": prompt, "tags": is_prompt}),
        ("/mlflow/model-versions/create", {"name": prompt, "source": source, "run_id": run_id}),
        ("/mlflow/model-versions/set-tag", {"name": prompt, "version": "1", **is_prompt[0]}),
    ]:
        resp = requests.post(api_url(path), json=body, timeout=10)
        assert resp.status_code == 200, resp.text

    assert [m.name for m in client.search_registered_models(filter_string=f"name LIKE '{prefix}%'")] == [model]

    def raw_names(path, key, filter_string):
        resp = requests.get(api_url(path), params={"filter": filter_string}, timeout=10)
        assert resp.status_code == 200, resp.text
        return sorted(m["name"] for m in resp.json().get(key, []))

    models = "/mlflow/registered-models/search"
    like = f"name LIKE '{prefix}%'"
    assert raw_names(models, "registered_models", like) == [model]
    assert raw_names(models, "registered_models", f"{like} AND tag.`mlflow.prompt.is_prompt` != 'true'") == [model]
    assert raw_names(models, "registered_models", f"{like} AND tags.`mlflow.prompt.is_prompt` = 'false'") == [model]
    assert raw_names(models, "registered_models", f"{like} AND tags.`mlflow.prompt.is_prompt` = 'true'") == [prompt]

    versions = "/mlflow/model-versions/search"
    assert raw_names(versions, "model_versions", like) == [model]
    assert raw_names(versions, "model_versions", f"{like} AND tags.`mlflow.prompt.is_prompt` != 'false'") == [prompt]
    assert [v.name for v in client.search_model_versions(f"name='{prompt}'")] == []


def test_registry_search_model_versions(client, model_runs):
    first = new_model(client)
    second = new_model(client)
    exp_id = client.create_experiment(unique_name("registry"))
    runs = [client.create_run(exp_id) for _ in range(2)]
    sources = [f"{r.info.artifact_uri}/model" for r in runs]
    ids = [r.info.run_id for r in runs]
    for run_index in [0, 0, 1]:
        client.create_model_version(first, sources[run_index], run_id=ids[run_index])
    client.create_model_version(second, sources[1], run_id=ids[1])

    found = client.search_model_versions(f"name='{first}'")
    assert sorted(v.version for v in found) == ["1", "2", "3"]
    assert {v.name for v in found} == {first}

    found = client.search_model_versions(f"run_id='{ids[0]}'")
    assert sorted((v.name, v.version) for v in found) == [(first, "1"), (first, "2")]
    found = client.search_model_versions(f"run_id='{ids[1]}'")
    assert sorted((v.name, v.version) for v in found) == sorted([(first, "3"), (second, "1")])
    found = client.search_model_versions(f"run_id IN ('{ids[0]}', '{ids[1]}') AND name = '{second}'")
    assert [(v.name, v.version) for v in found] == [(second, "1")]

    found = client.search_model_versions(f"name='{first}'", order_by=["version_number DESC"])
    assert [v.version for v in found] == ["3", "2", "1"]
    found = client.search_model_versions(f"name='{first}' AND version_number >= 2", order_by=["version_number"])
    assert [v.version for v in found] == ["2", "3"]

    pages, token = [], None
    while True:
        page = client.search_model_versions(
            f"name='{first}'", max_results=2, order_by=["version_number ASC"], page_token=token
        )
        pages.append([v.version for v in page])
        token = page.token
        if not token:
            break
        assert len(pages) < 10, "paging does not end"
    assert pages == [["1", "2"], ["3"]]

    fluent = mlflow.search_model_versions(filter_string=f"name='{first}'", order_by=["version_number ASC"])
    assert [v.version for v in fluent] == ["1", "2", "3"]

    with expect_mlflow_error("INVALID_PARAMETER_VALUE"):
        client.search_model_versions("bogus = 'x'")


# --- fluent registration and loading through the artifact proxy --------------------------------------------


def test_registry_register_model_after_log_model(client, experiment_id, sk_models):
    model = sk_models[0]
    name = unique_name("fluent")
    with mlflow.start_run() as run:
        info = log_sklearn_model(model, "model")
    run_id = run.info.run_id

    mv = mlflow.register_model(f"runs:/{run_id}/model", name)
    assert (mv.name, mv.version, mv.run_id, mv.status) == (name, "1", run_id, "READY")
    assert client.get_registered_model(name).name == name
    if MLFLOW_MAJOR >= 3:
        # 3.x logs the model as a LoggedModel outside the run's artifacts, so the client registers the
        # logged model (models:/m-...) it finds for the run.
        assert mv.source == f"models:/{info.model_id}"
        logged = client.get_logged_model(info.model_id)
        assert registered_versions_of(logged) == {(name, "1")}
        assert client.get_model_version_download_uri(name, "1").rstrip("/") == logged.artifact_location.rstrip("/")
    else:
        artifact_uri = client.get_run(run_id).info.artifact_uri
        assert mv.source == f"{artifact_uri}/model"
        assert client.get_model_version_download_uri(name, "1") == f"{artifact_uri}/model"

    # Registering the same URI again creates version 2 of the existing model.
    assert mlflow.register_model(f"runs:/{run_id}/model", name).version == "2"

    # log_model(..., registered_model_name=...) registers in the same call.
    with mlflow.start_run() as run2:
        info2 = log_sklearn_model(model, "model", registered_model_name=name)
    mv3 = client.get_model_version(name, "3")
    assert mv3.run_id == run2.info.run_id
    if MLFLOW_MAJOR >= 3:
        assert str(info2.registered_model_version) == "3"
        assert mv3.source == f"models:/{info2.model_id}"
        assert registered_versions_of(client.get_logged_model(info2.model_id)) == {(name, "3")}
    else:
        assert mv3.source == f"{client.get_run(run2.info.run_id).info.artifact_uri}/model"

    assert_predicts_like(f"models:/{name}/1", model)
    assert_predicts_like(f"models:/{name}/3", model)
    np.testing.assert_allclose(
        mlflow.sklearn.load_model(f"models:/{name}/3").predict_proba(X), model.predict_proba(X)
    )


def test_registry_load_by_version_alias_and_stage(client, model_runs, sk_models):
    first, second = sk_models
    name = new_model(client, prefix="load")
    add_versions(client, name, model_runs, 1, run_index=0)  # version 1: first model
    add_versions(client, name, model_runs, 1, run_index=1)  # version 2: second model

    assert_predicts_like(f"models:/{name}/1", first)
    assert_predicts_like(f"models:/{name}/2", second)

    client.set_registered_model_alias(name, "champion", "2")
    assert_predicts_like(f"models:/{name}@champion", second)
    client.set_registered_model_alias(name, "champion", "1")
    assert_predicts_like(f"models:/{name}@champion", first)

    # Stage URIs resolve through get-latest-versions; the 3.x client deprecates stages but still
    # supports them in models:/ URIs.
    client.transition_model_version_stage(name, "2", "Production")
    assert_predicts_like(f"models:/{name}/Production", second)
    client.transition_model_version_stage(name, "1", "Production", archive_existing_versions=True)
    assert_predicts_like(f"models:/{name}/production", first)
    assert client.get_model_version(name, "2").current_stage == "Archived"

    assert_predicts_like(f"models:/{name}/latest", second)

    with pytest.raises(mlflow.exceptions.MlflowException):
        mlflow.pyfunc.load_model(f"models:/{name}@nobody")


# --- model-version source validation (CVE-2023-1177 family) -------------------------------------------------


@pytest.mark.parametrize(
    "source, with_run",
    [
        ("file:///etc/passwd", False),
        ("file:///etc/passwd", True),
        ("/etc/passwd", False),
        ("/etc/passwd", True),
        ("mlflow-artifacts:/0/%2e%2e/%2e%2e/etc", False),
        ("{artifact_uri}/%2e%2e/%2e%2e/%2e%2e/etc", True),
        ("{artifact_uri}/%252e%252e/%252e%252e/%252e%252e/etc", True),
        ("{artifact_uri}/../../../etc", True),
    ],
)
def test_registry_source_traversal_is_rejected(client, model_runs, source, with_run):
    run_id, run_source = model_runs[0]
    artifact_uri = run_source[: -len("/model")]
    name = new_model(client)
    body = {"name": name, "source": source.format(artifact_uri=artifact_uri)}
    if with_run:
        body["run_id"] = run_id
    resp = requests.post(api_url("/mlflow/model-versions/create"), json=body, timeout=10)
    assert resp.status_code == 400, resp.text
    assert resp.json()["error_code"] == "INVALID_PARAMETER_VALUE", resp.text
    assert client.search_model_versions(f"name='{name}'") == []

    # The same request with the run's own model directory is accepted (the checks are not blanket refusals).
    ok = requests.post(
        api_url("/mlflow/model-versions/create"),
        json={"name": name, "source": run_source, "run_id": run_id},
        timeout=10,
    )
    assert ok.status_code == 200, ok.text
    assert ok.json()["model_version"]["version"] == "1"
