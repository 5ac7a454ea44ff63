//! Shared helpers for the server's HTTP tests: an app on a fresh SQLite database and artifact
//! directory, and a one-call request helper.
#![allow(dead_code, clippy::unwrap_used, clippy::panic)]

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use mlkube_server::artifacts::ArtifactRoot;
use mlkube_server::{AppState, app};
use serde_json::Value;
use tower::ServiceExt;

pub struct TestApp {
    pub router: Router,
    pub dir: tempfile::TempDir,
}

pub async fn test_app() -> TestApp {
    test_app_ui(false).await
}

/// A stand-in for MLflow's UI build in `dir/ui`: an index page and one hashed script.
pub fn fake_ui(dir: &std::path::Path) -> mlkube_server::ui::Ui {
    let build = dir.join("ui");
    std::fs::create_dir_all(build.join("static/js")).unwrap();
    std::fs::write(
        build.join("index.html"),
        "<!doctype html><html><body><div id=\"root\">mlflow ui</div><script src=\"static-files/static/js/main.abc123.js\"></script></body></html>",
    )
    .unwrap();
    std::fs::write(
        build.join("static/js/main.abc123.js"),
        "console.log('ui');\n".repeat(500),
    )
    .unwrap();
    mlkube_server::ui::Ui::Build(Arc::new(mlkube_server::ui::UiBuild::open(&build).unwrap()))
}

/// [`test_app`], serving [`fake_ui`] when `with_ui`.
pub async fn test_app_ui(with_ui: bool) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("mlkube.db");
    let store = mlkube_server::store::open(&format!("sqlite:///{}", db.display()), "mlflow-artifacts:/")
        .await
        .unwrap();
    let artifacts = ArtifactRoot::open(&dir.path().join("artifacts")).unwrap();
    let store = Arc::new(store);
    let metrics = Arc::new(mlkube_server::prometheus::ServerMetrics::new());
    let state = AppState {
        store: store.clone(),
        artifacts: Some(Arc::new(artifacts)),
        monitoring: monitoring_for(store, Some(&metrics)),
        ui: with_ui.then(|| fake_ui(dir.path())),
        metrics: Some(metrics),
        auth: None,
    };
    TestApp {
        router: app(state, 1024 * 1024),
        dir,
    }
}

/// The artifact proxy alone (`--artifacts-only`) on an in-memory placeholder store, with /metrics.
pub async fn test_artifacts_only_app() -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        mlkube_server::store::open("sqlite:///:memory:", "mlflow-artifacts:/")
            .await
            .unwrap(),
    );
    let metrics = Arc::new(mlkube_server::prometheus::ServerMetrics::new());
    let state = AppState {
        store: store.clone(),
        artifacts: Some(Arc::new(
            ArtifactRoot::open(&dir.path().join("artifacts")).unwrap(),
        )),
        monitoring: monitoring_for(store, Some(&metrics)),
        ui: None,
        metrics: Some(metrics),
        auth: None,
    };
    TestApp {
        router: mlkube_server::api::artifacts_app(state, 1024 * 1024),
        dir,
    }
}

/// Monitoring with default settings over `store`, exporting into `metrics` when given.
pub fn monitoring_for(
    store: Arc<mlkube_server::store::sql::SqlStore>,
    metrics: Option<&mlkube_server::prometheus::ServerMetrics>,
) -> Arc<mlkube_server::quality::QualityMonitoring> {
    mlkube_server::quality::QualityMonitoring::new(
        store.database(),
        metrics.map(|m| m.quality.clone()),
        Default::default(),
    )
}

/// The admin of [`test_app_with_auth`].
pub const ADMIN: (&str, &str) = ("admin", "admin-password-for-tests");

/// An app with basic auth on (`--app-name basic-auth`), its users in a SQLite file next to the
/// tracking database, admin [`ADMIN`], and `default_permission` for resources without a row.
pub async fn test_app_with_auth(default_permission: mlkube_server::auth::Permission) -> TestApp {
    test_app_with_auth_ui(default_permission, false).await
}

/// [`test_app_with_auth`], serving [`fake_ui`] when `with_ui`.
pub async fn test_app_with_auth_ui(
    default_permission: mlkube_server::auth::Permission,
    with_ui: bool,
) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("mlkube.db");
    let sql_store = Arc::new(
        mlkube_server::store::open(&format!("sqlite:///{}", db.display()), "mlflow-artifacts:/")
            .await
            .unwrap(),
    );
    let store: Arc<dyn mlkube_server::store::Store> = sql_store.clone();
    let config = mlkube_server::auth::AuthConfig::new(
        format!("sqlite:///{}", dir.path().join("basic_auth.db").display()),
        ADMIN.0,
        ADMIN.1,
        default_permission,
    )
    .unwrap();
    let auth = mlkube_server::auth::Auth::open(&config, store.clone())
        .await
        .unwrap();
    let artifacts = ArtifactRoot::open(&dir.path().join("artifacts")).unwrap();
    let state = AppState {
        store,
        artifacts: Some(Arc::new(artifacts)),
        metrics: None,
        auth: Some(Arc::new(auth)),
        monitoring: monitoring_for(sql_store, None),
        ui: with_ui.then(|| fake_ui(dir.path())),
    };
    TestApp {
        router: app(state, 1024 * 1024),
        dir,
    }
}

impl TestApp {
    /// Send a request; JSON bodies get `Content-Type: application/json`.
    pub async fn call(&self, method: Method, uri: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut req = Request::builder().method(method).uri(uri);
        let body = match body {
            Some(v) => {
                req = req.header("content-type", "application/json");
                Body::from(v.to_string())
            }
            None => Body::empty(),
        };
        self.send(req.body(body).unwrap()).await
    }

    pub async fn send(&self, req: Request<Body>) -> (StatusCode, Value) {
        let (status, bytes) = self.send_raw(req).await;
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()))
        };
        (status, value)
    }

    pub async fn send_raw(&self, req: Request<Body>) -> (StatusCode, Vec<u8>) {
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes().to_vec();
        (status, bytes)
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, &format!("/api/2.0/mlflow/{path}"), Some(body))
            .await
    }

    pub async fn get(&self, path_and_query: &str) -> (StatusCode, Value) {
        self.call(Method::GET, &format!("/api/2.0/mlflow/{path_and_query}"), None)
            .await
    }

    pub async fn create_experiment(&self, name: &str) -> String {
        let (status, body) = self
            .post("experiments/create", serde_json::json!({ "name": name }))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["experiment_id"].as_str().unwrap().to_owned()
    }

    pub async fn create_run(&self, experiment_id: &str) -> String {
        let (status, body) = self
            .post(
                "runs/create",
                serde_json::json!({ "experiment_id": experiment_id, "start_time": 1 }),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["run"]["info"]["run_id"].as_str().unwrap().to_owned()
    }
}

/// Assert an MLflow error body with this status and code.
pub fn assert_error(status: StatusCode, body: &Value, want_status: StatusCode, want_code: &str) {
    assert_eq!(status, want_status, "body: {body}");
    assert_eq!(body["error_code"], want_code, "body: {body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "error without a message: {body}"
    );
}

/// The URI of a fresh, empty database on the PostgreSQL that `scripts/test-all` starts
/// (MLKUBE_TEST_POSTGRES_URL); for tests that are `#[ignore]`d without it.
pub async fn fresh_postgres_uri() -> String {
    fresh_database("MLKUBE_TEST_POSTGRES_URL", "PostgreSQL", "").await
}

/// The URI of a fresh, empty database on the MariaDB that `scripts/test-all` starts
/// (MLKUBE_TEST_MYSQL_URL); for tests that are `#[ignore]`d without it.
pub async fn fresh_mysql_uri() -> String {
    fresh_database(
        "MLKUBE_TEST_MYSQL_URL",
        "MariaDB",
        " CHARACTER SET utf8mb4 COLLATE utf8mb4_bin",
    )
    .await
}

/// A new database, `CREATE DATABASE <name><options>`, beside the one the URL in `env` names.
async fn fresh_database(env: &str, server: &str, options: &str) -> String {
    use sqlx::Connection;
    let base = std::env::var(env).unwrap_or_else(|_| {
        panic!("{env} is not set: run scripts/test-all, which starts a private {server}")
    });
    sqlx::any::install_default_drivers();
    let name = format!("mlkube_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::AnyConnection::connect(&base).await.unwrap();
    sqlx::query(&format!("CREATE DATABASE {name}{options}"))
        .execute(&mut conn)
        .await
        .unwrap();
    match base.rfind('/') {
        Some(i) => format!("{}/{name}", &base[..i]),
        None => panic!("{env} has no database part: {base}"),
    }
}
