"""Model quality monitoring against scikit-learn.

Synthetic prediction streams with known labels go through the monitoring API (predictions and ground
truth in batches, some labels before their predictions, some never), and every metric the server
computes for the window must equal scikit-learn's value on the same labelled data to 1e-9.

mlkube only: upstream MLflow has no monitoring API.
"""

from __future__ import annotations

import math
import time
import uuid

import numpy as np
import pytest
import requests
from sklearn import metrics as skm

from conftest import TRACKING_URI

pytestmark = pytest.mark.mlkube_only

TOL = 1e-9
BATCH = 250


def api(path: str) -> str:
    return f"{TRACKING_URI}/api/2.0/mlkube/{path}"


def now_ms() -> int:
    return int(time.time() * 1000)


def model_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def post_batches(path: str, key: str, items: list[dict]) -> None:
    for start in range(0, len(items), BATCH):
        resp = requests.post(api(path), json={key: items[start : start + BATCH]}, timeout=60)
        assert resp.status_code == 200, resp.text
        assert resp.json() == {}


def log_predictions(items: list[dict]) -> None:
    post_batches("predictions/log-batch", "predictions", items)


def log_labels(items: list[dict]) -> None:
    post_batches("ground-truth/log-batch", "ground_truth", items)


def quality(**params) -> dict:
    resp = requests.get(api("quality/get"), params=params, timeout=60)
    assert resp.status_code == 200, resp.text
    return resp.json()["quality"]


def sk_log_loss(y_true, y_score) -> float:
    try:
        return skm.log_loss(y_true, y_proba=y_score, labels=[0, 1])
    except TypeError:  # scikit-learn before 1.9 names it y_pred
        return skm.log_loss(y_true, y_score, labels=[0, 1])


def assert_close(name: str, got, want: float) -> None:
    assert got is not None, f"{name} missing"
    assert math.isfinite(want), f"{name}: scikit-learn gave {want}"
    assert abs(got - want) <= TOL, f"{name}: server {got!r} != scikit-learn {want!r} (diff {got - want:.3e})"


def classification_stream(n: int, seed: int):
    """Scores in [0, 1] rounded to 2 decimals (many ties, some exactly 0 and 1), labels drawn with
    P(positive) = score, and about 10% of the labels missing."""
    rng = np.random.default_rng(seed)
    scores = np.round(rng.random(n), 2)
    scores[:5] = [0.0, 1.0, 0.0, 1.0, 0.5]
    labels = (rng.random(n) < scores).astype(int)
    labels[:4] = [1, 0, 0, 1]  # two confident mistakes: log loss must clip like scikit-learn
    labelled = rng.random(n) >= 0.1
    return scores, labels, labelled


def test_classification_metrics_equal_scikit_learn(tracking_uri):
    name = model_name("clf")
    n = 3000
    scores, labels, labelled = classification_stream(n, seed=7)
    end = now_ms()
    ids = [f"{name}-{i}" for i in range(n)]
    truth = [{"request_id": ids[i], "actual": int(labels[i]), "timestamp": end} for i in range(n) if labelled[i]]
    # Half the ground truth arrives before its prediction, half after.
    log_labels(truth[: len(truth) // 2])
    log_predictions(
        [
            {
                "request_id": ids[i],
                "model_name": name,
                "model_version": "1",
                "timestamp": end - 1000 - i,
                "inputs": {"dataframe_split": {"columns": ["a", "b"], "data": [[i, float(scores[i])]]}},
                "outputs": {"predictions": [float(scores[i])]},
            }
            for i in range(n)
        ]
    )
    log_labels(truth[len(truth) // 2 :])

    q = quality(model_name=name, model_version="1", window="1h", end_time=end)
    y = labels[labelled]
    s = scores[labelled]
    pred = (s >= 0.5).astype(int)
    assert q["predictions"] == n
    assert q["labelled"] == int(labelled.sum())
    assert q["unlabelled"] == n - int(labelled.sum())
    assert q["evaluated"] == int(labelled.sum())
    m = q["metrics"]
    assert_close("accuracy", m.get("accuracy"), skm.accuracy_score(y, pred))
    assert_close("precision", m.get("precision"), skm.precision_score(y, pred, zero_division=0))
    assert_close("recall", m.get("recall"), skm.recall_score(y, pred, zero_division=0))
    assert_close("f1", m.get("f1"), skm.f1_score(y, pred, zero_division=0))
    assert_close("roc_auc", m.get("roc_auc"), skm.roc_auc_score(y, s))
    assert_close("log_loss", m.get("log_loss"), sk_log_loss(y, s))

    # Logging everything again (client retries) changes nothing.
    log_predictions(
        [
            {"request_id": ids[i], "model_name": name, "model_version": "1", "timestamp": end - 1000 - i,
             "inputs": None, "outputs": 0.0}
            for i in range(0, n, 3)
        ]
    )
    log_labels([{"request_id": t["request_id"], "actual": 1 - t["actual"], "timestamp": end} for t in truth[:500]])
    again = quality(model_name=name, model_version="1", window="1h", end_time=end)
    assert again["metrics"] == m
    assert again["predictions"] == n


def test_threshold_positive_label_and_score_field_equal_scikit_learn(tracking_uri):
    name = model_name("fraud")
    n = 1500
    rng = np.random.default_rng(11)
    p = np.round(rng.beta(2, 5, n), 3)
    is_fraud = rng.random(n) < p
    end = now_ms()
    log_predictions(
        [
            {
                "request_id": f"{name}-{i}",
                "model_name": name,
                "model_version": "3",
                "timestamp": end - 60_000 - i,
                "inputs": {"amount": float(i)},
                # The score of the positive class is the second probability.
                "outputs": {"label": "fraud" if p[i] >= 0.3 else "ok", "probabilities": [float(1 - p[i]), float(p[i])]},
            }
            for i in range(n)
        ]
    )
    log_labels(
        [{"request_id": f"{name}-{i}", "actual": "fraud" if is_fraud[i] else "ok", "timestamp": end} for i in range(n)]
    )
    q = quality(
        model_name=name,
        model_version="3",
        window="30m",
        end_time=end,
        score_field="/probabilities/1",
        positive_label="fraud",
        threshold="0.3",
    )
    y = is_fraud.astype(int)
    pred = (p >= 0.3).astype(int)
    m = q["metrics"]
    assert q["window"] == "30m"
    assert_close("accuracy", m.get("accuracy"), skm.accuracy_score(y, pred))
    assert_close("precision", m.get("precision"), skm.precision_score(y, pred, zero_division=0))
    assert_close("recall", m.get("recall"), skm.recall_score(y, pred, zero_division=0))
    assert_close("f1", m.get("f1"), skm.f1_score(y, pred, zero_division=0))
    assert_close("roc_auc", m.get("roc_auc"), skm.roc_auc_score(y, p))
    assert_close("log_loss", m.get("log_loss"), sk_log_loss(y, p))


def test_zero_division_equals_scikit_learn(tracking_uri):
    name = model_name("never-positive")
    end = now_ms()
    scores = [0.1, 0.2, 0.3, 0.4]
    labels = [0, 1, 0, 1]
    log_predictions(
        [
            {"request_id": f"{name}-{i}", "model_name": name, "model_version": "1", "timestamp": end - 1,
             "inputs": {}, "outputs": s}
            for i, s in enumerate(scores)
        ]
    )
    log_labels([{"request_id": f"{name}-{i}", "actual": l, "timestamp": end} for i, l in enumerate(labels)])
    m = quality(model_name=name, end_time=end)["metrics"]
    pred = [0, 0, 0, 0]
    assert_close("precision", m.get("precision"), skm.precision_score(labels, pred, zero_division=0))
    assert_close("recall", m.get("recall"), skm.recall_score(labels, pred, zero_division=0))
    assert_close("f1", m.get("f1"), skm.f1_score(labels, pred, zero_division=0))
    assert_close("accuracy", m.get("accuracy"), skm.accuracy_score(labels, pred))
    assert_close("roc_auc", m.get("roc_auc"), skm.roc_auc_score(labels, scores))


def test_regression_metrics_equal_scikit_learn(tracking_uri):
    name = model_name("reg")
    n = 2500
    rng = np.random.default_rng(3)
    y_true = np.round(rng.normal(50, 12, n), 4)
    y_pred = np.round(y_true + rng.normal(0, 3, n) + 0.5, 4)
    labelled = rng.random(n) >= 0.2
    end = now_ms()
    log_predictions(
        [
            {
                "request_id": f"{name}-{i}",
                "model_name": name,
                "model_version": f"v{i % 2}",
                "timestamp": end - 5 - i,
                "inputs": {"instances": [[float(i)]]},
                # Both output shapes the default score reader understands.
                "outputs": float(y_pred[i]) if i % 2 else {"predictions": [float(y_pred[i])]},
            }
            for i in range(n)
        ]
    )
    # Labels as numbers and as numeric strings.
    log_labels(
        [
            {"request_id": f"{name}-{i}", "actual": float(y_true[i]) if i % 3 else str(y_true[i]), "timestamp": end}
            for i in range(n)
            if labelled[i]
        ]
    )
    # No model_version: both versions together.
    q = quality(model_name=name, task="regression", window="24h", end_time=end)
    yt, yp = y_true[labelled], y_pred[labelled]
    mse = skm.mean_squared_error(yt, yp)
    m = q["metrics"]
    assert q["labelled"] == int(labelled.sum())
    assert_close("mse", m.get("mse"), mse)
    assert_close("rmse", m.get("rmse"), math.sqrt(mse))
    if hasattr(skm, "root_mean_squared_error"):
        assert_close("rmse", m.get("rmse"), skm.root_mean_squared_error(yt, yp))
    assert_close("mae", m.get("mae"), skm.mean_absolute_error(yt, yp))
    assert_close("r2", m.get("r2"), skm.r2_score(yt, yp))
    # One version alone.
    v1 = quality(model_name=name, model_version="v1", task="regression", window="24h", end_time=end)
    odd = np.array([i % 2 == 1 for i in range(n)]) & labelled
    assert_close("r2 (v1)", v1["metrics"].get("r2"), skm.r2_score(y_true[odd], y_pred[odd]))


def test_bad_input_is_refused_with_mlflow_errors(tracking_uri):
    name = model_name("bad")
    resp = requests.post(
        api("predictions/log-batch"),
        json={"predictions": [
            {"request_id": f"{name}-ok", "model_name": name, "model_version": "1", "outputs": 0.5},
            {"request_id": f"{name}-bad", "model_name": name, "model_version": "1", "timestamp": "soon", "outputs": 0.5},
        ]},
        timeout=30,
    )
    assert resp.status_code == 400
    assert resp.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    assert quality(model_name=name, window="7d")["predictions"] == 0, "nothing stored"
    resp = requests.get(api("quality/get"), params={"model_name": name, "window": "fortnight"}, timeout=30)
    assert resp.status_code == 400 and resp.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    resp = requests.post(
        api("monitors/create"),
        json={"name": name, "model_name": name, "metric": "auc", "window": "1h", "threshold": 0.9},
        timeout=30,
    )
    assert resp.status_code == 400 and resp.json()["error_code"] == "INVALID_PARAMETER_VALUE"
