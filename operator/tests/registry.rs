//! The registry client (`HttpRegistry`) against MLflow's REST API: a scripted fake on 127.0.0.1
//! for every path and error, and (ignored by default) the same lookups against a real
//! mlkube-server process and a real upstream `mlflow server`.

#![allow(clippy::unwrap_used, clippy::panic)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use mlkube_operator::crd::model_deployment::ModelRef;
use mlkube_operator::registry::{Credentials, Endpoint, HttpRegistry, ModelReference, ModelRegistry};
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
                        // Upstream MLflow's answer for an unknown alias (its SQL and file stores).
                        return (
                            StatusCode::BAD_REQUEST,
                            axum::Json(json!({"error_code": "INVALID_PARAMETER_VALUE",
                                              "message": "Registered model alias ghost not found.",
                                              "sqlstate": "KAM00", "error_class": "INVALID_PARAMETER_VALUE"})),
                        )
                            .into_response();
                    }
                    if q.as_deref().is_some_and(|q| q.contains("alias=phantom")) {
                        return (
                            StatusCode::NOT_FOUND,
                            axum::Json(
                                json!({"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "no alias"}),
                            ),
                        )
                            .into_response();
                    }
                    if q.as_deref().is_some_and(|q| q.contains("alias=a%2Eb")) {
                        return (
                            StatusCode::BAD_REQUEST,
                            axum::Json(json!({"error_code": "INVALID_PARAMETER_VALUE",
                                              "message": "Invalid alias name: 'a.b'."})),
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
        .resolve(
            &Endpoint::new(&base).with_credentials(Some(&creds)),
            &reference(None, Some("champion"), None),
        )
        .await
        .unwrap();
    assert_eq!((r.version.as_str(), r.run_id.as_deref()), ("4", Some("run4")));
    assert_eq!(r.reference, "models:/churn@champion");
    assert_eq!(
        r.source.as_deref(),
        Some("mlflow-artifacts:/1/run4/artifacts/model")
    );

    let r = registry
        .resolve(&Endpoint::new(&base), &reference(Some("2"), None, None))
        .await
        .unwrap();
    assert_eq!(r.version, "2");
    let r = registry
        .resolve(&Endpoint::new(&base), &reference(Some("latest"), None, None))
        .await
        .unwrap();
    assert_eq!(r.version, "11", "the highest version number, not the last listed");
    let r = registry
        .resolve(
            &Endpoint::new(&base),
            &reference(None, None, Some("models:/churn/Production")),
        )
        .await
        .unwrap();
    assert_eq!(r.version, "11");

    // An unknown alias: upstream's 400 and any 404 both mean "not found", and neither is an
    // unavailable registry; a 400 that is not about a missing alias is a refusal.
    for alias in ["ghost", "phantom"] {
        let missing = registry
            .resolve(&Endpoint::new(&base), &reference(None, Some(alias), None))
            .await
            .unwrap_err();
        assert_eq!(missing.reason(), "ModelNotFound", "{alias}: {missing}");
    }
    let refused = registry
        .resolve(&Endpoint::new(&base), &reference(None, Some("a.b"), None))
        .await
        .unwrap_err();
    assert_eq!(refused.reason(), "RegistryRejected");
    assert!(refused.to_string().contains("Invalid alias name"), "{refused}");
    let broken = ModelReference::Latest {
        name: "broken".into(),
    };
    let err = registry
        .resolve(&Endpoint::new(&base), &broken)
        .await
        .unwrap_err();
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
            "alias?name=churn&alias=phantom",
            "alias?name=churn&alias=a%2Eb",
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
            &Endpoint::new(&format!("http://127.0.0.1:{port}")),
            &reference(Some("1"), None, None),
        )
        .await
        .unwrap_err();
    assert_eq!(err.reason(), "RegistryUnavailable");
    let err = registry
        .resolve(&Endpoint::new("ftp://x"), &reference(Some("1"), None, None))
        .await
        .unwrap_err();
    assert_eq!(err.reason(), "InvalidTrackingUri");
}

#[tokio::test]
async fn run_uris_need_no_registry() {
    let registry = HttpRegistry::new(Duration::from_secs(1)).unwrap();
    let r = registry
        .resolve(
            &Endpoint::new("http://127.0.0.1:9"),
            &reference(None, None, Some("runs:/0123456789abcdef0123/model")),
        )
        .await
        .unwrap();
    assert_eq!(r.version, "run-0123456789ab");
    assert_eq!(r.run_id.as_deref(), Some("0123456789abcdef0123"));
}

/// An HTTPS fake registry (python3's `http.server` and `ssl`, with the test certificate for
/// 127.0.0.1) that answers every GET with model version 4. Stopped when dropped.
struct TlsFake {
    child: std::process::Child,
    base: String,
}

impl TlsFake {
    fn start() -> TlsFake {
        use std::io::BufRead;
        const SCRIPT: &str = r#"
import http.server, json, ssl, sys
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"model_version": {"name": "churn", "version": "4", "run_id": "run4",
                                             "source": "mlflow-artifacts:/1/run4/artifacts/model"}}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(sys.argv[1], sys.argv[2])
server.socket = context.wrap_socket(server.socket, server_side=True)
print(server.server_address[1], flush=True)
server.serve_forever()
"#;
        let tls = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tls");
        let mut child = std::process::Command::new("python3")
            .arg("-c")
            .arg(SCRIPT)
            .arg(tls.join("server.crt"))
            .arg(tls.join("server.key"))
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("could not start python3: {e}"));
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port: u16 = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("python3 said {line:?}"));
        TlsFake {
            child,
            base: format!("https://127.0.0.1:{port}"),
        }
    }
}

impl Drop for TlsFake {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
#[ignore = "needs python3 (its ssl module serves the HTTPS fake); scripts/test-all runs ignored tests"]
async fn https_registries_are_verified_with_the_ca_bundle() {
    let fake = TlsFake::start();
    let tls = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tls");
    let ca = std::fs::read(tls.join("ca.crt")).unwrap();
    let other = std::fs::read(tls.join("other-ca.crt")).unwrap();
    let registry = HttpRegistry::new(Duration::from_secs(5)).unwrap();
    let champion = reference(None, Some("champion"), None);

    // The server's CA: verified, resolved.
    let endpoint = Endpoint::new(&fake.base).with_ca_bundle(Some(&ca));
    let r = registry.resolve(&endpoint, &champion).await.unwrap();
    assert_eq!(r.version, "4");
    // Again, on the cached client.
    assert_eq!(registry.resolve(&endpoint, &champion).await.unwrap().version, "4");
    // The system's CA certificates, or another CA: the certificate is refused, and that is an
    // unavailable registry (a TLS failure), never a missing model.
    for bundle in [None, Some(other.as_slice())] {
        let err = registry
            .resolve(&Endpoint::new(&fake.base).with_ca_bundle(bundle), &champion)
            .await
            .unwrap_err();
        assert_eq!(err.reason(), "RegistryUnavailable", "{err}");
    }
}

/// A tracking server process on a free 127.0.0.1 port, in its own process group (upstream's
/// `mlflow server` forks uvicorn workers), stopped with the whole group when the test ends,
/// however it ends. Its log is `<dir>/server.log`.
struct Server {
    child: std::process::Child,
    dir: std::path::PathBuf,
    base: String,
}

impl Server {
    /// Start `program args… --host 127.0.0.1 --port P --backend-store-uri sqlite:///… \
    /// --artifacts-destination …` with `envs`, and wait until `/health` answers.
    async fn start(name: &str, program: &std::path::Path, args: &[&str], envs: &[(&str, &str)]) -> Server {
        use std::os::unix::process::CommandExt;
        let dir =
            std::env::temp_dir().join(format!("mlkube-operator-registry-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = std::fs::File::create(dir.join("server.log")).unwrap();
        let child = std::process::Command::new(program)
            .args(args)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .arg("--backend-store-uri")
            .arg(format!("sqlite:///{}/mlflow.db", dir.display()))
            .arg("--artifacts-destination")
            .arg(dir.join("artifacts"))
            .envs(envs.iter().copied())
            .current_dir(&dir)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("could not start {}: {e}", program.display()));
        let server = Server {
            child,
            dir,
            base: format!("http://127.0.0.1:{port}"),
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        while !server.healthy().await {
            assert!(
                std::time::Instant::now() < deadline,
                "{name} did not answer /health on {}; see {}",
                server.base,
                server.dir.join("server.log").display()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        server
    }

    async fn healthy(&self) -> bool {
        let client: hyper_util::client::legacy::Client<_, http_body_util::Full<bytes::Bytes>> =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build(hyper_util::client::legacy::connect::HttpConnector::new());
        let Ok(uri) = format!("{}/health", self.base).parse::<http::Uri>() else {
            return false;
        };
        matches!(
            tokio::time::timeout(Duration::from_secs(2), client.get(uri)).await,
            Ok(Ok(response)) if response.status().is_success()
        )
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // The whole process group: `mlflow server` leaves its workers behind otherwise.
        let group = format!("-{}", self.child.id());
        let _ = std::process::Command::new("kill")
            .args(["-TERM", "--", &group])
            .status();
        for _ in 0..50 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = std::process::Command::new("kill")
            .args(["-KILL", "--", &group])
            .status();
        let _ = self.child.wait();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
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

/// The same registry, and the same lookups, on any MLflow-compatible server: a run, model
/// `churn` with three versions from it, alias `champion` on version 2. Every lookup the operator
/// makes, and the answers it must tell apart: an unknown alias (upstream: 400
/// INVALID_PARAMETER_VALUE), an unknown model and version (404) are `ModelNotFound`.
async fn resolves_against(base: &str) {
    let api = |path: &str| format!("{base}/api/2.0/mlflow/{path}");
    let run = call("POST", api("runs/create"), json!({"experiment_id": "0"})).await;
    let run_id = run["run"]["info"]["run_id"].as_str().unwrap().to_owned();
    let source = format!("runs:/{run_id}/model");
    call("POST", api("registered-models/create"), json!({"name": "churn"})).await;
    for _ in 0..3 {
        call(
            "POST",
            api("model-versions/create"),
            json!({"name": "churn", "source": source, "run_id": run_id}),
        )
        .await;
    }
    call(
        "POST",
        api("registered-models/alias"),
        json!({"name": "churn", "alias": "champion", "version": "2"}),
    )
    .await;

    let registry = HttpRegistry::new(Duration::from_secs(10)).unwrap();
    let r = registry
        .resolve(&Endpoint::new(base), &reference(None, Some("champion"), None))
        .await
        .unwrap();
    assert_eq!((r.name.as_str(), r.version.as_str()), ("churn", "2"));
    assert_eq!(r.run_id.as_deref(), Some(run_id.as_str()));
    let r = registry
        .resolve(&Endpoint::new(base), &reference(Some("3"), None, None))
        .await
        .unwrap();
    assert_eq!(r.source.as_deref(), Some(source.as_str()));
    let r = registry
        .resolve(&Endpoint::new(base), &reference(Some("latest"), None, None))
        .await
        .unwrap();
    assert_eq!(r.version, "3");
    for (what, missing) in [
        ("unknown alias", reference(None, Some("nobody"), None)),
        ("unknown version", reference(Some("9"), None, None)),
        (
            "unknown model",
            ModelReference::Alias {
                name: "ghost".into(),
                alias: "champion".into(),
            },
        ),
        (
            "unknown model, latest",
            ModelReference::Latest { name: "ghost".into() },
        ),
    ] {
        let err = registry
            .resolve(&Endpoint::new(base), &missing)
            .await
            .unwrap_err();
        assert_eq!(err.reason(), "ModelNotFound", "{what}: {err}");
    }
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
    let server = Server::start("mlkube", &bin, &[], &[]).await;
    resolves_against(&server.base).await;
}

#[tokio::test]
#[ignore = "needs upstream MLflow (a virtualenv in MLKUBE_MLFLOW_VENV, default .cache/venvs/mlflow-3.17.2); scripts/test-all provides it and runs ignored tests"]
async fn resolves_against_upstream_mlflow_server() {
    // A relative venv path is relative to the repository root, not to the test's directory.
    let venv =
        std::env::var("MLKUBE_MLFLOW_VENV").unwrap_or_else(|_| ".cache/venvs/mlflow-3.17.2".to_owned());
    let venv = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(venv);
    let mlflow = venv.join("bin/mlflow");
    assert!(
        mlflow.is_file(),
        "{} does not exist: set MLKUBE_MLFLOW_VENV to a virtualenv with mlflow installed (scripts/test-all does)",
        mlflow.display()
    );
    // As scripts/lib/server.sh starts it for the compatibility suite.
    let server = Server::start(
        "upstream",
        &mlflow,
        &["server", "--workers", "1"],
        &[("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false"), ("NO_COLOR", "1")],
    )
    .await;
    resolves_against(&server.base).await;
}
