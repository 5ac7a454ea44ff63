"""Fill a running tracking server with what the UI test looks for, using the real MLflow client.

Run with the Python of an MLflow client venv (2.x or 3.x):

    .cache/venvs/mlflow-3.17.2/bin/python tests/ui/fill.py --tracking-uri URL --out fixture.json

It creates one experiment with two runs (params, tags, a 20-step metric, a text artifact), logs a tiny
scikit-learn model in the first run, registers it with an alias and writes the ids to --out (JSON) for
tests/ui/browse.py. Every value the browser step asserts comes from FIXTURE below, so both scripts agree.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

# Fail fast on a broken server and keep the client off the network.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "60")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")
os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")

import mlflow  # noqa: E402
from mlflow import MlflowClient  # noqa: E402

FIXTURE = {
    "experiment": "ui-demo",
    "experiment_tags": {"owner": "ui-test-crew"},
    "model_name": "ui-demo-model",
    "model_alias": "champion",
    "model_description": "Lynx classifier kept for the browser check",
    "artifact_path": "notes/readme.txt",
    "artifact_text": "Seven amber lynxes guard the tracking server.",
    "metric": "rmse",
    "metric_steps": 20,
    "runs": [
        {
            "name": "amber-lynx-run",
            "params": {"alpha": "0.125", "solver": "lbfgs-amber"},
            "tags": {"team": "vision-lab", "stage": "ui-check"},
            "final": 0.4321,
            "accuracy": 0.9375,
            "model": True,
        },
        {
            "name": "cobalt-heron-run",
            "params": {"alpha": "0.5", "solver": "saga-cobalt"},
            "tags": {"team": "speech-lab", "stage": "ui-check"},
            "final": 0.5678,
            "accuracy": 0.8125,
            "model": False,
        },
    ],
}


def metric_series(final: float, steps: int) -> list[float]:
    """A falling curve that ends exactly at `final` (rounded, so the UI prints it verbatim)."""
    return [round(final + 0.03 * (steps - 1 - step), 4) for step in range(steps)]


def log_model(run_id: str) -> str | None:
    """Log a tiny LogisticRegression; returns the 3.x logged model id (None on 2.x)."""
    import pandas as pd
    from mlflow.models import infer_signature
    from sklearn.linear_model import LogisticRegression

    x = pd.DataFrame({"petal_width": [0.1, 0.4, 1.3, 1.8], "petal_length": [1.4, 1.5, 4.5, 5.6]})
    y = [0, 0, 1, 1]
    model = LogisticRegression().fit(x, y)
    signature = infer_signature(x, model.predict(x))
    if int(mlflow.__version__.split(".")[0]) >= 3:
        info = mlflow.sklearn.log_model(model, name="model", signature=signature)
        return info.model_id
    mlflow.sklearn.log_model(model, artifact_path="model", signature=signature)
    return None


def fill(tracking_uri: str) -> dict:
    mlflow.set_tracking_uri(tracking_uri)
    client = MlflowClient(tracking_uri)
    experiment_id = client.create_experiment(FIXTURE["experiment"], tags=FIXTURE["experiment_tags"])
    mlflow.set_experiment(experiment_id=experiment_id)

    runs = []
    model_id = None
    for spec in FIXTURE["runs"]:
        with mlflow.start_run(run_name=spec["name"]) as run:
            run_id = run.info.run_id
            mlflow.log_params(spec["params"])
            mlflow.set_tags(spec["tags"])
            values = metric_series(spec["final"], FIXTURE["metric_steps"])
            now = int(time.time() * 1000)
            for step, value in enumerate(values):
                client.log_metric(run_id, FIXTURE["metric"], value, timestamp=now + step, step=step)
            mlflow.log_metric("accuracy", spec["accuracy"])
            with tempfile.TemporaryDirectory() as tmp:
                directory, name = os.path.split(FIXTURE["artifact_path"])
                path = os.path.join(tmp, name)
                with open(path, "w", encoding="utf-8") as fh:
                    fh.write(FIXTURE["artifact_text"] + "\n")
                mlflow.log_artifact(path, artifact_path=directory)
            if spec["model"]:
                model_id = log_model(run_id)
                model_run_id = run_id
        runs.append({"id": run_id, "name": spec["name"]})

    # Register from the run's model (2.x) or the logged model (3.x); both appear as the version's source.
    source = f"models:/{model_id}" if model_id else f"runs:/{model_run_id}/model"
    version = mlflow.register_model(source, FIXTURE["model_name"]).version
    client.update_model_version(FIXTURE["model_name"], version, description=FIXTURE["model_description"])
    client.set_registered_model_alias(FIXTURE["model_name"], FIXTURE["model_alias"], version)

    return {
        "mlflow_version": mlflow.__version__,
        "tracking_uri": tracking_uri,
        "experiment_id": experiment_id,
        "runs": runs,
        "model_run_id": model_run_id,
        "model_version": str(version),
        "logged_model_id": model_id,
        "fixture": FIXTURE,
        "metric_values": {
            spec["name"]: metric_series(spec["final"], FIXTURE["metric_steps"]) for spec in FIXTURE["runs"]
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracking-uri", required=True)
    parser.add_argument("--out", required=True, help="where to write the ids (JSON)")
    args = parser.parse_args()
    created = fill(args.tracking_uri.rstrip("/"))
    with open(args.out, "w", encoding="utf-8") as fh:
        json.dump(created, fh, indent=2)
    print(
        f"filled {args.tracking_uri}: experiment {created['experiment_id']}, runs "
        + ", ".join(r["id"] for r in created["runs"])
        + f", {FIXTURE['model_name']} v{created['model_version']}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
