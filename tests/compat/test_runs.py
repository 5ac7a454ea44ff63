"""Runs: lifecycle, params, metrics, tags, log_batch, metric history, delete/restore."""

from __future__ import annotations

import math
import sys
import time

import mlflow
import pytest
import requests
from mlflow.entities import Metric, Param, RunTag, ViewType

from compat_helpers import api_url, expect_mlflow_error
from conftest import MLFLOW_MAJOR, UPSTREAM, unique_name


def now_ms() -> int:
    return int(time.time() * 1000)


def test_fluent_run_lifecycle(client, experiment_id):
    before = now_ms() - 5_000
    with mlflow.start_run(run_name="fluent-run", tags={"team": "a"}) as run:
        run_id = run.info.run_id
        assert run.info.status == "RUNNING"
        assert run.info.experiment_id == experiment_id
        mlflow.log_param("lr", "0.1")
        mlflow.log_metric("loss", 0.5)
        mlflow.set_tag("phase", "train")
    after = now_ms() + 5_000

    got = client.get_run(run_id)
    assert got.info.run_id == run_id
    assert got.info.run_name == "fluent-run"
    assert got.info.status == "FINISHED"
    assert got.info.lifecycle_stage == "active"
    assert got.info.experiment_id == experiment_id
    assert before <= got.info.start_time <= got.info.end_time <= after
    assert got.info.artifact_uri.rstrip("/").endswith(f"{run_id}/artifacts")
    assert got.data.params == {"lr": "0.1"}
    assert got.data.metrics == {"loss": 0.5}
    assert got.data.tags["team"] == "a"
    assert got.data.tags["phase"] == "train"
    assert got.data.tags["mlflow.runName"] == "fluent-run"
    assert "mlflow.user" in got.data.tags
    assert "mlflow.source.type" in got.data.tags


def test_failed_run_status(client, experiment_id):
    with pytest.raises(RuntimeError):
        with mlflow.start_run() as run:
            raise RuntimeError("boom")
    assert client.get_run(run.info.run_id).info.status == "FAILED"


def test_client_create_run_and_terminate(client, experiment_id):
    run = client.create_run(experiment_id, run_name="low-level", tags={"k": "v"})
    assert run.info.status == "RUNNING"
    assert run.info.run_name == "low-level"
    assert run.data.tags["mlflow.runName"] == "low-level"
    assert run.data.tags["k"] == "v"
    assert run.info.end_time in (None, 0)

    client.set_terminated(run.info.run_id, status="KILLED")
    got = client.get_run(run.info.run_id)
    assert got.info.status == "KILLED"
    assert got.info.end_time and got.info.end_time >= got.info.start_time


def test_server_generates_run_name(client, experiment_id):
    run = client.create_run(experiment_id)
    assert run.info.run_name, "a run without a name gets a generated one"
    assert client.get_run(run.info.run_id).data.tags.get("mlflow.runName") == run.info.run_name


def test_update_run_name(client, run_id):
    client.update_run(run_id, name="renamed-run")
    got = client.get_run(run_id)
    assert got.info.run_name == "renamed-run"
    assert got.data.tags["mlflow.runName"] == "renamed-run"


def test_params_are_write_once(client, run_id):
    client.log_param(run_id, "lr", "0.1")
    client.log_param(run_id, "lr", "0.1")  # same value again: fine (clients retry)
    with expect_mlflow_error("INVALID_PARAMETER_VALUE"):
        client.log_param(run_id, "lr", "0.2")
    assert client.get_run(run_id).data.params == {"lr": "0.1"}


def test_param_values_are_strings(client, run_id):
    client.log_param(run_id, "int_param", 3)
    client.log_param(run_id, "float_param", 0.25)
    client.log_param(run_id, "text", "hello world")
    assert client.get_run(run_id).data.params == {"int_param": "3", "float_param": "0.25", "text": "hello world"}


def test_metric_history_steps_and_timestamps(client, run_id):
    t0 = now_ms()
    points = [(0.9, t0 + i * 10, i) for i in range(5)]
    points = [(round(1.0 / (i + 1), 6), ts, step) for i, (_, ts, step) in enumerate(points)]
    for value, ts, step in points:
        client.log_metric(run_id, "loss", value, timestamp=ts, step=step)

    history = client.get_metric_history(run_id, "loss")
    assert [(m.key, m.value, m.timestamp, m.step) for m in history] == [("loss", v, t, s) for v, t, s in points]
    assert client.get_run(run_id).data.metrics == {"loss": points[-1][0]}
    assert client.get_metric_history(run_id, "never-logged") == []


def test_latest_metric_is_max_step_not_last_written(client, run_id):
    t0 = now_ms()
    client.log_metric(run_id, "acc", 0.7, timestamp=t0, step=5)
    client.log_metric(run_id, "acc", 0.3, timestamp=t0 + 1000, step=2)  # later write, lower step
    assert client.get_run(run_id).data.metrics["acc"] == 0.7

    # Same step: the later timestamp wins.
    client.log_metric(run_id, "acc", 0.8, timestamp=t0 + 2000, step=5)
    assert client.get_run(run_id).data.metrics["acc"] == 0.8
    client.log_metric(run_id, "acc", 0.1, timestamp=t0 - 5000, step=5)
    assert client.get_run(run_id).data.metrics["acc"] == 0.8
    assert sorted(m.value for m in client.get_metric_history(run_id, "acc")) == [0.1, 0.3, 0.7, 0.8]


def test_duplicate_metric_writes_are_tolerated(client, run_id):
    ts = now_ms()
    client.log_metric(run_id, "dup", 1.5, timestamp=ts, step=1)
    client.log_metric(run_id, "dup", 1.5, timestamp=ts, step=1)  # a retried POST
    history = client.get_metric_history(run_id, "dup")
    assert {(m.value, m.timestamp, m.step) for m in history} == {(1.5, ts, 1)}
    assert client.get_run(run_id).data.metrics["dup"] == 1.5


def test_nan_and_infinity_round_trip(client, run_id):
    ts = now_ms()
    client.log_metric(run_id, "nan", float("nan"), timestamp=ts, step=0)
    client.log_metric(run_id, "pinf", float("inf"), timestamp=ts, step=0)
    client.log_metric(run_id, "ninf", float("-inf"), timestamp=ts, step=0)
    client.log_metric(run_id, "tiny", 5e-324, timestamp=ts, step=0)
    client.log_metric(run_id, "neg", -123.456, timestamp=ts, step=0)

    metrics = client.get_run(run_id).data.metrics
    assert math.isnan(metrics["nan"])
    assert metrics["tiny"] == 5e-324
    assert metrics["neg"] == -123.456
    if UPSTREAM:
        # MLflow's SQL store clamps infinities to +-float max; mlkube keeps them.
        assert metrics["pinf"] in (math.inf, sys.float_info.max)
        assert metrics["ninf"] in (-math.inf, -sys.float_info.max)
    else:
        assert metrics["pinf"] == math.inf
        assert metrics["ninf"] == -math.inf

    history = client.get_metric_history(run_id, "nan")
    assert len(history) == 1 and math.isnan(history[0].value)
    pinf = client.get_metric_history(run_id, "pinf")
    assert len(pinf) == 1 and pinf[0].value == metrics["pinf"]

    # On the wire NaN and infinities are JSON strings (protobuf JSON), never bare NaN tokens.
    resp = requests.get(api_url("/mlflow/runs/get"), params={"run_id": run_id}, timeout=30)
    assert resp.status_code == 200
    assert "NaN" in resp.text
    wire = {m["key"]: m["value"] for m in resp.json()["run"]["data"]["metrics"]}
    assert wire["nan"] == "NaN"
    if not UPSTREAM:
        assert wire["pinf"] == "Infinity"
        assert wire["ninf"] == "-Infinity"


def test_log_batch_1000_metrics_and_100_params(client, run_id):
    ts = now_ms()
    metrics = [Metric(f"m{i % 10}", float(i), ts + i, i // 10) for i in range(1000)]
    params = [Param(f"p{i:03d}", f"value-{i}") for i in range(100)]
    tags = [RunTag("batch", "yes"), RunTag("batch", "last-wins")]
    client.log_batch(run_id, metrics=metrics, params=params, tags=tags)

    run = client.get_run(run_id)
    assert run.data.params == {f"p{i:03d}": f"value-{i}" for i in range(100)}
    # Latest per key: the highest step (99) holds i = 990 + k for key m{k}.
    assert run.data.metrics == {f"m{k}": float(990 + k) for k in range(10)}
    assert run.data.tags["batch"] == "last-wins"

    history = client.get_metric_history(run_id, "m3")
    assert sorted((m.step, m.value) for m in history) == [(s, float(s * 10 + 3)) for s in range(100)]


def test_log_batch_exactly_at_limit_in_one_request(run_id):
    ts = now_ms()
    body = {
        "run_id": run_id,
        "metrics": [{"key": "limit", "value": i, "timestamp": ts, "step": i} for i in range(1000)],
    }
    resp = requests.post(api_url("/mlflow/runs/log-batch"), json=body, timeout=60)
    assert resp.status_code == 200, resp.text
    assert resp.json() == {}


@pytest.mark.parametrize(
    "field,count",
    [("metrics", 1001), ("params", 101), ("tags", 101)],
)
def test_log_batch_over_limit_is_rejected(client, run_id, field, count):
    ts = now_ms()
    if field == "metrics":
        items = [{"key": "over", "value": i, "timestamp": ts, "step": i} for i in range(count)]
    else:
        items = [{"key": f"k{i}", "value": "v"} for i in range(count)]
    resp = requests.post(api_url("/mlflow/runs/log-batch"), json={"run_id": run_id, field: items}, timeout=60)
    assert resp.status_code == 400, resp.text
    assert resp.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    # Nothing of the rejected batch was written.
    run = client.get_run(run_id)
    assert run.data.metrics == {} and run.data.params == {}
    assert not any(k.startswith("k") and k[1:].isdigit() for k in run.data.tags)


def test_log_batch_param_conflict_is_rejected(client, run_id):
    client.log_param(run_id, "fixed", "a")
    with expect_mlflow_error("INVALID_PARAMETER_VALUE"):
        client.log_batch(run_id, params=[Param("fixed", "b")])
    assert client.get_run(run_id).data.params == {"fixed": "a"}


def test_fluent_log_metrics_and_params(client, experiment_id):
    with mlflow.start_run() as run:
        mlflow.log_params({"alpha": 0.5, "layers": 3, "name": "resnet"})
        mlflow.log_metrics({"rmse": 0.25, "mae": 0.125}, step=3)
    data = client.get_run(run.info.run_id).data
    assert data.params == {"alpha": "0.5", "layers": "3", "name": "resnet"}
    assert data.metrics == {"rmse": 0.25, "mae": 0.125}
    assert [m.step for m in client.get_metric_history(run.info.run_id, "rmse")] == [3]


def test_set_and_delete_run_tag(client, run_id):
    client.set_tag(run_id, "color", "red")
    client.set_tag(run_id, "color", "blue")
    client.set_tag(run_id, "shape", "round")
    tags = client.get_run(run_id).data.tags
    assert tags["color"] == "blue" and tags["shape"] == "round"

    client.delete_tag(run_id, "color")
    tags = client.get_run(run_id).data.tags
    assert "color" not in tags and tags["shape"] == "round"

    with expect_mlflow_error("RESOURCE_DOES_NOT_EXIST"):
        client.delete_tag(run_id, "color")


def test_get_unknown_run_is_not_found(client):
    with expect_mlflow_error("RESOURCE_DOES_NOT_EXIST"):
        client.get_run("0" * 32)
    with expect_mlflow_error("RESOURCE_DOES_NOT_EXIST"):
        client.log_metric("f" * 32, "x", 1.0)


def test_delete_and_restore_run(client, experiment_id):
    keep = client.create_run(experiment_id).info.run_id
    gone = client.create_run(experiment_id).info.run_id

    client.delete_run(gone)
    assert client.get_run(gone).info.lifecycle_stage == "deleted"
    assert client.get_run(keep).info.lifecycle_stage == "active"

    def ids(view):
        return {r.info.run_id for r in client.search_runs([experiment_id], run_view_type=view)}

    assert ids(ViewType.ACTIVE_ONLY) == {keep}
    assert ids(ViewType.DELETED_ONLY) == {gone}
    assert ids(ViewType.ALL) == {keep, gone}

    # A deleted run can't be written to.
    with expect_mlflow_error("INVALID_PARAMETER_VALUE"):
        client.log_metric(gone, "m", 1.0)

    client.restore_run(gone)
    assert client.get_run(gone).info.lifecycle_stage == "active"
    assert ids(ViewType.ACTIVE_ONLY) == {keep, gone}
    assert ids(ViewType.DELETED_ONLY) == set()
    client.log_metric(gone, "m", 1.0)
    assert client.get_run(gone).data.metrics == {"m": 1.0}


def test_nested_runs_record_parent(client, experiment_id):
    with mlflow.start_run(run_name="parent") as parent:
        with mlflow.start_run(run_name="child", nested=True) as child:
            pass
    got = client.get_run(child.info.run_id)
    assert got.data.tags["mlflow.parentRunId"] == parent.info.run_id
    children = client.search_runs(
        [experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    assert [r.info.run_id for r in children] == [child.info.run_id]


def test_run_name_unique_per_test(client, experiment_id):
    name = unique_name("run")
    run = client.create_run(experiment_id, run_name=name)
    found = client.search_runs([experiment_id], filter_string=f"attributes.run_name = '{name}'")
    assert [r.info.run_id for r in found] == [run.info.run_id]


def test_metric_history_server_paging(client, run_id):
    ts = now_ms()
    client.log_batch(run_id, metrics=[Metric("paged", float(i), ts + i, i) for i in range(250)])

    # The client pages through get-history transparently.
    history = client.get_metric_history(run_id, "paged")
    assert sorted(m.step for m in history) == list(range(250))

    if UPSTREAM and MLFLOW_MAJOR < 3:
        pytest.skip("upstream MLflow 2.17 ignores max_results/page_token on get-history")
    seen, token, pages = [], None, 0
    while True:
        params = {"run_id": run_id, "metric_key": "paged", "max_results": 100}
        if token:
            params["page_token"] = token
        resp = requests.get(api_url("/mlflow/metrics/get-history"), params=params, timeout=30)
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert len(body["metrics"]) <= 100
        seen.extend(m["step"] for m in body["metrics"])
        pages += 1
        token = body.get("next_page_token")
        if not token:
            break
        assert pages < 10
    assert pages == 3
    assert sorted(seen) == list(range(250)) and len(seen) == len(set(seen))


def test_metric_history_bulk_interval_repeated_params(client, experiment_id):
    ts = now_ms()
    a = client.create_run(experiment_id).info.run_id
    b = client.create_run(experiment_id).info.run_id
    client.log_batch(a, metrics=[Metric("loss", float(i), ts + i, i) for i in range(10)])
    client.log_batch(b, metrics=[Metric("loss", float(-i), ts + i, i) for i in range(5)])

    # Repeated query parameters (run_ids=a&run_ids=b), as requests sends lists. 2.x serves this route
    # under /ajax-api only, so use that prefix.
    resp = requests.get(
        api_url("/mlflow/metrics/get-history-bulk-interval", prefix="/ajax-api/2.0"),
        params={"run_ids": [a, b], "metric_key": "loss", "max_results": 100},
        timeout=30,
    )
    assert resp.status_code == 200, resp.text
    got = {(m["run_id"], m["step"], m["value"]) for m in resp.json()["metrics"]}
    assert got == {(a, i, float(i)) for i in range(10)} | {(b, i, float(-i)) for i in range(5)}

    ranged = requests.get(
        api_url("/mlflow/metrics/get-history-bulk-interval", prefix="/ajax-api/2.0"),
        params={"run_ids": [a], "metric_key": "loss", "start_step": 2, "end_step": 4, "max_results": 100},
        timeout=30,
    )
    assert ranged.status_code == 200, ranged.text
    assert sorted(m["step"] for m in ranged.json()["metrics"]) == [2, 3, 4]


def test_concurrent_writers(client, experiment_id):
    """Several clients writing at once (SQLite must not answer 'database is locked')."""
    from concurrent.futures import ThreadPoolExecutor

    run_ids = [client.create_run(experiment_id).info.run_id for _ in range(4)]
    ts = now_ms()

    def work(job):
        rid, worker = job
        for step in range(25):
            client.log_metric(rid, f"w{worker}", float(step), timestamp=ts + step, step=step)
        client.log_batch(rid, params=[Param(f"p{worker}", str(worker))], tags=[RunTag(f"t{worker}", "x")])

    jobs = [(rid, worker) for rid in run_ids for worker in range(2)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(work, jobs))

    for rid in run_ids:
        data = client.get_run(rid).data
        assert data.metrics == {"w0": 24.0, "w1": 24.0}
        assert data.params == {"p0": "0", "p1": "1"}
        assert len(client.get_metric_history(rid, "w1")) == 25
