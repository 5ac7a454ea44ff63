//! Model quality monitoring over HTTP: ingestion (batches, idempotency, limits), ground truth
//! before and after predictions, late and missing labels, quality metrics, drift, monitors (CRUD,
//! evaluation, OK → FIRING → RESOLVED with a webhook receiver), retention and the `/metrics`
//! series. The last test repeats the core flow on PostgreSQL (ignored by default; `scripts/test-all`
//! sets MLKUBE_TEST_POSTGRES_URL).
#![allow(clippy::unwrap_used, clippy::panic)] // test helpers may fail loudly

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{Method, Request, StatusCode};
use axum::routing::post;
use common::{TestApp, assert_error};
use mlkube_server::prometheus::ServerMetrics;
use mlkube_server::quality::{MonitoringSettings, QualityMonitoring};
use mlkube_server::store::now_ms;
use mlkube_server::{AppState, app};
use serde_json::{Value, json};

const MINUTE: i64 = 60_000;

struct MonApp {
    app: TestApp,
    monitoring: Arc<QualityMonitoring>,
}

async fn mon_app_on(uri: &str, dir: tempfile::TempDir, settings: MonitoringSettings) -> MonApp {
    let store = Arc::new(
        mlkube_server::store::open(uri, "mlflow-artifacts:/")
            .await
            .unwrap(),
    );
    let metrics = Arc::new(ServerMetrics::new());
    let monitoring = QualityMonitoring::new(store.database(), Some(metrics.quality.clone()), settings);
    let state = AppState {
        store,
        artifacts: None,
        metrics: Some(metrics),
        auth: None,
        monitoring: monitoring.clone(),
        ui: None,
    };
    MonApp {
        app: TestApp {
            router: app(state, 1024 * 1024),
            dir,
        },
        monitoring,
    }
}

async fn mon_app(settings: MonitoringSettings) -> MonApp {
    let dir = tempfile::tempdir().unwrap();
    let uri = format!("sqlite:///{}", dir.path().join("mlkube.db").display());
    mon_app_on(&uri, dir, settings).await
}

fn private_webhooks() -> MonitoringSettings {
    let mut s = MonitoringSettings::default();
    s.webhook.allow_private = true;
    s.webhook.initial_backoff = Duration::from_millis(20);
    s.webhook.timeout = Duration::from_secs(2);
    s
}

impl MonApp {
    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.app
            .call(Method::POST, &format!("/api/2.0/mlkube/{path}"), Some(body))
            .await
    }

    async fn get(&self, path_and_query: &str) -> (StatusCode, Value) {
        self.app
            .call(Method::GET, &format!("/api/2.0/mlkube/{path_and_query}"), None)
            .await
    }

    async fn log_predictions(&self, predictions: Vec<Value>) {
        let (status, body) = self
            .post("predictions/log-batch", json!({ "predictions": predictions }))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body, json!({}));
    }

    async fn log_labels(&self, labels: Vec<Value>) {
        let (status, body) = self
            .post("ground-truth/log-batch", json!({ "ground_truth": labels }))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }

    async fn quality(&self, query: &str) -> Value {
        let (status, body) = self.get(&format!("quality/get?{query}")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["quality"].clone()
    }

    async fn create_monitor(&self, body: Value) -> Value {
        let (status, body) = self.post("monitors/create", body).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["monitor"].clone()
    }

    async fn evaluate(&self, monitor_id: &str) -> Value {
        let (status, body) = self
            .post("monitors/evaluate", json!({ "monitor_id": monitor_id }))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["monitors"][0].clone()
    }

    async fn scrape(&self) -> String {
        let (status, bytes) = self
            .app
            .send_raw(Request::get("/metrics").body(Body::empty()).unwrap())
            .await;
        assert_eq!(status, StatusCode::OK);
        String::from_utf8(bytes).unwrap()
    }
}

fn prediction(id: &str, model: &str, version: &str, ts: i64, outputs: Value) -> Value {
    json!({"request_id": id, "model_name": model, "model_version": version, "timestamp": ts,
           "inputs": {"dataframe_records": [{"x": 1.0}]}, "outputs": outputs})
}

fn label(id: &str, actual: Value, ts: i64) -> Value {
    json!({"request_id": id, "actual": actual, "timestamp": ts})
}

fn close(v: &Value, want: f64) -> bool {
    v.as_f64().is_some_and(|x| (x - want).abs() < 1e-12)
}

#[tokio::test]
async fn predictions_are_idempotent_per_request_id() {
    let m = mon_app(MonitoringSettings::default()).await;
    let now = now_ms();
    // A duplicate inside the batch: the first wins.
    m.log_predictions(vec![
        prediction("r1", "m", "1", now - MINUTE, json!(0.9)),
        prediction("r2", "m", "1", now - MINUTE, json!(0.1)),
        prediction("r1", "m", "1", now - MINUTE, json!(0.2)),
    ])
    .await;
    // A retried batch, even with other content, changes nothing.
    m.log_predictions(vec![prediction("r1", "m", "1", now - MINUTE, json!(0.3))])
        .await;
    m.log_labels(vec![label("r1", json!(1), now), label("r2", json!(0), now)])
        .await;
    m.log_labels(vec![label("r1", json!(0), now)]).await;
    let q = m
        .quality(&format!("model_name=m&model_version=1&window=1h&end_time={now}"))
        .await;
    assert_eq!(
        (q["predictions"].as_i64(), q["labelled"].as_i64()),
        (Some(2), Some(2))
    );
    // r1 kept score 0.9 and label 1; r2 score 0.1, label 0: everything right.
    assert!(close(&q["metrics"]["accuracy"], 1.0), "{q}");
    assert!(close(&q["metrics"]["roc_auc"], 1.0), "{q}");
}

#[tokio::test]
async fn ground_truth_may_come_before_or_after_the_prediction() {
    let m = mon_app(MonitoringSettings::default()).await;
    let now = now_ms();
    m.log_labels(vec![label("early", json!("1"), now - 5 * MINUTE)])
        .await;
    m.log_predictions(vec![
        prediction("early", "m", "2", now - 4 * MINUTE, json!({"predictions": [0.8]})),
        prediction("later", "m", "2", now - 3 * MINUTE, json!({"predictions": [0.3]})),
    ])
    .await;
    let before = m
        .quality(&format!("model_name=m&model_version=2&end_time={now}"))
        .await;
    assert_eq!(before["window"], "1h");
    assert_eq!(
        (before["labelled"].as_i64(), before["unlabelled"].as_i64()),
        (Some(1), Some(1))
    );
    m.log_labels(vec![label("later", json!(1), now)]).await;
    let after = m
        .quality(&format!("model_name=m&model_version=2&end_time={now}"))
        .await;
    assert_eq!(
        (after["labelled"].as_i64(), after["unlabelled"].as_i64()),
        (Some(2), Some(0))
    );
    // 0.8 → 1 right, 0.3 → 0 wrong.
    assert!(close(&after["metrics"]["accuracy"], 0.5), "{after}");
    assert!(close(&after["metrics"]["recall"], 0.5), "{after}");
}

#[tokio::test]
async fn late_and_missing_labels_are_counted() {
    let m = mon_app(MonitoringSettings::default()).await;
    let now = now_ms();
    m.log_predictions(vec![
        prediction("old-1", "m", "1", now - 120 * MINUTE, json!(0.9)),
        prediction("old-2", "m", "1", now - 90 * MINUTE, json!(0.9)),
        prediction("new-1", "m", "1", now - 30 * MINUTE, json!(0.9)),
        prediction("new-2", "m", "1", now - 20 * MINUTE, json!(0.9)),
        prediction("new-3", "m", "1", now - 10 * MINUTE, json!(0.9)),
    ])
    .await;
    // Labels for the two old predictions arrive within the last hour: late for the 1h window.
    m.log_labels(vec![
        label("old-1", json!(1), now - 5 * MINUTE),
        label("old-2", json!(1), now - 4 * MINUTE),
        label("new-1", json!(1), now - 3 * MINUTE),
    ])
    .await;
    let hour = m
        .quality(&format!("model_name=m&model_version=1&window=1h&end_time={now}"))
        .await;
    assert_eq!(hour["predictions"], 3);
    assert_eq!(hour["labelled"], 1);
    assert_eq!(hour["unlabelled"], 2, "missing labels");
    assert_eq!(hour["late_labels"], 2);
    let three = m
        .quality(&format!("model_name=m&model_version=1&window=3h&end_time={now}"))
        .await;
    assert_eq!(
        (three["predictions"].as_i64(), three["labelled"].as_i64()),
        (Some(5), Some(3))
    );
    assert_eq!(
        three["late_labels"], 0,
        "inside a 3h window those labels are not late"
    );
    assert_eq!(three["evaluated"], 3);
}

#[tokio::test]
async fn quality_matches_hand_computed_values() {
    let m = mon_app(MonitoringSettings::default()).await;
    let now = now_ms();
    // The quality.rs example: scores, labels ("yes" = positive), outputs with the score second.
    let scores = [0.1, 0.4, 0.35, 0.8, 0.8, 0.6];
    let labels = ["no", "no", "yes", "yes", "no", "yes"];
    let mut preds = Vec::new();
    let mut truth = Vec::new();
    for (i, (s, l)) in scores.iter().zip(labels).enumerate() {
        let id = format!("c{i}");
        preds.push(prediction(
            &id,
            "clf",
            "7",
            now - MINUTE,
            json!({"label": "x", "proba": [1.0 - s, s]}),
        ));
        truth.push(label(&id, json!(l), now));
    }
    m.log_predictions(preds).await;
    m.log_labels(truth).await;
    let q = m
        .quality(&format!(
            "model_name=clf&model_version=7&end_time={now}&score_field=/proba/1&positive_label=yes"
        ))
        .await;
    let metrics = &q["metrics"];
    for (name, want) in [
        ("accuracy", 4.0 / 6.0),
        ("precision", 2.0 / 3.0),
        ("recall", 2.0 / 3.0),
        ("f1", 2.0 / 3.0),
        ("roc_auc", 5.5 / 9.0),
        ("log_loss", 0.6682358919061326),
    ] {
        assert!(
            metrics[name].as_f64().is_some_and(|v| (v - want).abs() < 1e-9),
            "{name}: {metrics}"
        );
    }
    // A higher threshold: only the two 0.8s are positive.
    let strict = m
        .quality(&format!(
            "model_name=clf&model_version=7&end_time={now}&score_field=/proba/1&positive_label=yes&threshold=0.7"
        ))
        .await;
    assert!(close(&strict["metrics"]["precision"], 0.5), "{strict}");
    // Regression: scikit-learn's documentation example.
    let actual = [3.0, -0.5, 2.0, 7.0];
    let predicted = [2.5, 0.0, 2.0, 8.0];
    let preds = (0..4)
        .map(|i| {
            prediction(
                &format!("r{i}"),
                "reg",
                "1",
                now - MINUTE,
                json!({"predictions": [predicted[i]]}),
            )
        })
        .collect();
    m.log_predictions(preds).await;
    m.log_labels(
        (0..4)
            .map(|i| label(&format!("r{i}"), json!(actual[i]), now))
            .collect(),
    )
    .await;
    let r = m
        .quality(&format!("model_name=reg&task=regression&end_time={now}"))
        .await;
    assert!(r.get("model_version").is_none(), "all versions: {r}");
    assert_eq!(r["task"], "regression");
    for (name, want) in [
        ("mse", 0.375),
        ("rmse", 0.6123724356957945),
        ("mae", 0.5),
        ("r2", 0.9486081370449679),
    ] {
        assert!(close(&r["metrics"][name], want), "{name}: {r}");
    }
}

#[tokio::test]
async fn bad_input_is_refused_and_nothing_is_stored() {
    let settings = MonitoringSettings {
        max_payload_bytes: 256,
        max_batch_size: 3,
        ..Default::default()
    };
    let m = mon_app(settings).await;
    let now = now_ms();
    let good = |id: &str| prediction(id, "m", "1", now - MINUTE, json!(0.5));
    let cases: Vec<(Value, StatusCode, &str)> = vec![
        // Oversize payload (one item of three).
        (
            json!({"predictions": [good("a"), prediction("b", "m", "1", now, json!({"big": "x".repeat(300)}))]}),
            StatusCode::BAD_REQUEST,
            "INVALID_PARAMETER_VALUE",
        ),
        // Too many in one batch.
        (
            json!({"predictions": [good("a"), good("b"), good("c"), good("d")]}),
            StatusCode::BAD_REQUEST,
            "INVALID_PARAMETER_VALUE",
        ),
        // Wrong types.
        (
            json!({"predictions": [good("a"), {"request_id": "b", "model_name": {"x": 1}, "model_version": "1", "outputs": 1}]}),
            StatusCode::BAD_REQUEST,
            "INVALID_PARAMETER_VALUE",
        ),
        (
            json!({"predictions": [good("a"), {"request_id": "b", "model_name": "m", "model_version": "1", "timestamp": "soon", "outputs": 1}]}),
            StatusCode::BAD_REQUEST,
            "INVALID_PARAMETER_VALUE",
        ),
        (
            json!({"predictions": [good("a"), {"request_id": "b", "model_name": "m", "model_version": "1", "timestamp": -5, "outputs": 1}]}),
            StatusCode::BAD_REQUEST,
            "INVALID_PARAMETER_VALUE",
        ),
        (
            json!({"predictions": "nope"}),
            StatusCode::BAD_REQUEST,
            "INVALID_PARAMETER_VALUE",
        ),
        // Missing fields.
        (
            json!({"predictions": [good("a"), {"request_id": "b", "model_name": "m", "model_version": "1"}]}),
            StatusCode::BAD_REQUEST,
            "INVALID_PARAMETER_VALUE",
        ),
        (
            json!({"predictions": [good("a"), {"model_name": "m", "model_version": "1", "outputs": 1}]}),
            StatusCode::BAD_REQUEST,
            "INVALID_PARAMETER_VALUE",
        ),
        (json!({}), StatusCode::BAD_REQUEST, "INVALID_PARAMETER_VALUE"),
    ];
    for (body, status, code) in cases {
        let (got, resp) = m.post("predictions/log-batch", body.clone()).await;
        assert_error(got, &resp, status, code);
        let msg = resp["message"].as_str().unwrap();
        assert!(!msg.contains("Internal"), "{msg}");
    }
    let label_cases = [
        json!({"ground_truth": [label("a", json!(1), now), label("b", json!(true), now)]}),
        json!({"ground_truth": [label("a", json!(1), now), label("b", json!({"v": 1}), now)]}),
        json!({"ground_truth": [label("a", json!(1), now), label("b", Value::Null, now)]}),
        json!({"ground_truth": [label("a", json!(1), now), {"actual": 1}]}),
        json!({"ground_truth": [label("a", json!(1), now), label("b", json!(1), now), label("c", json!(1), now), label("d", json!(1), now)]}),
    ];
    for body in label_cases {
        let (got, resp) = m.post("ground-truth/log-batch", body.clone()).await;
        assert_error(got, &resp, StatusCode::BAD_REQUEST, "INVALID_PARAMETER_VALUE");
    }
    // Malformed JSON and a wrong content type.
    let (status, bytes) = m
        .app
        .send_raw(
            Request::post("/api/2.0/mlkube/predictions/log-batch")
                .header("content-type", "application/json")
                .body(Body::from("{\"predictions\": ["))
                .unwrap(),
        )
        .await;
    let resp: Value = serde_json::from_slice(&bytes).unwrap();
    assert_error(status, &resp, StatusCode::BAD_REQUEST, "BAD_REQUEST");
    let (status, bytes) = m
        .app
        .send_raw(
            Request::post("/api/2.0/mlkube/predictions/log-batch")
                .header("content-type", "text/plain")
                .body(Body::from(json!({"predictions": [good("z")]}).to_string()))
                .unwrap(),
        )
        .await;
    let resp: Value = serde_json::from_slice(&bytes).unwrap();
    assert_error(status, &resp, StatusCode::BAD_REQUEST, "INVALID_PARAMETER_VALUE");
    // Nothing of the above was stored, not even the good items of the refused batches.
    let q = m
        .quality(&format!("model_name=m&window=7d&end_time={}", now + MINUTE))
        .await;
    assert_eq!(
        (q["predictions"].as_i64(), q["labelled"].as_i64()),
        (Some(0), Some(0)),
        "{q}"
    );
    let late = m
        .quality(&format!("model_name=m&window=7d&end_time={}", now + MINUTE))
        .await;
    assert_eq!(late["late_labels"], 0);

    // Bad quality queries.
    for query in [
        "model_version=1",
        "model_name=m&window=1x",
        "model_name=m&window=0m",
        "model_name=m&window=400d",
        "model_name=m&task=ranking",
        "model_name=m&score_field=predictions",
        "model_name=m&threshold=abc",
        "model_name=m&end_time=yesterday",
    ] {
        let (status, resp) = m.get(&format!("quality/get?{query}")).await;
        assert_error(status, &resp, StatusCode::BAD_REQUEST, "INVALID_PARAMETER_VALUE");
    }
    let (status, resp) = m.get("quality/get?model_name=m&window=1x").await;
    assert!(
        resp["message"].as_str().unwrap().contains("30m, 1h, 24h, 7d"),
        "{resp} {status}"
    );

    // Bad monitors: unknown metric, bad window, bad direction, missing threshold.
    let base =
        json!({"name": "n", "model_name": "m", "metric": "accuracy", "window": "1h", "threshold": 0.9});
    for (field, value) in [
        ("metric", json!("auc")),
        ("window", json!("soon")),
        ("direction", json!("sideways")),
        ("threshold", json!("NaN")),
        ("min_samples", json!(0)),
        ("score_field", json!("no-slash")),
        ("webhook_url", json!("ftp://example.com/x")),
    ] {
        let mut body = base.clone();
        body[field] = value;
        let (status, resp) = m.post("monitors/create", body).await;
        assert_error(status, &resp, StatusCode::BAD_REQUEST, "INVALID_PARAMETER_VALUE");
    }
    let (status, resp) = m
        .post(
            "monitors/create",
            json!({"name": "n", "model_name": "m", "metric": "auc", "window": "1h", "threshold": 1}),
        )
        .await;
    assert!(
        resp["message"].as_str().unwrap().contains("roc_auc"),
        "{resp} {status}"
    );
    let mut missing = base.clone();
    missing.as_object_mut().unwrap().remove("threshold");
    let (status, resp) = m.post("monitors/create", missing).await;
    assert_error(status, &resp, StatusCode::BAD_REQUEST, "INVALID_PARAMETER_VALUE");
    let (_, list) = m.get("monitors/list").await;
    assert_eq!(list["monitors"], json!([]), "no monitor was stored");
}

#[tokio::test]
async fn monitor_crud() {
    let m = mon_app(MonitoringSettings::default()).await;
    let created = m
        .create_monitor(
            json!({"name": "acc", "model_name": "m", "model_version": "3", "metric": "accuracy",
                               "window": "24h", "threshold": 0.9}),
        )
        .await;
    let id = created["monitor_id"].as_str().unwrap().to_owned();
    assert_eq!(
        created["direction"], "below",
        "accuracy alerts below its threshold by default"
    );
    assert_eq!(created["state"], "OK");
    assert_eq!(created["window"], "24h");
    assert_eq!(created["min_samples"], 1);
    let other = m
        .create_monitor(
            json!({"name": "loss", "model_name": "other", "metric": "log_loss", "window": "7d",
                               "threshold": 0.7, "positive_label": "yes", "decision_threshold": 0.4}),
        )
        .await;
    assert_eq!(other["direction"], "above");
    assert!(other.get("model_version").is_none());

    let (status, dup) = m
        .post(
            "monitors/create",
            json!({"name": "acc", "model_name": "x", "metric": "f1", "window": "1h", "threshold": 1}),
        )
        .await;
    assert_error(status, &dup, StatusCode::BAD_REQUEST, "RESOURCE_ALREADY_EXISTS");

    let (status, got) = m.get(&format!("monitors/get?monitor_id={id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(got["monitor"], created);
    let (_, by_name) = m.get("monitors/get?name=acc").await;
    assert_eq!(by_name["monitor"]["monitor_id"], id.as_str());
    let (_, all) = m.get("monitors/list").await;
    assert_eq!(all["monitors"].as_array().unwrap().len(), 2);
    assert_eq!(all["monitors"][0]["name"], "acc", "oldest first");
    let (_, filtered) = m.get("monitors/list?model_name=other").await;
    assert_eq!(filtered["monitors"].as_array().unwrap().len(), 1);

    let (status, updated) = m
        .app
        .call(
            Method::PATCH,
            "/api/2.0/mlkube/monitors/update",
            Some(json!({"monitor_id": id, "threshold": 0.95, "name": "acc-strict", "model_version": ""})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    let updated = &updated["monitor"];
    assert_eq!(updated["threshold"], 0.95);
    assert_eq!(updated["name"], "acc-strict");
    assert!(updated.get("model_version").is_none(), "cleared: all versions");
    assert!(updated["last_updated_timestamp"].as_i64() >= created["last_updated_timestamp"].as_i64());
    let (status, metric_change) = m
        .app
        .call(
            Method::PATCH,
            "/api/2.0/mlkube/monitors/update",
            Some(json!({"monitor_id": id, "metric": "mae"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        metric_change["monitor"]["direction"], "above",
        "a new metric takes its natural direction"
    );
    for (body, code, status) in [
        (
            json!({"monitor_id": id, "metric": "nope"}),
            "INVALID_PARAMETER_VALUE",
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"monitor_id": id, "window": "1y"}),
            "INVALID_PARAMETER_VALUE",
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"monitor_id": id, "name": "loss"}),
            "RESOURCE_ALREADY_EXISTS",
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"monitor_id": "missing", "threshold": 1}),
            "RESOURCE_DOES_NOT_EXIST",
            StatusCode::NOT_FOUND,
        ),
        (
            json!({"threshold": 1}),
            "INVALID_PARAMETER_VALUE",
            StatusCode::BAD_REQUEST,
        ),
    ] {
        let (got, resp) = m
            .app
            .call(Method::PATCH, "/api/2.0/mlkube/monitors/update", Some(body))
            .await;
        assert_error(got, &resp, status, code);
    }

    let (status, _) = m
        .app
        .call(
            Method::DELETE,
            "/api/2.0/mlkube/monitors/delete",
            Some(json!({"monitor_id": id})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, resp) = m.get(&format!("monitors/get?monitor_id={id}")).await;
    assert_error(status, &resp, StatusCode::NOT_FOUND, "RESOURCE_DOES_NOT_EXIST");
    let (status, resp) = m
        .app
        .call(
            Method::DELETE,
            "/api/2.0/mlkube/monitors/delete",
            Some(json!({"monitor_id": id})),
        )
        .await;
    assert_error(status, &resp, StatusCode::NOT_FOUND, "RESOURCE_DOES_NOT_EXIST");
    // The query string works too, and so does the ajax prefix.
    let (status, _) = m
        .app
        .call(
            Method::DELETE,
            "/ajax-api/2.0/mlkube/monitors/delete?name=loss",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, all) = m.get("monitors/list").await;
    assert_eq!(all["monitors"], json!([]));
}

#[tokio::test]
async fn private_webhook_targets_are_refused_without_the_flag() {
    let m = mon_app(MonitoringSettings::default()).await;
    for url in [
        "http://127.0.0.1:9/hook",
        "http://localhost:8080/hook",
        "http://169.254.169.254/latest",
        "http://[::1]/x",
        "http://10.0.0.8/x",
    ] {
        let (status, resp) = m
            .post(
                "monitors/create",
                json!({"name": "n", "model_name": "m", "metric": "f1", "window": "1h", "threshold": 0.5, "webhook_url": url}),
            )
            .await;
        assert_error(status, &resp, StatusCode::BAD_REQUEST, "INVALID_PARAMETER_VALUE");
        assert!(
            resp["message"]
                .as_str()
                .unwrap()
                .contains("--monitoring-allow-private-webhooks"),
            "{resp}"
        );
    }
    let ok = m
        .create_monitor(
            json!({"name": "n", "model_name": "m", "metric": "f1", "window": "1h", "threshold": 0.5,
                               "webhook_url": "https://hooks.example.com/services/T000/B000/XXXX"}),
        )
        .await;
    assert_eq!(
        ok["webhook_url"],
        "https://hooks.example.com/services/T000/B000/XXXX"
    );
}

/// An in-process webhook receiver: answers 503 to the first `fail_first` requests, then records.
struct Receiver {
    url: String,
    attempts: Arc<AtomicUsize>,
    received: Arc<Mutex<Vec<Value>>>,
}

#[derive(Clone)]
struct ReceiverState {
    fail_first: usize,
    attempts: Arc<AtomicUsize>,
    received: Arc<Mutex<Vec<Value>>>,
}

async fn receiver(fail_first: usize) -> Receiver {
    let state = ReceiverState {
        fail_first,
        attempts: Arc::new(AtomicUsize::new(0)),
        received: Arc::new(Mutex::new(Vec::new())),
    };
    let app = Router::new()
        .route(
            "/hook",
            post(
                |State(s): State<ReceiverState>, body: axum::Json<Value>| async move {
                    let n = s.attempts.fetch_add(1, Ordering::SeqCst);
                    if n < s.fail_first {
                        return StatusCode::SERVICE_UNAVAILABLE;
                    }
                    s.received.lock().unwrap().push(body.0);
                    StatusCode::OK
                },
            ),
        )
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Receiver {
        url: format!("http://{addr}/hook"),
        attempts: state.attempts,
        received: state.received,
    }
}

impl Receiver {
    async fn wait_for(&self, n: usize) -> Vec<Value> {
        for _ in 0..200 {
            let got = self.received.lock().unwrap().clone();
            if got.len() >= n {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!(
            "webhook receiver got {:?}, wanted {n} notifications",
            self.received.lock().unwrap()
        );
    }
}

#[tokio::test]
async fn a_monitor_fires_and_resolves_and_its_webhook_records_both() {
    let m = mon_app(private_webhooks()).await;
    let hook = receiver(0).await;
    // Before any evaluation: no quality series (families without series are not printed), the
    // notification counters start at zero.
    let text = m.scrape().await;
    assert!(!text.contains("mlflow_model_quality"), "{text}");
    assert!(text.contains("mlkube_monitoring_webhook_notifications_total{outcome=\"dropped\"} 0"));

    let monitor = m
        .create_monitor(json!({"name": "fraud-accuracy", "model_name": "fraud", "model_version": "1",
                               "metric": "accuracy", "window": "1h", "threshold": 0.8, "webhook_url": hook.url}))
        .await;
    let id = monitor["monitor_id"].as_str().unwrap().to_owned();
    // No data yet: nothing to judge, the state stays OK.
    let idle = m.evaluate(&id).await;
    assert_eq!(idle["state"], "OK");
    assert!(idle.get("last_value").is_none());

    let now = now_ms();
    let first: Vec<Value> = (0..10)
        .map(|i| {
            prediction(
                &format!("f{i}"),
                "fraud",
                "1",
                now - 2 * MINUTE,
                json!({"predictions": [0.9]}),
            )
        })
        .collect();
    m.log_predictions(first).await;
    m.log_labels(
        (0..10)
            .map(|i| label(&format!("f{i}"), json!(i % 2), now))
            .collect(),
    )
    .await;
    let firing = m.evaluate(&id).await;
    assert_eq!(firing["state"], "FIRING", "{firing}");
    assert_eq!(firing["last_value"], 0.5);
    let got = hook.wait_for(1).await;
    assert_eq!(got[0]["state"], "FIRING");
    assert_eq!(got[0]["previous_state"], "OK");
    assert_eq!(got[0]["monitor"], "fraud-accuracy");
    assert_eq!(got[0]["monitor_id"], id.as_str());
    assert_eq!(got[0]["value"], 0.5);
    assert_eq!(got[0]["threshold"], 0.8);
    assert!(got[0]["text"].as_str().unwrap().contains("FIRING"));

    let text = m.scrape().await;
    for family in [
        "mlflow_model_quality gauge",
        "mlflow_model_quality_predictions gauge",
        "mlflow_model_quality_labelled gauge",
        "mlflow_model_quality_unlabelled gauge",
        "mlflow_model_quality_late_labels gauge",
        "mlflow_model_quality_threshold_breached gauge",
        "mlkube_monitoring_webhook_notifications_total counter",
    ] {
        assert!(
            text.contains(&format!("# TYPE {family}")),
            "missing {family} in\n{text}"
        );
    }
    for needle in [
        "mlflow_model_quality_threshold_breached{model_name=\"fraud\",model_version=\"1\",metric=\"accuracy\",window=\"1h\",monitor=\"fraud-accuracy\"} 1",
        "mlflow_model_quality{model_name=\"fraud\",model_version=\"1\",metric=\"accuracy\",window=\"1h\"} 0.5",
        "mlflow_model_quality{model_name=\"fraud\",model_version=\"1\",metric=\"roc_auc\",window=\"1h\"} 0.5",
        "mlflow_model_quality_predictions{model_name=\"fraud\",model_version=\"1\",window=\"1h\"} 10",
        "mlflow_model_quality_labelled{model_name=\"fraud\",model_version=\"1\",window=\"1h\"} 10",
        "mlflow_model_quality_unlabelled{model_name=\"fraud\",model_version=\"1\",window=\"1h\"} 0",
        "mlflow_model_quality_late_labels{model_name=\"fraud\",model_version=\"1\",window=\"1h\"} 0",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in\n{text}");
    }
    assert!(
        !text.contains("request_id") && !text.contains("f0"),
        "no request data in labels"
    );

    // Still bad: stays FIRING, no second notification.
    assert_eq!(m.evaluate(&id).await["state"], "FIRING");
    // Thirty right answers bring accuracy to 35/40.
    let good: Vec<Value> = (0..30)
        .map(|i| {
            prediction(
                &format!("g{i}"),
                "fraud",
                "1",
                now - MINUTE,
                json!({"predictions": [0.9]}),
            )
        })
        .collect();
    m.log_predictions(good).await;
    m.log_labels((0..30).map(|i| label(&format!("g{i}"), json!(1), now)).collect())
        .await;
    let resolved = m.evaluate(&id).await;
    assert_eq!(resolved["state"], "RESOLVED", "{resolved}");
    assert_eq!(resolved["last_value"], 0.875);
    let got = hook.wait_for(2).await;
    assert_eq!(got.len(), 2, "one notification per state change: {got:?}");
    assert_eq!(
        (got[1]["state"].as_str(), got[1]["previous_state"].as_str()),
        (Some("RESOLVED"), Some("FIRING"))
    );
    assert_eq!(got[1]["value"], 0.875);
    // The receiver has both notifications; the notifier counts a delivery once it has read the
    // answer, a moment later.
    let delivered = "mlkube_monitoring_webhook_notifications_total{outcome=\"delivered\"} 2";
    let mut text = m.scrape().await;
    for _ in 0..100 {
        if text.contains(delivered) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        text = m.scrape().await;
    }
    assert!(text.contains(
        "mlflow_model_quality_threshold_breached{model_name=\"fraud\",model_version=\"1\",metric=\"accuracy\",window=\"1h\",monitor=\"fraud-accuracy\"} 0"
    ));
    assert!(text.contains(delivered), "{text}");
    let (_, stored) = m.get(&format!("monitors/get?monitor_id={id}")).await;
    assert_eq!(stored["monitor"]["state"], "RESOLVED", "the state is stored");

    // Deleting the monitor removes its series.
    m.app
        .call(
            Method::DELETE,
            "/api/2.0/mlkube/monitors/delete",
            Some(json!({"monitor_id": id})),
        )
        .await;
    let text = m.scrape().await;
    assert!(!text.contains("monitor=\"fraud-accuracy\""), "{text}");
    assert!(
        !text.contains("mlflow_model_quality{model_name=\"fraud\""),
        "{text}"
    );
}

#[tokio::test]
async fn webhooks_are_retried_with_backoff() {
    let m = mon_app(private_webhooks()).await;
    let hook = receiver(2).await;
    let monitor = m
        .create_monitor(
            json!({"name": "mae", "model_name": "reg", "metric": "mae", "window": "1h",
                               "threshold": 0.1, "webhook_url": hook.url}),
        )
        .await;
    let now = now_ms();
    m.log_predictions(vec![prediction("x", "reg", "1", now - MINUTE, json!(3.0))])
        .await;
    m.log_labels(vec![label("x", json!(2.0), now)]).await;
    let evaluated = m.evaluate(monitor["monitor_id"].as_str().unwrap()).await;
    assert_eq!(evaluated["state"], "FIRING");
    let got = hook.wait_for(1).await;
    assert_eq!(got[0]["metric"], "mae");
    assert_eq!(
        hook.attempts.load(Ordering::SeqCst),
        3,
        "two 503s, then delivered"
    );
}

#[tokio::test]
async fn the_scheduler_evaluates_in_the_background() {
    let mut settings = private_webhooks();
    settings.evaluation_interval = Duration::from_millis(100);
    let m = mon_app(settings).await;
    let _task = m.monitoring.spawn_scheduler("test-replica".to_owned());
    let monitor = m
        .create_monitor(
            json!({"name": "f1", "model_name": "bg", "metric": "f1", "window": "30m", "threshold": 0.9}),
        )
        .await;
    let now = now_ms();
    m.log_predictions(vec![
        prediction("a", "bg", "1", now - MINUTE, json!(0.9)),
        prediction("b", "bg", "2", now - MINUTE, json!(0.9)),
    ])
    .await;
    m.log_labels(vec![label("a", json!(0), now), label("b", json!(1), now)])
        .await;
    let id = monitor["monitor_id"].as_str().unwrap();
    for _ in 0..100 {
        let (_, got) = m.get(&format!("monitors/get?monitor_id={id}")).await;
        if got["monitor"]["state"] == "FIRING" {
            // Both versions together: one true positive, one false positive.
            assert!(close(&got["monitor"]["last_value"], 2.0 / 3.0), "{got}");
            let text = m.scrape().await;
            assert!(
                text.contains(
                    "mlflow_model_quality{model_name=\"bg\",model_version=\"\",metric=\"f1\",window=\"30m\"}"
                ),
                "{text}"
            );
            assert!(text.contains("mlkube_monitoring_last_evaluation_timestamp_seconds "));
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the scheduler never evaluated the monitor");
}

#[tokio::test]
async fn drift_against_the_first_predictions_and_an_uploaded_reference() {
    let settings = MonitoringSettings {
        reference_size: 10,
        ..Default::default()
    };
    let m = mon_app(settings).await;
    let now = now_ms();
    let with_x = |id: String, ts: i64, x: f64| {
        json!({"request_id": id, "model_name": "d", "model_version": "1", "timestamp": ts,
               "inputs": {"dataframe_split": {"columns": ["x", "name"], "data": [[x, "a"]]}}, "outputs": 0.5})
    };
    // The first ten predictions (the reference) are x = 1…10, two hours ago.
    m.log_predictions(
        (1..=10)
            .map(|i| with_x(format!("ref{i}"), now - 120 * MINUTE, f64::from(i)))
            .collect(),
    )
    .await;
    // The live hour: x piled up at 1.
    let live = [1.0, 1.0, 1.0, 1.0, 1.0, 2.0, 3.0, 4.0, 5.0, 10.0];
    m.log_predictions(
        live.iter()
            .enumerate()
            .map(|(i, x)| with_x(format!("live{i}"), now - MINUTE, *x))
            .collect(),
    )
    .await;
    let q = m
        .quality(&format!("model_name=d&model_version=1&end_time={now}&drift=true"))
        .await;
    let drift = &q["drift"];
    assert_eq!(drift["reference"], "predictions");
    assert_eq!(drift["reference_rows"], 10);
    assert_eq!(drift["live_rows"], 10);
    // The hand-computed PSI of quality.rs's test.
    assert!(close(&drift["features"]["x"], 3.404114174454902), "{q}");
    assert!(close(&q["metrics"]["psi"], 3.404114174454902), "{q}");
    assert!(
        drift["features"].get("name").is_none(),
        "strings are not numeric features"
    );
    // The reference was frozen once ten predictions existed.
    let (status, stored) = m.get("drift/reference/get?model_name=d&model_version=1").await;
    assert_eq!(status, StatusCode::OK, "{stored}");
    assert_eq!(stored["reference"]["source"], "predictions");
    assert_eq!(
        stored["reference"]["features"]["x"]["edges"]
            .as_array()
            .unwrap()
            .len(),
        9
    );

    // Upload a reference shaped like the live window: no drift.
    let (status, set) = m
        .post(
            "drift/reference/set",
            json!({"model_name": "d", "model_version": "1",
                   "inputs": [{"dataframe_records": live.iter().map(|x| json!({"x": x})).collect::<Vec<_>>()}]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{set}");
    assert_eq!(set["reference"]["source"], "uploaded");
    assert_eq!(set["reference"]["rows"], 10);
    let q = m
        .quality(&format!("model_name=d&model_version=1&end_time={now}&drift=true"))
        .await;
    assert_eq!(q["drift"]["reference"], "uploaded");
    assert!(close(&q["metrics"]["psi"], 0.0), "{q}");

    // A PSI monitor on the feature, against the uploaded reference: fine.
    let monitor = m
        .create_monitor(
            json!({"name": "drift-x", "model_name": "d", "model_version": "1", "metric": "psi:x",
                               "window": "1h", "threshold": 0.2}),
        )
        .await;
    let id = monitor["monitor_id"].as_str().unwrap().to_owned();
    assert_eq!(monitor["direction"], "above");
    assert_eq!(m.evaluate(&id).await["state"], "OK");
    // Back to the first predictions: drift, so it fires.
    let (status, _) = m
        .app
        .call(
            Method::DELETE,
            "/api/2.0/mlkube/drift/reference/delete",
            Some(json!({"model_name": "d", "model_version": "1"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let fired = m.evaluate(&id).await;
    assert_eq!(fired["state"], "FIRING", "{fired}");
    let text = m.scrape().await;
    assert!(
        text.contains("metric=\"psi:x\",window=\"1h\"} 3.404114174"),
        "{text}"
    );

    let (status, resp) = m
        .post(
            "drift/reference/set",
            json!({"model_name": "d", "inputs": [{"text": "no numbers"}]}),
        )
        .await;
    assert_error(status, &resp, StatusCode::BAD_REQUEST, "INVALID_PARAMETER_VALUE");
    let (status, resp) = m.get("drift/reference/get?model_name=nothing").await;
    assert_error(status, &resp, StatusCode::NOT_FOUND, "RESOURCE_DOES_NOT_EXIST");
}

async fn eight_predictions_20_minutes_apart(m: &MonApp, now: i64) {
    let preds = (0..8)
        .map(|i| {
            prediction(
                &format!("p{i}"),
                "m",
                "1",
                now - i64::from(i) * 20 * MINUTE,
                json!(0.5),
            )
        })
        .collect();
    m.log_predictions(preds).await;
    m.log_labels(
        (0..8)
            .map(|i| label(&format!("p{i}"), json!(1), now - i64::from(i) * 20 * MINUTE))
            .collect(),
    )
    .await;
}

#[tokio::test]
async fn retention_prunes_by_age_and_row_count() {
    let now = now_ms();
    // By age: older than an hour goes (80, 100, 120 and 140 minutes old).
    let by_age = MonitoringSettings {
        retention_age_ms: Some(60 * MINUTE),
        ..Default::default()
    };
    let m = mon_app(by_age).await;
    eight_predictions_20_minutes_apart(&m, now).await;
    let pruned = m.monitoring.prune(now).await.unwrap();
    assert_eq!((pruned.predictions, pruned.labels), (4, 4));
    let q = m.quality(&format!("model_name=m&window=7d&end_time={now}")).await;
    assert_eq!(
        (q["predictions"].as_i64(), q["labelled"].as_i64()),
        (Some(4), Some(4))
    );
    let again = m.monitoring.prune(now).await.unwrap();
    assert_eq!((again.predictions, again.labels), (0, 0), "nothing more to prune");

    // By row count: the newest three stay.
    let by_rows = MonitoringSettings {
        retention_age_ms: None,
        retention_rows: Some(3),
        ..Default::default()
    };
    let m = mon_app(by_rows).await;
    eight_predictions_20_minutes_apart(&m, now).await;
    let pruned = m.monitoring.prune(now).await.unwrap();
    assert_eq!((pruned.predictions, pruned.labels), (5, 5));
    let q = m
        .quality(&format!("model_name=m&window=45m&end_time={now}"))
        .await;
    assert_eq!(q["predictions"], 3, "p0, p1 and p2 (0, 20 and 40 minutes old)");
    let q = m.quality(&format!("model_name=m&window=7d&end_time={now}")).await;
    assert_eq!(q["labelled"], 3);
}

#[tokio::test]
async fn the_ajax_prefix_serves_the_same_api() {
    let m = mon_app(MonitoringSettings::default()).await;
    let now = now_ms();
    let (status, _) = m
        .app
        .call(
            Method::POST,
            "/ajax-api/2.0/mlkube/predictions/log-batch",
            Some(json!({"predictions": [prediction("a", "m", "1", now - MINUTE, json!(0.7))]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, q) = m
        .app
        .call(
            Method::GET,
            &format!("/ajax-api/2.0/mlkube/quality/get?model_name=m&end_time={now}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(q["quality"]["predictions"], 1);
}

fn as_user(method: Method, uri: &str, who: (&str, &str), body: Option<Value>) -> Request<Body> {
    use base64::Engine as _;
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", who.0, who.1));
    let mut req = Request::builder()
        .method(method)
        .uri(uri)
        .header("authorization", format!("Basic {token}"));
    let body = match body {
        Some(v) => {
            req = req.header("content-type", "application/json");
            Body::from(v.to_string())
        }
        None => Body::empty(),
    };
    req.body(body).unwrap()
}

#[tokio::test]
async fn under_basic_auth_users_log_and_read_and_admins_manage_monitors() {
    let app = common::test_app_with_auth(mlkube_server::auth::Permission::Read).await;
    let user = ("sidecar", "sidecar-password-1");
    let (status, body) = app
        .send(as_user(
            Method::POST,
            "/api/2.0/mlflow/users/create",
            common::ADMIN,
            Some(json!({"username": user.0, "password": user.1})),
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let now = now_ms();
    let (status, body) = app
        .send(as_user(
            Method::POST,
            "/api/2.0/mlkube/predictions/log-batch",
            user,
            Some(json!({"predictions": [prediction("a", "m", "1", now - MINUTE, json!({"p": 0.9, "q": 0.1}))]})),
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = app
        .send(as_user(
            Method::GET,
            &format!("/api/2.0/mlkube/quality/get?model_name=m&end_time={now}"),
            user,
            None,
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["quality"]["predictions"], 1);
    let monitor = json!({"name": "n", "model_name": "m", "metric": "f1", "window": "1h", "threshold": 0.5});
    let (status, body) = app
        .send(as_user(
            Method::POST,
            "/api/2.0/mlkube/monitors/create",
            user,
            Some(monitor.clone()),
        ))
        .await;
    assert_error(status, &body, StatusCode::FORBIDDEN, "PERMISSION_DENIED");
    let (status, body) = app
        .send(as_user(
            Method::POST,
            "/api/2.0/mlkube/monitors/create",
            common::ADMIN,
            Some(monitor),
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _) = app
        .send(
            Request::get("/api/2.0/mlkube/monitors/list")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
#[ignore = "needs PostgreSQL: scripts/test-all starts one and sets MLKUBE_TEST_POSTGRES_URL"]
async fn postgres_core_flow() {
    let uri = common::fresh_postgres_uri().await;
    let mut settings = private_webhooks();
    settings.reference_size = 2;
    settings.retention_age_ms = Some(600 * MINUTE);
    let m = mon_app_on(&uri, tempfile::tempdir().unwrap(), settings).await;
    let hook = receiver(0).await;
    let now = now_ms();
    m.log_predictions(vec![
        prediction("a", "pg", "1", now - MINUTE, json!({"predictions": [0.9]})),
        prediction("b", "pg", "1", now - MINUTE, json!({"predictions": [0.2]})),
        prediction("a", "pg", "1", now - MINUTE, json!({"predictions": [0.1]})),
        prediction("old", "pg", "1", now - 1000 * MINUTE, json!(0.5)),
    ])
    .await;
    m.log_labels(vec![label("a", json!(1), now), label("b", json!("0"), now)])
        .await;
    let q = m
        .quality(&format!(
            "model_name=pg&model_version=1&end_time={now}&drift=true"
        ))
        .await;
    assert_eq!(
        (q["predictions"].as_i64(), q["labelled"].as_i64()),
        (Some(2), Some(2)),
        "{q}"
    );
    assert!(close(&q["metrics"]["accuracy"], 1.0), "{q}");
    assert_eq!(q["drift"]["reference"], "predictions");
    let monitor = m
        .create_monitor(
            json!({"name": "pg-acc", "model_name": "pg", "model_version": "1", "metric": "accuracy",
                               "window": "1h", "threshold": 1.5, "webhook_url": hook.url}),
        )
        .await;
    let id = monitor["monitor_id"].as_str().unwrap().to_owned();
    assert_eq!(m.evaluate(&id).await["state"], "FIRING");
    hook.wait_for(1).await;
    let (status, updated) = m
        .app
        .call(
            Method::PATCH,
            "/api/2.0/mlkube/monitors/update",
            Some(json!({"monitor_id": id, "threshold": 0.5, "webhook_url": ""})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(m.evaluate(&id).await["state"], "RESOLVED");
    let (status, dup) = m
        .post(
            "monitors/create",
            json!({"name": "pg-acc", "model_name": "x", "metric": "f1", "window": "1h", "threshold": 1}),
        )
        .await;
    assert_error(status, &dup, StatusCode::BAD_REQUEST, "RESOURCE_ALREADY_EXISTS");
    let (status, _) = m
        .post(
            "drift/reference/set",
            json!({"model_name": "pg", "inputs": [{"x": 1}, {"x": 2}]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let pruned = m.monitoring.prune(now).await.unwrap();
    assert_eq!(
        pruned.predictions, 1,
        "the prediction older than the retention age"
    );
}

/// What tests/reliability/hostile.py found on the monitoring routes: a batch over the body limit was
/// a 400 (now MLflow's 413), a wrong method an empty 405.
#[tokio::test]
async fn oversized_batches_and_wrong_methods() {
    let m = mon_app(MonitoringSettings::default()).await;
    let big = json!({"predictions": [{"request_id": "r", "model_name": "m", "model_version": "1",
        "outputs": "x".repeat(2 << 20)}]});
    for declared in [true, false] {
        let body = big.to_string();
        let mut req =
            Request::post("/api/2.0/mlkube/predictions/log-batch").header("content-type", "application/json");
        if declared {
            req = req.header("content-length", body.len());
        }
        let (s, b) = m.app.send(req.body(Body::from(body)).unwrap()).await;
        assert_error(s, &b, StatusCode::PAYLOAD_TOO_LARGE, "BAD_REQUEST");
    }
    let (s, b) = m
        .app
        .call(Method::GET, "/api/2.0/mlkube/predictions/log-batch", None)
        .await;
    assert_error(s, &b, StatusCode::METHOD_NOT_ALLOWED, "ENDPOINT_NOT_FOUND");
}
