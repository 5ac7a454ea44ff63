//! PostgreSQL going away under a running server: requests get MLflow's 503
//! `TEMPORARILY_UNAVAILABLE` within the pool's acquire timeout (never a 500, never a long hang),
//! `/health` says so, and the server recovers by itself when the database is back — for a database
//! that stops answering and for one that drops every connection (a restart). The database sits
//! behind a TCP relay the test can cut and restore.
#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode};
use common::{TestApp, monitoring_for};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// A relay from a fixed local port to PostgreSQL that can be cut (every connection dropped, new
/// ones refused) and restored on the same port.
struct Relay {
    addr: SocketAddr,
    target: SocketAddr,
    tasks: Option<JoinSet<()>>,
}

impl Relay {
    async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut relay = Self {
            addr,
            target,
            tasks: None,
        };
        relay.serve(listener);
        relay
    }

    fn serve(&mut self, listener: TcpListener) {
        let target = self.target;
        let mut tasks = JoinSet::new();
        tasks.spawn(async move {
            let mut connections = JoinSet::new();
            while let Ok((mut client, _)) = listener.accept().await {
                connections.spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
        self.tasks = Some(tasks);
    }

    /// Drop every connection and stop listening.
    async fn cut(&mut self) {
        if let Some(mut tasks) = self.tasks.take() {
            tasks.shutdown().await;
        }
    }

    async fn restore(&mut self) {
        let listener = TcpListener::bind(self.addr).await.unwrap();
        self.serve(listener);
    }
}

async fn app_on(uri: &str) -> TestApp {
    let store = Arc::new(
        mlkube_server::store::open(uri, "mlflow-artifacts:/")
            .await
            .unwrap(),
    );
    let dir = tempfile::tempdir().unwrap();
    let state = mlkube_server::AppState {
        store: store.clone(),
        artifacts: None,
        metrics: None,
        auth: None,
        monitoring: monitoring_for(store, None),
        ui: None,
    };
    TestApp {
        router: mlkube_server::app(state, 1024 * 1024),
        dir,
    }
}

async fn create(app: &TestApp, name: &str) -> (StatusCode, Value, Duration) {
    let started = Instant::now();
    let (status, body) = app
        .call(
            Method::POST,
            "/api/2.0/mlflow/experiments/create",
            Some(json!({ "name": name })),
        )
        .await;
    (status, body, started.elapsed())
}

/// Poll until a create succeeds again (the pool reconnects by itself).
async fn recovers(app: &TestApp, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body, _) = create(app, name).await;
        if status == StatusCode::OK {
            break;
        }
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert!(Instant::now() < deadline, "no recovery within 30 s: {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (status, _) = app.call(Method::GET, "/health", None).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
#[ignore = "needs PostgreSQL: scripts/test-all starts one, sets MLKUBE_TEST_POSTGRES_URL and runs ignored tests"]
async fn postgres_outage_is_503_then_recovers() {
    use sqlx::Connection;
    let base = std::env::var("MLKUBE_TEST_POSTGRES_URL").expect("MLKUBE_TEST_POSTGRES_URL");
    sqlx::any::install_default_drivers();
    let name = format!("mlkube_{}", uuid::Uuid::new_v4().simple());
    let mut admin = sqlx::AnyConnection::connect(&base).await.unwrap();
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .unwrap();
    // postgresql://user@HOST:PORT/db -> the same through the relay.
    let (scheme_user, rest) = base.split_once('@').unwrap();
    let (host_port, _) = rest.split_once('/').unwrap();
    let target: SocketAddr = host_port.parse().unwrap();
    let mut relay = Relay::start(target).await;
    let uri = format!("{scheme_user}@{}/{name}", relay.addr);
    let app = app_on(&uri).await;

    let (status, body, _) = create(&app, "before").await;
    assert_eq!(status, StatusCode::OK, "{body}");

    for round in 0..2 {
        relay.cut().await;
        // Every request in the outage: MLflow's 503, quickly; nothing half-written.
        for attempt in 0..2 {
            let (status, body, took) = create(&app, &format!("during-{round}-{attempt}")).await;
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
            assert_eq!(body["error_code"], "TEMPORARILY_UNAVAILABLE", "{body}");
            assert!(took < Duration::from_secs(10), "a request hung for {took:?}");
        }
        let (status, body) = app.call(Method::GET, "/health", None).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert!(
            body.as_str().unwrap_or_default().contains("unavailable"),
            "{body}"
        );
        relay.restore().await;
        recovers(&app, &format!("after-{round}")).await;
    }
    // The experiments created during the outages do not exist; the others do.
    for (name, exists) in [
        ("before", true),
        ("after-0", true),
        ("after-1", true),
        ("during-0-0", false),
    ] {
        let (status, _) = app
            .call(
                Method::GET,
                &format!("/api/2.0/mlflow/experiments/get-by-name?experiment_name={name}"),
                None,
            )
            .await;
        assert_eq!(status == StatusCode::OK, exists, "{name}");
    }
}
