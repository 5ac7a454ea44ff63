//! `/metrics`: request metrics under route templates, statistics refreshed in the background, and
//! promtool's verdict on the exposition.
#![allow(clippy::unwrap_used, clippy::panic)] // test helpers may fail loudly

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use common::test_app;
use mlkube_server::prometheus::{ServerMetrics, spawn_statistics};
use serde_json::json;

async fn scrape(app: &common::TestApp) -> String {
    let (status, bytes) = app
        .send_raw(Request::get("/metrics").body(Body::empty()).unwrap())
        .await;
    assert_eq!(status, StatusCode::OK);
    String::from_utf8(bytes).unwrap()
}

#[tokio::test]
async fn request_metrics_use_route_templates() {
    let app = test_app().await;
    let run = app.create_run("0").await;
    app.get(&format!("runs/get?run_id={run}")).await;
    app.get("runs/get?run_id=missing").await;
    app.call(
        Method::GET,
        "/api/2.0/mlflow-artifacts/artifacts/0/secret-looking-path/x.txt",
        None,
    )
    .await;
    app.call(Method::GET, "/no/such/route", None).await;
    app.call(Method::GET, "/health", None).await;
    let text = scrape(&app).await;
    for needle in [
        "mlflow_http_request_total{method=\"GET\",status=\"200\",endpoint=\"/api/2.0/mlflow/runs/get\"} 1",
        "mlflow_http_request_total{method=\"GET\",status=\"404\",endpoint=\"/api/2.0/mlflow/runs/get\"} 1",
        "mlflow_http_request_total{method=\"POST\",status=\"200\",endpoint=\"/api/2.0/mlflow/runs/create\"} 1",
        "endpoint=\"/api/2.0/mlflow-artifacts/artifacts/{*path}\"",
        "endpoint=\"unmatched\"",
        "mlflow_http_request_duration_seconds_bucket{le=\"0.005\",method=\"GET\",mlflow_version=",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in\n{text}");
    }
    assert!(
        !text.contains("secret-looking-path"),
        "raw paths must never become labels"
    );
    assert!(
        !text.contains("endpoint=\"/health\""),
        "/health is excluded like upstream"
    );
}

#[tokio::test]
async fn statistics_follow_the_data_after_the_interval() {
    let dir = tempfile::tempdir().unwrap();
    let store = mlkube_server::store::open(
        &format!("sqlite:///{}", dir.path().join("s.db").display()),
        "mlflow-artifacts:/",
    )
    .await
    .unwrap();
    let schedule = mlkube_server::store::schedule::Schedule::new(
        store.database(),
        "statistics",
        Duration::from_millis(100),
        "test-replica".to_owned(),
    );
    let store: Arc<dyn mlkube_server::store::Store> = Arc::new(store);
    let metrics = Arc::new(ServerMetrics::new());
    spawn_statistics(store.clone(), None, metrics.clone(), schedule);
    let wait_for = |needle: &'static str| {
        let metrics = metrics.clone();
        async move {
            for _ in 0..100 {
                if metrics.encode().unwrap().contains(needle) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            panic!(
                "statistics never showed {needle:?}:\n{}",
                metrics.encode().unwrap()
            );
        }
    };
    wait_for("mlflow_experiment_count{mlflow_version=\"2.17.2\"} 1").await;
    store.create_experiment("more", None, &[]).await.unwrap();
    store
        .create_run(mlkube_server::store::NewRun {
            experiment_id: "0".into(),
            user_id: "alice".into(),
            run_name: "r".into(),
            start_time: 1,
            tags: vec![],
        })
        .await
        .unwrap();
    store.create_registered_model("m", None, &[], None).await.unwrap();
    wait_for("mlflow_experiment_count{mlflow_version=\"2.17.2\"} 2").await;
    wait_for("mlflow_run_count{status=\"RUNNING\",mlflow_version=\"2.17.2\"} 1").await;
    wait_for("mlflow_registered_model_count{mlflow_version=\"2.17.2\"} 1").await;
    wait_for("mlflow_user_count{mlflow_version=\"2.17.2\"} 1").await;
}

#[tokio::test]
#[ignore = "needs promtool from Debian's prometheus package; scripts/test-all installs it and runs ignored tests"]
async fn promtool_accepts_the_exposition() {
    let app = test_app().await;
    let run = app.create_run("0").await;
    app.post(
        "runs/log-metric",
        json!({ "run_id": run, "key": "m", "value": 1, "timestamp": 1 }),
    )
    .await;
    let text = scrape(&app).await;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool must be installed (apt-get install prometheus)");
    use std::io::Write;
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "promtool rejected the exposition:\n{report}\n{text}"
    );
}
