//! The registry client (`HttpRegistry`) against MLflow's REST API: a scripted fake on 127.0.0.1
//! for every path and error, and (ignored by default) a real mlkube-server process.

#![allow(clippy::unwrap_used, clippy::panic)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use mlkube_operator::crd::model_deployment::ModelRef;
use mlkube_operator::registry::{Credentials, HttpRegistry, ModelReference, ModelRegistry};
use serde_json::json;

type Log = Arc<Mutex<Vec<(String, Option<String>)>>>;

fn version(v: &str) -> serde_json::Value {
    json!({"name": "churn", "version": v, "run_id": format!("run{v}"), "source": format!("mlflow-artifacts:/1/run{v}/artifacts/model"),
           "current_stage": "None", "status": "READY"})
}

async fn serve_fake() -> (String, Log) {
    let log: Log = Arc::default();
    async fn record(log: &Log, path: &str, query: Option<String>, headers: &HeaderMap) {
        let auth = headers
            .get("authorization")
            .map(|h| h.to_str().unwrap().to_owned());
        log.lock()
            .unwrap()
            .push((format!("{path}?{}", query.unwrap_or_default()), auth));
    }
    let app = Router::new()
        .route(
            "/api/2.0/mlflow/registered-models/alias",
            get(
                |State(log): State<Log>, RawQuery(q): RawQuery, h: HeaderMap| async move {
                    record(&log, "alias", q.clone(), &h).await;
                    if q.as_deref().is_some_and(|q| q.contains("alias=ghost")) {
                        return (
                            StatusCode::NOT_FOUND,
                            axum::Json(
                                json!({"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "no alias"}),
                            ),
                        )
                            .into_response();
                    }
                    axum::Json(json!({"model_version": version("4")})).into_response()
                },
            ),
        )
        .route(
            "/api/2.0/mlflow/model-versions/get",
            get(
                |State(log): State<Log>, RawQuery(q): RawQuery, h: HeaderMap| async move {
                    record(&log, "get", q, &h).await;
                    axum::Json(json!({"model_version": version("2")}))
                },
            ),
        )
        .route(
            "/api/2.0/mlflow/registered-models/get-latest-versions",
            get(
                |State(log): State<Log>, RawQuery(q): RawQuery, h: HeaderMap| async move {
                    record(&log, "latest", q.clone(), &h).await;
                    if q.as_deref().is_some_and(|q| q.contains("name=broken")) {
                        return (
                            StatusCode::INTERNAL_SERVER_ERROR,
                            axum::Json(
                                json!({"error_code": "INTERNAL_ERROR", "message": "database is locked"}),
                            ),
                        )
                            .into_response();
                    }
                    axum::Json(json!({"model_versions": [version("9"), version("11"), version("10")]}))
                        .into_response()
                },
            ),
        )
        .with_state(log.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), log)
}

fn reference(version: Option<&str>, alias: Option<&str>, uri: Option<&str>) -> ModelReference {
    ModelReference::from_spec(&ModelRef {
        name: "churn".into(),
        version: version.map(Into::into),
        alias: alias.map(Into::into),
        uri: uri.map(Into::into),
    })
}

#[tokio::test]
async fn resolves_every_kind_of_reference() {
    let (base, log) = serve_fake().await;
    let registry = HttpRegistry::new(Duration::from_secs(5)).unwrap();
    let creds = Credentials {
        username: "admin".into(),
        password: "s3cret".into(),
    };

    let r = registry
        .resolve(&base, Some(&creds), &reference(None, Some("champion"), None))
        .await
        .unwrap();
    assert_eq!((r.version.as_str(), r.run_id.as_deref()), ("4", Some("run4")));
    assert_eq!(r.reference, "models:/churn@champion");
    assert_eq!(
        r.source.as_deref(),
        Some("mlflow-artifacts:/1/run4/artifacts/model")
    );

    let r = registry
        .resolve(&base, None, &reference(Some("2"), None, None))
        .await
        .unwrap();
    assert_eq!(r.version, "2");
    let r = registry
        .resolve(&base, None, &reference(Some("latest"), None, None))
        .await
        .unwrap();
    assert_eq!(r.version, "11", "the highest version number, not the last listed");
    let r = registry
        .resolve(
            &base,
            None,
            &reference(None, None, Some("models:/churn/Production")),
        )
        .await
        .unwrap();
    assert_eq!(r.version, "11");

    let missing = registry
        .resolve(&base, None, &reference(None, Some("ghost"), None))
        .await
        .unwrap_err();
    assert_eq!(missing.reason(), "ModelNotFound");
    let broken = ModelReference::Latest {
        name: "broken".into(),
    };
    let err = registry.resolve(&base, None, &broken).await.unwrap_err();
    assert_eq!(err.reason(), "RegistryUnavailable");
    assert!(err.to_string().contains("database is locked"), "{err}");

    let log = log.lock().unwrap().clone();
    assert_eq!(
        log.iter().map(|(q, _)| q.as_str()).collect::<Vec<_>>(),
        [
            "alias?name=churn&alias=champion",
            "get?name=churn&version=2",
            "latest?name=churn",
            "latest?name=churn&stages=Production",
            "alias?name=churn&alias=ghost",
            "latest?name=broken",
        ]
    );
    assert_eq!(log[0].1.as_deref(), Some("Basic YWRtaW46czNjcmV0"));
    assert_eq!(log[1].1, None);
}

#[tokio::test]
async fn an_unreachable_server_is_reported_as_such() {
    // Bind and drop to find a port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let registry = HttpRegistry::new(Duration::from_secs(5)).unwrap();
    let err = registry
        .resolve(
            &format!("http://127.0.0.1:{port}"),
            None,
            &reference(Some("1"), None, None),
        )
        .await
        .unwrap_err();
    assert_eq!(err.reason(), "RegistryUnavailable");
    let err = registry
        .resolve("ftp://x", None, &reference(Some("1"), None, None))
        .await
        .unwrap_err();
    assert_eq!(err.reason(), "InvalidTrackingUri");
}

#[tokio::test]
async fn run_uris_need_no_registry() {
    let registry = HttpRegistry::new(Duration::from_secs(1)).unwrap();
    let r = registry
        .resolve(
            "http://127.0.0.1:9",
            None,
            &reference(None, None, Some("runs:/0123456789abcdef0123/model")),
        )
        .await
        .unwrap();
    assert_eq!(r.version, "run-0123456789ab");
    assert_eq!(r.run_id.as_deref(), Some("0123456789abcdef0123"));
}

/// Kills the server when the test ends, however it ends.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn call(method: &str, url: String, body: serde_json::Value) -> serde_json::Value {
    use http_body_util::BodyExt;
    let client: hyper_util::client::legacy::Client<_, http_body_util::Full<bytes::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(hyper_util::client::legacy::connect::HttpConnector::new());
    let request = http::Request::builder()
        .method(method)
        .uri(&url)
        .header("content-type", "application/json")
        .body(http_body_util::Full::from(serde_json::to_vec(&body).unwrap()))
        .unwrap();
    let response = client.request(request).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    assert!(
        status.is_success(),
        "{method} {url}: {status} {}",
        String::from_utf8_lossy(&bytes)
    );
    serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null)
}

#[tokio::test]
#[ignore = "needs the mlkube-server binary (MLKUBE_SERVER_BIN or target/debug/mlkube-server); scripts/test-all builds it and runs ignored tests"]
async fn resolves_against_a_real_mlkube_server() {
    let bin = std::env::var("MLKUBE_SERVER_BIN")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/mlkube-server")
        });
    assert!(
        bin.is_file(),
        "{} does not exist: build it with `cargo build -p mlkube-server` or set MLKUBE_SERVER_BIN",
        bin.display()
    );
    let dir = std::env::temp_dir().join(format!("mlkube-operator-registry-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _child = Child(
        std::process::Command::new(&bin)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .arg("--backend-store-uri")
            .arg(format!("sqlite:///{}/mlflow.db", dir.display()))
            .arg("--artifacts-destination")
            .arg(dir.join("artifacts"))
            .current_dir(&dir)
            .spawn()
            .unwrap(),
    );
    let base = format!("http://127.0.0.1:{port}");
    let mut up = false;
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(up, "mlkube-server did not start listening on {base}");

    let api = |path: &str| format!("{base}/api/2.0/mlflow/{path}");
    call("POST", api("registered-models/create"), json!({"name": "churn"})).await;
    for _ in 0..3 {
        call(
            "POST",
            api("model-versions/create"),
            json!({"name": "churn", "source": "mlflow-artifacts:/1/abc/artifacts/model"}),
        )
        .await;
    }
    call(
        "POST",
        api("registered-models/alias"),
        json!({"name": "churn", "alias": "champion", "version": "2"}),
    )
    .await;

    let registry = HttpRegistry::new(Duration::from_secs(5)).unwrap();
    let r = registry
        .resolve(&base, None, &reference(None, Some("champion"), None))
        .await
        .unwrap();
    assert_eq!((r.name.as_str(), r.version.as_str()), ("churn", "2"));
    let r = registry
        .resolve(&base, None, &reference(Some("3"), None, None))
        .await
        .unwrap();
    assert_eq!(
        r.source.as_deref(),
        Some("mlflow-artifacts:/1/abc/artifacts/model")
    );
    let r = registry
        .resolve(&base, None, &reference(Some("latest"), None, None))
        .await
        .unwrap();
    assert_eq!(r.version, "3");
    let err = registry
        .resolve(&base, None, &reference(None, Some("nobody"), None))
        .await
        .unwrap_err();
    assert_eq!(err.reason(), "ModelNotFound");
    let _ = std::fs::remove_dir_all(&dir);
}
