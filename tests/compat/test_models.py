"""Models and datasets: sklearn log_model + pyfunc load_model, and log_input of a pandas dataset."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import mlflow
import mlflow.data
import mlflow.pyfunc
import mlflow.sklearn
import pytest

from conftest import MLFLOW_MAJOR


@pytest.fixture(scope="module")
def tiny_model():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(42)
    X = pd.DataFrame(rng.normal(size=(60, 3)), columns=["f0", "f1", "f2"])
    y = (X["f0"] + 0.5 * X["f1"] - X["f2"] > 0).astype(int)
    model = LogisticRegression().fit(X, y)
    return model, X, y


def log_sklearn_model(model, name: str):
    # pip_requirements skips requirement inference (a slow subprocess) without changing what is logged.
    kwargs = dict(pip_requirements=["scikit-learn", "pandas"])
    if MLFLOW_MAJOR >= 3:
        return mlflow.sklearn.log_model(model, name=name, **kwargs)
    return mlflow.sklearn.log_model(model, artifact_path=name, **kwargs)


def test_sklearn_log_model_and_pyfunc_load(client, experiment_id, tiny_model):
    model, X, _ = tiny_model
    with mlflow.start_run() as run:
        info = log_sklearn_model(model, "model")
    run_id = run.info.run_id

    loaded = mlflow.pyfunc.load_model(f"runs:/{run_id}/model")
    expected = model.predict(X)
    got = np.asarray(loaded.predict(X))
    assert got.shape == expected.shape
    assert (got == expected).all()
    assert loaded.metadata.run_id == run_id

    # The sklearn flavour round-trips too, with identical probabilities.
    sk = mlflow.sklearn.load_model(f"runs:/{run_id}/model")
    np.testing.assert_allclose(sk.predict_proba(X), model.predict_proba(X))

    if MLFLOW_MAJOR >= 3:
        # 3.x records a LoggedModel tied to the run, reachable by its own URI.
        assert info.model_id
        logged = mlflow.get_logged_model(info.model_id)
        assert logged.source_run_id == run_id
        assert logged.name == "model"
        by_id = mlflow.pyfunc.load_model(info.model_uri)
        assert (np.asarray(by_id.predict(X)) == expected).all()
    else:
        # 2.x stores the model under the run's artifacts and records it in a run tag.
        files = {f.path for f in client.list_artifacts(run_id, "model")}
        assert {"model/MLmodel", "model/model.pkl"} <= files
        history = json.loads(client.get_run(run_id).data.tags["mlflow.log-model.history"])
        assert [(m["artifact_path"], m["run_id"]) for m in history] == [("model", run_id)]
        assert "sklearn" in history[0]["flavors"]


def test_log_input_pandas_dataset(client, experiment_id):
    df = pd.DataFrame({"a": [1, 2, 3], "b": [0.5, 0.25, 0.125], "label": [0, 1, 0]})
    dataset = mlflow.data.from_pandas(df, name="tiny-frame", targets="label")
    with mlflow.start_run() as run:
        mlflow.log_input(dataset, context="training", tags={"split": "train"})

    got = client.get_run(run.info.run_id)
    inputs = got.inputs.dataset_inputs
    assert len(inputs) == 1
    ds = inputs[0].dataset
    assert ds.name == "tiny-frame"
    assert ds.digest == dataset.digest
    assert ds.source_type == dataset.source._get_source_type()
    assert ds.schema and "label" in ds.schema
    assert ds.profile and '"num_rows": 3' in ds.profile
    tags = {t.key: t.value for t in inputs[0].tags}
    assert tags["mlflow.data.context"] == "training"
    assert tags["split"] == "train"

    # Logging the same dataset again with the same context does not duplicate it.
    with mlflow.start_run(run_id=run.info.run_id):
        mlflow.log_input(dataset, context="training", tags={"split": "train"})
    assert len(client.get_run(run.info.run_id).inputs.dataset_inputs) == 1


@pytest.mark.skipif(MLFLOW_MAJOR < 3, reason="logged models are MLflow 3")
def test_logged_model_metrics_and_search(client, experiment_id, tiny_model):
    model, X, y = tiny_model
    eval_ds = mlflow.data.from_pandas(X.assign(label=y), name="eval-set", targets="label")
    models = {}
    for name, score in [("good", 0.93), ("fair", 0.71)]:
        with mlflow.start_run():
            # log_model copies the run's step-0 metrics onto the model; later metrics name it.
            mlflow.log_metric("rmse", 1.0 - score)
            info = log_sklearn_model(model, name)
            mlflow.log_metric("accuracy", score, model_id=info.model_id, dataset=eval_ds)
        models[name] = info.model_id

    good = mlflow.get_logged_model(models["good"])
    by_key = {m.key: m for m in good.metrics}
    assert by_key["accuracy"].value == pytest.approx(0.93)
    assert by_key["accuracy"].model_id == models["good"]
    assert by_key["accuracy"].dataset_name == "eval-set"
    assert by_key["accuracy"].dataset_digest == eval_ds.digest
    assert by_key["rmse"].value == pytest.approx(0.07)
    assert by_key["rmse"].run_id == good.source_run_id

    def names(**kwargs):
        found = mlflow.search_logged_models(experiment_ids=[experiment_id], output_format="list", **kwargs)
        return [m.name for m in found]

    assert names(filter_string="metrics.accuracy > 0.9") == ["good"]
    assert sorted(names(filter_string="metrics.accuracy > 0.5")) == ["fair", "good"]
    assert names(filter_string="metrics.accuracy > 0.5", datasets=[{"dataset_name": "other"}]) == []
    assert sorted(names(datasets=[{"dataset_name": "eval-set", "dataset_digest": eval_ds.digest}])) == [
        "fair",
        "good",
    ]
    assert names(filter_string="name = 'fair'") == ["fair"]
    ordered = names(order_by=[{"field_name": "metrics.accuracy", "ascending": True, "dataset_name": "eval-set"}])
    assert ordered == ["fair", "good"]
    ordered = names(order_by=[{"field_name": "metrics.accuracy", "ascending": False}])
    assert ordered == ["good", "fair"]
    with pytest.raises(mlflow.exceptions.MlflowException):
        mlflow.search_logged_models(experiment_ids=[experiment_id], filter_string="metrics.accuracy >>> 1")
