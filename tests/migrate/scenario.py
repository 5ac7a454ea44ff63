"""The migration scenario: fill an upstream `mlflow server` with one of every entity the importer
copies, and read it back the way users do, through the MLflow client.

    python scenario.py fill  --out answers.json     # against upstream (MLFLOW_TRACKING_URI)
    python scenario.py check --expected answers.json  # against mlkube-server after the import

`fill` logs the scenario and writes the client's answers; `check` reads the same answers from the
server it is pointed at and exits 1 listing every difference. The model logged before the import
is loaded again (`models:/…@champion`, `runs:/…/model`) and must predict the same numbers.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys

os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")

import mlflow  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from mlflow import MlflowClient  # noqa: E402
from mlflow.entities import ViewType  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402

MAJOR = int(mlflow.__version__.split(".")[0])
EXPERIMENT = "migrate-churn"
MODEL = "migrate-churn-model"
FEATURES = pd.DataFrame({"tenure": [1.0, 5.0, 12.0, 30.0, 2.0, 48.0], "spend": [80.0, 60.0, 40.0, 20.0, 90.0, 10.0]})
LABELS = [1, 1, 0, 0, 1, 0]


def fill(client: MlflowClient) -> None:
    exp = client.create_experiment(EXPERIMENT, tags={"team": "growth"})
    client.set_experiment_tag(exp, "stage", "pilot")
    gone = client.create_experiment("migrate-deleted")
    client.delete_experiment(gone)

    mlflow.set_experiment(experiment_id=exp)
    with mlflow.start_run(run_name="train") as run:
        mlflow.log_params({"lr": "0.01", "depth": "6"})
        mlflow.set_tags({"owner": "ana", "purpose": "migration"})
        for step in range(60):
            mlflow.log_metric("loss", 1.0 / (step + 1), step=step, timestamp=1_700_000_000_000 + step)
        mlflow.log_metric("weird", float("nan"), step=0)
        mlflow.log_metric("weird", float("inf"), step=1)
        mlflow.log_input(mlflow.data.from_pandas(FEATURES, name="churn-train"), context="training")
        model = LogisticRegression().fit(FEATURES, LABELS)
        where = {"name": "model"} if MAJOR >= 3 else {"artifact_path": "model"}
        info = mlflow.sklearn.log_model(model, registered_model_name=MODEL, input_example=FEATURES.head(2), **where)
    with mlflow.start_run(run_name="abandoned") as other:
        mlflow.log_metric("loss", 0.7)
        mlflow.log_param("lr", "0.5")
    client.delete_run(other.info.run_id)

    source = client.get_model_version(MODEL, "1").source
    # MLflow 3 registers a logged model by its `models:/<model_id>` source, which needs the id.
    linked = {"model_id": info.model_id} if MAJOR >= 3 else {}
    client.create_model_version(MODEL, source, run.info.run_id, description="second look", **linked)
    client.update_registered_model(MODEL, description="predicts churn")
    client.set_registered_model_tag(MODEL, "domain", "retention")
    client.set_model_version_tag(MODEL, "2", "validated", "yes")
    client.set_registered_model_alias(MODEL, "champion", "2")
    client.set_registered_model_alias(MODEL, "previous", "1")
    client.transition_model_version_stage(MODEL, "1", "Archived")


def number(value: float) -> str:
    return "nan" if math.isnan(value) else repr(float(value))


def answers(client: MlflowClient) -> dict:
    out: dict = {}
    experiments = client.search_experiments(view_type=ViewType.ALL, filter_string="name LIKE 'migrate-%'")
    out["experiments"] = sorted(
        [e.experiment_id, e.name, e.lifecycle_stage, e.artifact_location, dict(e.tags)] for e in experiments
    )
    exp = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs([exp.experiment_id], run_view_type=ViewType.ALL, order_by=["attributes.start_time ASC"])
    out["runs"] = [
        {
            "id": r.info.run_id,
            "name": r.info.run_name,
            "status": r.info.status,
            "lifecycle": r.info.lifecycle_stage,
            "start": r.info.start_time,
            "end": r.info.end_time,
            "artifact_uri": r.info.artifact_uri,
            "user": r.info.user_id,
            "params": r.data.params,
            "tags": {k: v for k, v in r.data.tags.items()},
            "metrics": {k: number(v) for k, v in r.data.metrics.items()},
            "datasets": sorted(
                [d.dataset.name, d.dataset.digest, d.dataset.source_type, sorted((t.key, t.value) for t in d.tags)]
                for d in (r.inputs.dataset_inputs if r.inputs else [])
            ),
        }
        for r in runs
    ]
    train = next(r for r in runs if r.info.run_name == "train")
    out["loss_history"] = [[m.step, m.timestamp, number(m.value)] for m in client.get_metric_history(train.info.run_id, "loss")]
    out["weird_history"] = sorted([m.step, number(m.value)] for m in client.get_metric_history(train.info.run_id, "weird"))
    found = client.search_runs(
        [exp.experiment_id], filter_string="params.lr = '0.01' and metrics.loss < 1", order_by=["metrics.loss ASC"]
    )
    out["search"] = [r.info.run_id for r in found]

    rm = client.get_registered_model(MODEL)
    out["registered_model"] = {
        "name": rm.name,
        "description": rm.description,
        "tags": rm.tags,
        "aliases": dict(sorted(rm.aliases.items())),
        "created": rm.creation_timestamp,
    }
    versions = client.search_model_versions(f"name = '{MODEL}'")
    # Aliases from get-model-version: upstream's search leaves them out of its answer.
    out["versions"] = sorted(
        [v.version, v.current_stage, v.source, v.run_id, v.status, v.description, v.tags,
         sorted(client.get_model_version(MODEL, v.version).aliases)]
        for v in versions
    )
    out["champion"] = client.get_model_version_by_alias(MODEL, "champion").version
    if MAJOR >= 3:
        models = client.search_logged_models(experiment_ids=[exp.experiment_id])
        out["logged_models"] = sorted(
            [m.model_id, m.name, str(m.status), m.source_run_id, m.artifact_location] for m in models
        )
    champion = mlflow.pyfunc.load_model(f"models:/{MODEL}@champion")
    out["predictions"] = [int(x) for x in np.asarray(champion.predict(FEATURES)).ravel()]
    by_run = mlflow.pyfunc.load_model(f"runs:/{train.info.run_id}/model")
    out["predictions_by_run"] = [int(x) for x in np.asarray(by_run.predict(FEATURES)).ravel()]
    return out


def differences(want, got, path="") -> list[str]:
    if isinstance(want, dict) and isinstance(got, dict):
        out = []
        for key in sorted(set(want) | set(got)):
            if key not in got:
                out.append(f"{path}/{key}: missing after the import (upstream: {want[key]!r})")
            elif key not in want:
                out.append(f"{path}/{key}: only after the import ({got[key]!r})")
            else:
                out.extend(differences(want[key], got[key], f"{path}/{key}"))
        return out
    if isinstance(want, list) and isinstance(got, list) and len(want) == len(got):
        out = []
        for i, (w, g) in enumerate(zip(want, got)):
            out.extend(differences(w, g, f"{path}[{i}]"))
        return out
    return [] if want == got else [f"{path}: upstream {want!r}, after the import {got!r}"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["fill", "check"])
    parser.add_argument("--out")
    parser.add_argument("--expected")
    args = parser.parse_args()
    client = MlflowClient()
    if args.mode == "fill":
        fill(client)
        with open(args.out, "w") as f:
            json.dump(answers(client), f, indent=1, sort_keys=True)
        print(f"scenario filled with mlflow {mlflow.__version__}; answers in {args.out}")
        return 0
    with open(args.expected) as f:
        want = json.load(f)
    got = json.loads(json.dumps(answers(client), sort_keys=True))
    diff = differences(want, got)
    for line in diff:
        print(f"DIFF {line}")
    print(f"migrate check: {len(diff)} differences over {len(want)} answers (mlflow {mlflow.__version__} client)")
    return 1 if diff else 0


if __name__ == "__main__":
    sys.exit(main())
