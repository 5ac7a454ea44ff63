//! HTTP tests of the artifact proxy and run artifact listing, including the traversal shapes of
//! MLflow's CVE history (reference §9.2): each is refused with a JSON 400 and touches nothing.
#![allow(clippy::unwrap_used, clippy::panic)] // test helpers may fail loudly

mod common;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use common::{assert_error, test_app, test_artifacts_only_app};
use serde_json::json;

const PROXY: &str = "/api/2.0/mlflow-artifacts/artifacts";

#[tokio::test]
async fn upload_list_download_delete() {
    let app = test_app().await;
    let run_id = app.create_run("0").await;
    let base = format!("0/{run_id}/artifacts");
    for (path, content) in [
        ("model/MLmodel", "flavors: {}"),
        ("model/data/weights.bin", "0101"),
        ("notes.txt", "hi"),
    ] {
        let req = Request::put(format!("{PROXY}/{base}/{path}"))
            .body(Body::from(content))
            .unwrap();
        let (s, b) = app.send(req).await;
        assert_eq!(s, StatusCode::OK, "{b}");
    }
    let (s, b) = app
        .call(Method::GET, &format!("{PROXY}?path={base}/model"), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        b["files"],
        json!([{ "path": "MLmodel", "is_dir": false, "file_size": 11 }, { "path": "data", "is_dir": true }])
    );
    let (s, b) = app
        .get(&format!("artifacts/list?run_id={run_id}&path=model"))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["root_uri"], format!("mlflow-artifacts:/{base}"));
    assert_eq!(b["files"][1], json!({ "path": "model/data", "is_dir": true }));

    let req = Request::get(format!("{PROXY}/{base}/notes.txt"))
        .body(Body::empty())
        .unwrap();
    let resp = tower::ServiceExt::oneshot(app.router.clone(), req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.headers()["content-disposition"],
        "attachment; filename=\"notes.txt\""
    );
    assert_eq!(resp.headers()["x-content-type-options"], "nosniff");
    let (s, body) = app
        .send_raw(
            Request::get(format!("{PROXY}/{base}/notes.txt"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!((s, body.as_slice()), (StatusCode::OK, b"hi".as_slice()));

    let (s, b) = app
        .call(Method::GET, &format!("{PROXY}/{base}/missing.txt"), None)
        .await;
    assert_error(s, &b, StatusCode::NOT_FOUND, "RESOURCE_DOES_NOT_EXIST");
    let (s, _) = app
        .call(Method::DELETE, &format!("{PROXY}/{base}/model"), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    let (_, b) = app.call(Method::GET, &format!("{PROXY}?path={base}"), None).await;
    assert_eq!(
        b["files"],
        json!([{ "path": "notes.txt", "is_dir": false, "file_size": 2 }])
    );
    let (s, b) = app
        .call(Method::GET, &format!("{PROXY}?path=nothing/here"), None)
        .await;
    assert_eq!((s, b), (StatusCode::OK, json!({})));

    let (s, b) = app
        .post("mlflow-artifacts/mpu/create/0/x", json!({ "path": "x" }))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{b}");
    let (s, b) = app
        .call(
            Method::POST,
            "/api/2.0/mlflow-artifacts/mpu/create/0/x",
            Some(json!({ "path": "x" })),
        )
        .await;
    assert_error(s, &b, StatusCode::NOT_IMPLEMENTED, "NOT_IMPLEMENTED");
}

#[tokio::test]
async fn traversal_shapes_are_refused_and_touch_nothing() {
    let app = test_app().await;
    let outside = app.dir.path().join("outside.txt");
    std::fs::write(&outside, "keep").unwrap();
    let shapes = [
        "../outside.txt",
        "a/../../outside.txt",
        "%2e%2e/outside.txt",
        "%2E%2E%2Foutside.txt",
        "%252e%252e/outside.txt",
        "%25252e%25252e%25252foutside.txt",
        "..%2foutside.txt",
        "..%5coutside.txt",
        "a%5c..%5c..%5coutside.txt",
        "%2Fetc%2Fpasswd",
        "%2F%2Fproc%2Fself%2Fenviron",
        "x;/../../outside.txt",
        "x%3b/../../outside.txt",
        "x%23/../../outside.txt",
        "x%00.txt",
        "x%3f/../outside.txt",
    ];
    for shape in shapes {
        for method in [Method::GET, Method::PUT, Method::DELETE] {
            let req = Request::builder()
                .method(method.clone())
                .uri(format!("{PROXY}/{shape}"))
                .body(Body::from("pwned"))
                .unwrap();
            let (s, b) = app.send(req).await;
            assert_error(s, &b, StatusCode::BAD_REQUEST, "INVALID_PARAMETER_VALUE");
        }
        let (s, b) = app
            .call(Method::GET, &format!("{PROXY}?path={shape}"), None)
            .await;
        assert_error(s, &b, StatusCode::BAD_REQUEST, "INVALID_PARAMETER_VALUE");
    }
    assert_eq!(std::fs::read_to_string(&outside).unwrap(), "keep");

    // A symlink planted inside the root cannot be used to read or write outside it.
    std::os::unix::fs::symlink(app.dir.path(), app.dir.path().join("artifacts/link")).unwrap();
    let (s, b) = app
        .call(Method::GET, &format!("{PROXY}/link/outside.txt"), None)
        .await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "INVALID_PARAMETER_VALUE");
    let (s, b) = app
        .send(
            Request::put(format!("{PROXY}/link/new.txt"))
                .body(Body::from("x"))
                .unwrap(),
        )
        .await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "INVALID_PARAMETER_VALUE");
    assert!(!app.dir.path().join("new.txt").exists());
    let (s, b) = app.call(Method::DELETE, &format!("{PROXY}/link"), None).await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "INVALID_PARAMETER_VALUE");
    assert!(outside.exists());
}

/// What tests/reliability/hostile.py found on the proxy: names no file system takes were 500s,
/// a repeated `path` in a listing a text/plain 400, and two DELETEs of one file a 500 for the
/// second; all are MLflow JSON client errors now.
#[tokio::test]
async fn hostile_artifact_requests_get_client_errors() {
    let app = test_app().await;
    let run_id = app.create_run("0").await;
    let base = format!("0/{run_id}/artifacts");
    let long = "n".repeat(300);
    let req = Request::put(format!("{PROXY}/{base}/{long}"))
        .body(Body::from("x"))
        .unwrap();
    let (s, b) = app.send(req).await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "INVALID_PARAMETER_VALUE");
    for uri in [
        format!("{PROXY}?path={base}/{long}"),
        format!("{PROXY}/{base}/{long}"),
        format!("/api/2.0/mlflow/artifacts/list?run_id={run_id}&path={long}"),
        format!("/get-artifact?run_id={run_id}&path={long}"),
    ] {
        let (s, b) = app.call(Method::GET, &uri, None).await;
        assert_error(s, &b, StatusCode::BAD_REQUEST, "INVALID_PARAMETER_VALUE");
    }
    let (s, b) = app
        .call(Method::GET, &format!("{PROXY}?path={base}&path=x"), None)
        .await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "BAD_REQUEST");

    let file = format!("{PROXY}/{base}/doomed.txt");
    let (s, b) = app.send(Request::put(&file).body(Body::from("x")).unwrap()).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let deletes = (0..8).map(|_| app.call(Method::DELETE, &file, None));
    let answers = futures_util::future::join_all(deletes).await;
    assert!(answers.iter().any(|(s, _)| *s == StatusCode::OK));
    for (s, b) in answers.into_iter().filter(|(s, _)| *s != StatusCode::OK) {
        assert_error(s, &b, StatusCode::NOT_FOUND, "RESOURCE_DOES_NOT_EXIST");
    }
}

/// `--artifacts-only`: the proxy (both prefixes, multipart routes included), probes and /metrics
/// answer; the tracking and registry API and the UI's artifact routes are MLflow's 404.
#[tokio::test]
async fn artifacts_only_serves_the_proxy_and_nothing_else() {
    let app = test_artifacts_only_app().await;
    let req = Request::put(format!("{PROXY}/1/abc/artifacts/model/MLmodel"))
        .body(Body::from("flavors: {}"))
        .unwrap();
    let (s, b) = app.send(req).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, b) = app
        .call(
            Method::GET,
            "/ajax-api/2.0/mlflow-artifacts/artifacts?path=1/abc/artifacts/model",
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        b["files"],
        json!([{ "path": "MLmodel", "is_dir": false, "file_size": 11 }])
    );
    let (s, body) = app
        .send_raw(
            Request::get(format!("{PROXY}/1/abc/artifacts/model/MLmodel"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!((s, body.as_slice()), (StatusCode::OK, b"flavors: {}".as_slice()));
    let (s, b) = app
        .call(
            Method::DELETE,
            &format!("{PROXY}/1/abc/artifacts/model/MLmodel"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    // The local destination answers multipart with NOT_IMPLEMENTED (clients fall back), not a 404.
    let (s, _) = app
        .call(
            Method::POST,
            "/api/2.0/mlflow-artifacts/mpu/create/1/abc/artifacts/big.bin",
            Some(json!({ "path": "big.bin", "num_parts": 2 })),
        )
        .await;
    assert_ne!(s, StatusCode::NOT_FOUND);

    for path in [
        "/api/2.0/mlflow/experiments/search",
        "/api/2.0/mlflow/runs/search",
        "/api/2.0/mlflow/registered-models/search",
        "/api/2.0/mlflow/artifacts/list?run_id=abc",
        "/get-artifact?run_id=abc&path=x",
    ] {
        let (s, b) = app.call(Method::GET, path, None).await;
        assert_error(s, &b, StatusCode::NOT_FOUND, "ENDPOINT_NOT_FOUND");
    }
    for probe in ["/health", "/version", "/metrics"] {
        let (s, _) = app
            .send_raw(Request::get(probe).body(Body::empty()).unwrap())
            .await;
        assert_eq!(s, StatusCode::OK, "{probe}");
    }
}
