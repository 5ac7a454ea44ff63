//! Durability of acknowledged writes on SQLite (docs/architecture.md, "Durability"): with
//! `--sqlite-synchronous full` (the default) a write request is answered only after its commit is
//! on disk, and concurrent writers share fsyncs; with `normal` nothing waits for the disk.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use axum::http::StatusCode;
use mlkube_server::artifacts::ArtifactRoot;
use mlkube_server::db::SqliteSync;
use mlkube_server::{AppState, app};
use serde_json::json;

async fn app_with(sync: SqliteSync) -> (common::TestApp, Arc<mlkube_server::store::sql::SqlStore>) {
    let dir = tempfile::tempdir().unwrap();
    let uri = format!("sqlite:///{}", dir.path().join("mlkube.db").display());
    let store = Arc::new(
        mlkube_server::store::open_with(&uri, "mlflow-artifacts:/", sync)
            .await
            .unwrap(),
    );
    let state = AppState {
        store: store.clone(),
        artifacts: Some(Arc::new(
            ArtifactRoot::open(&dir.path().join("artifacts")).unwrap(),
        )),
        metrics: None,
        auth: None,
        monitoring: common::monitoring_for(store.clone(), None),
        ui: None,
    };
    let test = common::TestApp {
        router: app(state, 1024 * 1024),
        dir,
    };
    (test, store)
}

#[tokio::test]
async fn full_answers_writes_after_an_fsync_shared_by_concurrent_writers() {
    let (app, store) = app_with(SqliteSync::Full).await;
    let exp = app.create_experiment("durable").await;
    let run = app.create_run(&exp).await;
    let database = store.database();
    let group = database.group_commit().expect("group commit is on by default");
    let before = (group.commits(), group.fsyncs());
    assert!(
        before.1 >= 1,
        "creating the experiment and run synced: {before:?}"
    );

    let app = Arc::new(app);
    let mut tasks = Vec::new();
    for i in 0..32 {
        let (app, run) = (app.clone(), run.clone());
        tasks.push(tokio::spawn(async move {
            app.post(
                "runs/log-metric",
                json!({"run_id": run, "key": "m", "value": i, "timestamp": i, "step": i}),
            )
            .await
        }));
    }
    for t in tasks {
        let (status, body) = t.await.unwrap();
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let (commits, fsyncs) = (group.commits() - before.0, group.fsyncs() - before.1);
    assert!(commits >= 32, "each log-metric is a write transaction: {commits}");
    // Every answered write was covered by an fsync, never more than one per commit.
    assert!(
        (1..=commits).contains(&fsyncs),
        "{fsyncs} fsyncs for {commits} commits"
    );

    // Reads neither write nor wait for the disk.
    let fsyncs_before_reads = group.fsyncs();
    let (status, _) = app
        .get(&format!("metrics/get-history?run_id={run}&metric_key=m"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(group.fsyncs(), fsyncs_before_reads);

    // A failed write (unknown run) changes nothing on disk but is still answered as before.
    let (status, body) = app
        .post(
            "runs/log-metric",
            json!({"run_id": "0123456789abcdef0123456789abcdef", "key": "m", "value": 1, "timestamp": 1}),
        )
        .await;
    common::assert_error(status, &body, StatusCode::NOT_FOUND, "RESOURCE_DOES_NOT_EXIST");
}

#[tokio::test]
async fn normal_does_not_wait_for_the_disk() {
    let (app, store) = app_with(SqliteSync::Normal).await;
    let exp = app.create_experiment("fast").await;
    app.create_run(&exp).await;
    assert!(store.database().group_commit().is_none());
}

#[tokio::test]
async fn settings_default_to_full_and_accept_normal() {
    use clap::Parser;
    let parse = |args: &[&str]| {
        let mut argv = vec!["mlkube-server"];
        argv.extend_from_slice(args);
        mlkube_server::config::Args::try_parse_from(argv)
            .unwrap()
            .resolve(|_| None)
    };
    assert_eq!(parse(&[]).unwrap().sqlite_sync, SqliteSync::Full);
    assert_eq!(
        parse(&["--sqlite-synchronous", "normal"]).unwrap().sqlite_sync,
        SqliteSync::Normal
    );
    assert!(
        mlkube_server::config::Args::try_parse_from(["mlkube-server", "--sqlite-synchronous", "off"])
            .is_err()
    );
}

/// Found by the crash scenario (tests/reliability): JSON numbers must parse to the nearest double,
/// or a logged value comes back one unit in the last place off.
#[tokio::test]
async fn metric_values_round_trip_exactly() {
    let (app, _store) = app_with(SqliteSync::Full).await;
    let exp = app.create_experiment("exact").await;
    let run = app.create_run(&exp).await;
    let values = [
        0.484_734_727_391_672_67_f64,
        0.029_655_151_779_904_854,
        0.974_015_807_961_447_9,
    ];
    let metrics: Vec<_> = values
        .iter()
        .enumerate()
        .map(|(i, v)| json!({"key": "x", "value": v, "timestamp": 1, "step": i}))
        .collect();
    let (status, body) = app
        .post("runs/log-batch", json!({"run_id": run, "metrics": metrics}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, body) = app
        .get(&format!("metrics/get-history?run_id={run}&metric_key=x"))
        .await;
    let mut got: Vec<(i64, f64)> = body["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["step"].as_i64().unwrap(), m["value"].as_f64().unwrap()))
        .collect();
    got.sort_by_key(|m| m.0);
    let want: Vec<(i64, f64)> = values.iter().enumerate().map(|(i, v)| (i as i64, *v)).collect();
    assert_eq!(got, want);
}
