"""Experiments: create/get/search/rename/delete/restore/tags through the MLflow client."""

from __future__ import annotations

import time

import mlflow
import pytest
import requests
from mlflow.entities import ViewType

from compat_helpers import api_url, expect_mlflow_error
from conftest import MLFLOW_MAJOR, UPSTREAM, unique_name


def test_create_and_get_experiment(client):
    name = unique_name()
    before_ms = int(time.time() * 1000) - 5_000
    exp_id = client.create_experiment(name, tags={"team": "vision", "owner": "ana"})
    assert isinstance(exp_id, str) and exp_id

    exp = client.get_experiment(exp_id)
    assert exp.experiment_id == exp_id
    assert exp.name == name
    assert exp.lifecycle_stage == "active"
    assert exp.tags == {"team": "vision", "owner": "ana"}
    # Proxied artifacts (the server default): mlflow-artifacts:/<experiment id>.
    assert exp.artifact_location.rstrip("/") == f"mlflow-artifacts:/{exp_id}"
    assert before_ms <= exp.creation_time <= int(time.time() * 1000) + 5_000
    assert exp.last_update_time >= exp.creation_time

    by_name = client.get_experiment_by_name(name)
    assert by_name is not None
    assert by_name.experiment_id == exp_id
    assert by_name.tags == exp.tags


def test_get_experiment_by_name_absent_is_none(client):
    assert client.get_experiment_by_name(unique_name("absent")) is None
    assert mlflow.get_experiment_by_name(unique_name("absent")) is None


def test_get_unknown_experiment_is_not_found(client):
    with expect_mlflow_error("RESOURCE_DOES_NOT_EXIST"):
        client.get_experiment("987654321")


def test_duplicate_experiment_name_is_rejected(client):
    name = unique_name()
    client.create_experiment(name)
    with expect_mlflow_error("RESOURCE_ALREADY_EXISTS"):
        client.create_experiment(name)


def test_fluent_set_experiment_creates_then_reuses(tracking_uri):
    name = unique_name()
    first = mlflow.set_experiment(name)
    second = mlflow.set_experiment(name)
    assert first.experiment_id == second.experiment_id
    assert first.name == name


def test_rename_experiment(client):
    exp_id = client.create_experiment(unique_name())
    new_name = unique_name("renamed")
    client.rename_experiment(exp_id, new_name)
    assert client.get_experiment(exp_id).name == new_name
    assert client.get_experiment_by_name(new_name).experiment_id == exp_id


def test_delete_and_restore_experiment(client):
    name = unique_name()
    exp_id = client.create_experiment(name)

    client.delete_experiment(exp_id)
    exp = client.get_experiment(exp_id)
    assert exp.lifecycle_stage == "deleted"
    active = client.search_experiments(filter_string=f"name = '{name}'")
    assert [e.experiment_id for e in active] == []
    deleted = client.search_experiments(view_type=ViewType.DELETED_ONLY, filter_string=f"name = '{name}'")
    assert [e.experiment_id for e in deleted] == [exp_id]
    every = client.search_experiments(view_type=ViewType.ALL, filter_string=f"name = '{name}'")
    assert [e.experiment_id for e in every] == [exp_id]

    client.restore_experiment(exp_id)
    assert client.get_experiment(exp_id).lifecycle_stage == "active"
    active = client.search_experiments(filter_string=f"name = '{name}'")
    assert [e.experiment_id for e in active] == [exp_id]


def test_cannot_create_run_in_deleted_experiment(client):
    exp_id = client.create_experiment(unique_name())
    client.delete_experiment(exp_id)
    with expect_mlflow_error("INVALID_PARAMETER_VALUE"):
        client.create_run(exp_id)


def test_set_and_delete_experiment_tags(client):
    exp_id = client.create_experiment(unique_name())
    client.set_experiment_tag(exp_id, "stage", "dev")
    client.set_experiment_tag(exp_id, "note", "first")
    client.set_experiment_tag(exp_id, "note", "second")  # tags overwrite
    assert client.get_experiment(exp_id).tags == {"stage": "dev", "note": "second"}

    if hasattr(client, "delete_experiment_tag"):
        client.delete_experiment_tag(exp_id, "note")
    else:
        # MLflow 2.17's client has no delete_experiment_tag; newer clients call this endpoint.
        if UPSTREAM and MLFLOW_MAJOR < 3:
            pytest.skip("upstream MLflow 2.17 server has no experiments/delete-experiment-tag")
        resp = requests.post(
            api_url("/mlflow/experiments/delete-experiment-tag"),
            json={"experiment_id": exp_id, "key": "note"},
            timeout=30,
        )
        assert resp.status_code == 200, resp.text
        assert resp.json() == {}
    assert client.get_experiment(exp_id).tags == {"stage": "dev"}


def _make_experiments(client, prefix: str, count: int) -> list[str]:
    ids = []
    for i in range(count):
        ids.append(client.create_experiment(f"{prefix}-{i:02d}", tags={"parity": "even" if i % 2 == 0 else "odd"}))
    return ids


def test_search_experiments_filter_order_and_paging(client):
    prefix = unique_name("search")
    ids = _make_experiments(client, prefix, 7)
    names = [f"{prefix}-{i:02d}" for i in range(7)]

    found = client.search_experiments(filter_string=f"name LIKE '{prefix}-%'", order_by=["name ASC"])
    assert [e.name for e in found] == names
    assert [e.experiment_id for e in found] == ids

    desc = client.search_experiments(filter_string=f"name LIKE '{prefix}-%'", order_by=["name DESC"])
    assert [e.name for e in desc] == list(reversed(names))

    ilike = client.search_experiments(filter_string=f"name ILIKE '{prefix.upper()}-0%'", order_by=["name"])
    assert [e.name for e in ilike] == names

    evens = client.search_experiments(
        filter_string=f"name LIKE '{prefix}-%' AND tags.parity = 'even'", order_by=["name ASC"]
    )
    assert [e.name for e in evens] == names[0::2]

    exact = client.search_experiments(filter_string=f"name = '{names[3]}'")
    assert [e.experiment_id for e in exact] == [ids[3]]

    # Paging: 7 experiments, 3 per page -> 3 pages, every experiment exactly once, in order.
    seen, token, pages = [], None, 0
    while True:
        page = client.search_experiments(
            filter_string=f"name LIKE '{prefix}-%'", order_by=["name ASC"], max_results=3, page_token=token
        )
        pages += 1
        assert len(page) <= 3
        seen.extend(e.name for e in page)
        token = page.token
        if not token:
            break
        assert pages < 10, "paging does not terminate"
    assert seen == names
    assert pages == 3


def test_search_experiments_order_by_creation_time(client):
    prefix = unique_name("ctime")
    ids = []
    for i in range(3):
        ids.append(client.create_experiment(f"{prefix}-{i}"))
        time.sleep(0.02)
    found = client.search_experiments(filter_string=f"name LIKE '{prefix}-%'", order_by=["creation_time DESC"])
    assert [e.experiment_id for e in found] == list(reversed(ids))


def test_search_experiments_invalid_filter(client):
    with expect_mlflow_error("INVALID_PARAMETER_VALUE"):
        client.search_experiments(filter_string="name =! 'x' OR")
