"""search_runs: filters on metrics/params/tags/attributes, order_by, paging, the DataFrame API."""

from __future__ import annotations

import time
from dataclasses import dataclass

import mlflow
import pytest
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag

from compat_helpers import expect_mlflow_error
from conftest import unique_name

N_RUNS = 25


@dataclass
class Seeded:
    run_id: str
    i: int
    name: str
    rmse: float
    lr: str
    team: str
    flavor: str
    status: str
    start_time: int


@dataclass
class Dataset:
    experiment_id: str
    runs: list[Seeded]

    def ids(self, pred) -> set[str]:
        return {r.run_id for r in self.runs if pred(r)}


@pytest.fixture(scope="module")
def dataset(tracking_uri) -> Dataset:
    """25 runs with distinct start times, metrics, params, tags and statuses (built once per module)."""
    client = MlflowClient(tracking_uri=tracking_uri)
    exp_id = client.create_experiment(unique_name("search-runs"))
    base = int(time.time() * 1000) - 100_000
    runs = []
    for i in range(N_RUNS):
        seeded = Seeded(
            run_id="",
            i=i,
            name=f"{'alpha' if i % 3 == 0 else 'beta'}-{i:02d}",
            rmse=round(i * 0.04, 4),
            lr="0.1" if i % 2 == 0 else "0.01",
            team="a" if i % 4 in (0, 1) else "b",
            flavor="Vanilla" if i % 2 == 0 else "vanilla" if i % 3 == 0 else "Chocolate",
            status="FAILED" if i % 5 == 0 else "FINISHED",
            start_time=base + i * 1000,
        )
        run = client.create_run(exp_id, start_time=seeded.start_time, run_name=seeded.name)
        seeded.run_id = run.info.run_id
        client.log_batch(
            seeded.run_id,
            metrics=[Metric("rmse", seeded.rmse, seeded.start_time, 0), Metric("idx", float(i), seeded.start_time, 0)],
            params=[Param("lr", seeded.lr), Param("i", str(i))],
            tags=[RunTag("team", seeded.team), RunTag("flavor", seeded.flavor)],
        )
        client.set_terminated(seeded.run_id, status=seeded.status, end_time=seeded.start_time + 500)
        runs.append(seeded)
    return Dataset(exp_id, runs)


def search_ids(client, ds: Dataset, filter_string: str, **kwargs) -> list[str]:
    return [r.info.run_id for r in client.search_runs([ds.experiment_id], filter_string, **kwargs)]


@pytest.mark.parametrize(
    "filter_string,pred",
    [
        (
            "metrics.rmse < 0.5 and params.lr = '0.1' and tags.team = 'a'",
            lambda r: r.rmse < 0.5 and r.lr == "0.1" and r.team == "a",
        ),
        ("metrics.rmse >= 0.8", lambda r: r.rmse >= 0.8),
        ("metrics.idx = 7", lambda r: r.i == 7),
        ("metrics.idx != 7 AND metrics.idx <= 3", lambda r: r.i != 7 and r.i <= 3),
        ("params.lr != '0.1'", lambda r: r.lr != "0.1"),
        ("params.lr LIKE '0.0%'", lambda r: r.lr.startswith("0.0")),
        ("tags.team = 'b'", lambda r: r.team == "b"),
        ("tags.flavor LIKE 'V%'", lambda r: r.flavor.startswith("V")),
        ("tags.flavor ILIKE 'vanilla'", lambda r: r.flavor.lower() == "vanilla"),
        ("tags.flavor = 'vanilla'", lambda r: r.flavor == "vanilla"),
        ("attributes.status = 'FINISHED'", lambda r: r.status == "FINISHED"),
        ("attributes.status != 'FINISHED'", lambda r: r.status != "FINISHED"),
        ("attributes.run_name LIKE 'alpha-%'", lambda r: r.name.startswith("alpha-")),
        ("attributes.run_name ILIKE 'BETA-1%'", lambda r: r.name.startswith("beta-1")),
        ("run_name = 'beta-04'", lambda r: r.name == "beta-04"),
        ("tags.`mlflow.runName` = 'alpha-03'", lambda r: r.name == "alpha-03"),
        ("params.missing = 'x'", lambda r: False),
    ],
)
def test_search_runs_filters(client, dataset, filter_string, pred):
    expected = dataset.ids(pred)
    got = search_ids(client, dataset, filter_string)
    assert len(got) == len(set(got)), "duplicate runs in the result"
    assert set(got) == expected


def test_search_runs_start_time_filter(client, dataset):
    pivot = dataset.runs[10].start_time
    got = search_ids(client, dataset, f"attributes.start_time >= {pivot}")
    assert set(got) == dataset.ids(lambda r: r.start_time >= pivot)


def test_search_runs_run_id_in(client, dataset):
    chosen = [dataset.runs[i].run_id for i in (1, 7, 19)]
    quoted = ", ".join(f"'{rid}'" for rid in chosen)
    got = search_ids(client, dataset, f"attributes.run_id IN ({quoted})")
    assert set(got) == set(chosen)
    got = search_ids(client, dataset, f"attributes.run_id NOT IN ({quoted})")
    assert set(got) == {r.run_id for r in dataset.runs} - set(chosen)


def test_search_runs_order_by(client, dataset):
    by_rmse_desc = search_ids(client, dataset, "", order_by=["metrics.rmse DESC"])
    assert by_rmse_desc == [r.run_id for r in sorted(dataset.runs, key=lambda r: -r.rmse)]

    by_start = search_ids(client, dataset, "", order_by=["attributes.start_time ASC"])
    assert by_start == [r.run_id for r in dataset.runs]

    default = search_ids(client, dataset, "")
    assert default == [r.run_id for r in reversed(dataset.runs)], "default order is start_time DESC"

    by_name = search_ids(client, dataset, "", order_by=["attributes.run_name ASC"])
    assert by_name == [r.run_id for r in sorted(dataset.runs, key=lambda r: r.name)]

    # Ties on lr broken by start_time DESC.
    by_param = search_ids(client, dataset, "", order_by=["params.lr ASC", "attributes.start_time DESC"])
    expected = sorted(dataset.runs, key=lambda r: (r.lr, -r.start_time))
    assert by_param == [r.run_id for r in expected]


def test_search_runs_paging(client, dataset):
    seen, token, pages = [], None, 0
    while True:
        page = client.search_runs(
            [dataset.experiment_id], "", order_by=["attributes.start_time ASC"], max_results=7, page_token=token
        )
        pages += 1
        assert len(page) <= 7
        seen.extend(r.info.run_id for r in page)
        token = page.token
        if not token:
            break
        assert pages < 20, "paging does not terminate"
    assert pages == 4
    assert len(seen) == len(set(seen)) == N_RUNS
    assert seen == [r.run_id for r in dataset.runs]


def test_search_runs_paging_with_filter(client, dataset):
    expected = [r.run_id for r in sorted(dataset.runs, key=lambda r: -r.rmse) if r.status == "FINISHED"]
    seen, token = [], None
    for _ in range(20):
        page = client.search_runs(
            [dataset.experiment_id],
            "attributes.status = 'FINISHED'",
            order_by=["metrics.rmse DESC"],
            max_results=6,
            page_token=token,
        )
        seen.extend(r.info.run_id for r in page)
        token = page.token
        if not token:
            break
    assert seen == expected


def test_search_runs_returns_full_run_data(client, dataset):
    target = dataset.runs[6]
    (run,) = client.search_runs([dataset.experiment_id], f"params.i = '{target.i}'")
    assert run.info.run_id == target.run_id
    assert run.info.run_name == target.name
    assert run.info.status == target.status
    assert run.info.start_time == target.start_time
    assert run.info.end_time == target.start_time + 500
    assert run.data.metrics == {"rmse": target.rmse, "idx": float(target.i)}
    assert run.data.params == {"lr": target.lr, "i": str(target.i)}
    assert run.data.tags["team"] == target.team
    assert run.data.tags["flavor"] == target.flavor


def test_fluent_search_runs_dataframe(tracking_uri, dataset):
    df = mlflow.search_runs(
        experiment_ids=[dataset.experiment_id],
        filter_string="metrics.rmse < 0.5 and params.lr = '0.1'",
        order_by=["metrics.rmse ASC"],
    )
    expected = sorted(
        (r for r in dataset.runs if r.rmse < 0.5 and r.lr == "0.1"),
        key=lambda r: r.rmse,
    )
    assert list(df["run_id"]) == [r.run_id for r in expected]
    assert list(df["metrics.rmse"]) == [r.rmse for r in expected]
    assert list(df["params.lr"]) == ["0.1"] * len(expected)
    assert list(df["tags.team"]) == [r.team for r in expected]
    assert list(df["status"]) == [r.status for r in expected]
    assert list(df["experiment_id"]) == [dataset.experiment_id] * len(expected)


def test_fluent_search_runs_by_experiment_name(client, dataset):
    name = client.get_experiment(dataset.experiment_id).name
    df = mlflow.search_runs(experiment_names=[name], filter_string="tags.team = 'a'")
    assert set(df["run_id"]) == dataset.ids(lambda r: r.team == "a")


def test_search_runs_across_experiments(client, dataset, experiment_id):
    other = client.create_run(experiment_id, run_name="other").info.run_id
    runs = client.search_runs([dataset.experiment_id, experiment_id], "attributes.run_name = 'other'")
    assert [r.info.run_id for r in runs] == [other]
    runs = client.search_runs([dataset.experiment_id, experiment_id], "")
    assert len(runs) == N_RUNS + 1


@pytest.mark.parametrize(
    "bad_filter",
    [
        "metrics.rmse <<< 0.5",
        "params.lr = '0.1' OR params.lr = '0.01'",
        "tags.team = a",
        "metrics.rmse < 'abc'",
        "nosuchentity.key = 'x'",
        "attributes.status > 1",
    ],
)
def test_search_runs_invalid_filter(client, dataset, bad_filter):
    with expect_mlflow_error("INVALID_PARAMETER_VALUE"):
        client.search_runs([dataset.experiment_id], bad_filter)


@pytest.mark.parametrize("bad_order", ["metrics.rmse SIDEWAYS", "nosuch.key ASC"])
def test_search_runs_invalid_order_by(client, dataset, bad_order):
    with expect_mlflow_error("INVALID_PARAMETER_VALUE"):
        client.search_runs([dataset.experiment_id], "", order_by=[bad_order])
